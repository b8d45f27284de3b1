"""Hessian-vector products: the tutorial's ``f(x) = x.sin().sum()`` at N=2048, 10**6 and 10**7.

``H = diag(-sin x)``, so ``H @ v = v @ H = -sin(x) * v``: the closed form every method is
checked against before it is timed. ``dense`` materialises ``H`` (N**2 entries): 16 MiB at
N=2048, 4 TB at N=10**6, where it must not run; ``test_dense_refused_at_1e6`` checks that
derivs' memory guard refuses it before allocating anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import derivs
from bench.problems import sin_sum as f
from bench.problems import sin_sum_products, vector_inputs
from bench.timing import Bench
from derivs import _memory

pytestmark = pytest.mark.bench


def tutorial_hvp(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tutorial's ``hvp``: ``jvp(grad(f), primals, tangents)[1]``."""
    return (torch.func.jvp(torch.func.grad(f), (x,), (v,))[1],)


def tutorial_hvp_revrev(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tutorial's ``hvp_revrev``: ``vjp(grad(f), *primals)`` applied to the tangents."""
    _, vjp_fn = torch.func.vjp(torch.func.grad(f), x)
    return tuple(vjp_fn(v))


def _derivs(product: str, method: str) -> Callable[..., Any]:
    op = derivs.hvp if product == "hvp" else derivs.vhp

    def call(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return op(f, (x,), (v,), method=method)

    return call


# label -> (impl, method, torch.func equivalent, function of (x, v))
PRODUCT_CASES: dict[str, tuple[str, str, str | None, Callable[..., Any]]] = {
    "derivs hvp auto": ("derivs", "hvp auto", "torch.func vjp(grad)", _derivs("hvp", "auto")),
    "derivs vhp auto": ("derivs", "vhp auto", "torch.func vjp(grad)", _derivs("vhp", "auto")),
    "derivs hvp fwd_rev": (
        "derivs",
        "hvp fwd_rev",
        "torch.func jvp(grad)",
        _derivs("hvp", "fwd_rev"),
    ),
    "derivs hvp rev_rev": (
        "derivs",
        "hvp rev_rev",
        "torch.func vjp(grad)",
        _derivs("hvp", "rev_rev"),
    ),
    "derivs hvp dense": ("derivs", "hvp dense", None, _derivs("hvp", "dense")),
    "derivs vhp rev_rev": (
        "derivs",
        "vhp rev_rev",
        "torch.func vjp(grad)",
        _derivs("vhp", "rev_rev"),
    ),
    "derivs vhp dense": ("derivs", "vhp dense", None, _derivs("vhp", "dense")),
    "torch.func jvp(grad)": ("torch.func", "jvp(grad)", None, tutorial_hvp),
    "torch.func vjp(grad)": ("torch.func", "vjp(grad)", None, tutorial_hvp_revrev),
    "closed form": ("closed form", "-sin(x) * v", None, sin_sum_products),
}
DENSE_MAX_N = 4096  # a dense float32 Hessian of 64 MiB; beyond that it is not a fair contender


def _cases(n: int) -> list[Any]:
    return [
        pytest.param(n, label, id=f"N={n}-{label}")
        for label in PRODUCT_CASES
        if "dense" not in label or n <= DENSE_MAX_N
    ]


@pytest.mark.parametrize(("n", "label"), _cases(2048) + _cases(10**6))
def test_hessian_vector_product(bench: Bench, n: int, label: str) -> None:
    """What is the cheapest way to get H @ v (and v @ H)?"""
    impl, method, equiv, fn = PRODUCT_CASES[label]
    x, v = vector_inputs(n, bench.device)
    bench(
        fn,
        (x, v),
        group="hvp/vhp N=10**6" if n == 10**6 else f"hvp/vhp N={n}",
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=sin_sum_products,
        n=n,
        shapes={"x": [n], "v": [n]},
    )


@pytest.mark.parametrize("product", ["hvp", "vhp"])
def test_dense_refused_at_1e6(device: str, product: str) -> None:
    """dense at N=10**6 would materialise 4 TB: derivs' memory guard refuses it up front."""
    x = torch.zeros(10**6, device=device)
    with derivs.memory_budget(4 * 2**30), pytest.raises(ValueError, match="memory budget"):
        _derivs(product, "dense")(x, x)


# --- at scale: N = 10**7, time and peak memory ---------------------------------------------

SCALE_N = 10**7


def _forward_backward(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One forward and backward pass of f: the memory reference for the products."""
    x = x.detach().requires_grad_()
    return torch.autograd.grad(f(x), x)[0]


SCALE_CASES: dict[str, tuple[str, str, str | None, Callable[..., Any]]] = {
    "derivs hvp": ("derivs", "hvp auto", "torch.func jvp(grad)", _derivs("hvp", "auto")),
    "derivs vhp": ("derivs", "vhp auto", "torch.func vjp(grad)", _derivs("vhp", "auto")),
    "torch.func jvp(grad)": ("torch.func", "jvp(grad)", None, tutorial_hvp),
    "torch.func vjp(grad)": ("torch.func", "vjp(grad)", None, tutorial_hvp_revrev),
}


@pytest.mark.parametrize("label", list(SCALE_CASES))
def test_products_at_scale(bench: Bench, label: str) -> None:
    """hvp/vhp at N=10**7 against torch.func: time, and the peak memory in extra_info.

    ``peak_bytes``: the allocator's peak while the call runs (``derivs._memory.measured_peak``;
    on CUDA ``max_memory_allocated``), beside ``fwd_bwd_bytes``, that of one forward and
    backward pass of ``f`` (``python -m bench.products_at_scale`` has the other functions).
    """
    impl, method, equiv, fn = SCALE_CASES[label]
    x, v = vector_inputs(SCALE_N, bench.device)
    peak = _memory.measured_peak(lambda: fn(x, v), bench.device)[0]
    reference = _memory.measured_peak(lambda: _forward_backward(x, v), bench.device)[0]
    bench(
        fn,
        (x, v),
        group="hvp/vhp N=10**7",
        label=label,
        impl=impl,
        method=method,
        equiv=equiv,
        reference=sin_sum_products,
        n=SCALE_N,
        shapes={"x": [SCALE_N], "v": [SCALE_N]},
        peak_bytes=peak,
        fwd_bwd_bytes=reference,
    )
