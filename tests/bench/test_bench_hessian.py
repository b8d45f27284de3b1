"""Hessian benchmarks: the tutorial's 512 -> 32 ``predict``, every pairing of fwd and rev.

The result is ``(32, 512, 512)``: one Hessian per output, checked against the closed form
``-2 y_i (1 - y_i**2) W_ij W_ik`` before it is timed. The reverse-outer pairings push one
cotangent per entry of the ``(32, 512)`` inner Jacobian (16384) where forward-outer ones push
one tangent per input (512): expect them to be much slower; they run for one or two rounds.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import derivs
from bench.problems import predict, predict_hessian, predict_inputs
from bench.timing import Bench, Case

pytestmark = pytest.mark.bench

N_IN, N_OUT = 512, 32

# label -> (impl, method, torch.func equivalent, factory)
HESSIAN_CASES: dict[str, Case] = {
    **{
        f"derivs {m}": (
            "derivs",
            m,
            "torch.func.hessian" if m == "fwd_rev" else None,
            lambda m=m: derivs.hessian(predict, argnums=2, method=m),
        )
        for m in ("fwd_rev", "rev_rev", "fwd_fwd", "rev_fwd", "auto")
    },
    "torch.func.hessian": (
        "torch.func",
        "hessian",
        None,
        lambda: torch.func.hessian(predict, argnums=2),
    ),
    "closed form": ("closed form", "-2y(1-y**2) W W^T", None, lambda: predict_hessian),
}


@pytest.mark.parametrize("label", list(HESSIAN_CASES))
def test_hessian_512_to_32(bench: Bench, label: str) -> None:
    """Which composition of forward and reverse mode computes the tutorial's Hessian fastest?"""
    impl, method, equiv, factory = HESSIAN_CASES[label]
    args = predict_inputs(N_IN, N_OUT, bench.device)
    # NOTE: rev_fwd peaks at about 4.1 GB here, so the memory guard's default budget (4 GiB)
    # refuses it; timing it takes a larger one.
    with derivs.memory_budget(max(derivs.get_memory_budget(), 8 * 2**30)):
        _time_hessian(bench, label, impl, method, equiv, factory, args)


def _time_hessian(
    bench: Bench, label: str, impl: str, method: str, equiv: str | None, factory: Any, args: Any
) -> None:
    bench(
        factory(),
        args,
        group="hessian 512->32",
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=predict_hessian,
        n_in=N_IN,
        n_out=N_OUT,
        shapes={"x": [N_IN], "out": [N_OUT], "hessian": [N_OUT, N_IN, N_IN]},
        max_rounds=3,
    )
