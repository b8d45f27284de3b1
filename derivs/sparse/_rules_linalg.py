"""Dependency rules of structured ops: reductions, scans, sorts, contractions, convolutions.

Each rule is a union over index structure that depends only on shapes and static arguments
(dims, strides, padding), never on values: a reduction's output element depends on its
group, ``cumsum``'s on the prefix, ``mm``'s on its row of the first factor and its column of
the second, a convolution's on its window in every input channel of its group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._trace import Call, fallback_rows

Rule = Callable[[Call], list[Deps | None]]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def _norm_dims(dim: Any, ndim: int) -> tuple[int, ...]:
    """``dim`` (int, list, None or ``[]`` for all) as sorted non-negative dims."""
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0):
        return tuple(range(ndim))
    dims = dim if isinstance(dim, list | tuple) else [dim]
    return tuple(sorted({d % ndim for d in dims})) if ndim else ()


def _reduced_over(
    call: Call, t: torch.Tensor, dims: Sequence[int], view: Sequence[int]
) -> Deps | None:
    """``t``'s rows united over ``dims``, as a tensor of shape ``view`` broadcast to the output."""
    d = call.deps(t)
    if d is None:
        return None
    r = _deps.reduce(d, t.shape, dims)
    return _deps.broadcast(r, view, call.outs[0].shape)


def _union(call: Call, shape: Sequence[int], parts: Sequence[Deps | None]) -> Deps | None:
    found = [p for p in parts if p is not None]
    if not found:
        return None
    return _deps.union(math.prod(shape), call.n_seeds, [(p, None) for p in found])


# --------------------------------------------------------------------------------------------
# reductions


_REDUCTIONS = (
    "sum", "mean", "nansum", "nanmean", "amax", "amin", "prod", "var", "std", "var_mean",
    "std_mean", "logsumexp", "linalg_vector_norm", "norm", "max", "min", "median",
    "nanmedian", "mode", "kthvalue", "aminmax", "trace",
)  # fmt: skip


@rule(*_REDUCTIONS)
def reduction(call: Call) -> list[Deps | None]:
    """Each output element depends on its group: the input with the reduced dims removed."""
    if call.func._overloadname in ("other", "binary_out", "other_out"):
        from derivs.sparse._rules import pointwise

        return pointwise(call)
    b = call.bound()
    self_ = b.get("self", b.get("input"))
    d = call.deps(self_)
    if d is None or not isinstance(self_, torch.Tensor):
        return [None for _ in call.outs]
    dims = _norm_dims(b.get("dim"), self_.dim())
    r = _deps.reduce(d, self_.shape, dims)
    return [r if o.numel() == r.size else fallback_rows(call, o) for o in call.outs]


@rule("_softmax", "_log_softmax", "_softmax_backward_data", "_log_softmax_backward_data")
def softmax(call: Call) -> list[Deps | None]:
    """Each output element depends on its whole slice along ``dim``."""
    b = call.bound()
    out = call.outs[0]
    dims = _norm_dims(b["dim"], out.dim())
    kept = tuple(1 if k in dims else s for k, s in enumerate(out.shape))
    inputs = [t for t in call.tensors() if call.deps(t) is not None]
    if any(tuple(t.shape) != tuple(out.shape) for t in inputs):
        return [fallback_rows(call, out)]
    parts = [_reduced_over(call, t, dims, kept) for t in inputs]
    return [_union(call, out.shape, parts)]


@rule("sort", "topk", "msort")
def sort(call: Call) -> list[Deps | None]:
    """Values are input elements of the same slice, in a value-dependent order."""
    b = call.bound()
    self_ = b["self"]
    dim = _norm_dims(b.get("dim", 0), self_.dim())
    view = tuple(1 if k in dim else s for k, s in enumerate(self_.shape))
    return [_reduced_over_shape(call, self_, dim, view, tuple(o.shape)) for o in call.outs]


