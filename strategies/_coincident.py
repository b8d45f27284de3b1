"""Coincident sizes: signatures and batch sizes chosen so that a moved axis changes values.

A transposed Jacobian, a batch axis left in place or two argnum blocks swapped change the
*shape* of a result whenever the sizes involved differ, and any test catches a wrong shape.
When the sizes coincide, the shape is right and only the values are wrong, so a bug of that
class hides from independently drawn sizes, which rarely coincide. These draws make them
coincide on purpose:

* every argument has the same shape (``x0``, ``x1``, ... blocks are interchangeable);
* the output has the same number of elements as each input (the Jacobian is square),
  laid out as the input, its reverse, or flat;
* the batch size equals the output's leading size (or else the input's), the case where a
  forgotten ``movedim(1, 0)`` in the sum trick still has the right shape.

Sides are at least 2 (a size-1 axis moves nowhere) and the leading side at most
``MAX_BATCH``, so a batch can match it.

A dropped or doubled last chunk is the same kind of bug for ``chunk_size``: invisible when the
chunk size divides the work. :func:`partial_chunk_sizes` draws sizes that leave a remainder
for every count of work given (rows and columns alike), so the last chunk is always partial.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._basic import Shape
from ._caps import MAX_ARGS, MAX_BATCH, MAX_DIMS, MAX_ELEMENTS, MAX_SIDE, check_int

#: the coincidences drawn (for documentation and meta-tests)
COINCIDENCES = ("equal_arg_shapes", "square_jacobian", "batch_is_leading_size")


@st.composite
def coincident_shape(
    draw: st.DrawFn, *, max_dims: int = MAX_DIMS, max_elements: int = MAX_ELEMENTS
) -> Shape:
    """A shape with sides >= 2, the leading one <= MAX_BATCH, often all sides equal.

    NOTE: all sides equal (``(3, 3)``, ``(2, 2, 2)``) is the case where moving any axis to
    any place keeps the shape, so each further side repeats the leading one half the time.
    """
    ndim_cap = max(1, min(max_dims, int(math.log2(max(max_elements, 2)))))
    ndim = draw(st.integers(1, ndim_cap), label="coincident ndim")
    lead = draw(st.integers(2, min(MAX_BATCH, max(2, max_elements // 2 ** (ndim - 1)))))
    sides = [lead]
    for _ in range(ndim - 1):
        room = max_elements // math.prod(sides)
        if room < 2:
            break
        other = st.integers(2, min(MAX_SIDE, room))
        sides.append(draw(st.just(lead) | other if lead <= room else other))
    return tuple(sides)


@st.composite
def coincident_signatures(
    draw: st.DrawFn,
    *,
    n_args: Any = None,
    in_shapes: Any = None,
    out_shape: Any = None,
    scalar_output: bool | None = None,
    max_dims: int = MAX_DIMS,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[tuple[Shape, ...], Shape]:
    """``(in_shapes, out_shape)`` with the coincidences above, where the caller left them open.

    Given ``in_shapes`` are kept (and the output matched to the first); a given ``out_shape``
    or ``scalar_output=True`` keeps the output as asked.
    """
    if in_shapes is not None:
        ins = draw(in_shapes) if isinstance(in_shapes, st.SearchStrategy) else in_shapes
        ins = tuple(tuple(s) for s in ins)
    else:
        if n_args is None:
            n_args = st.integers(1, MAX_ARGS)
        n = draw(n_args) if isinstance(n_args, st.SearchStrategy) else n_args
        shape = draw(coincident_shape(max_dims=max_dims, max_elements=max_elements))
        ins = (shape,) * n
    if out_shape is not None:
        out = draw(out_shape) if isinstance(out_shape, st.SearchStrategy) else out_shape
        return ins, tuple(out)
    if scalar_output or not ins[0]:
        return ins, ()
    first = ins[0]
    layouts = [first, tuple(reversed(first)), (math.prod(first),)]
    return ins, draw(st.sampled_from(layouts), label="coincident output layout")


def coincident_batch_size(
    in_shapes: tuple[Shape, ...], out_shape: Shape, *, min_size: int = 1
) -> int | None:
    """The output's leading size, else the first input's, when it is a valid batch size."""
    for shape in (out_shape, *in_shapes):
        if shape and max(min_size, 2) <= shape[0] <= MAX_BATCH:
            return shape[0]
    return None


def partial_chunk_sizes(*totals: int) -> st.SearchStrategy[int]:
    """``chunk_size`` values that divide none of ``totals``: the last chunk is always partial.

    ``totals`` are the counts of work a chunked transform may split (a Jacobian's output
    elements for reverse mode, its input elements for forward mode, a batch's samples).
    Sizes from 2 below the largest total come first (several chunks, the last one partial);
    ``max(totals) + 1`` and ``+ 2`` (one partial chunk) are always among them. Shrinks toward
    the smallest.

    >>> from hypothesis import find
    >>> find(partial_chunk_sizes(6, 4), lambda c: True)
    5
    """
    if not totals:
        raise InvalidArgument("partial_chunk_sizes needs at least one total")
    for total in totals:
        check_int("totals", total, min_value=1)
    top = max(totals)
    return st.sampled_from([c for c in range(2, top + 3) if all(t % c for t in totals)])
