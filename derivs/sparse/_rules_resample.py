"""Dependency rules of resampling ops: interpolation (linear to tricubic) and adaptive pooling.

These ops act on each (batch, channel) plane alike and separably along each spatial dim, and
their weights depend on sizes, scales and ``align_corners`` only. So each spatial dim is
*probed*: the op itself runs on one-hot inputs along that dim (constant along the others),
and its nonzero outputs say which output positions read which input positions, exactly as
the op computes them (a weight that is exactly zero, on an aligned grid, is no dependence).
The planes then pair up by the product over dims. Backwards read the same pairs the other
way; a max pool's indices, when fixed, say exactly where.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import rule
from derivs.sparse._trace import Call, fallback_rows

_aten = torch.ops.aten


def probe_pairs(
    run: Callable[[torch.Tensor], torch.Tensor], in_sp: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` flat spatial positions of one plane that the separable op ``run`` connects."""
    nd = len(in_sp)
    outs = torch.zeros(1, dtype=torch.int64)
    ins = torch.zeros(1, dtype=torch.int64)
    out_sp: list[int] = []
    for d in range(nd):
        length = in_sp[d]
        shape = [length, 1] + [1] * nd
        shape[2 + d] = length
        hot = torch.eye(length, dtype=torch.float64).view(shape).expand(length, 1, *in_sp)
        y = run(hot.contiguous())
        others = tuple(2 + k for k in range(nd) if k != d)
        hit = (y != 0).any(dim=others) if others else y != 0
        hit = hit.reshape(length, -1)  # (input position, output position) along dim d
        i, o = hit.nonzero(as_tuple=True)
        out_sp.append(hit.shape[1])
        outs = (outs.unsqueeze(1) * hit.shape[1] + o.unsqueeze(0)).reshape(-1)
        ins = (ins.unsqueeze(1) * length + i.unsqueeze(0)).reshape(-1)
    return outs, ins


def _plane_edges(
    pairs: tuple[torch.Tensor, torch.Tensor], planes: int, p_out: int, p_in: int
) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.arange(planes).unsqueeze(1)
    return (base * p_out + pairs[0]).reshape(-1), (base * p_in + pairs[1]).reshape(-1)


def _resample(
    call: Call,
    src: torch.Tensor,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    nd: int,
    run: Callable[[torch.Tensor], torch.Tensor],
    forward: bool,
) -> list[Deps | None]:
    """Rows of a separable resampling (``forward``) or of its backward (the pairs reversed)."""
    d = call.deps(src)
    if d is None:
        return [None]
    out = call.outs[0]
    try:
        pairs = probe_pairs(run, tuple(in_shape[-nd:]))
    except (RuntimeError, NotImplementedError, TypeError):
        return [fallback_rows(call, out)]
    planes = math.prod(in_shape[:-nd])
    dest, orig = _plane_edges(pairs, planes, math.prod(out_shape[-nd:]), math.prod(in_shape[-nd:]))
    if forward:
        return [_deps.gather_union(out.numel(), call.n_seeds, [(d, dest, orig)])]
    return [_deps.gather_union(out.numel(), call.n_seeds, [(d, orig, dest)])]


_INTERPOLATIONS = {
    "upsample_linear1d": 1, "upsample_bilinear2d": 2, "upsample_bicubic2d": 2,
    "upsample_trilinear3d": 3, "_upsample_bilinear2d_aa": 2, "_upsample_bicubic2d_aa": 2,
}  # fmt: skip


@rule(*_INTERPOLATIONS)
def interpolate(call: Call) -> list[Deps | None]:
    x, out = call.args[0], call.outs[0]
    nd = _INTERPOLATIONS[call.func._schema.name.split("::")[-1]]
    rest = call.args[1:]
    func = call.func
    return _resample(call, x, x.shape, out.shape, nd, lambda t: func(t, *rest, **call.kwargs), True)


@rule(*(f"{name}_backward" for name in _INTERPOLATIONS))
def interpolate_backward(call: Call) -> list[Deps | None]:
    """``(grad_output, output_size, input_size, align_corners, *scales)``."""
    name = call.func._schema.name.split("::")[-1].removesuffix("_backward")
    nd = _INTERPOLATIONS[name]
    grad, out_size, in_size, *rest = call.args
    forward = getattr(_aten, name).default
    in_shape = list(in_size)
    return _resample(
        call,
        grad,
        in_shape,
        grad.shape,
        nd,
        lambda t: forward(t, list(out_size), *rest),
        False,
    )


_ADAPTIVE = {
    "_adaptive_avg_pool2d": 2, "_adaptive_avg_pool3d": 3, "adaptive_max_pool2d": 2,
    "adaptive_max_pool3d": 3,
}  # fmt: skip
_AVG = {2: _aten._adaptive_avg_pool2d.default, 3: _aten._adaptive_avg_pool3d.default}


@rule(*_ADAPTIVE)
def adaptive_pool(call: Call) -> list[Deps | None]:
    """Each output element depends on its adaptive window (of the max pool: varying position)."""
    x, out = call.args[0], call.outs[0]
    nd = _ADAPTIVE[call.func._schema.name.split("::")[-1]]
    size = list(out.shape[-nd:])
    rows = _resample(call, x, x.shape, out.shape, nd, lambda t: _AVG[nd](t, size), True)
    return rows + [None for _ in call.outs[1:]]


@rule("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward")
def adaptive_avg_backward(call: Call) -> list[Deps | None]:
    grad, x = call.args[:2]
    nd = 3 if "3d" in call.func._schema.name else 2
    size = list(grad.shape[-nd:])
    return _resample(call, grad, x.shape, grad.shape, nd, lambda t: _AVG[nd](t, size), False)


@rule("adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward")
def adaptive_max_backward(call: Call) -> list[Deps | None]:
    """Fixed (or local) indices: exactly where the maxima were; otherwise the windows."""
    grad, x, indices = call.args[:3]
    nd = 3 if "3d" in call.func._schema.name else 2
    d = call.deps(grad)
    if d is None:
        return [None]
    if call.local or not call.is_varying(indices):
        planes = math.prod(x.shape[:-nd])
        base = torch.arange(planes).unsqueeze(1) * math.prod(x.shape[-nd:])
        dest = (base + indices.detach().cpu().reshape(planes, -1)).reshape(-1)
        return [_deps.union(x.numel(), call.n_seeds, [(d, dest)])]
    size = list(grad.shape[-nd:])
    return _resample(call, grad, x.shape, grad.shape, nd, lambda t: _AVG[nd](t, size), False)
