"""batch_jacobian / batch_hessian: vmap == loop == per-sample oracle; the sum trick where valid.

Problems come with drawn in_dims (ints, tuples with None, nonzero and negative batch dims)
and batch sizes (1 included). The sum trick calls func on the whole batch, so it is handed
``whole_batch(func)``, which moves each batch dim to the front, as a user's batched
function would; coupled functions (batch mean, softmax, cumsum, ... across samples) must be
refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from suite_helpers import IMPL, Snapshot, assert_close_scaled, batched_values, call_repr

import derivs
import derivs.strategies as ds
from derivs import oracles

pytestmark = pytest.mark.conformance
METHODS = IMPL.methods("batch_jacobian")
SMALL = 12  # NOTE: per-sample Hessians are looped over samples by the oracle.


def whole_batch(
    func: ds.GeneratedFunction, dims: tuple[int | None, ...]
) -> Callable[..., torch.Tensor]:
    """``func`` applied to the whole batch: batch dims moved to 0, outputs batched along 0."""

    def batched(*args: torch.Tensor) -> torch.Tensor:
        return func(*[a if d is None else a.movedim(d, 0) for a, d in zip(args, dims, strict=True)])

    batched.__name__ = f"whole_batch_{func.__name__}"
    return batched


def draw(
    data: st.DataObject,
    device: str,
    dtype: torch.dtype,
    api: str,
    coincide: bool | None = None,
    **kwargs: Any,
) -> tuple[ds.BatchedProblem, Any, tuple[int | None, ...]]:
    if api == "batch_hessian" and not IMPL.supports("vector_hessians", api):
        kwargs["scalar_output"] = True
    # NOTE: in_dims other than 0 only where declared (drawn freely otherwise).
    in_dims = None if IMPL.supports("in_dims", api) else 0
    # NOTE: coincide=None draws it once for the function and the batch together: half the
    # draws make sizes coincide (batch == output's leading size, equal argument shapes), so a
    # batch axis left in place keeps its shape and shows in values (drawn apart, both
    # coincided in a quarter of the draws).
    if coincide is None:
        coincide = data.draw(st.booleans(), label="coincide")
    func = ds.functions(batch_polymorphic=True, coincide=coincide, **kwargs)
    p = data.draw(
        ds.batched_problems(func, device=device, dtype=dtype, in_dims=in_dims, coincide=coincide),
        label="problem",
    )
    dims = ds.normalize_in_dims(p.in_dims, p.func.in_shapes)
    batched = [k for k, d in enumerate(dims) if d is not None]
    return p, dims, batched


ORACLES = {
    "batch_jacobian": oracles.loop_batch_jacobian,
    "batch_hessian": oracles.loop_batch_hessian,
}


def values(p: ds.BatchedProblem, api: str, argnums: Any) -> tuple[Any, ...]:
    """The magnitudes the result's rounding is relative to (suite_helpers.batched_values)."""
    return batched_values(p, ORACLES[api], argnums)


def whole(api: str, method: str) -> bool:
    """Whether ``method`` is handed the whole-batch function (derivs' sum trick)."""
    return IMPL.supports("whole_batch", api, method)


def pick_argnums(
    data: st.DataObject, p: ds.BatchedProblem, api: str, method: str, batched: list[int]
) -> Any:
    if whole(api, method):  # the sum trick only differentiates batched arguments
        chosen = data.draw(
            st.lists(st.sampled_from(batched), min_size=1, unique=True), label="argnums"
        )
        return chosen[0] if len(chosen) == 1 else tuple(chosen)
    return data.draw(ds.argnums(p.func.n_args), label="argnums")


def call(
    api: str,
    p: ds.BatchedProblem,
    dims: tuple[int | None, ...],
    argnums: Any,
    method: str,
    **extras: Any,
) -> Any:
    func = whole_batch(p.func, dims) if whole(api, method) else p.func
    return IMPL.operator(api)(func, argnums, in_dims=p.in_dims, method=method, **extras)(*p.args)


@pytest.mark.parametrize("method", IMPL.params("batch_jacobian"))
@given(data=st.data())
def test_batch_jacobian_matches_per_sample_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p, dims, batched = draw(data, device, dtype, "batch_jacobian")
    argnums = pick_argnums(data, p, "batch_jacobian", method, batched)
    snap = Snapshot(p.args)
    result = call("batch_jacobian", p, dims, argnums, method)
    ctx = call_repr("batch_jacobian", p.func, argnums=argnums, in_dims=p.in_dims, method=method)
    snap.check(ctx)
    expected = oracles.loop_batch_jacobian(p.func, p.args, argnums, in_dims=p.in_dims)
    assert_close_scaled(result, expected, values=values(p, "batch_jacobian", argnums), context=ctx)