def _reduced_over_shape(
    call: Call, t: torch.Tensor, dims: Sequence[int], view: Sequence[int], shape: tuple[int, ...]
) -> Deps | None:
    d = call.deps(t)
    if d is None:
        return None
    return _deps.broadcast(_deps.reduce(d, t.shape, dims), view, shape)


# --------------------------------------------------------------------------------------------
# scans


@rule("cumsum", "cumprod", "logcumsumexp", "cummax", "cummin", "_cummax_helper")
def scan(call: Call) -> list[Deps | None]:
    """Element ``i`` along ``dim`` depends on elements ``0..i`` of its line."""
    b = call.bound()
    self_ = b["self"]
    d = call.deps(self_)
    if d is None:
        return [None for _ in call.outs]
    dim = _norm_dims(b["dim"], self_.dim())
    rows = prefix(d, tuple(self_.shape), dim[0] if dim else 0)
    return [rows for _ in call.outs]


def prefix(deps: Deps, shape: tuple[int, ...], dim: int) -> Deps:
    """Prefix unions along ``dim``, in time and memory linear in the result's size.

    Each (line, seed) pair first appears at some position ``p`` of its line; it then belongs
    to the rows of positions ``p .. L - 1`` and to no others.
    """
    if not shape:
        return deps
    n = deps.n_seeds
    length = shape[dim]
    lines = torch.arange(math.prod(shape)).view(shape).movedim(dim, -1).reshape(-1, length)
    line_of = torch.empty(lines.numel(), dtype=torch.int64)
    pos_of = torch.empty(lines.numel(), dtype=torch.int64)
    line_of[lines.reshape(-1)] = (
        torch.arange(lines.shape[0]).unsqueeze(1).expand(-1, length).reshape(-1)
    )
    pos_of[lines.reshape(-1)] = torch.arange(length).repeat(lines.shape[0])
    elems = deps.elements()
    keys, inverse = torch.unique(line_of[elems] * max(n, 1) + deps.seeds, return_inverse=True)
    first = torch.full((keys.numel(),), length, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, pos_of[elems], "amin")
    counts = length - first
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    run = _deps.runs(counts, total)
    pos = torch.arange(total) - (starts - first)[run]
    line = torch.div(keys, max(n, 1), rounding_mode="floor")[run]
    seed = (keys % max(n, 1))[run]
    out_elem = lines[line, pos]
    return _deps.from_keys(_deps.unique(out_elem * max(n, 1) + seed), deps.size, n)


# --------------------------------------------------------------------------------------------
# contractions


def _contract(
    call: Call,
    factors: Sequence[tuple[Any, Sequence[int], Sequence[int]]],
    added: Any = None,
) -> list[Deps | None]:
    """``sum_j a[.., j] b[j, ..]``: the union of each factor reduced over the summed dims.

    ``factors``: ``(tensor, summed dims, shape of the reduced factor broadcast to the output)``.
    ``added``: a tensor broadcast onto the output (``addmm``'s ``self``).
    """
    out = call.outs[0]
    parts = [
        _reduced_over(call, t, dims, view)
        for t, dims, view in factors
        if isinstance(t, torch.Tensor)
    ]
    if isinstance(added, torch.Tensor) and call.deps(added) is not None:
        parts.append(_deps.broadcast(call.deps(added), added.shape, out.shape))  # type: ignore[arg-type]
    return [_union(call, out.shape, parts)]


def _sparse_pairs(call: Call, t: Any) -> torch.Tensor | None:
    """``(2, nnz)`` indices of a sparse matrix whose structure is fixed (or local), else None."""
    if not isinstance(t, torch.Tensor) or t.layout == torch.strided or t.dim() != 2:
        return None
    if call.is_varying(t) and not call.local:
        return None
    coo = t.detach().to_sparse().coalesce() if t.layout != torch.sparse_coo else t.coalesce()
    return coo.indices().cpu()


