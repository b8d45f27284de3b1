"""jacobian: every method against the loop and finite-difference oracles, and against itself.

Generated functions (strategies.functions) have 1-3 inputs of 0-4 dims, in varied layouts;
argnums are single, tuples, negative. AD-vs-AD comparisons use assert_close's default
(tight) tolerance; FD comparisons add the oracle's own error estimate.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from suite_helpers import Snapshot, assert_close, call_repr, fd_check, values_of

import derivs
import strategies as gs
from derivs import oracles

METHODS = derivs.METHODS["jacobian"]
jacobian_module = sys.modules["derivs.jacobian"]


def draw_problem(
    data: st.DataObject, device: str, dtype: torch.dtype, **kwargs: object
) -> gs.Problem:
    return data.draw(
        gs.problems(gs.functions(**kwargs), device=device, dtype=dtype), label="problem"
    )


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_matches_loop_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Every method equals the naive row loop (tight: AD vs AD), whatever argnums."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")
    snap = Snapshot(p.args)
    jac = derivs.jacobian(p.func, argnums, method=method)(*p.args)
    ctx = call_repr("jacobian", p.func, argnums=argnums, method=method)
    snap.check(ctx)
    assert_close(
        jac, oracles.loop_jacobian(p.func, p.args, argnums), values=values_of(p), context=ctx
    )


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_matches_finite_differences(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Every method equals the FD oracle within the oracle's error estimate."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")
    jac = derivs.jacobian(p.func, argnums, method=method)(*p.args)
    fd_check(
        jac,
        p.func,
        p.args,
        argnums,
        order=1,
        real_analytic=p.func.real_analytic,
        context=call_repr("jacobian", p.func, argnums=argnums, method=method),
    )


@given(data=st.data())
def test_methods_agree_tightly(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """fwd == rev == vjp_vmap == loop == auto on the same call."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")
    results = {m: derivs.jacobian(p.func, argnums, method=m)(*p.args) for m in METHODS}
    for m in METHODS[1:]:
        assert_close(
            results[m],
            results[METHODS[0]],
            values=values_of(p),
            context=f"{call_repr('jacobian', p.func, argnums=argnums, method=m)} vs method={METHODS[0]!r}",
        )


@given(data=st.data())
def test_tuple_argnums_are_the_single_blocks(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    """jacobian(f, (i, j))[k] == jacobian(f, argnums[k]): blocks in argnums order, none swapped."""
    p = draw_problem(data, device, dtype, n_args=st.integers(2, gs.MAX_ARGS))
    argnums = data.draw(gs.argnums(p.func.n_args, allow_int=False, min_size=2), label="argnums")
    method = data.draw(st.sampled_from(METHODS), label="method")
    blocks = derivs.jacobian(p.func, argnums, method=method)(*p.args)
    assert isinstance(blocks, tuple) and len(blocks) == len(argnums)
    for k, a in enumerate(argnums):
        single = derivs.jacobian(p.func, a, method=method)(*p.args)
        assert_close(
            blocks[k],
            single,
            values=values_of(p),
            context=f"{call_repr('jacobian', p.func, argnums=argnums, method=method)}[{k}] vs argnums={a}",
        )


@pytest.mark.parametrize("method", [m for m in METHODS if m != "loop"])
@given(data=st.data())
def test_chunk_size_does_not_change_values(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")
    nums = gs.normalize_argnums(argnums, p.func.n_args)
    out_n = math.prod(p.func.out_shape)
    in_n = sum(math.prod(p.func.in_shapes[a]) for a in nums)
    total = max(out_n, in_n, 1)
    chunk = data.draw(gs.chunk_sizes(total), label="chunk_size")
    whole = derivs.jacobian(p.func, argnums, method=method)(*p.args)
    chunked = derivs.jacobian(p.func, argnums, method=method, chunk_size=chunk)(*p.args)
    assert_close(
        chunked,
        whole,
        values=values_of(p),
        context=call_repr("jacobian", p.func, argnums=argnums, method=method, chunk_size=chunk),
    )


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_has_aux_returns_aux_untouched(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")

    def with_aux(*args: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = p.func(*args)
        return out, {"out": out.detach() * 2, "first": args[0].detach() + 1}

    jac, aux = derivs.jacobian(with_aux, argnums, method=method, has_aux=True)(*p.args)
    ctx = call_repr("jacobian", p.func, argnums=argnums, method=method, has_aux=True)
    assert_close(
        jac,
        derivs.jacobian(p.func, argnums, method=method)(*p.args),
        values=values_of(p),
        context=ctx,
    )
    assert_close(
        aux,
        {"out": p.func(*p.args) * 2, "first": p.args[0] + 1},
        values=values_of(p),
        context=f"{ctx} aux",
    )


@given(data=st.data())
def test_auto_equals_the_method_it_picks(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(gs.argnums(p.func.n_args), label="argnums")
    nums = gs.normalize_argnums(argnums, p.func.n_args)
    fwd = jacobian_module.prefers_forward(
        math.prod(p.func.out_shape), sum(math.prod(p.func.in_shapes[a]) for a in nums)
    )
    picked = "fwd" if fwd else "vjp_vmap"
    note(f"auto picks {picked}")
    auto = derivs.jacobian(p.func, argnums)(*p.args)
    assert_close(
        auto,
        derivs.jacobian(p.func, argnums, method=picked)(*p.args),
        values=values_of(p),
        context=f"{call_repr('jacobian', p.func, argnums=argnums)} vs method={picked!r}",
    )


@given(data=st.data())
def test_tutorial_predict_closed_form(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """The tutorial's family, tall, wide and square: every method equals (1 - y**2)[:, None] * W."""
    p = data.draw(gs.tutorial_predict(device=device, dtype=dtype), label="predict")
    method = data.draw(st.sampled_from(METHODS), label="method")
    y = p.func(*p.args)
    expected = (1 - y**2)[:, None] * p.weight
    assert_close(
        derivs.jacobian(p.func, 2, method=method)(*p.args),
        expected,
        values=values_of(p),
        context=call_repr("jacobian", p.func, argnums=2, method=method) + f" [{p.kind}]",
    )
