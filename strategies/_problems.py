"""Whole draws for a property: a function with a device, a dtype and arguments to call it on."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._basic import (
    InDims,
    Shape,
    batch_sizes,
    devices,
    dtypes,
    in_dims,
    normalize_in_dims,
)
from ._caps import (
    INPUT_BOUND,
    MAX_FEATURES,
    check_int,
    check_optional_bool,
    check_order,
    check_type,
)
from ._coincident import coincident_batch_size
from ._expr import Expr, arg
from ._functions import GeneratedFunction, functions
from ._tensors import (
    LAYOUTS,
    batched_shape,
    feasible_layouts,
    tensors,
)


class Problem(NamedTuple):
    """A function and arguments to differentiate it at: ``func(*args)``."""

    func: GeneratedFunction
    device: str
    dtype: torch.dtype
    args: tuple[torch.Tensor, ...]


class BatchedProblem(NamedTuple):
    """A per-sample function and batched arguments laid out as ``in_dims`` says.

    Ordinary functions: ``vmap(func, in_dims)(*args)`` is the batched result. Coupled
    functions (``func.coupled``): ``in_dims == 0`` and ``func(*args)`` is the batched result.
    """

    func: GeneratedFunction
    device: str
    dtype: torch.dtype
    args: tuple[torch.Tensor, ...]
    in_dims: InDims
    batch_size: int

    def sample(self, b: int) -> tuple[torch.Tensor, ...]:
        """The per-sample arguments of sample ``b`` (unbatched arguments as they are)."""
        dims = normalize_in_dims(self.in_dims, self.func.in_shapes)
        return tuple(
            a if d is None else a.select(d, b) for a, d in zip(self.args, dims, strict=True)
        )


def _layout_for(layout: str | None, shape: Shape) -> str | None:
    """A named layout where ``shape`` allows it, else contiguous (None: drawn per tensor)."""
    if layout is None or layout in feasible_layouts(shape):
        return layout
    return "contiguous"


def _check_layout_name(layout: Any) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise InvalidArgument(f"layout={layout!r} is not one of {LAYOUTS} or None")


def _resolve_device_dtype(
    draw: st.DrawFn, device: Any, dtype: Any, include_meta: bool
) -> tuple[str, torch.dtype]:
    if device is None:
        device = devices(include_meta=include_meta)
    dev = draw(device) if isinstance(device, st.SearchStrategy) else device
    if dtype is None:
        dtype = dtypes(dev)
    dt = draw(dtype) if isinstance(dtype, st.SearchStrategy) else dtype
    return dev, dt


def problems(
    func: GeneratedFunction | st.SearchStrategy[GeneratedFunction] | None = None,
    *,
    device: str | st.SearchStrategy[str] | None = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    include_meta: bool = False,
    layout: str | None = None,
    values: str | None = None,
) -> st.SearchStrategy[Problem]:
    """``Problem(func, device, dtype, args)``: a function, and arguments to call it on.

    ``func`` defaults to ``functions()``; ``device`` to ``devices(include_meta=...)``;
    ``dtype`` to ``dtypes(device)``. Arguments come from ``tensors`` (layout drawn per
    argument, or the named ``layout`` wherever the argument's shape allows it).
    """
    check_type("include_meta", include_meta, bool, "a bool")
    _check_layout_name(layout)
    return _problems(func, device, dtype, include_meta, layout, values)


@st.composite
def _problems(
    draw: st.DrawFn,
    func: Any,
    device: Any,
    dtype: Any,
    include_meta: bool,
    layout: str | None,
    values: str | None,
) -> Problem:
    dev, dt = _resolve_device_dtype(draw, device, dtype, include_meta)
    f = func if isinstance(func, GeneratedFunction) else draw(functions() if func is None else func)
    args = tuple(
        draw(tensors(s, dt, dev, layout=_layout_for(layout, s), values=values, stream=i))
        for i, s in enumerate(f.in_shapes)
    )
    return Problem(f, dev, dt, args)


def batched_problems(
    func: GeneratedFunction | st.SearchStrategy[GeneratedFunction] | None = None,
    *,
    device: str | st.SearchStrategy[str] | None = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    in_dims: InDims | st.SearchStrategy[InDims] | None = None,
    batch_size: int | st.SearchStrategy[int] | None = None,
    include_meta: bool = False,
    layout: str | None = None,
    values: str | None = None,
    coincide: bool | None = False,
) -> st.SearchStrategy[BatchedProblem]:
    """``BatchedProblem``: a per-sample function and batched arguments.

    ``in_dims`` defaults to ``in_dims(func.in_shapes)`` (ints, tuples with None, nonzero
    and negative positions); ``batch_size`` to ``batch_sizes(min_size=func.min_batch)``, or
    with ``coincide=True`` (None: drawn) to the output's leading size (else the first
    input's) where that is a valid batch size, so a misplaced batch axis keeps its shape.
    Coupled functions always get ``in_dims=0`` and a batch of at least 2.
    """
    check_type("include_meta", include_meta, bool, "a bool")
    check_optional_bool("coincide", coincide)
    _check_layout_name(layout)
    if isinstance(batch_size, int):
        check_int("batch_size", batch_size, min_value=1)
    return _batched_problems(
        func, device, dtype, in_dims, batch_size, include_meta, layout, values, coincide
    )


@st.composite
def _batched_problems(
    draw: st.DrawFn,
    func: Any,
    device: Any,
    dtype: Any,
    dims: Any,
    batch_size: Any,
    include_meta: bool,
    layout: str | None,
    values: str | None,
    coincide: bool | None = False,
) -> BatchedProblem:
    dev, dt = _resolve_device_dtype(draw, device, dtype, include_meta)
    f = func if isinstance(func, GeneratedFunction) else draw(functions() if func is None else func)
    if f.coupled:
        dims = 0
    elif dims is None:
        dims = draw(in_dims(f.in_shapes))
    elif isinstance(dims, st.SearchStrategy):
        dims = draw(dims)
    if batch_size is None and (
        coincide or (coincide is None and draw(st.booleans(), label="coincident batch"))
    ):
        batch_size = coincident_batch_size(f.in_shapes, f.out_shape, min_size=f.min_batch)
    if batch_size is None:
        batch_size = batch_sizes(min_size=f.min_batch)
    b = draw(batch_size) if isinstance(batch_size, st.SearchStrategy) else batch_size
    if b < f.min_batch:
        raise InvalidArgument(f"batch_size={b} is below {f!r}'s min_batch={f.min_batch}")
    shapes = [
        batched_shape(s, b, d)
        for s, d in zip(f.in_shapes, normalize_in_dims(dims, f.in_shapes), strict=True)
    ]
    args = tuple(
        draw(tensors(s, dt, dev, layout=_layout_for(layout, s), values=values, stream=i))
        for i, s in enumerate(shapes)
    )
    return BatchedProblem(f, dev, dt, args, dims, b)


# --------------------------------------------------------------------------------------------
# the tutorial's predict(weight, bias, x) = F.linear(x, weight, bias).tanh()


#: Jacobian shapes of predict w.r.t. x, (D_out, D_in): tall has more outputs than inputs
#: (forward mode wins), wide fewer (reverse mode wins).
PREDICT_KINDS = ("square", "tall", "wide")


class PredictProblem(NamedTuple):
    """The tutorial's model with drawn sizes: ``func(weight, bias, x)``, ``func(weight, bias, xs)``."""

    func: GeneratedFunction
    device: str
    dtype: torch.dtype
    weight: torch.Tensor  # (D_out, D_in)
    bias: torch.Tensor  # (D_out,)
    x: torch.Tensor  # (D_in,)
    xs: torch.Tensor  # (B, D_in): a batch of feature vectors, in_dims=(None, None, 0)
    kind: str  # "square", "tall" (D_out > D_in) or "wide" (D_out < D_in)

    @property
    def args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.weight, self.bias, self.x)

    @property
    def batched_args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.weight, self.bias, self.xs)

    @property
    def in_dims(self) -> tuple[None, None, int]:
        """``in_dims`` for ``batched_args``: the tutorial's ``vmap(..., in_dims=(None, None, 0))``."""
        return (None, None, 0)