def _sparse_product(call: Call, a: Any, b: Any, added: Any = None) -> list[Deps | None] | None:
    """``a @ b`` where one factor is a sparse matrix of fixed structure: its nonzeros only.

    ``out[i, k]`` reads ``b[j, k]`` for each nonzero ``a[i, j]`` (or ``a[i, j]`` for each
    nonzero ``b[j, k]``); a 1-D ``b`` is a column.
    """
    left, right = _sparse_pairs(call, a), _sparse_pairs(call, b)
    if left is None and right is None:
        return None
    out = call.outs[0]
    rows, cols = out.shape[0], out.numel() // max(out.shape[0], 1)
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    for pairs, dense, is_left in ((left, b, True), (right, a, False)):
        d = call.deps(dense)
        if pairs is None or d is None:
            continue
        i, j = pairs[0].unsqueeze(1), pairs[1].unsqueeze(1)
        if is_left:  # out[i, k] <- b[j, k]
            k = torch.arange(cols).unsqueeze(0)
            parts.append((d, (i * cols + k).reshape(-1), (j * cols + k).reshape(-1)))
        else:  # out[k, j] <- a[k, i] for nonzero b[i, j]
            k = torch.arange(rows).unsqueeze(0)
            inner = dense.shape[-1]
            parts.append((d, (k * cols + j).reshape(-1), (k * inner + i).reshape(-1)))
    for t, pairs in ((a, left), (b, right)):
        sparse = isinstance(t, torch.Tensor) and t.layout != torch.strided
        if sparse and pairs is None and call.deps(t) is not None:
            return None  # a sparse factor that carries dependence: the dense rule
    if isinstance(added, torch.Tensor) and call.deps(added) is not None:
        parts.append((call.deps(added), None, _deps.broadcast_index(added.shape, out.shape)))  # type: ignore[arg-type]
    if not parts:
        return [None]
    return [_deps.gather_union(out.numel(), call.n_seeds, parts)]


@rule("mm")
def mm(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    sparse = _sparse_product(call, a, b)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0], 1)), (b, (0,), (1, b.shape[1]))])


@rule("addmm", "_addmm_activation", "_sparse_addmm")
def addmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    sparse = _sparse_product(call, a, b, self_)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0], 1)), (b, (0,), (1, b.shape[1]))], self_)


@rule("bmm")
def bmm(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    return _contract(
        call, [(a, (2,), (a.shape[0], a.shape[1], 1)), (b, (1,), (b.shape[0], 1, b.shape[2]))]
    )


@rule("baddbmm")
def baddbmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(
        call,
        [(a, (2,), (a.shape[0], a.shape[1], 1)), (b, (1,), (b.shape[0], 1, b.shape[2]))],
        self_,
    )


@rule("addbmm")
def addbmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(call, [(a, (0, 2), (a.shape[1], 1)), (b, (0, 1), (1, b.shape[2]))], self_)


@rule("mv")
def mv(call: Call) -> list[Deps | None]:
    a, v = call.args[:2]
    sparse = _sparse_product(call, a, v)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0],)), (v, (0,), ())])


@rule("addmv")
def addmv(call: Call) -> list[Deps | None]:
    self_, a, v = call.args[:3]
    sparse = _sparse_product(call, a, v, self_)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0],)), (v, (0,), ())], self_)


