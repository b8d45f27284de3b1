"""Overhead: derivs against the torch.func call doing the same work, where the math is tiny.

At D=4 the arithmetic costs next to nothing, so the time is the Python around it: argument
checks, the output check, the pytree bookkeeping. The report turns each pair into a ratio
(``extra_info["equiv"]`` names the torch.func row of the same group).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import derivs
from bench.problems import predict, predict_hessian, predict_hvp, predict_inputs, predict_jacobian
from bench.timing import Bench

pytestmark = pytest.mark.bench

D = 4


def _hvp(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return derivs.hvp(lambda x: predict(weight, bias, x).sum(), (x,), (x,), method="fwd_rev")


def _func_hvp(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    g = torch.func.grad(lambda x: predict(weight, bias, x).sum())
    return (torch.func.jvp(g, (x,), (x,))[1],)


def _hvp_reference(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor]:
    return (predict_hvp(weight, bias, x, x),)


# label -> (impl, method, torch.func equivalent, factory, reference)
OVERHEAD_CASES: dict[str, tuple[str, str, str | None, Callable[[], Any], Callable[..., Any]]] = {
    "derivs jacobian rev": (
        "derivs",
        "jacobian rev",
        "torch.func.jacrev",
        lambda: derivs.jacobian(predict, argnums=2, method="rev"),
        predict_jacobian,
    ),
    "derivs jacobian fwd": (
        "derivs",
        "jacobian fwd",
        "torch.func.jacfwd",
        lambda: derivs.jacobian(predict, argnums=2, method="fwd"),
        predict_jacobian,
    ),
    "derivs jacobian auto": (
        "derivs",
        "jacobian auto",
        "torch.func.jacrev",
        lambda: derivs.jacobian(predict, argnums=2, method="auto"),
        predict_jacobian,
    ),
    "torch.func.jacrev": (
        "torch.func",
        "jacrev",
        None,
        lambda: torch.func.jacrev(predict, argnums=2),
        predict_jacobian,
    ),
    "torch.func.jacfwd": (
        "torch.func",
        "jacfwd",
        None,
        lambda: torch.func.jacfwd(predict, argnums=2),
        predict_jacobian,
    ),
    "derivs hessian fwd_rev": (
        "derivs",
        "hessian fwd_rev",
        "torch.func.hessian",
        lambda: derivs.hessian(predict, argnums=2, method="fwd_rev"),
        predict_hessian,
    ),
    "torch.func.hessian": (
        "torch.func",
        "hessian",
        None,
        lambda: torch.func.hessian(predict, argnums=2),
        predict_hessian,
    ),
    "derivs hvp fwd_rev": (
        "derivs",
        "hvp fwd_rev",
        "torch.func jvp(grad)",
        lambda: _hvp,
        _hvp_reference,
    ),
    "torch.func jvp(grad)": ("torch.func", "jvp(grad)", None, lambda: _func_hvp, _hvp_reference),
}


@pytest.mark.parametrize("label", list(OVERHEAD_CASES))
def test_overhead_tiny(bench: Bench, label: str) -> None:
    """How much does derivs add to a torch.func call when the math is negligible?"""
    impl, method, equiv, factory, reference = OVERHEAD_CASES[label]
    args = predict_inputs(D, D, bench.device)
    bench(
        factory(),
        args,
        group=f"overhead D={D}",
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=reference,
        n_in=D,
        n_out=D,
        shapes={"x": [D], "out": [D]},
    )
