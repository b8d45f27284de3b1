"""Jacobian benchmarks: the tutorial's square, tall and wide cases, and the fwd/rev crossover.

Function: ``predict(weight, bias, x) = F.linear(x, weight, bias).tanh()``, Jacobian w.r.t.
``x``, checked against the closed form ``(1 - y**2)[:, None] * W`` before it is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch

import derivs
from bench.problems import predict, predict_inputs, predict_jacobian
from bench.timing import Bench, Case

pytestmark = pytest.mark.bench


def _derivs(method: str) -> Callable[..., Any]:
    return derivs.jacobian(predict, argnums=2, method=method)


def _autograd_functional(vectorize: bool) -> Callable[..., Any]:
    def jac(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.jacobian(
            partial(predict, weight, bias), x, vectorize=vectorize
        )

    return jac


# label -> (impl, method, the torch.func call it does the same work as, factory)
JACOBIAN_CASES: dict[str, Case] = {
    "derivs loop": ("derivs", "loop", None, lambda: _derivs("loop")),
    "derivs vjp_vmap": ("derivs", "vjp_vmap", "torch.func.jacrev", lambda: _derivs("vjp_vmap")),
    "derivs rev": ("derivs", "rev", "torch.func.jacrev", lambda: _derivs("rev")),
    "derivs fwd": ("derivs", "fwd", "torch.func.jacfwd", lambda: _derivs("fwd")),
    "derivs auto": ("derivs", "auto", "best torch.func", lambda: _derivs("auto")),
    "torch.func.jacrev": (
        "torch.func",
        "jacrev",
        None,
        lambda: torch.func.jacrev(predict, argnums=2),
    ),
    "torch.func.jacfwd": (
        "torch.func",
        "jacfwd",
        None,
        lambda: torch.func.jacfwd(predict, argnums=2),
    ),
    "autograd.functional vectorize=True": (
        "torch.autograd.functional",
        "jacobian(vectorize=True)",
        None,
        lambda: _autograd_functional(True),
    ),
    "autograd.functional vectorize=False": (
        "torch.autograd.functional",
        "jacobian(vectorize=False)",
        None,
        lambda: _autograd_functional(False),
    ),
    "closed form": ("closed form", "(1 - y**2)[:, None] * W", None, lambda: predict_jacobian),
}

FWD_REV = ["derivs fwd", "derivs rev", "derivs auto", "torch.func.jacfwd", "torch.func.jacrev"]


def _run(bench: Bench, label: str, n_in: int, n_out: int, group: str, **info: Any) -> None:
    impl, method, equiv, factory = JACOBIAN_CASES[label]
    args = predict_inputs(n_in, n_out, bench.device)
    bench(
        factory(),
        args,
        group=group,
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=predict_jacobian,
        n_in=n_in,
        n_out=n_out,
        ratio=n_out / n_in,
        shapes={"x": [n_in], "out": [n_out], "jacobian": [n_out, n_in]},
        **info,
    )


@pytest.mark.parametrize("label", list(JACOBIAN_CASES))
def test_jacobian_square(bench: Bench, label: str) -> None:
    """Tutorial, D=16: the loop against vmap, derivs against torch.func, and the closed form."""
    _run(bench, label, 16, 16, "jacobian square D=16", shape_name="square")


@pytest.mark.parametrize("label", FWD_REV)
def test_jacobian_tall(bench: Bench, label: str) -> None:
    """Tutorial, 32 -> 2048: more outputs than inputs, where forward mode should win."""
    _run(bench, label, 32, 2048, "jacobian tall 32->2048", shape_name="tall")


@pytest.mark.parametrize("label", FWD_REV)
def test_jacobian_wide(bench: Bench, label: str) -> None:
    """Tutorial, 2048 -> 32: more inputs than outputs, where reverse mode should win."""
    _run(bench, label, 2048, 32, "jacobian wide 2048->32", shape_name="wide")


# NOTE: n_in * n_out = 2**16 throughout, so every Jacobian has the same number of entries and
# only the shape changes; the report plots time against n_out / n_in (log-log).
CROSSOVER = [(2048, 32), (1024, 64), (512, 128), (256, 256), (128, 512), (64, 1024), (32, 2048)]


@pytest.mark.parametrize("label", ["derivs fwd", "derivs rev", "derivs auto"])
@pytest.mark.parametrize(("n_in", "n_out"), CROSSOVER, ids=[f"{i}to{o}" for i, o in CROSSOVER])
def test_jacobian_crossover(bench: Bench, label: str, n_in: int, n_out: int) -> None:
    """Where does forward mode start beating reverse mode, as outputs/inputs grows?"""
    _run(bench, label, n_in, n_out, "jacobian crossover (in*out=2**16)")
