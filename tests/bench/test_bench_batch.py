"""Batched Jacobians and Hessians at B=64: vmap, the sum trick and a per-sample loop.

The tutorial's case: ``predict`` with ``weight (33, 31)``, ``bias (33,)`` shared and
``x (64, 31)`` batched (``in_dims=(None, None, 0)``); results ``(64, 33, 31)`` and
``(64, 33, 31, 31)``, checked against the closed forms before they are timed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import derivs
from bench.problems import predict, predict_hessian, predict_inputs, predict_jacobian
from bench.timing import Bench, Case

pytestmark = pytest.mark.bench

B, N_IN, N_OUT = 64, 31, 33
IN_DIMS = (None, None, 0)


def _tutorial_sum_trick(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The tutorial's ``jacrev(predict_with_output_summed)(...).movedim(1, 0)``."""

    def summed(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return predict(weight, bias, x).sum(0)

    return torch.func.jacrev(summed, argnums=2)(weight, bias, x).movedim(1, 0)


# label -> (impl, method, torch.func equivalent, factory)
BATCH_JACOBIAN_CASES: dict[str, Case] = {
    **{
        f"derivs {m}": (
            "derivs",
            m,
            {"vmap": "torch.func vmap(jacrev)", "sum": "torch.func sum trick"}.get(m),
            lambda m=m: derivs.batch_jacobian(predict, argnums=2, in_dims=IN_DIMS, method=m),
        )
        for m in ("vmap", "sum", "loop")
    },
    "torch.func vmap(jacrev)": (
        "torch.func",
        "vmap(jacrev)",
        None,
        lambda: torch.func.vmap(torch.func.jacrev(predict, argnums=2), in_dims=IN_DIMS),
    ),
    "torch.func sum trick": (
        "torch.func",
        "jacrev(sum).movedim",
        None,
        lambda: _tutorial_sum_trick,
    ),
    "closed form": ("closed form", "(1 - y**2)[..., None] * W", None, lambda: predict_jacobian),
}

BATCH_HESSIAN_CASES: dict[str, Case] = {
    **{
        f"derivs {m}": (
            "derivs",
            m,
            "torch.func vmap(hessian)" if m == "vmap" else None,
            lambda m=m: derivs.batch_hessian(predict, argnums=2, in_dims=IN_DIMS, method=m),
        )
        for m in ("vmap", "sum", "loop")
    },
    "torch.func vmap(hessian)": (
        "torch.func",
        "vmap(hessian)",
        None,
        lambda: torch.func.vmap(torch.func.hessian(predict, argnums=2), in_dims=IN_DIMS),
    ),
    "closed form": ("closed form", "-2y(1-y**2) W W^T", None, lambda: predict_hessian),
}


def _run(
    bench: Bench, group: str, case: tuple[Any, ...], label: str, reference: Any, out: list[int]
) -> None:
    impl, method, equiv, factory = case
    args = predict_inputs(N_IN, N_OUT, bench.device, batch=B)
    bench(
        factory(),
        args,
        group=group,
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=reference,
        batch=B,
        n_in=N_IN,
        n_out=N_OUT,
        shapes={"x": [B, N_IN], "out": [B, N_OUT], "result": out},
        max_rounds=3,
    )


@pytest.mark.parametrize("label", list(BATCH_JACOBIAN_CASES))
def test_batch_jacobian(bench: Bench, label: str) -> None:
    """Per-sample Jacobians: vmap against the sum trick against a Python loop."""
    _run(
        bench,
        "batch jacobian B=64 31->33",
        BATCH_JACOBIAN_CASES[label],
        label,
        predict_jacobian,
        [B, N_OUT, N_IN],
    )


@pytest.mark.parametrize("label", list(BATCH_HESSIAN_CASES))
def test_batch_hessian(bench: Bench, label: str) -> None:
    """Per-sample Hessians: vmap against the sum trick against a Python loop."""
    _run(
        bench,
        "batch hessian B=64 31->33",
        BATCH_HESSIAN_CASES[label],
        label,
        predict_hessian,
        [B, N_OUT, N_IN, N_IN],
    )
