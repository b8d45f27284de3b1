"""Small blocks: shapes, dtypes, devices, argnums, in_dims, batch sizes and chunk sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._caps import (
    MAX_BATCH,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_SIDE,
    check_int,
    check_optional_bool,
    check_order,
    check_type,
)
from ._devices import get_devices

Shape = tuple[int, ...]
Argnums = int | tuple[int, ...]
InDims = int | tuple[int | None, ...]

# NOTE: float64 first so that a failing example shrinks to the reference precision unless
# the failure needs float32.
_FLOATS = (torch.float64, torch.float32)


def dtypes_for(device: str | torch.device) -> tuple[torch.dtype, ...]:
    """Floating dtypes checked on ``device``: float64 and float32, only float32 on mps."""
    kind = torch.device(device).type
    return (torch.float32,) if kind == "mps" else _FLOATS


# --------------------------------------------------------------------------------------------
# shapes


def shapes(
    *,
    min_dims: int = 0,
    max_dims: int = MAX_DIMS,
    min_side: int = 1,
    max_side: int = MAX_SIDE,
    max_elements: int = MAX_ELEMENTS,
) -> st.SearchStrategy[Shape]:
    """Tensor shapes, 0-d up to ``max_dims``, with at most ``max_elements`` elements.

    Sides are drawn independently; while the shape has more than ``max_elements`` elements,
    its largest side is halved (a constructive fix-up, never a filter). Shrinks toward ``()``
    (or ``min_dims`` sides of ``min_side``). ``min_side=0`` allows empty tensors.
    """
    for name, value in (("min_dims", min_dims), ("max_dims", max_dims), ("min_side", min_side)):
        check_int(name, value, min_value=0)
    check_int("max_side", max_side, min_value=0)
    check_int("max_elements", max_elements, min_value=0)
    check_order("min_dims", min_dims, "max_dims", max_dims)
    check_order("min_side", min_side, "max_side", max_side)
    if min_side**min_dims > max_elements:
        raise InvalidArgument(
            f"min_side={min_side} and min_dims={min_dims} need {min_side**min_dims} elements, "
            f"more than max_elements={max_elements}"
        )
    return _shapes(min_dims, max_dims, min_side, max_side, max_elements)


def _max_feasible_dims(min_side: int, max_dims: int, max_elements: int) -> int:
    if min_side <= 1:
        return max_dims
    return min(max_dims, int(math.log(max_elements) / math.log(min_side) + 1e-9))


@st.composite
def _shapes(
    draw: st.DrawFn, min_dims: int, max_dims: int, min_side: int, max_side: int, max_elements: int
) -> Shape:
    ndim = draw(st.integers(min_dims, _max_feasible_dims(min_side, max_dims, max_elements)))
    sides = [draw(st.integers(min_side, max_side)) for _ in range(ndim)]
    while math.prod(sides) > max_elements:
        i = sides.index(max(sides))
        sides[i] = max(min_side, sides[i] // 2)
    return tuple(sides)


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


# --------------------------------------------------------------------------------------------
# devices and dtypes


def devices(*, include_meta: bool = False) -> st.SearchStrategy[str]:
    """One of the devices chosen with ``--devices`` (``get_devices()``), plus ``"meta"``.

    ``meta`` tensors have shapes and no values: use ``include_meta=True`` only for
    shape-only properties. Shrinks toward ``"cpu"`` (the first device). The device list is
    read at draw time, so strategies built at import time still see ``--devices``.
    """
    check_type("include_meta", include_meta, bool, "a bool")
    return st.deferred(lambda: st.sampled_from(get_devices() + (["meta"] if include_meta else [])))


def dtypes(device: str | torch.device | None = None) -> st.SearchStrategy[torch.dtype]:
    """Floating dtypes supported on ``device``: float64 and float32 (float32 only on mps).

    ``device=None`` means any of ``get_devices()`` (float64 unless every device is mps).
    """
    if device is None:
        return st.deferred(
            lambda: st.sampled_from(
                sorted({dt for d in get_devices() for dt in dtypes_for(d)}, key=_FLOATS.index)
            )
        )
    try:
        options = dtypes_for(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgument(f"device={device!r} is not a torch device: {err}") from None
    return st.sampled_from(options)


# --------------------------------------------------------------------------------------------
# argnums and in_dims


def normalize_argnums(argnums: Argnums, n_args: int) -> tuple[int, ...]:
    """``argnums`` as a tuple of non-negative positions (``-1`` is the last argument)."""
    items = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    return tuple(a % n_args for a in items)


def argnums(
    n_args: int,
    *,
    allow_tuple: bool = True,
    allow_int: bool = True,
    allow_negative: bool = True,
    min_size: int = 1,
    max_size: int | None = None,
) -> st.SearchStrategy[Argnums]:
    """``argnums`` for a function of ``n_args`` tensors, as the contract allows them.

    A single int in ``[-n_args, n_args)`` or a tuple of distinct positions (no two naming the
    same argument, e.g. never ``(0, -n_args)``) in any order, each possibly negative
    (``-1`` is the last argument). ``min_size``/``max_size`` bound the tuple's length.
    Shrinks toward ``0``. ``normalize_argnums`` maps a draw to non-negative positions.
    """
    check_int("n_args", n_args, min_value=1)
    for name, flag in (
        ("allow_tuple", allow_tuple),
        ("allow_int", allow_int),
        ("allow_negative", allow_negative),
    ):
        check_type(name, flag, bool, "a bool")
    check_int("min_size", min_size, min_value=1)
    if max_size is not None:
        check_int("max_size", max_size, min_value=1)
    if min_size > n_args:
        raise InvalidArgument(
            f"min_size={min_size} is larger than n_args={n_args}: argnums cannot repeat"
        )
    check_order("min_size", min_size, "max_size", max_size)
    top = n_args if max_size is None else max_size
    if not (allow_int or allow_tuple):
        raise InvalidArgument("allow_int=False and allow_tuple=False leave nothing to draw")
    top = min(top, n_args)
    low = -n_args if allow_negative else 0
    options: list[st.SearchStrategy[Argnums]] = []
    if allow_int:
        options.append(st.integers(low, n_args - 1))
    if allow_tuple:
        options.append(_argnum_tuples(n_args, allow_negative, min_size, top))
    return st.one_of(options)


@st.composite
def _argnum_tuples(
    draw: st.DrawFn, n_args: int, allow_negative: bool, min_size: int, max_size: int
) -> tuple[int, ...]:
    positions = draw(
        st.lists(st.integers(0, n_args - 1), unique=True, min_size=min_size, max_size=max_size)
    )
    if allow_negative:
        return tuple(p - n_args if draw(st.booleans()) else p for p in positions)
    return tuple(positions)


def in_dims(
    in_shapes: Sequence[Shape],
    *,
    allow_int: bool = True,
    allow_none: bool = True,
    allow_nonzero: bool = True,
    allow_negative: bool = True,
) -> st.SearchStrategy[InDims]:
    """``vmap``-style ``in_dims`` for per-sample argument shapes ``in_shapes``.

    Either one int for every argument, or a tuple with one entry per argument: ``None``
    (unbatched, like the tutorial's ``(None, None, 0)``) or the position of the batch dim in
    the batched tensor (``0 .. ndim``, or negative from the end). At least one argument is
    batched. ``batched_args`` lays tensors out to match. Shrinks toward ``0``.
    """
    check_type("in_shapes", in_shapes, (tuple, list), "a sequence of shapes")
    if not in_shapes:
        raise InvalidArgument("in_shapes=() has no arguments to batch")
    ndims = [len(tuple(s)) for s in in_shapes]
    for flag_name, flag in (
        ("allow_int", allow_int),
        ("allow_none", allow_none),
        ("allow_nonzero", allow_nonzero),
        ("allow_negative", allow_negative),
    ):
        check_type(flag_name, flag, bool, "a bool")

    def dims_for(ndim: int) -> st.SearchStrategy[int]:
        if not allow_nonzero:
            return st.just(0)
        low = -(ndim + 1) if allow_negative else 0
        return st.integers(low, ndim)

    options: list[st.SearchStrategy[InDims]] = []
    if allow_int:
        options.append(dims_for(min(ndims)))
    options.append(_in_dim_tuples(tuple(dims_for(n) for n in ndims), allow_none))
    return st.one_of(options)


@st.composite
def _in_dim_tuples(
    draw: st.DrawFn, per_arg: tuple[st.SearchStrategy[int], ...], allow_none: bool
) -> tuple[int | None, ...]:
    n = len(per_arg)
    # NOTE: pick one argument that is surely batched, then the others may be None.
    batched = draw(st.integers(0, n - 1))
    dims: list[int | None] = []
    for i, strategy in enumerate(per_arg):
        if i != batched and allow_none and draw(st.booleans()):
            dims.append(None)
        else:
            dims.append(draw(strategy))
    return tuple(dims)


def normalize_in_dims(in_dims: InDims, in_shapes: Sequence[Shape]) -> tuple[int | None, ...]:
    """``in_dims`` as one non-negative position (or None) per argument, in batched tensors."""
    items = (in_dims,) * len(in_shapes) if isinstance(in_dims, int) else tuple(in_dims)
    return tuple(
        None if d is None else d % (len(s) + 1) for d, s in zip(items, in_shapes, strict=True)
    )


# --------------------------------------------------------------------------------------------
# batch and chunk sizes


def batch_sizes(*, min_size: int = 1, max_size: int = MAX_BATCH) -> st.SearchStrategy[int]:
    """Batch sizes from ``min_size`` (1 by default: a batch of one is a classic edge case)."""
    check_int("min_size", min_size, min_value=1)
    check_int("max_size", max_size, min_value=1)
    check_order("min_size", min_size, "max_size", max_size)
    return st.integers(min_size, max_size)


def chunk_sizes(
    total: int, *, divides: bool | None = None, allow_none: bool = False
) -> st.SearchStrategy[int | None]:
    """``chunk_size`` values for ``total`` units of work (basis vectors, samples).

    ``divides=True``: divisors of ``total`` only; ``False``: values that leave a remainder
    (from 1 to ``total + 2``, so sizes larger than the work appear too); ``None``: any of
    ``1 .. total + 2``. ``allow_none=True`` adds ``None`` (no chunking). Shrinks toward 1
    (or the smallest non-divisor).
    """
    check_int("total", total, min_value=1)
    check_optional_bool("divides", divides)
    check_type("allow_none", allow_none, bool, "a bool")
    candidates = range(1, total + 3)
    if divides is None:
        values: st.SearchStrategy[int | None] = st.integers(1, total + 2)
    else:
        chosen = [c for c in candidates if (total % c == 0) == divides]
        values = st.sampled_from(chosen)
    return st.one_of(values, st.none()) if allow_none else values
