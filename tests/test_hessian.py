"""hessian: every method against the loop and FD oracles, symmetric, and the Jacobian of the Jacobian."""

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
    call_repr,
    fd_check,
    values_of,
)

import derivs.strategies as ds
from derivs import oracles

pytestmark = pytest.mark.conformance
METHODS = IMPL.methods("hessian")
# NOTE: an implementation that declares Hessians of scalar functions only gets scalar ones.
OUTPUTS = {} if IMPL.supports("vector_hessians", "hessian") else {"scalar_output": True}
# NOTE: the loop oracle costs out * (1 + n_in) autograd calls and the FD oracle about
# 12 * n_in gradients, so Hessian problems are smaller than Jacobian ones.
SMALL = 12
TINY = 6


def draw_problem(
    data: st.DataObject,
    device: str,
    dtype: torch.dtype,
    max_elements: int = SMALL,
    **kwargs: object,
) -> ds.Problem:
    kwargs.setdefault("coincide", None)  # half the draws: equal shapes, a square Jacobian
    func = ds.functions(max_elements=max_elements, **{**OUTPUTS, **kwargs})
    return data.draw(ds.problems(func, device=device, dtype=dtype), label="problem")


@pytest.mark.parametrize("method", IMPL.params("hessian"))
@given(data=st.data())
def test_matches_loop_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Scalar and vector outputs, single and tuple argnums (all blocks, mixed ones included)."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    snap = Snapshot(p.args)
    H = IMPL.hessian(p.func, argnums, method=method)(*p.args)
    ctx = call_repr("hessian", p.func, argnums=argnums, method=method)
    snap.check(ctx)
    assert_close_scaled(
        H, oracles.loop_hessian(p.func, p.args, argnums), values=values_of(p), context=ctx
    )


@pytest.mark.parametrize("method", IMPL.params("hessian"))
@given(data=st.data())
def test_mixed_blocks_match_loop_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Two or more arguments, every one differentiated: the blocks ``H[i][j]``, ``i != j``.

    The property above meets them only when it draws a tuple of several arguments (about one
    example in three); a Hessian that drops or transposes its mixed blocks is caught here.
    """
    p = draw_problem(data, device, dtype, n_args=st.integers(2, ds.MAX_ARGS))
    n = p.func.n_args
    argnums = data.draw(ds.argnums(n, allow_int=False, min_size=n), label="argnums")
    H = IMPL.hessian(p.func, argnums, method=method)(*p.args)
    ctx = call_repr("hessian", p.func, argnums=argnums, method=method)
    assert_close_scaled(
        H, oracles.loop_hessian(p.func, p.args, argnums), values=values_of(p), context=ctx
    )


@pytest.mark.parametrize("method", IMPL.params("hessian"))
@given(data=st.data())
def test_mixed_blocks_of_an_asymmetric_coupling(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Two arguments of one shape coupled through a non-symmetric W (every example): a mixed
    block returned transposed keeps its shape, so only a coupling like this shows it.

    NOTE: non-negative argnums in either order; negative ones are the other properties' draws.
    """
    f, args, W = asymmetric_coupling(data, device, dtype, SMALL)
    argnums = tuple(data.draw(st.permutations([0, 1]), label="argnums"))
    H = IMPL.hessian(f, argnums, method=method)(*args)
    assert_close_scaled(
        H,
        oracles.loop_hessian(f, args, argnums),
        values=(args, f(*args), W),
        context=f"hessian(x^T W y + sum(x**3 y), argnums={argnums}, method={method!r})",
    )


@pytest.mark.parametrize("method", IMPL.params("hessian"))
@given(data=st.data())
def test_matches_finite_differences(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype, max_elements=TINY)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    H = IMPL.hessian(p.func, argnums, method=method)(*p.args)
    fd_check(
        H,
        p.func,
        p.args,
        argnums,
        order=2,
        real_analytic=p.func.real_analytic,
        context=call_repr("hessian", p.func, argnums=argnums, method=method),
    )


@given(data=st.data())
def test_symmetric(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """H[i][j] == H[j][i] with the two input groups swapped, for every output element."""
    IMPL.need("hessian")
    p = draw_problem(data, device, dtype)
    n = p.func.n_args
    argnums = tuple(range(n))
    method = data.draw(st.sampled_from(METHODS), label="method")
    H = IMPL.hessian(p.func, argnums, method=method)(*p.args)
    out = len(p.func.out_shape)
    for i in range(n):
        for j in range(n):
            di, dj = len(p.func.in_shapes[i]), len(p.func.in_shapes[j])
            perm = (*range(out), *range(out + dj, out + dj + di), *range(out, out + dj))
            assert_close_scaled(
                H[j][i].permute(perm),
                H[i][j],
                values=values_of(p),
                context=f"{call_repr('hessian', p.func, argnums=argnums, method=method)}: H[{j}][{i}]^T vs H[{i}][{j}]",
            )


@pytest.mark.parametrize(("outer", "inner"), IMPL.compositions())
@given(data=st.data())
def test_is_jacobian_of_jacobian(
    device: str, dtype: torch.dtype, outer: str, inner: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    method = IMPL.composed_method(outer, inner)
    composed = IMPL.jacobian(IMPL.jacobian(p.func, argnums, method=inner), argnums, method=outer)(
        *p.args
    )
    assert_close_scaled(
        IMPL.hessian(p.func, argnums, method=method)(*p.args),
        composed,
        values=values_of(p),
        context=f"{call_repr('hessian', p.func, argnums=argnums, method=method)} vs jacobian(jacobian(f))",
    )


@pytest.mark.parametrize("method", IMPL.params("hessian", "chunk_size"))
@given(data=st.data())
def test_chunk_size_does_not_change_values(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    total = max(
        sum(
            max(1, len(p.func.in_shapes[a]) and int(torch.tensor(p.func.in_shapes[a]).prod()))
            for a in nums
        ),
        1,
    )
    chunk = data.draw(ds.partial_chunk_sizes(total), label="chunk_size")  # the last partial
    whole = IMPL.hessian(p.func, argnums, method=method)(*p.args)
    chunked = IMPL.hessian(p.func, argnums, method=method, chunk_size=chunk)(*p.args)
    assert_close_scaled(
        chunked,
        whole,
        values=values_of(p),
        context=call_repr("hessian", p.func, argnums=argnums, method=method, chunk_size=chunk),
    )


@given(data=st.data())
def test_tutorial_predict_closed_form(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Vector-valued: d2 y_i / dx dx = -2 y_i (1 - y_i**2) W_i W_i^T for every method."""
    IMPL.need("hessian", "vector_hessians")
    p = data.draw(ds.tutorial_predict(device=device, dtype=dtype, max_features=8), label="predict")
    method = data.draw(st.sampled_from(METHODS), label="method")
    y = p.func(*p.args)
    W = p.weight
    expected = (-2 * y * (1 - y**2))[:, None, None] * W[:, :, None] * W[:, None, :]
    assert_close_scaled(
        IMPL.hessian(p.func, 2, method=method)(*p.args),
        expected,
        values=values_of(p),
        context=call_repr("hessian", p.func, argnums=2, method=method) + f" [{p.kind}]",
    )
