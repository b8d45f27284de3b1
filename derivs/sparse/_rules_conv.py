"""Dependency rules of convolutions and pooling: the windows a kernel connects.

A convolution's output element depends on its window in every input channel of its group
(and on its output channel's weights); a transposed convolution on the same relation read
the other way. Pooling windows act plane by plane; a max pool's indices, when fixed (or
local), say exactly where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import rule, union_rows
from derivs.sparse._trace import Call, fallback_rows

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
    return [union_rows(call, shape, parts)]


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
        results.append(union_rows(call, shape, parts))
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
    return union_rows(call, full, parts)


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
