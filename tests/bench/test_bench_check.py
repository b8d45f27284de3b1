"""derivs.check's cost in gradients: ``check(mode="projected")`` beside one gradient of
``tanh(W1 @ x) @ w2`` (``bench.problems.tanh_layer``) at n = 10^4, 10^5 and 10^6, orders 1
and 2, and ``mode="dense"`` beside ``mode="projected"`` at n = 256 and 512.

Each table (group) holds the gradient and the checks of one size and order; the goals
(issue 25: order 1 within 50 gradients, order 2 within 200, at n = 10^6) are ratios of its
rows. ``python -m bench.check`` measures the same ratios interleaved in one process and
writes ``docs/bench/check.md``. Every check must pass once before it is timed; the gradient
is checked against its closed form.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

import derivs
from bench.problems import tanh_layer, tanh_layer_gradient, tanh_layer_inputs
from bench.timing import Bench

pytestmark = pytest.mark.bench

PROJECTED_SIZES = (10**4, 10**5, 10**6)
DENSE_SIZES = (256, 512)


def _gradient(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    return torch.autograd.grad(tanh_layer(w1, w2, x), x)[0]


def _check(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, order: int, mode: str) -> str:
    report = derivs.check(
        partial(tanh_layer, w1, w2), x, order=order, mode=mode, raise_exception=False
    )
    return f"{report.status} {report.mode}"


def _cases() -> list[tuple[int, int, str]]:
    dense = [(n, order, "dense") for n in DENSE_SIZES for order in (1, 2)]
    sizes = DENSE_SIZES + PROJECTED_SIZES
    return dense + [(n, order, "projected") for n in sizes for order in (1, 2)]


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("n", DENSE_SIZES + PROJECTED_SIZES)
def test_one_gradient(bench: Bench, device: str, n: int, order: int) -> None:
    """The unit of the check's cost: one forward and backward pass (timed in each group)."""
    if device != "cpu":
        pytest.skip("derivs.check's cost is measured on the cpu")
    w1, w2, x = tanh_layer_inputs(n)
    bench(
        _gradient,
        (w1, w2, x),
        group=f"check-projected n={n} order={order}",
        label="one gradient",
        impl="torch.autograd",
        reference=tanh_layer_gradient,
        n=n,
    )


@pytest.mark.parametrize(("n", "order", "mode"), _cases())
def test_check(bench: Bench, device: str, n: int, order: int, mode: str) -> None:
    if device != "cpu":
        pytest.skip("derivs.check's cost is measured on the cpu")
    w1, w2, x = tanh_layer_inputs(n)
    verdict = _check(w1, w2, x, order, mode)
    assert verdict == f"passed {mode}", verdict  # a wrong verdict is never timed
    bench(
        _check,
        (w1, w2, x, order, mode),
        group=f"check-projected n={n} order={order}",
        label=f"check {mode}",
        impl="derivs",
        n=n,
        order=order,
        mode=mode,
        max_rounds=3,
    )
