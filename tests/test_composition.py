"""Composition: a transform's result under torch.func.vmap, torch.func.jvp and torch.autograd.grad.

Each property needs a declared feature (vmap, forward_mode, reverse_mode) and is checked
against the loop oracles alone:

* ``vmap(jacobian(f))`` / ``vmap(hessian(f))`` over a batch equal the per-sample loop oracle;
* ``jvp`` through ``jacobian(f, a)`` in direction ``v`` equals ``sum_b H[a][b] . v_b``;
* ``grad`` of ``<C, jacobian(f, a)>`` in ``x_b`` equals ``C . H[a][b]`` (C a drawn cotangent).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from suite_helpers import IMPL, assert_close_scaled, batched_values, values_of

import derivs.strategies as ds
from derivs import oracles

pytestmark = pytest.mark.conformance
SMALL = 6  # NOTE: the references are loop-oracle Hessians: n_in * (1 + n_in) grads.


def scalar_only(api: str) -> dict[str, bool]:
    return (
        {}
        if api == "jacobian" or IMPL.supports("vector_hessians", api)
        else {"scalar_output": True}
    )


def dense_problem(data: st.DataObject, device: str, dtype: torch.dtype) -> ds.Problem:
    """A problem on contiguous inputs.

    NOTE: torch.func's forward mode refuses inputs with internal overlap (expanded views);
    here jvp is the harness, not the implementation under test, so its inputs are dense.
    test_invariants checks the layouts.
    """
    func = ds.functions(max_depth=2, max_elements=SMALL)
    p = data.draw(ds.problems(func, device=device, dtype=dtype), label="problem")
    return p._replace(args=tuple(a.contiguous() for a in p.args))


def hessian_times(
    H: tuple[tuple[torch.Tensor, ...], ...], a: int, vs: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """``sum_b H[a][b] . v_b``: the directional derivative of the Jacobian block a."""
    return sum(torch.tensordot(H[a][b], v, dims=v.dim()) for b, v in enumerate(vs))  # type: ignore[return-value]


@pytest.mark.parametrize(("api", "method"), IMPL.api_params(("jacobian", "hessian"), "vmap"))
@given(data=st.data())
def test_vmap_over_the_transform(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    func = ds.functions(batch_polymorphic=True, max_depth=2, max_elements=SMALL, **scalar_only(api))
    p = data.draw(ds.batched_problems(func, device=device, dtype=dtype), label="problem")
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    transform = IMPL.operator(api)(p.func, argnums, method=method)
    result = torch.func.vmap(transform, in_dims=p.in_dims)(*p.args)
    oracle = oracles.loop_batch_jacobian if api == "jacobian" else oracles.loop_batch_hessian
    assert_close_scaled(
        result,
        oracle(p.func, p.args, argnums, in_dims=p.in_dims),
        values=batched_values(p, oracle, argnums),
        context=f"vmap({api}({p.func.__name__}, argnums={argnums!r}, method={method!r}), in_dims={p.in_dims!r})",
    )


@pytest.mark.parametrize("method", IMPL.params("jacobian", "forward_mode"))
@given(data=st.data())
def test_jvp_through_the_jacobian(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = dense_problem(data, device, dtype)
    a = data.draw(st.integers(0, p.func.n_args - 1), label="argnum")
    v = data.draw(ds.tangents_like(p.args), label="tangents")
    _, derivative = torch.func.jvp(IMPL.jacobian(p.func, a, method=method), p.args, v)
    H = oracles.loop_hessian(p.func, p.args, tuple(range(p.func.n_args)))
    assert_close_scaled(
        derivative,
        hessian_times(H, a, v),
        values=(*values_of(p), v),
        context=f"jvp(jacobian({p.func.__name__}, argnums={a}, method={method!r}), args, tangents)",
    )


@pytest.mark.parametrize("method", IMPL.params("jacobian", "reverse_mode"))
@given(data=st.data())
def test_grad_through_the_jacobian(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = dense_problem(data, device, dtype)
    a = data.draw(st.integers(0, p.func.n_args - 1), label="argnum")
    args = tuple(x.detach().clone().requires_grad_() for x in p.args)
    jac = IMPL.jacobian(p.func, a, method=method)(*args)
    cot = data.draw(ds.tensors(tuple(jac.shape), dtype, device, stream=7), label="cotangent")
    if jac.requires_grad:
        grads = torch.autograd.grad((jac * cot).sum(), args, allow_unused=True)
    else:  # no graph: right only if the Hessian is zero, which the comparison decides
        grads = (None,) * len(args)
    grads = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(args, grads, strict=True))
    H = oracles.loop_hessian(p.func, p.args, tuple(range(p.func.n_args)))
    expected = tuple(torch.tensordot(cot, H[a][b], dims=cot.dim()) for b in range(p.func.n_args))
    assert_close_scaled(
        grads,
        expected,
        values=(*values_of(p), cot),
        context=f"grad(<C, jacobian({p.func.__name__}, argnums={a}, method={method!r})>, args)"
        f"{'' if jac.requires_grad else ' (the Jacobian carries no graph)'}",
    )
