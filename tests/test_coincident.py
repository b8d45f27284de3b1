"""Meta-tests of the coincident-size option (derivs.strategies._coincident).

Drawn with ``coincide=True``, a function's arguments share one shape, its output has as many
elements as each argument (a square Jacobian), and a batched problem's batch size equals the
output's leading size where that is a valid batch size: the cases in which a transposed
block, swapped argnum blocks or a batch axis left in place keep the right shape.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import derivs.strategies as ds


@given(func=ds.functions(coincide=True))
def test_coincident_functions_share_shapes_and_are_square(func: ds.GeneratedFunction) -> None:
    first = func.in_shapes[0]
    assert all(s == first for s in func.in_shapes), func.in_shapes
    assert len(first) >= 1 and all(side >= 2 for side in first), first
    assert 2 <= first[0] <= ds.MAX_BATCH
    assert math.prod(func.out_shape) == math.prod(first) or func.out_shape == ()
    assert math.prod(first) <= ds.MAX_ELEMENTS


@given(func=ds.functions(coincide=True, scalar_output=False))
def test_a_transposed_jacobian_keeps_its_shape(func: ds.GeneratedFunction) -> None:
    """The point of the option: J read as (in, out) has J's shape, so only values differ."""
    args = tuple(torch.rand(s, dtype=torch.float64) for s in func.in_shapes)
    n_out, n_in = math.prod(func.out_shape), math.prod(func.in_shapes[0])
    assert n_out == n_in
    J = torch.autograd.functional.jacobian(func, args)[0].reshape(n_out, n_in)
    assert J.T.shape == J.shape


@given(
    func=ds.functions(batch_polymorphic=True, coincide=True, scalar_output=False),
    data=st.data(),
)
def test_coincident_batches_match_the_leading_size(
    func: ds.GeneratedFunction, data: st.DataObject
) -> None:
    p = data.draw(ds.batched_problems(func, dtype=torch.float64, coincide=True))
    expected = ds.coincident_batch_size(func.in_shapes, func.out_shape, min_size=func.min_batch)
    assert expected is not None  # a coincident signature always has a leading side <= MAX_BATCH
    assert p.batch_size == expected
    lead = func.out_shape[0] if 2 <= func.out_shape[0] <= ds.MAX_BATCH else func.in_shapes[0][0]
    assert p.batch_size == lead


@given(func=ds.functions(n_args=2, in_shapes=[(3,), (2, 2)], coincide=True))
def test_given_shapes_are_kept(func: ds.GeneratedFunction) -> None:
    assert func.in_shapes == ((3,), (2, 2))
    assert math.prod(func.out_shape) in (3, 1)


def test_coincide_none_draws_both_kinds() -> None:
    """``coincide=None`` draws per function: coincident and independent sizes both occur."""
    strategy = ds.functions(coincide=None, n_args=2, max_depth=0)
    # NOTE: about 2 draws in 3 coincide (the coin, plus independent sizes that happen to be
    # equal), so a profile of 8 examples misses the other kind about 1 run in 40; 200
    # examples miss it with probability below 1e-30.
    quick = settings(database=None, max_examples=200)
    same = find(strategy, lambda f: f.in_shapes[0] == f.in_shapes[1] != (), settings=quick)
    assert min(same.in_shapes[0]) >= 1
    differ = find(strategy, lambda f: f.in_shapes[0] != f.in_shapes[1], settings=quick)
    assert differ.in_shapes[0] != differ.in_shapes[1]


@pytest.mark.parametrize("value", ["yes", 1])
def test_coincide_must_be_a_bool_or_none(value: object) -> None:
    with pytest.raises(InvalidArgument, match="coincide"):
        ds.functions(coincide=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="coincide"):
        ds.batched_problems(coincide=value)  # type: ignore[arg-type]
