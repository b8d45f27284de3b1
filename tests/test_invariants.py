"""Invariants of every API: dtype and device kept, layouts irrelevant, caller untouched,
shapes right on the meta device, and torch.compile agreeing with eager."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from suite_helpers import (
    IMPL,
    Snapshot,
    assert_close_scaled,
    oracle_run,
    rounding_scale,
    values_of,
)

import derivs
import derivs.strategies as ds

pytestmark = pytest.mark.conformance

SMALL = 12


def leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [t for x in tree for t in leaves(x)]


def run_api(
    api: str, method: str, p: ds.Problem, argnums: Any, v: tuple[torch.Tensor, ...] | None
) -> Any:
    if api in ("hvp", "vhp"):
        assert v is not None
        return IMPL.operator(api)(p.func, p.args, v, method=method)
    return IMPL.operator(api)(p.func, argnums, method=method)(*p.args)


APIS = IMPL.api_params(("jacobian", "hessian", "hvp", "vhp"))


def scalar_only(api: str) -> bool:
    """hvp/vhp need scalar functions; so do Hessians where vector ones are not declared."""
    hessian = api in ("hessian", "batch_hessian")
    return api in ("hvp", "vhp") or (hessian and not IMPL.supports("vector_hessians", api))


@st.composite
def api_problems(
    draw: st.DrawFn, api: str, device: str, dtype: torch.dtype, layout: str | None = None
) -> tuple[ds.Problem, Any, Any]:
    scalar = True if scalar_only(api) else None
    func = ds.functions(
        scalar_output=scalar, max_elements=SMALL if api != "jacobian" else ds.MAX_ELEMENTS
    )
    p = draw(ds.problems(func, device=device, dtype=dtype, layout=layout), label="problem")
    argnums = draw(ds.argnums(p.func.n_args), label="argnums")
    v = draw(ds.tangents_like(p.args), label="vectors") if api in ("hvp", "vhp") else None
    return p, argnums, v


def expected_shapes(api: str, p: ds.Problem, argnums: Any) -> list[tuple[int, ...]]:
    if api in ("hvp", "vhp"):
        return [tuple(s) for s in p.func.in_shapes]
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    out = tuple(p.func.out_shape)
    if api == "jacobian":
        return [(*out, *p.func.in_shapes[a]) for a in nums]
    return [(*out, *p.func.in_shapes[a], *p.func.in_shapes[b]) for a in nums for b in nums]


@pytest.mark.parametrize(("api", "method"), APIS)
@given(data=st.data())
def test_dtype_device_and_shape_kept(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    p, argnums, v = data.draw(api_problems(api, device, dtype))
    result = run_api(api, method, p, argnums, v)
    blocks = leaves(result)
    assert [tuple(b.shape) for b in blocks] == expected_shapes(api, p, argnums)
    for b in blocks:
        assert b.dtype == dtype, f"{api}(method={method!r}) returned {b.dtype} for {dtype} inputs"
        assert b.device.type == torch.device(device).type, (
            f"{api}(method={method!r}) returned a tensor on {b.device}"
        )


@pytest.mark.parametrize(("api", "method"), APIS)
@given(data=st.data())
def test_shapes_on_meta_device(api: str, method: str, data: st.DataObject) -> None:
    """Shape-only: the meta device carries no values, so this checks the shape formulas alone."""
    IMPL.need_device("meta")
    p, argnums, v = data.draw(api_problems(api, "meta", torch.float32))
    result = run_api(api, method, p, argnums, v)
    assert [tuple(b.shape) for b in leaves(result)] == expected_shapes(api, p, argnums)
    assert all(b.device.type == "meta" for b in leaves(result))


@pytest.mark.parametrize(("api", "method"), APIS)
@given(data=st.data())
def test_layout_does_not_change_values(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    """Non-contiguous views (transposed, sliced, expanded, offset) give the contiguous result."""
    layout = data.draw(st.sampled_from(ds.NON_CONTIGUOUS_LAYOUTS), label="layout")
    p, argnums, v = data.draw(api_problems(api, device, dtype, layout=layout))
    dense = p._replace(args=tuple(a.contiguous() for a in p.args))
    assert_close_scaled(
        run_api(api, method, p, argnums, v),
        run_api(api, method, dense, argnums, v),
        values=(*values_of(p), rounding_scale(oracle_run(api, p.func, argnums, v), p.args)),
        context=f"{api}(method={method!r}) on {layout} views vs contiguous copies",
    )


@pytest.mark.parametrize(("api", "method"), APIS)
@given(data=st.data())
def test_caller_tensors_untouched(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    """Values, strides, requires_grad and .grad of the caller's tensors survive every call,
    including tensors that already require grad (a model's parameters)."""
    p, argnums, v = data.draw(api_problems(api, device, dtype))
    flags = data.draw(
        st.lists(st.booleans(), min_size=len(p.args), max_size=len(p.args)), label="requires_grad"
    )
    args = tuple(a.detach().clone().requires_grad_(f) for a, f in zip(p.args, flags, strict=True))
    q = p._replace(args=args)
    snap = Snapshot(args + (v or ()))
    with_grad = run_api(api, method, q, argnums, v)
    snap.check(f"{api}(method={method!r})")
    assert_close_scaled(
        with_grad,
        run_api(api, method, p, argnums, v),
        values=values_of(p),
        context=f"{api}(method={method!r}) with requires_grad={flags} vs without",
    )


BATCH_APIS = IMPL.api_params(("batch_jacobian", "batch_hessian"))


@pytest.mark.parametrize(("api", "method"), BATCH_APIS)
@given(data=st.data())
def test_batch_shapes_dtype_and_caller(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    scalar = True if scalar_only(api) else None
    func = data.draw(
        ds.functions(batch_polymorphic=True, scalar_output=scalar, max_elements=SMALL), label="func"
    )
    p = data.draw(ds.batched_problems(func, device=device, dtype=dtype, in_dims=0), label="problem")
    snap = Snapshot(p.args)
    result = IMPL.operator(api)(p.func, tuple(range(p.func.n_args)), method=method)(*p.args)
    snap.check(f"{api}(method={method!r})")
    out = tuple(p.func.out_shape)
    shapes = p.func.in_shapes
    n = p.func.n_args
    if api == "batch_jacobian":
        expected = [(p.batch_size, *out, *shapes[a]) for a in range(n)]
    else:
        expected = [
            (p.batch_size, *out, *shapes[a], *shapes[b]) for a in range(n) for b in range(n)
        ]
    assert [tuple(b.shape) for b in leaves(result)] == expected
    assert all(b.dtype == dtype for b in leaves(result))


# (name, derivs transform, the torch.func equivalent)
# NOTE: reverse mode only. In torch 2.13 torch.compile fails on many forward-mode programs
# (jacfwd of a vector @ matrix hits an internal assert), and a failure inside jvp leaves the
# process's forward-AD level open: every later forward-mode call in that worker then raises
# "Nested forward mode AD is not supported". So forward-mode transforms are not compiled here.
COMPILE_APIS: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
    ("jacobian-rev", lambda f: derivs.jacobian(f, method="rev"), torch.func.jacrev),
    ("jacobian-vjp_vmap", lambda f: derivs.jacobian(f, method="vjp_vmap"), torch.func.jacrev),
    (
        "hessian-rev_rev",
        lambda f: derivs.hessian(f, method="rev_rev"),
        lambda f: torch.func.jacrev(torch.func.jacrev(f)),
    ),
]


def _compiles(fn: Callable[..., Any], args: tuple[torch.Tensor, ...]) -> bool:
    torch._dynamo.reset()
    try:
        torch.compile(fn, backend="aot_eager")(*args)
    except Exception:
        return False
    return True


@pytest.mark.derivs_only("torch.compile of derivs' reverse-mode transforms")
@pytest.mark.compile
@pytest.mark.parametrize(
    ("name", "transform", "reference"), COMPILE_APIS, ids=[c[0] for c in COMPILE_APIS]
)
@settings(max_examples=2)
@given(data=st.data())
def test_compiled_agrees_with_eager(
    device: str,
    name: str,
    transform: Callable[..., Any],
    reference: Callable[..., Any],
    data: st.DataObject,
) -> None:
    """torch.compile of a derivs transform (aot_eager: dynamo + AOT autograd, no C++ build).

    Where the torch.func equivalent does not compile either, the example is rejected, not
    failed: that is a limit of torch.compile, not of derivs.
    """
    p = data.draw(
        ds.problems(ds.functions(n_args=1, max_elements=SMALL), device=device, dtype=torch.float64),
        label="problem",
    )
    assume(_compiles(reference(p.func), p.args))
    eager = transform(p.func)(*p.args)
    torch._dynamo.reset()
    compiled = torch.compile(transform(p.func), backend="aot_eager")(*p.args)
    assert_close_scaled(
        compiled, eager, values=values_of(p), context=f"torch.compile({name}) vs eager"
    )


@pytest.mark.derivs_only("the memory budget")
def test_meta_sizes_are_reported_not_computed() -> None:
    """The memory guard works from shapes alone: a 10**5-input Hessian is refused on meta."""
    x = torch.empty(10**5, device="meta")
    with pytest.raises(ValueError, match=r"derivs\.hessian: the basis of unit vectors would need"):
        derivs.hessian(lambda t: (t**2).sum())(x)