@pytest.mark.parametrize("method", IMPL.params("batch_hessian"))
@given(data=st.data())
def test_batch_hessian_matches_per_sample_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p, dims, batched = draw(data, device, dtype, "batch_hessian", max_elements=SMALL)
    argnums = pick_argnums(data, p, "batch_hessian", method, batched)
    snap = Snapshot(p.args)
    result = call("batch_hessian", p, dims, argnums, method)
    ctx = call_repr("batch_hessian", p.func, argnums=argnums, in_dims=p.in_dims, method=method)
    snap.check(ctx)
    expected = oracles.loop_batch_hessian(p.func, p.args, argnums, in_dims=p.in_dims)
    assert_close_scaled(result, expected, values=values(p, "batch_hessian", argnums), context=ctx)


@given(data=st.data())
def test_batch_jacobian_sample_b_is_jacobian_of_sample_b(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    """Result [b] equals the Jacobian of sample b alone: no sample attached to another.

    NOTE: coincident sizes in every example (the batch as large as the output's leading axis
    in about two draws in three): a batch axis swapped with that axis keeps the shape.
    """
    IMPL.need("batch_jacobian")
    p, dims, batched = draw(data, device, dtype, "batch_jacobian", coincide=True)
    method = data.draw(st.sampled_from(METHODS), label="method")
    argnums = pick_argnums(data, p, "batch_jacobian", method, batched)
    result = call("batch_jacobian", p, dims, argnums, method)
    scales = values(p, "batch_jacobian", argnums)
    for b in range(p.batch_size):
        single = oracles.loop_jacobian(p.func, p.sample(b), argnums)
        got = tuple(r[b] for r in result) if isinstance(result, tuple) else result[b]
        assert_close_scaled(
            got,
            single,
            values=scales,
            context=f"{call_repr('batch_jacobian', p.func, argnums=argnums, in_dims=p.in_dims, method=method)}[{b}] vs jacobian(sample {b})",
        )


@pytest.mark.parametrize("method", IMPL.params("batch_jacobian", "chunk_size"))
@given(data=st.data())
def test_batch_jacobian_chunk_size_matches_per_sample_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """chunk_size changes no value, with a last chunk that is partial (of the samples, the
    output elements and the input elements alike: whichever the method splits)."""
    p, dims, batched = draw(data, device, dtype, "batch_jacobian")
    argnums = pick_argnums(data, p, "batch_jacobian", method, batched)
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    rows = max(math.prod(p.func.out_shape), 1)
    columns = max(sum(math.prod(p.func.in_shapes[a]) for a in nums), 1)
    chunk = data.draw(ds.partial_chunk_sizes(p.batch_size, rows, columns), label="chunk_size")
    result = call("batch_jacobian", p, dims, argnums, method, chunk_size=chunk)
    ctx = call_repr(
        "batch_jacobian",
        p.func,
        argnums=argnums,
        in_dims=p.in_dims,
        method=method,
        chunk_size=chunk,
    )
    expected = oracles.loop_batch_jacobian(p.func, p.args, argnums, in_dims=p.in_dims)
    assert_close_scaled(result, expected, values=values(p, "batch_jacobian", argnums), context=ctx)


@pytest.mark.derivs_only("the sum trick's coupling refusal")
@pytest.mark.parametrize("api", ["batch_jacobian", "batch_hessian"])
@given(data=st.data())
def test_sum_trick_refuses_coupled_functions(
    device: str, dtype: torch.dtype, api: str, data: st.DataObject
) -> None:
    func = data.draw(
        ds.coupled_functions(n_args=st.integers(1, 2), max_elements=SMALL), label="coupled func"
    )
    p = data.draw(ds.batched_problems(func, device=device, dtype=dtype), label="problem")
    argnums = tuple(range(p.func.n_args))
    with pytest.raises(ValueError, match=rf"derivs\.{api}: func couples samples"):
        getattr(derivs, api)(p.func, argnums, in_dims=p.in_dims, method="sum")(*p.args)


@given(data=st.data())
def test_tutorial_batch_predict(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """in_dims=(None, None, 0): every method equals the closed form (1 - y**2)[..., None] * W."""
    IMPL.need("batch_jacobian", "in_dims")
    p = data.draw(
        ds.tutorial_predict(device=device, dtype=dtype, batch_size=ds.batch_sizes()),
        label="predict",
    )
    method = data.draw(st.sampled_from(METHODS), label="method")
    y = p.func(p.weight, p.bias, p.xs)
    expected = (1 - y**2)[..., :, None] * p.weight
    result = IMPL.batch_jacobian(p.func, 2, in_dims=(None, None, 0), method=method)(*p.batched_args)
    assert_close_scaled(
        result,
        expected,
        values=(p.batched_args, y),
        context=call_repr(
            "batch_jacobian", p.func, argnums=2, in_dims=(None, None, 0), method=method
        ),
    )
