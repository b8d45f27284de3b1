"""hvp and vhp: every method equals the dense product with the loop-oracle Hessian."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from suite_helpers import (
    IMPL,
    Snapshot,
    assert_close_scaled,
    asymmetric_coupling,
    contract,
    oracle_result,
    values_of,
)

import derivs.strategies as ds
from derivs import oracles

pytestmark = pytest.mark.conformance
HVP = IMPL.methods("hvp")
VHP = IMPL.methods("vhp")
SMALL = 8  # NOTE: the reference is a dense loop-oracle Hessian: n_in * (1 + n_in) grads.


def draw(
    data: st.DataObject, device: str, dtype: torch.dtype
) -> tuple[ds.Problem, tuple[torch.Tensor, ...]]:
    func = ds.functions(scalar_output=True, max_elements=SMALL, coincide=None)  # equal shapes
    p = data.draw(ds.problems(func, device=device, dtype=dtype), label="problem")
    v = data.draw(ds.tangents_like(p.args), label="vectors")
    return p, v


@pytest.mark.parametrize("method", IMPL.params("hvp"))
@given(data=st.data())
def test_hvp_is_H_times_v(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """All blocks, mixed ones included: hvp_i = sum_j H[i][j] v_j."""
    p, v = draw(data, device, dtype)
    snap = Snapshot(p.args + v)
    result = IMPL.hvp(p.func, p.args, v, method=method)
    snap.check(f"hvp(method={method!r})")
    expected = oracle_result("hvp", p.func, p.args, None, v)
    assert_close_scaled(
        result,
        expected,
        values=(*values_of(p), v),
        context=f"hvp(f, primals, tangents, method={method!r})",
    )


@pytest.mark.parametrize("method", IMPL.params("vhp"))
@given(data=st.data())
def test_vhp_is_v_times_H(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p, v = draw(data, device, dtype)
    snap = Snapshot(p.args + v)
    result = IMPL.vhp(p.func, p.args, v, method=method)
    snap.check(f"vhp(method={method!r})")
    expected = oracle_result("vhp", p.func, p.args, None, v)
    assert_close_scaled(
        result,
        expected,
        values=(*values_of(p), v),
        context=f"vhp(f, primals, cotangents, method={method!r})",
    )


@given(data=st.data())
def test_hvp_equals_vhp(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Smooth functions have symmetric Hessians, so H v == v H for every pair of methods."""
    IMPL.need("hvp")
    IMPL.need("vhp")
    p, v = draw(data, device, dtype)
    hm = data.draw(st.sampled_from(HVP), label="hvp method")
    vm = data.draw(st.sampled_from(VHP), label="vhp method")
    assert_close_scaled(
        IMPL.hvp(p.func, p.args, v, method=hm),
        IMPL.vhp(p.func, p.args, v, method=vm),
        values=(*values_of(p), v),
        context=f"hvp(method={hm!r}) vs vhp(method={vm!r})",
    )


@pytest.mark.parametrize("api", ["hvp", "vhp"])
@given(data=st.data())
def test_linear_in_the_vector(
    device: str, dtype: torch.dtype, api: str, data: st.DataObject
) -> None:
    """P(a v + b w) == a P(v) + b P(w)."""
    IMPL.need(api)
    p, v = draw(data, device, dtype)
    w = data.draw(ds.tangents_like(p.args), label="second vectors")
    a, b = data.draw(st.sampled_from([(2.0, -0.5), (-1.0, 3.0), (0.25, 1.0)]), label="coefficients")
    op = IMPL.operator(api)
    method = data.draw(st.sampled_from(IMPL.methods(api)), label="method")
    combined = tuple(a * x + b * y for x, y in zip(v, w, strict=True))
    lhs = op(p.func, p.args, combined, method=method)
    rhs = tuple(
        a * x + b * y
        for x, y in zip(
            op(p.func, p.args, v, method=method), op(p.func, p.args, w, method=method), strict=True
        )
    )
    assert_close_scaled(
        lhs,
        rhs,
        values=(*values_of(p), v, w, combined),
        context=f"{api}(method={method!r}) linearity, a={a}, b={b}",
    )


@pytest.mark.parametrize(("api", "method"), IMPL.api_params(("hvp", "vhp")))
@given(data=st.data())
def test_mixed_blocks_of_an_asymmetric_coupling(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    """f(x, y) = x^T W y + sum(x**3 y) (suite_helpers.asymmetric_coupling): a product that
    uses H[1][0] for H[0][1], drops it, or puts v in the wrong place is caught."""
    f, (x, y), W = asymmetric_coupling(data, device, dtype, SMALL)
    v = data.draw(ds.tangents_like((x, y)), label="vectors")
    H = oracles.loop_hessian(f, (x, y), (0, 1))
    result = IMPL.operator(api)(f, (x, y), v, method=method)
    assert_close_scaled(
        result,
        contract(H, v, left=api == "vhp"),
        values=((x, y), v, W),
        context=f"{api}(x^T W y + sum(x**3 y), method={method!r})",
    )