@rule("dot", "vdot")
def dot(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    return _contract(call, [(a, (0,), ()), (b, (0,), ())])


@rule("addr")
def addr(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(call, [(a, (), (a.shape[0], 1)), (b, (), (1, b.shape[0]))], self_)


# --------------------------------------------------------------------------------------------
# convolutions


def window_pairs(
    in_sp: Sequence[int],
    out_sp: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` flat spatial positions that one kernel tap connects.

    Direct: ``in = out * stride - padding + k * dilation``; transposed: the same relation
    with the roles of ``in`` and ``out`` swapped.
    """
    outs = torch.zeros(1, dtype=torch.int64)
    ins = torch.zeros(1, dtype=torch.int64)
    for d in range(len(in_sp)):
        lo, hi = (in_sp[d], out_sp[d]) if transposed else (out_sp[d], in_sp[d])
        src = torch.arange(lo).unsqueeze(1)
        dst = src * stride[d] - padding[d] + torch.arange(kernel[d]).unsqueeze(0) * dilation[d]
        valid = (dst >= 0) & (dst < hi)
        a = src.expand_as(dst)[valid]
        z = dst[valid]
        o, i = (z, a) if transposed else (a, z)
        pair = torch.unique(o * in_sp[d] + i)
        o, i = torch.div(pair, in_sp[d], rounding_mode="floor"), pair % in_sp[d]
        outs = (outs.unsqueeze(1) * out_sp[d] + o.unsqueeze(0)).reshape(-1)
        ins = (ins.unsqueeze(1) * in_sp[d] + i.unsqueeze(0)).reshape(-1)
    return outs, ins


class _Conv:
    """The geometry of one convolution: batch, groups, channels and spatial sizes."""

    def __init__(self, b: dict[str, Any], x_shape: Sequence[int], y_shape: Sequence[int]):
        w = b["weight"].shape
        self.transposed = bool(b["transposed"])
        self.groups = int(b["groups"])
        self.batch = x_shape[0]
        self.c_in, self.c_out = x_shape[1], y_shape[1]
        self.in_sp, self.out_sp = tuple(x_shape[2:]), tuple(y_shape[2:])
        nd = len(self.in_sp)

        def per_dim(v: Any) -> list[int]:
            vs = [int(x) for x in v] if isinstance(v, list | tuple) else [int(v)]
            return vs * nd if len(vs) == 1 else vs

        self.out_pos, self.in_pos = window_pairs(
            self.in_sp, self.out_sp, tuple(w[2:]), per_dim(b["stride"]),
            per_dim(b["padding"]), per_dim(b["dilation"]), self.transposed,
        )  # fmt: skip
        self.p_in, self.p_out = math.prod(self.in_sp), math.prod(self.out_sp)

    def group_rows(self, d: Deps, channels: int, points: int) -> Deps:
        """``(N, C, P)`` rows united over the channels of each group: ``(N, G, P)``."""
        shape = (self.batch, self.groups, channels // self.groups, points)
        return _deps.reduce(d, shape, (2,))

    def spread(self, g: Deps, forward: bool) -> Deps:
        """``(N, G, P)`` rows carried along the window pairs (to the outputs or the inputs)."""
        p_src, p_dst = (self.p_in, self.p_out) if forward else (self.p_out, self.p_in)
        src_pos, dst_pos = (self.in_pos, self.out_pos) if forward else (self.out_pos, self.in_pos)
        base = torch.arange(self.batch * self.groups).unsqueeze(1)
        src = (base * p_src + src_pos).reshape(-1)
        dst = (base * p_dst + dst_pos).reshape(-1)
        size = self.batch * self.groups * p_dst
        return _deps.gather_union(size, g.n_seeds, [(g, dst, src)])

    def to_channels(self, g: Deps, channels: int, points: int) -> Deps:
        """``(N, G, P)`` rows broadcast to ``(N, C, P)`` (each channel takes its group's row)."""
        per = channels // self.groups
        view = (self.batch, self.groups, 1, points)
        return _deps.broadcast(g, view, (self.batch, self.groups, per, points))


def _channel_rows(conv: _Conv, weight: torch.Tensor, d: Deps, towards_out: bool) -> Deps:
    """Weight rows united per output channel (``towards_out``) or per input channel."""
    g = conv.groups
    shape = tuple(weight.shape)
    taps = math.prod(shape[2:])
    if conv.transposed:  # (C_in, C_out / g, *k): input channel c = group * (C_in / g) + i
        view = (g, shape[0] // g, shape[1], taps)
        return _deps.reduce(d, view, (1, 3) if towards_out else (2, 3))
    flat = (shape[0], shape[1], taps)  # (C_out, C_in / g, *k)
    if towards_out:
        return _deps.reduce(d, flat, (1, 2))
    per_pair = _deps.reduce(d, flat, (2,))
    return _deps.reduce(per_pair, (g, shape[0] // g, shape[1]), (1,))


@rule("convolution", "_convolution")
def convolution(call: Call) -> list[Deps | None]:
    b = call.bound()
    x, weight, bias = b["input"], b["weight"], b.get("bias")
    out = call.outs[0]
    if x.dim() < 3 or b.get("transposed") is None:
        return [fallback_rows(call, out)]
    conv = _Conv(b, x.shape, out.shape)
    shape = (conv.batch, conv.c_out, conv.p_out)
    parts: list[Deps | None] = []
    dx = call.deps(x)
    if dx is not None:
        grouped = conv.group_rows(dx, conv.c_in, conv.p_in)
        parts.append(conv.to_channels(conv.spread(grouped, True), conv.c_out, conv.p_out))
    dw = call.deps(weight)
    if dw is not None:
        per_out = _channel_rows(conv, weight, dw, towards_out=True)
        parts.append(_deps.broadcast(per_out, (1, conv.c_out, 1), shape))
    db = call.deps(bias)
    if db is not None:
        parts.append(_deps.broadcast(db, (1, conv.c_out, 1), shape))
    return [_union(call, shape, parts)]


@rule("convolution_backward")
def convolution_backward(call: Call) -> list[Deps | None]:
    """Gradients of a convolution: windows read backwards, channel and batch unions."""
    b = call.bound()
    grad, x, weight = b["grad_output"], b["input"], b["weight"]
    mask = list(b["output_mask"])
    if x.dim() < 3:
        return [fallback_rows(call, o) for o in call.outs]
    conv = _Conv(b, x.shape, grad.shape)
    dg, dx, dw = call.deps(grad), call.deps(x), call.deps(weight)
    results: list[Deps | None] = []
    if mask[0]:
        shape = (conv.batch, conv.c_in, conv.p_in)
        parts: list[Deps | None] = []
        if dg is not None:
            grouped = conv.group_rows(dg, conv.c_out, conv.p_out)
            parts.append(conv.to_channels(conv.spread(grouped, False), conv.c_in, conv.p_in))
        if dw is not None:
            per_in = _channel_rows(conv, weight, dw, towards_out=False)
            parts.append(_deps.broadcast(per_in, (1, conv.c_in, 1), shape))
        results.append(_union(call, shape, parts))
    if mask[1]:
        results.append(_weight_grad(call, conv, weight, dg, dx))
    if mask[2]:
        per_out = (
            None if dg is None else _deps.reduce(dg, (conv.batch, conv.c_out, conv.p_out), (0, 2))
        )
        results.append(per_out)
    return results


def _weight_grad(
    call: Call, conv: _Conv, weight: torch.Tensor, dg: Deps | None, dx: Deps | None
) -> Deps | None:
    """``grad_weight[o, c, k]``: all of output channel ``o`` and all of input channel ``c``."""
    shape = tuple(weight.shape)
    g = conv.groups
    per_o = None if dg is None else _deps.reduce(dg, (conv.batch, conv.c_out, conv.p_out), (0, 2))
    per_c = None if dx is None else _deps.reduce(dx, (conv.batch, conv.c_in, conv.p_in), (0, 2))
    taps = math.prod(shape[2:])
    if not conv.transposed:  # weight (C_out, C_in / g, taps): c = group(o) * (C_in / g) + j
        o = torch.arange(shape[0]).view(-1, 1, 1)
        c = (o // (shape[0] // g)) * shape[1] + torch.arange(shape[1]).view(1, -1, 1)
    else:  # weight (C_in, C_out / g, taps): o = group(c) * (C_out / g) + j
        c = torch.arange(shape[0]).view(-1, 1, 1)
        o = (c // (shape[0] // g)) * shape[1] + torch.arange(shape[1]).view(1, -1, 1)
    full = (shape[0], shape[1], taps)
    parts: list[Deps | None] = []
    if per_o is not None:
        parts.append(_deps.take(per_o, o.expand(full).reshape(-1)))
    if per_c is not None:
        parts.append(_deps.take(per_c, c.expand(full).reshape(-1)))
    return _union(call, full, parts)


# --------------------------------------------------------------------------------------------
# pooling: the windows of each (batch, channel) plane


def _per_dim(v: Any, nd: int, default: Sequence[int]) -> list[int]:
    if v is None or (isinstance(v, list | tuple) and len(v) == 0):
        return list(default)
    vs = [int(x) for x in v] if isinstance(v, list | tuple) else [int(v)]
    return vs * nd if len(vs) == 1 else vs


def _pool_edges(
    b: dict[str, Any], x_shape: Sequence[int], y_shape: Sequence[int], nd: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` flat indices of the pooling windows, plane by plane."""
    kernel = _per_dim(b["kernel_size"], nd, [1] * nd)
    stride = _per_dim(b.get("stride"), nd, kernel)
    padding = _per_dim(b.get("padding"), nd, [0] * nd)
    dilation = _per_dim(b.get("dilation"), nd, [1] * nd)
    in_sp, out_sp = tuple(x_shape[-nd:]), tuple(y_shape[-nd:])
    po, pi = window_pairs(in_sp, out_sp, kernel, stride, padding, dilation, False)
    planes = torch.arange(math.prod(x_shape[:-nd])).unsqueeze(1)
    out = (planes * math.prod(out_sp) + po).reshape(-1)
    src = (planes * math.prod(in_sp) + pi).reshape(-1)
    return out, src


_POOLS = {"max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3, "avg_pool2d": 2,
          "avg_pool3d": 3}  # fmt: skip


@rule(*_POOLS)
def pool(call: Call) -> list[Deps | None]:
    """Each output element depends on its window (the max's position varies with the values)."""
    b = call.bound()
    x = b["self"]
    d = call.deps(x)
    if d is None:
        return [None for _ in call.outs]
    nd = _POOLS[call.func._schema.name.split("::")[-1]]
    y = call.outs[0]
    out, src = _pool_edges(b, x.shape, y.shape, nd)
    rows = _deps.gather_union(y.numel(), call.n_seeds, [(d, out, src)])
    return [rows] + [None for _ in call.outs[1:]]


_POOL_BACKWARDS = {f"{name}_backward": nd for name, nd in _POOLS.items()}


@rule(*_POOL_BACKWARDS)
def pool_backward(call: Call) -> list[Deps | None]:
    """Windows read backwards; a max pool's indices say exactly where, when they are fixed."""
    b = call.bound()
    grad, x = b["grad_output"], b["self"]
    d = call.deps(grad)
    if d is None:
        return [None]
    nd = _POOL_BACKWARDS[call.func._schema.name.split("::")[-1]]
    indices = b.get("indices")
    if isinstance(indices, torch.Tensor) and (call.local or not call.is_varying(indices)):
        planes = math.prod(x.shape[:-nd])
        base = torch.arange(planes).unsqueeze(1) * math.prod(x.shape[-nd:])
        dest = (base + indices.detach().cpu().reshape(planes, -1)).reshape(-1)
        return [_deps.union(x.numel(), call.n_seeds, [(d, dest)])]
    out, src = _pool_edges(b, x.shape, grad.shape, nd)
    return [_deps.gather_union(x.numel(), call.n_seeds, [(d, src, out)])]
