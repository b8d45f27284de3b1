"""Dependency rules of ops that move elements: indexing, gathers, scatters, pads, selections.

- moving ops (indexing, gather, cat, flip, pad, scatter without accumulation, ``*_copy``
  views, ``where`` with a fixed or local mask): the op itself is run on element ids instead
  of values, which says which input element each output element comes from;
- their backwards (``unfold_backward``, pad backwards, ``col2im``, nearest upsampling): the
  forward op on ids, read the other way;
- accumulating scatters (``index_add``, ``scatter_add``, ``index_put(accumulate=True)``,
  ``embedding_dense_backward``): destination ids from the same trick, then unions.

Index tensors are read only where they are the same at every point (not *varying*) or in
local mode; otherwise a gather or scatter may reach anywhere along its dim (``along_dim``),
and other ops take the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import (
    cpu,
    fallback,
    functional_op,
    ids_like,
    index_args_vary,
    op_name,
    pointwise,
    rule,
)
from derivs.sparse._trace import Call, is_float, tensors_of

_I64 = torch.int64


@rule("where", "masked_fill")
def select(call: Call) -> list[Deps | None]:
    """Global: the union of both branches. Local, or a fixed mask: the branch each element takes."""
    if not index_args_vary(call):
        return moving(call)
    return pointwise(call)


@rule("threshold_backward")
def threshold_backward(call: Call) -> list[Deps | None]:
    """``grad * (self > threshold)``; local: only where the threshold is passed."""
    grad, self_, threshold = call.args[:3]
    if (call.is_varying(self_) and not call.local) or call.deps(self_) is not None:
        return pointwise(call)
    out = call.outs[0]
    d = call.deps(grad)
    if d is None:
        return [None]
    keep = cpu(self_ > threshold).expand(out.shape).reshape(-1)
    index = _deps.broadcast_index(grad.shape, out.shape)
    index = torch.arange(out.numel()) if index is None else index
    return [_deps.take(d, torch.where(keep, index, -1))]


# --------------------------------------------------------------------------------------------
# moving ops: run the op on element ids


_MOVING = (
    "index", "_unsafe_index", "index_select", "gather", "take", "take_along_dim", "embedding",
    "flip", "roll", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d",
    "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "repeat", "cat", "stack", "slice_scatter", "select_scatter", "diagonal_scatter",
    "index_copy", "index_fill", "masked_scatter", "tril", "triu", "diag_embed", "diag",
    "narrow_copy", "slice_copy", "select_copy", "permute_copy", "transpose_copy", "t_copy",
    "view_copy", "expand_copy", "squeeze_copy", "unsqueeze_copy", "unfold_copy",
    "diagonal_copy", "split_with_sizes_copy", "split_copy", "unbind_copy", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "im2col", "movedim",
    "slice_backward", "select_backward", "diagonal_backward", "rot90",
    "value_selecting_reduction_backward",
)  # fmt: skip


def _is_scalar_type(arg: Any) -> bool:
    return "Scalar" in str(arg.type) or "number" in str(arg.type)


def run_on_ids(call: Call, dtype: torch.dtype = _I64) -> tuple[list[torch.Tensor], Deps] | None:
    """The op applied to ids: float tensors replaced by 1-based ids (0: no dependence).

    Returns the id tensors of the outputs (``0``: from no input element, ``k``: row ``k - 1``
    of the returned ``Deps``, the inputs' rows one after another), or None when the op does
    not run on ids.
    """
    func = functional_op(call.func)
    if func is None:
        return None
    sources: list[Deps] = []
    next_id = [1]

    def sub(a: Any) -> Any:
        if not isinstance(a, torch.Tensor) or not is_float(a):
            return cpu(a) if isinstance(a, torch.Tensor) else a
        d = call.deps(a)
        if d is None:
            return torch.zeros(a.shape, dtype=dtype)
        ids = ids_like(a, next_id[0]).to(dtype)
        next_id[0] += a.numel()
        sources.append(d)
        return ids

    scalars = _scalar_args(func)
    args = []
    for k, a in enumerate(call.args):
        scalar = k in scalars
        args.append(0 if scalar and isinstance(a, int | float) else tree_map(sub, a))
    kwargs = {
        name: (0 if isinstance(v, int | float) and name in scalars else tree_map(sub, v))
        for name, v in call.kwargs.items()
        if name not in ("out", "dtype", "device", "layout", "pin_memory")
    }
    try:
        result = func(*args, **kwargs)
    except (RuntimeError, NotImplementedError, TypeError):
        # NOTE: some ops have no int64 kernel; float64 ids are exact below 2**53.
        if dtype is _I64 and next_id[0] < 2**53:
            return run_on_ids(call, torch.float64)
        return None
    outs = [o.to(_I64) for o in tensors_of(result)]
    return outs, _deps.concat(sources)


_SCALARS: dict[Any, frozenset[int | str]] = {}


def _scalar_args(func: Any) -> frozenset[int | str]:
    """Positions and names of ``func``'s ``Scalar`` arguments (values, not dims or sizes)."""
    if func not in _SCALARS:
        args = func._schema.arguments
        _SCALARS[func] = frozenset(
            x for k, a in enumerate(args) if _is_scalar_type(a) for x in (k, a.name)
        )
    return _SCALARS[func]


@rule(*_MOVING)
def moving(call: Call) -> list[Deps | None]:
    """Each output element is (at most) one input element: found by running the op on ids."""
    if index_args_vary(call):
        return along_dim(call)
    found = run_on_ids(call)
    if found is None or len(found[0]) != len(call.outs):
        return fallback(call)
    ids, rows = found
    return [_deps.take(rows, i.reshape(-1) - 1) for i in ids]


# --------------------------------------------------------------------------------------------
# backwards of moving ops: the forward op on ids, read the other way


def _transposed(
    call: Call, grad: torch.Tensor, in_shape: Any, forward: Callable[[torch.Tensor], torch.Tensor]
) -> list[Deps | None]:
    """``grad_input[p]`` gains ``grad_output[q]`` for every output ``q`` forward reads from ``p``."""
    d = call.deps(grad)
    if d is None:
        return [None]
    try:
        src = forward(torch.arange(1, math.prod(in_shape) + 1, dtype=torch.float64).view(in_shape))
    except (RuntimeError, NotImplementedError, TypeError):
        return fallback(call)
    flat = src.to(_I64).reshape(-1) - 1
    if flat.numel() != grad.numel():
        return fallback(call)
    keep = flat >= 0
    part = (_deps.take(d, torch.arange(grad.numel())[keep]), flat[keep])
    return [_deps.union(call.outs[0].numel(), call.n_seeds, [part])]


@rule("unfold_backward")
def unfold_backward(call: Call) -> list[Deps | None]:
    b = call.bound()
    dim, size, step = b["dim"], b["size"], b["step"]
    return _transposed(call, b["grad_in"], b["input_sizes"], lambda i: i.unfold(dim, size, step))


_PAD_BACKWARDS = {
    f"{kind}_pad{n}d_backward": getattr(torch.ops.aten, f"{kind}_pad{n}d").default
    for kind in ("reflection", "replication")
    for n in (1, 2, 3)
}


@rule(*_PAD_BACKWARDS)
def pad_backward(call: Call) -> list[Deps | None]:
    b = call.bound()
    forward = _PAD_BACKWARDS[op_name(call.func)]
    padding = b["padding"]
    return _transposed(call, b["grad_output"], b["self"].shape, lambda i: forward(i, padding))


@rule("col2im")
def col2im(call: Call) -> list[Deps | None]:
    """``fold``: the transpose of ``im2col`` (``unfold``) on the output's shape."""
    b = call.bound()
    cols = b["self"]
    taps = math.prod(b["kernel_size"])
    shape = (*cols.shape[:-2], cols.shape[-2] // taps, *b["output_size"])
    args = (b["kernel_size"], b["dilation"], b["padding"], b["stride"])
    return _transposed(call, cols, shape, lambda i: torch.ops.aten.im2col(i, *args))


_UPSAMPLE_BACKWARDS = {
    f"upsample_nearest{n}d_backward": getattr(torch.ops.aten, f"upsample_nearest{n}d").default
    for n in (1, 2, 3)
} | {
    f"_upsample_nearest_exact{n}d_backward": getattr(
        torch.ops.aten, f"_upsample_nearest_exact{n}d"
    ).default
    for n in (1, 2, 3)
}


@rule(*_UPSAMPLE_BACKWARDS)
def upsample_backward(call: Call) -> list[Deps | None]:
    args = call.args
    forward = _UPSAMPLE_BACKWARDS[op_name(call.func)]
    grad, out_size, in_size, scales = args[0], args[1], args[2], args[3:]
    return _transposed(call, grad, in_size, lambda i: forward(i, out_size, *scales))


# --------------------------------------------------------------------------------------------
# accumulating scatters: destinations from ids, then unions


def _scatter_result(
    call: Call, self_: torch.Tensor, dest: torch.Tensor, src: torch.Tensor | None
) -> list[Deps | None]:
    """Rows of ``self_`` kept, plus source element ``k`` added to element ``dest[k]``."""
    out = call.outs[0]
    size = out.numel()
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    d_self = call.deps(self_)
    if d_self is not None:
        parts.append((d_self, None, _deps.broadcast_index(self_.shape, out.shape)))
    d_src = call.deps(src) if src is not None else None
    if d_src is not None and src is not None:
        src_ids = ids_like(src, 0)
        parts.append(
            (_deps.take(d_src, _fit(src_ids, dest.shape).reshape(-1)), dest.reshape(-1), None)
        )
    return [_deps.gather_union(size, call.n_seeds, parts) if parts else None]


def _fit(ids: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``ids`` cut (scatter uses the leading part of src) or broadcast to ``shape``."""
    if ids.dim() == len(shape) and all(a >= b for a, b in zip(ids.shape, shape, strict=True)):
        return ids[tuple(slice(0, s) for s in shape)]
    return ids.expand(tuple(shape))


@rule("scatter_add", "scatter_reduce")
def scatter_add(call: Call) -> list[Deps | None]:
    b = call.bound()
    if index_args_vary(call):
        return along_dim(call)
    self_, index = b["self"], cpu(b["index"])
    dest = ids_like(self_, 0).gather(b["dim"], index)
    return _scatter_result(call, self_, dest, b["src"])


@rule("scatter")
def scatter(call: Call) -> list[Deps | None]:
    """``scatter(..., reduce=...)`` accumulates; without ``reduce`` it overwrites (moving)."""
    b = call.bound()
    if b.get("reduce") is None:
        return moving(call)
    if index_args_vary(call):
        return along_dim(call)
    self_ = b["self"]
    dest = ids_like(self_, 0).gather(b["dim"], cpu(b["index"]))
    src = b.get("src")
    return _scatter_result(call, self_, dest, src if isinstance(src, torch.Tensor) else None)


@rule("index_add", "index_reduce")
def index_add(call: Call) -> list[Deps | None]:
    b = call.bound()
    if index_args_vary(call):
        return along_dim(call)
    self_, source = b["self"], b["source"]
    dest = ids_like(self_, 0).index_select(b["dim"], cpu(b["index"]))
    return _scatter_result(call, self_, dest.expand(source.shape), source)


@rule("index_put", "_index_put_impl", "_unsafe_index_put", "put")
def index_put(call: Call) -> list[Deps | None]:
    """``self[indices] = values`` (moving) or ``+=`` with ``accumulate=True`` (scatter)."""
    b = call.bound()
    if not b.get("accumulate", False):
        return moving(call)
    if index_args_vary(call):
        return fallback(call)
    self_ = b["self"]
    ids = ids_like(self_, 0)
    if op_name(call.func) == "put":
        dest = ids.reshape(-1).take(cpu(b["index"]))
        return _scatter_result(call, self_, dest, b["source"])
    indices = [None if i is None else cpu(i) for i in b["indices"]]
    dest = torch.ops.aten.index.Tensor(ids, indices)
    return _scatter_result(call, self_, dest, b["values"])


@rule("embedding_dense_backward")
def embedding_dense_backward(call: Call) -> list[Deps | None]:
    """Row ``w`` of the weight's gradient sums the output rows whose index is ``w``."""
    b = call.bound()
    grad, indices = b["grad_output"], b["indices"]
    d = call.deps(grad)
    if d is None:
        return [None]
    if index_args_vary(call):
        return fallback(call)
    width = grad.shape[-1] if grad.dim() else 1
    flat = cpu(indices).reshape(-1, 1)
    dest = flat * width + torch.arange(width)
    padding = b.get("padding_idx", -1)
    if padding is not None and padding >= 0:
        dest = dest[flat[:, 0] != padding]
        src = ids_like(grad, 0).reshape(-1, width)[flat[:, 0] != padding]
        d = _deps.take(d, src.reshape(-1))
    out = call.outs[0]
    return [_deps.union(out.numel(), call.n_seeds, [(d, dest.reshape(-1))])]


# --------------------------------------------------------------------------------------------
# index tensors that change with the point: anywhere along the indexed dim


def along_dim(call: Call) -> list[Deps | None]:
    """Global rule of gathers and scatters whose index varies: any position along ``dim``.

    ``gather``, ``index_select``: an output element reads its input line along ``dim``;
    ``scatter*``, ``index_add``, ``index_copy``: an output element keeps its own and gains
    the source line along ``dim`` (within the index's extent in the other dims).
    """
    name = op_name(call.func)
    b = call.bound()
    dim = b.get("dim")
    if name not in _ALONG_DIM or not isinstance(dim, int):
        return fallback(call)
    out = call.outs[0]
    dim %= max(out.dim(), 1)
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    self_ = b["self"]
    d_self = call.deps(self_)
    if name in ("gather", "index_select", "take_along_dim"):
        if d_self is None:
            return [None]
        line = _deps.reduce(d_self, self_.shape, (dim,))
        kept = tuple(1 if k == dim else s for k, s in enumerate(self_.shape))
        ids = torch.arange(line.size).view(kept)
        ids = ids[tuple(slice(None) if k == dim else slice(0, s) for k, s in enumerate(out.shape))]
        return [_deps.take(line, ids.expand(out.shape).reshape(-1))]
    if d_self is not None:
        parts.append((d_self, None, _deps.broadcast_index(self_.shape, out.shape)))
    src = b.get("src", b.get("source"))
    d_src = call.deps(src)
    if d_src is not None and isinstance(src, torch.Tensor):
        extent = tuple(b["index"].shape) if name.startswith("scatter") else tuple(src.shape)
        cut = ids_like(src, 0)[tuple(slice(0, s) for s in extent)].reshape(-1)
        line = _deps.reduce(_deps.take(d_src, cut), extent, (dim,))
        kept = tuple(1 if k == dim else s for k, s in enumerate(extent))
        region = tuple(slice(None) if k == dim else slice(0, s) for k, s in enumerate(extent))
        dest = ids_like(out, 0)[region]
        src_ids = torch.arange(line.size).view(kept).expand(dest.shape)
        parts.append((line, dest.reshape(-1), src_ids.reshape(-1)))
    if not parts:
        return [None]
    return [_deps.gather_union(out.numel(), call.n_seeds, parts)]


_ALONG_DIM = frozenset(
    {"gather", "index_select", "take_along_dim", "scatter", "scatter_add", "scatter_reduce",
     "index_add", "index_copy", "index_reduce"}
)  # fmt: skip
