"""Comparisons: two sources' results block by block, with ``derivs.testing.tolerance``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from derivs import testing
from derivs._check._sources import Source
from derivs._validate import fmt_index

Tensor = torch.Tensor

#: The tag of a source whose ``errors`` are the whole tolerance (``check(reference=)``).
BOUND = "o:ref"

# NOTE: blocks are compared in float64 on the cpu, in chunks of this many elements, so that
# comparing two (32, 512, 512) Hessians needs a few temporaries of 8 MiB, not of 512 MiB.
_CHUNK = 2**20


@dataclass(frozen=True)
class Cmp:
    """The outcome of one comparison; ``worst`` locates the element with the largest ratio."""

    ok: bool
    max_abs: float
    max_rel: float
    tol: float
    ratio: float
    worst: str

    @classmethod
    def mismatch(cls, what: str) -> Cmp:
        """Results that cannot be compared element by element (block count or shape)."""
        return cls(False, math.inf, math.inf, math.nan, math.inf, what)


class Comparisons:
    """Every comparison of one operator, computed once (the verdict and the rows share them)."""

    def __init__(
        self, labels: list[str], rtol: float | None, atol: float | None, value_scale: float
    ) -> None:
        self.labels, self.rtol, self.atol = labels, rtol, atol
        self.value_scale = value_scale
        self.done: dict[tuple[int, int], Cmp] = {}

    def get(self, actual: Source, expected: Source) -> Cmp:
        key = (id(actual), id(expected))
        if key not in self.done:
            assert actual.leaves is not None and expected.leaves is not None
            pieces = [x for x in (actual.errors, expected.errors) if x is not None]
            errors = (
                [sum(p, torch.zeros(())) for p in zip(*pieces, strict=True)] if pieces else None
            )
            self.done[key] = compare(
                actual.leaves,
                expected.leaves,
                errors,
                self.labels,
                self.rtol,
                self.atol,
                self.value_scale,
                bound=BOUND in actual.tags or BOUND in expected.tags,
            )
        return self.done[key]

    def agree(self, a: Source, b: Source) -> bool:
        """Symmetric: a comparison made in either direction is reused."""
        back = self.done.get((id(b), id(a)))
        return back.ok if back is not None else self.get(a, b).ok


def compare(
    actual: list[Tensor],
    expected: list[Tensor],
    errors: list[Tensor] | None,
    labels: list[str],
    rtol: float | None,
    atol: float | None,
    value_scale: float = 0.0,
    *,
    bound: bool = False,
) -> Cmp:
    """Compare block by block; summarise the worst element.

    ``bound``: ``errors`` is the whole tolerance (``check(reference=)``'s k-rule), not an
    estimate added to the dtype's (``rtol``/``atol``, when given, still replace it).
    """
    if len(actual) != len(expected):
        return Cmp.mismatch(f"{len(actual)} blocks vs {len(expected)}")
    max_abs = max_rel = 0.0
    worst = Cmp(True, 0.0, 0.0, math.nan, -1.0, "")
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        label = labels[k] if k < len(labels) else f"[{k}]"
        if a.shape != e.shape:
            return Cmp.mismatch(f"{label} shape {tuple(a.shape)} vs {tuple(e.shape)}")
        if e.numel() == 0:
            continue
        err = None if errors is None else errors[k]
        b_abs, b_rel, ratio, allowed, index, av, ev = _compare_block(
            a, e, err, rtol, atol, value_scale, bound
        )
        max_abs, max_rel = max(max_abs, b_abs), max(max_rel, b_rel)
        if ratio > worst.ratio:
            where = (
                f"{label}{' ' if label else ''}{fmt_index(index, e.shape)}: {av:.6g} vs {ev:.6g}"
            )
            worst = Cmp(True, 0.0, 0.0, allowed, ratio, where)
    ratio = max(worst.ratio, 0.0)
    return Cmp(not ratio > 1.0, max_abs, max_rel, worst.tol, ratio, worst.worst)


def _compare_block(
    a: Tensor,
    e: Tensor,
    err: Tensor | None,
    rtol: float | None,
    atol: float | None,
    value_scale: float,
    bound: bool = False,
) -> tuple[float, float, float, float, int, float, float]:
    """(max abs, max rel, worst ratio, tolerance there, its flat index, actual, expected)."""
    fa, fe = a.detach().reshape(-1), e.detach().reshape(-1)
    fr = None if err is None else err.detach().broadcast_to(e.shape).reshape(-1)
    n = fe.numel()
    spans = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    lower = a.dtype if torch.finfo(a.dtype).eps >= torch.finfo(e.dtype).eps else e.dtype
    tol = testing.tolerance(lower, n, _block_scale(fa, fe, spans, value_scale))
    t_abs = tol.atol if atol is None else atol
    t_rel = tol.rtol if rtol is None else rtol
    safety = testing.ERROR_SAFETY
    if bound:
        t_abs, t_rel = atol or 0.0, rtol or 0.0
        safety = 0.0 if rtol is not None or atol is not None else 1.0
    max_abs = max_rel = 0.0
    best = (-1.0, math.nan, 0, math.nan, math.nan)
    for s, stop in spans:
        ca, ce = _chunk(fa, s, stop), _chunk(fe, s, stop)
        allowed = t_abs + t_rel * ce.abs()
        if fr is not None:
            allowed = allowed + safety * _chunk(fr, s, stop).abs()
        diff = (ca - ce).abs()
        finite = torch.isfinite(diff)
        same = (torch.isnan(ca) & torch.isnan(ce)) | (torch.isinf(ce) & (ca == ce))
        ratio = torch.where(diff == 0, torch.zeros_like(diff), diff / allowed.clamp_min(1e-300))
        ratio = torch.where(finite, ratio, torch.where(same, 0.0, math.inf))
        safe = torch.where(finite, diff, torch.zeros_like(diff))
        max_abs = max(max_abs, float(safe.max()) if bool(finite.all()) else math.inf)
        rel = torch.where(ce != 0, safe / ce.abs(), torch.zeros_like(safe))
        max_rel = max(max_rel, float(rel.max()))
        w = int(torch.argmax(ratio))
        if float(ratio[w]) > best[0]:
            best = (float(ratio[w]), float(allowed[w]), s + w, float(ca[w]), float(ce[w]))
    ratio_, allowed_, index, av, ev = best
    return max_abs, max_rel, ratio_, allowed_, index, av, ev


def _chunk(t: Tensor, start: int, stop: int) -> Tensor:
    return t[start:stop].to("cpu", torch.float64)


def _block_scale(fa: Tensor, fe: Tensor, spans: list[tuple[int, int]], value_scale: float) -> float:
    """The scale of ``testing.tolerance`` for one block: the larger finite magnitude of both.

    NOTE: the two sides are peers (a method and an oracle, or two methods), so neither alone
    sets the scale. It is at least ``value_scale``, the magnitude of func's inputs and
    output: a derivative's rounding error is relative to the values its computation passes
    through, so a block made small by cancellation still carries an absolute error of order
    eps * those values.
    """
    scale = value_scale
    for s, stop in spans:
        for t in (_chunk(fa, s, stop), _chunk(fe, s, stop)):
            m = torch.where(torch.isfinite(t), t.abs(), torch.zeros_like(t))
            scale = max(scale, float(m.max()))
    return scale


def magnitude(values: list[Any]) -> float:
    """The largest finite |value| among the floating-point tensors in ``values``."""
    best = 0.0
    for v in values:
        if (
            isinstance(v, Tensor)
            and v.dtype.is_floating_point
            and v.numel()
            and v.device.type != "meta"
        ):
            t = v.detach()
            finite = t[torch.isfinite(t)]
            if finite.numel():
                best = max(best, float(finite.abs().max()))
    return best