def predict_function(d_in: int, d_out: int) -> GeneratedFunction:
    """``predict(weight, bias, x) = linear(x, weight, bias).tanh()`` as a ``GeneratedFunction``."""
    ins: tuple[Shape, ...] = ((d_out, d_in), (d_out,), (d_in,))
    leaves = [arg(i, s, INPUT_BOUND) for i, s in enumerate(ins)]
    linear = Expr("tutorial_linear", tuple(leaves), (d_out,), math.inf, True, False, False)
    root = Expr("tanh", (linear,), (d_out,), 1.0, True, False, True)
    return GeneratedFunction(root, ins, (d_out,), arg_names=("weight", "bias", "x"), name="predict")


def tutorial_predict(
    *,
    kind: str | None = None,
    min_features: int = 1,
    max_features: int = MAX_FEATURES,
    batch_size: int | st.SearchStrategy[int] | None = None,
    device: str | st.SearchStrategy[str] | None = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
) -> st.SearchStrategy[PredictProblem]:
    """The tutorial's ``predict`` with drawn ``D_in``, ``D_out`` (``kind``: tall, wide, square).

    ``weight`` entries lie in ``[-1/sqrt(D_in), 1/sqrt(D_in)]`` so tanh is not saturated;
    ``bias``, ``x`` and the batch ``xs`` in ``[-1, 1]``. Shrinks toward a square 1 x 1 model.
    """
    if kind is not None and kind not in PREDICT_KINDS:
        raise InvalidArgument(f"kind={kind!r} is not one of {PREDICT_KINDS} or None")
    check_int("min_features", min_features, min_value=1)
    check_int("max_features", max_features, min_value=1)
    check_order("min_features", min_features, "max_features", max_features)
    if kind in ("tall", "wide") and min_features == max_features:
        raise InvalidArgument(
            f"kind={kind!r} needs two sizes, but min_features=max_features={max_features}"
        )
    return _tutorial_predict(kind, min_features, max_features, batch_size, device, dtype)


@st.composite
def _tutorial_predict(
    draw: st.DrawFn,
    kind: str | None,
    lo: int,
    hi: int,
    batch_size: Any,
    device: Any,
    dtype: Any,
) -> PredictProblem:
    dev, dt = _resolve_device_dtype(draw, device, dtype, False)
    kinds = PREDICT_KINDS if lo < hi else ("square",)
    k = kind or draw(st.sampled_from(kinds))
    if k == "square":
        d_in = d_out = draw(st.integers(lo, hi))
    else:
        small = draw(st.integers(lo, hi - 1))
        large = draw(st.integers(small + 1, hi))
        d_in, d_out = (small, large) if k == "tall" else (large, small)
    if isinstance(batch_size, int):
        b = batch_size
    else:
        b = draw(batch_sizes() if batch_size is None else batch_size)
    scale = 1 / math.sqrt(d_in)
    weight = draw(tensors((d_out, d_in), dt, dev, min_value=-scale, max_value=scale, stream=0))
    bias = draw(tensors((d_out,), dt, dev, stream=1))
    x = draw(tensors((d_in,), dt, dev, stream=2))
    xs = draw(tensors((b, d_in), dt, dev, stream=3))
    return PredictProblem(predict_function(d_in, d_out), dev, dt, weight, bias, x, xs, k)
