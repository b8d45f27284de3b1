"""Tensors of a given shape, dtype and device, with varied memory layouts and bounded values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra.numpy import arrays

from ._basic import InDims, Shape, normalize_in_dims
from ._caps import INPUT_BOUND, MAX_SEED, check_float, check_order, check_type

T = TypeVar("T")

#: Memory layouts ``tensors`` can produce, simplest first (failures shrink toward contiguous).
#: ``contiguous``: a fresh dense tensor. ``offset``: dense, but starting inside a larger
#: buffer (``storage_offset() > 0``). ``transposed``: dims permuted in memory and permuted
#: back, so the view has the requested shape and permuted strides. ``sliced``: every few
#: elements of a larger buffer (steps of 2 or 3, odd starts) whose gaps hold NaN, so an
#: implementation that reads past the view is caught. ``expanded``: stride 0 along some dims
#: (the values repeat along them).
LAYOUTS = ("contiguous", "offset", "transposed", "sliced", "expanded")
#: Layouts whose tensors are never contiguous (where the shape allows them at all).
NON_CONTIGUOUS_LAYOUTS = ("transposed", "sliced", "expanded")
#: How values are drawn: ``random`` draws a seed and fills the tensor from a seeded
#: ``torch.Generator`` (uniform in the bounds: generic values, fast); ``hypothesis`` builds it
#: from ``hypothesis.extra.numpy.arrays`` (edge values such as 0 and the bounds, every element
#: shrinkable).
VALUE_MODES = ("random", "hypothesis")

#: ``stream`` of the first tangent drawn by ``tangents_like`` (arguments use 0, 1, ...).
TANGENT_STREAM = 1000

_NP_DTYPES = {torch.float64: np.float64, torch.float32: np.float32}


def feasible_layouts(shape: Sequence[int]) -> tuple[str, ...]:
    """The layouts possible for ``shape``.

    Strides of size-1 dims do not count for ``is_contiguous``, so a non-contiguous view needs
    a dim of size > 1 (sliced, expanded) or two of them (transposed).
    """
    big = sum(1 for s in shape if s > 1)
    ok = {"contiguous", "offset"}
    if big >= 1:
        ok |= {"sliced", "expanded"}
    if big >= 2:
        ok.add("transposed")
    return tuple(layout for layout in LAYOUTS if layout in ok)


def _resolve(draw: st.DrawFn, value: T | st.SearchStrategy[T]) -> T:
    return draw(value) if isinstance(value, st.SearchStrategy) else value


def _check_shape(shape: Any) -> Shape:
    check_type("shape", shape, (tuple, list, torch.Size), "a tuple of ints or a strategy")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise InvalidArgument(f"shape={tuple(shape)!r} must hold non-negative ints")
    return tuple(shape)


def _check_dtype(dtype: Any) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidArgument(f"dtype={dtype!r} must be a floating torch.dtype")


def _check_device(device: Any) -> None:
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgument(f"device={device!r} is not a torch device: {err}") from None


def _check_layout(layout: Any, shape: Shape | None) -> None:
    if layout not in LAYOUTS:
        raise InvalidArgument(f"layout={layout!r} is not one of {LAYOUTS}")
    if shape is not None and layout not in feasible_layouts(shape):
        raise InvalidArgument(
            f"layout={layout!r} is impossible for shape={shape}: possible layouts are "
            f"{feasible_layouts(shape)} (size-1 dims have no stride that matters)"
        )


def tensors(
    shape: Sequence[int] | st.SearchStrategy[Shape],
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] = torch.float64,
    device: str | st.SearchStrategy[str] = "cpu",
    *,
    layout: str | st.SearchStrategy[str] | None = None,
    values: str | None = None,
    min_value: float = -INPUT_BOUND,
    max_value: float = INPUT_BOUND,
    stream: int = 0,
) -> st.SearchStrategy[torch.Tensor]:
    """Tensors of exactly ``shape``, ``dtype`` and ``device``, values in ``[min_value, max_value]``.

    ``shape``, ``dtype``, ``device`` and ``layout`` may be strategies (use
    ``st.shared(shapes(), key=...)`` to give several tensors one shape). ``layout=None``
    draws one of the layouts feasible for the shape (see ``LAYOUTS``); a named layout that the
    shape cannot have is an ``InvalidArgument``. ``values`` picks how values are drawn (see
    ``VALUE_MODES``); ``None`` draws the mode too. On ``meta`` no values are drawn. The result
    never requires grad and is a view of its own private buffer (nothing else aliases it).

    ``stream`` separates seeded values: Hypothesis often draws the same seed (0 in the first,
    simplest example) for every tensor of a test case, and tensors drawn with different
    streams still get different values. ``problems``, ``tangents_like`` and the other
    composite strategies give every tensor its own stream, so an argument never equals
    another argument or its tangent by accident.
    """
    fixed_shape: Shape | None = None
    shape_arg: Shape | st.SearchStrategy[Shape]
    if isinstance(shape, st.SearchStrategy):
        shape_arg = shape
    else:
        shape_arg = fixed_shape = _check_shape(shape)
    if not isinstance(dtype, st.SearchStrategy):
        _check_dtype(dtype)
    if not isinstance(device, st.SearchStrategy):
        _check_device(device)
    if layout is not None and not isinstance(layout, st.SearchStrategy):
        _check_layout(layout, fixed_shape)
    if values is not None and values not in VALUE_MODES:
        raise InvalidArgument(f"values={values!r} is not one of {VALUE_MODES} or None")
    check_float("min_value", min_value)
    check_float("max_value", max_value)
    check_order("min_value", min_value, "max_value", max_value)
    check_type("stream", stream, int, "an int")
    return _tensors(
        shape_arg,
        dtype,
        device,
        layout,
        values,
        float(min_value),
        float(max_value),
        stream,
    )


@st.composite
def _tensors(
    draw: st.DrawFn,
    shape: Shape | st.SearchStrategy[Shape],
    dtype: torch.dtype | st.SearchStrategy[torch.dtype],
    device: str | st.SearchStrategy[str],
    layout: str | st.SearchStrategy[str] | None,
    values: str | None,
    lo: float,
    hi: float,
    stream: int,
) -> torch.Tensor:
    shape = _check_shape(_resolve(draw, shape))
    dtype = _resolve(draw, dtype)
    device = _resolve(draw, device)
    _check_dtype(dtype)
    layout = _resolve(draw, layout)
    if layout is None:
        layout = draw(st.sampled_from(feasible_layouts(shape)))
    _check_layout(layout, shape)

    # NOTE: the layout is decided first, so that the values of an expanded tensor are drawn
    # only for its distinct elements.
    expand_dims: tuple[int, ...] = ()
    if layout == "expanded":
        big = [d for d, s in enumerate(shape) if s > 1]
        chosen = draw(st.lists(st.sampled_from(big), min_size=1, max_size=len(big), unique=True))
        expand_dims = tuple(sorted(chosen))
    value_shape = tuple(1 if d in expand_dims else s for d, s in enumerate(shape))

    if torch.device(device).type == "meta":
        dense = torch.empty(value_shape, dtype=dtype, device=device)
    else:
        mode = values if values is not None else draw(st.sampled_from(VALUE_MODES))
        dense = _values(draw, mode, value_shape, dtype, lo, hi, stream).to(device)

    if layout == "contiguous":
        return dense
    if layout == "expanded":
        return dense.expand(shape)
    nan = float("nan")
    if layout == "offset":
        offset = draw(st.integers(1, 3))
        buffer = torch.full((offset + dense.numel(),), nan, dtype=dtype, device=device)
        view = buffer[offset:].view(shape)
    elif layout == "transposed":
        big = [d for d, s in enumerate(shape) if s > 1]
        order = draw(st.permutations(big))
        if order == big:
            # NOTE: constructive, not filtered: the identity becomes its reverse.
            order = big[::-1]
        perm = list(range(len(shape)))
        for src, dst in zip(big, order, strict=True):
            perm[src] = dst
        # buffer dim i holds view dim perm[i]; the view permutes it back.
        buffer = torch.full([shape[p] for p in perm], nan, dtype=dtype, device=device)
        view = buffer.permute([perm.index(d) for d in range(len(shape))])
    else:  # sliced
        big = [d for d, s in enumerate(shape) if s > 1]
        steps = [draw(st.integers(1, 3)) if d in big else 1 for d in range(len(shape))]
        if all(steps[d] == 1 for d in big):
            steps[big[0]] = 2
        starts = [draw(st.integers(0, 1)) for _ in shape]
        tails = [draw(st.integers(0, 1)) for _ in shape]
        full = [
            st0 + (s - 1) * k + 1 + t
            for s, k, st0, t in zip(shape, steps, starts, tails, strict=True)
        ]
        buffer = torch.full(full, nan, dtype=dtype, device=device)
        index = tuple(
            slice(st0, st0 + (s - 1) * k + 1, k)
            for s, k, st0 in zip(shape, steps, starts, strict=True)
        )
        view = buffer[index]
    with torch.no_grad():
        view.copy_(dense)
    return view


def _values(
    draw: st.DrawFn, mode: str, shape: Shape, dtype: torch.dtype, lo: float, hi: float, stream: int
) -> torch.Tensor:
    if mode == "random":
        seed = draw(st.integers(0, MAX_SEED))
        generator = torch.Generator().manual_seed((seed * 1_000_003 + stream) % 2**62)
        unit = torch.rand(shape, generator=generator, dtype=torch.float64)
        return (lo + (hi - lo) * unit).clamp_(lo, hi).to(dtype)
    np_dtype = _NP_DTYPES.get(dtype, np.float32)
    lo_w, hi_w = _representable_bounds(lo, hi, np_dtype)
    if np_dtype is np.float64:
        elements = st.floats(lo_w, hi_w, width=64, allow_subnormal=False)
    else:
        elements = st.floats(lo_w, hi_w, width=32, allow_subnormal=False)
    # NOTE: fill=st.nothing() draws every element: the default fill makes most elements equal.
    array = draw(arrays(np_dtype, shape, elements=elements, fill=st.nothing()))
    return torch.from_numpy(np.array(array, copy=True)).to(dtype)


def _representable_bounds(lo: float, hi: float, np_dtype: type) -> tuple[float, float]:
    """The tightest ``np_dtype`` bounds inside ``[lo, hi]`` (Hypothesis needs exact ones)."""
    lo_w, hi_w = np_dtype(lo), np_dtype(hi)
    if float(lo_w) < lo:
        lo_w = np.nextafter(lo_w, np_dtype(np.inf))
    if float(hi_w) > hi:
        hi_w = np.nextafter(hi_w, np_dtype(-np.inf))
    return float(lo_w), float(hi_w)


def tangents_like(
    primals: torch.Tensor | Sequence[torch.Tensor],
    *,
    layout: str | None = None,
    values: str | None = None,
    min_value: float = -INPUT_BOUND,
    max_value: float = INPUT_BOUND,
) -> st.SearchStrategy[tuple[torch.Tensor, ...]]:
    """A tuple of tensors matched to ``primals`` in number, shape, dtype and device.

    Layouts are drawn independently of the primals' (a contiguous primal may get a sliced
    tangent). Use it for tangents, cotangents (pass the outputs) and hvp/vhp vectors.
    """
    items = (primals,) if isinstance(primals, torch.Tensor) else tuple(primals)
    for i, p in enumerate(items):
        if not isinstance(p, torch.Tensor):
            raise InvalidArgument(f"primals[{i}] is a {type(p).__name__}, not a tensor")
        if layout is not None:
            _check_layout(layout, tuple(p.shape))
    return st.tuples(
        *(
            tensors(
                tuple(p.shape),
                p.dtype,
                str(p.device),
                layout=layout,
                values=values,
                min_value=min_value,
                max_value=max_value,
                stream=TANGENT_STREAM + i,
            )
            for i, p in enumerate(items)
        )
    )


cotangents_like = tangents_like


def batched_shape(shape: Shape, batch_size: int, in_dim: int | None) -> Shape:
    """``shape`` with a batch dim of ``batch_size`` inserted at ``in_dim`` (None: unbatched)."""
    if in_dim is None:
        return tuple(shape)
    d = in_dim % (len(shape) + 1)
    return (*shape[:d], batch_size, *shape[d:])


def batched_args(
    in_shapes: Sequence[Shape],
    in_dims: InDims,
    batch_size: int,
    dtype: torch.dtype,
    device: str,
    *,
    layout: str | None = None,
    values: str | None = None,
) -> st.SearchStrategy[tuple[torch.Tensor, ...]]:
    """Arguments for ``vmap(func, in_dims)``: argument ``i`` has the per-sample shape
    ``in_shapes[i]`` with a batch dim of ``batch_size`` at ``in_dims[i]`` (None: unbatched)."""
    dims = normalize_in_dims(in_dims, in_shapes)
    return st.tuples(
        *(
            tensors(
                batched_shape(tuple(s), batch_size, d),
                dtype,
                device,
                layout=layout,
                values=values,
                stream=i,
            )
            for i, (s, d) in enumerate(zip(in_shapes, dims, strict=True))
        )
    )
