"""Dependency rules of neural-network ops: normalisations, losses, ``glu``, FFTs.

Each is written as *spreads*: an input viewed in a canonical shape (``(lead, trail)`` for a
layer norm, ``(N, C, rest)`` for a batch norm, ``(N, G, C / G, rest)`` for a group norm),
united over some of those dims, then broadcast to the output's canonical shape. The
statistics couple whole groups, the affine parameters act per channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import pointwise, rule, union_rows
from derivs.sparse._trace import Call, fallback_rows


def _spread(
    call: Call, t: Any, view: Sequence[int], dims: Sequence[int], out_view: Sequence[int]
) -> Deps | None:
    """``t`` viewed as ``view``, united over ``dims``, broadcast to ``out_view``."""
    d = call.deps(t)
    if d is None or not isinstance(t, torch.Tensor):
        return None
    if math.prod(view) != t.numel():
        return _deps.uniform(math.prod(out_view), d.seed_set(), call.n_seeds)
    kept = tuple(1 if k in dims else s for k, s in enumerate(view))
    return _deps.broadcast(_deps.reduce(d, view, dims), kept, out_view)


def _masked(mask: Sequence[bool], results: Sequence[Deps | None]) -> list[Deps | None]:
    """The results of the outputs an ``output_mask`` asks for (the others are undefined)."""
    return [r for m, r in zip(mask, results, strict=True) if m]


# --------------------------------------------------------------------------------------------
# layer norm: statistics over the trailing (normalised) dims


@rule("native_layer_norm")
def layer_norm(call: Call) -> list[Deps | None]:
    b = call.bound()
    x, w, bias = b["input"], b["weight"], b["bias"]
    trail = math.prod(b["normalized_shape"])
    lead = x.numel() // max(trail, 1)
    full = (lead, trail)
    out = union_rows(
        call,
        x.numel(),
        [
            _spread(call, x, full, (1,), full),
            _spread(call, w, (1, trail), (), full),
            _spread(call, bias, (1, trail), (), full),
        ],
    )
    stats = _spread(call, x, full, (1,), (lead, 1))
    return [out, stats, stats]


@rule("native_layer_norm_backward")
def layer_norm_backward(call: Call) -> list[Deps | None]:
    b = call.bound()
    g, x, w = b["grad_out"], b["input"], b["weight"]
    trail = math.prod(b["normalized_shape"])
    lead = x.numel() // max(trail, 1)
    full = (lead, trail)
    stats = [b["mean"], b["rstd"]]
    grad_input = union_rows(
        call,
        x.numel(),
        [_spread(call, t, full, (1,), full) for t in (g, x)]
        + [_spread(call, s, (lead, 1), (), full) for s in stats]
        + [_spread(call, w, (1, trail), (0, 1), full)],
    )
    grad_weight = union_rows(
        call,
        trail,
        [_spread(call, t, full, (0,), (1, trail)) for t in (g, x)]
        + [_spread(call, s, (lead, 1), (0, 1), (1, trail)) for s in stats],
    )
    grad_bias = _spread(call, g, full, (0,), (1, trail))
    return _masked(b["output_mask"], [grad_input, grad_weight, grad_bias])


# --------------------------------------------------------------------------------------------
# batch norm: statistics per channel, over the batch and the spatial dims


def _channels(x: torch.Tensor) -> tuple[int, int, int]:
    c = x.shape[1] if x.dim() > 1 else 1
    return x.shape[0], c, x.numel() // max(x.shape[0] * c, 1)


_BATCH_NORMS = (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional",
)  # fmt: skip


@rule(*_BATCH_NORMS)
def batch_norm(call: Call) -> list[Deps | None]:
    b = call.bound()
    x = b["input"]
    n, c, rest = _channels(x)
    full = (n, c, rest)
    per = (1, c, 1)
    training = bool(b.get("training", False))
    params = [b.get(k) for k in ("weight", "bias", "running_mean", "running_var")]
    out = union_rows(
        call,
        x.numel(),
        [_spread(call, x, full, (0, 2) if training else (), full)]
        + [_spread(call, p, per, (), full) for p in params],
    )
    stats = union_rows(
        call,
        c,
        [_spread(call, x, full, (0, 2), per)] + [_spread(call, p, per, (), per) for p in params],
    )
    results: list[Deps | None] = [out]
    for o in call.outs[1:]:
        results.append(stats if o.numel() == c else fallback_rows(call, o))
    return results


@rule("native_batch_norm_backward", "batch_norm_backward")
def batch_norm_backward(call: Call) -> list[Deps | None]:
    b = call.bound()
    g, x = b["grad_out"], b["input"]
    n, c, rest = _channels(x)
    full = (n, c, rest)
    per = (1, c, 1)
    training = bool(b.get("train", b.get("update", True)))
    params = [
        b.get(k)
        for k in ("weight", "running_mean", "running_var", "save_mean", "save_invstd", "save_var")
    ]
    per_channel = [_spread(call, t, full, (0, 2), per) for t in (g, x)]
    per_channel += [_spread(call, p, per, (), per) for p in params]
    channel_rows = union_rows(call, c, per_channel)
    grad_input = union_rows(
        call,
        x.numel(),
        [
            _spread(call, g, full, (0, 2) if training else (), full),
            _spread(call, x, full, (0, 2) if training else (), full),
        ]
        + [_spread(call, p, per, (), full) for p in params],
    )
    grad_bias = _spread(call, g, full, (0, 2), per)
    return _masked(b["output_mask"], [grad_input, channel_rows, grad_bias])


# --------------------------------------------------------------------------------------------
# group norm: statistics per (sample, group)


@rule("native_group_norm")
def group_norm(call: Call) -> list[Deps | None]:
    b = call.bound()
    x, groups = b["input"], int(b["group"])
    n, c, rest = _channels(x)
    full = (n, groups, c // groups, rest)
    affine = (1, groups, c // groups, 1)
    out = union_rows(
        call,
        x.numel(),
        [_spread(call, x, full, (2, 3), full)]
        + [_spread(call, p, affine, (), full) for p in (b["weight"], b["bias"])],
    )
    stats = _spread(call, x, full, (2, 3), (n, groups, 1, 1))
    return [out, stats, stats]


@rule("native_group_norm_backward")
def group_norm_backward(call: Call) -> list[Deps | None]:
    b = call.bound()
    g, x, w, groups = b["grad_out"], b["input"], b["weight"], int(b["group"])
    n, c, rest = _channels(x)
    full = (n, groups, c // groups, rest)
    affine = (1, groups, c // groups, 1)
    stats = [b["mean"], b["rstd"]]
    grad_input = union_rows(
        call,
        x.numel(),
        [_spread(call, t, full, (2, 3), full) for t in (g, x)]
        + [_spread(call, s, (n, groups, 1, 1), (), full) for s in stats]
        + [_spread(call, w, affine, (2,), full)],
    )
    grad_weight = union_rows(
        call,
        c,
        [_spread(call, t, full, (0, 3), affine) for t in (g, x)]
        + [_spread(call, s, (n, groups, 1, 1), (0,), affine) for s in stats],
    )
    grad_bias = _spread(call, g, full, (0, 3), affine)
    return _masked(b["output_mask"], [grad_input, grad_weight, grad_bias])


# --------------------------------------------------------------------------------------------
# losses, glu, FFTs


_ELEMENTWISE_LOSS_BACKWARDS = (
    "mse_loss_backward", "smooth_l1_loss_backward", "huber_loss_backward",
    "soft_margin_loss_backward", "binary_cross_entropy_backward", "l1_loss_backward",
)  # fmt: skip


@rule(*_ELEMENTWISE_LOSS_BACKWARDS)
def loss_backward(call: Call) -> list[Deps | None]:
    """Elementwise losses: ``grad_output`` is per element or a scalar (mean, sum)."""
    return pointwise(call)


@rule("nll_loss_backward", "nll_loss2d_backward")
def nll_loss_backward(call: Call) -> list[Deps | None]:
    """``grad_input[n, c, ...]`` reads ``grad_output[n, ...]`` where ``c == target[n, ...]``."""
    b = call.bound()
    grad, x, target = b["grad_output"], b["self"], b["target"]
    d = call.deps(grad)
    out = call.outs[0]
    if d is None:
        return [fallback_rows(call, out)]
    cdim = 1 if x.dim() > 1 else 0
    view = list(x.shape)
    view[cdim] = 1
    if grad.numel() == 1:
        rows = _deps.broadcast(d, (), out.shape)
    else:
        rows = _deps.broadcast(d, view, out.shape)
    if call.local or not call.is_varying(target):
        picked = torch.arange(x.shape[cdim]).view([-1 if k == cdim else 1 for k in range(x.dim())])
        hit = (picked == target.detach().cpu().unsqueeze(cdim)).expand(out.shape).reshape(-1)
        rows = _deps.take(rows, torch.where(hit, torch.arange(out.numel()), -1))
    others = [t for t in (x, b.get("weight"), b.get("total_weight")) if call.deps(t) is not None]
    if others:
        extra = [fallback_rows(call, out)]
        return [union_rows(call, out.numel(), [rows, *extra])]
    return [rows]


@rule("glu")
def glu(call: Call) -> list[Deps | None]:
    """``a * sigmoid(b)`` for the halves ``a``, ``b`` of ``dim``."""
    b = call.bound()
    x, dim = b["self"], b["dim"] % b["self"].dim()
    d = call.deps(x)
    if d is None:
        return [None]
    half = x.shape[dim] // 2
    ids = torch.arange(x.numel()).view(x.shape)
    first, second = ids.narrow(dim, 0, half), ids.narrow(dim, half, half)
    size = call.outs[0].numel()
    return [
        _deps.gather_union(
            size, call.n_seeds, [(d, None, first.reshape(-1)), (d, None, second.reshape(-1))]
        )
    ]


@rule("glu_backward")
def glu_backward(call: Call) -> list[Deps | None]:
    """``grad_input`` at both halves reads ``grad_output`` and ``self`` at both halves."""
    b = call.bound()
    grad, x, dim = b["grad_output"], b["self"], b["dim"] % b["self"].dim()
    half = x.shape[dim] // 2
    ids = torch.arange(x.numel()).view(x.shape)
    halves = [ids.narrow(dim, 0, half).reshape(-1), ids.narrow(dim, half, half).reshape(-1)]
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    dg, dx = call.deps(grad), call.deps(x)
    for dest in halves:
        if dg is not None:
            parts.append((dg, dest, None))
        if dx is not None:
            parts += [(dx, dest, src) for src in halves]
    if not parts:
        return [None]
    return [_deps.gather_union(x.numel(), call.n_seeds, parts)]


@rule("_fft_c2c", "_fft_r2c", "_fft_c2r")
def fft(call: Call) -> list[Deps | None]:
    """Each output element depends on its whole line (plane) along the transformed dims."""
    b = call.bound()
    x, out = b["self"], call.outs[0]
    d = call.deps(x)
    if d is None:
        return [None]
    dims = sorted({k % x.dim() for k in b["dim"]})
    kept = tuple(1 if k in dims else s for k, s in enumerate(x.shape))
    if len(kept) != out.dim():
        return [fallback_rows(call, out)]
    return [_deps.broadcast(_deps.reduce(d, x.shape, dims), kept, out.shape)]
