"""Finite differences along a line: central differences, Richardson extrapolation.

A *line* is one input coordinate (a Jacobian column) or a direction; each rule returns,
per output leaf, the derivative along it and an elementwise estimate of its error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from derivs.oracles._common import Tensor

SCHEMES = ("central", "richardson", "complex_step")

# NOTE: finite-difference constants. The figures in docs/oracles.md were measured with these
# values (tools/oracle_accuracy.py); change them only together with that table.
#
# central: the step eps**(1/3) * max(|x|, 1) balances the truncation error h**2 |f'''| / 6
# against the rounding error eps |f| / h. The error is estimated from a second difference
# at 2h: |D(2h) - D(h)| is 3 times D(h)'s truncation error (3 h**2 |f'''| / 6) and, when
# rounding dominates, about the size of D(h)'s noise; not dividing it by 3 keeps the
# estimate honest when f is noisier than the rounding model below assumes.
_CENTRAL_EXPONENT = 1.0 / 3.0
# richardson: steps h_k = h_0 * 2**-k, k = 0..5 (12 evaluations per column); every window of
# three consecutive steps is extrapolated twice (truncation O(h**6)); each window's error
# is the larger of |R2 - R1| (the last correction) and the spread to the neighbouring
# window, plus the propagated rounding; per element the window with the smallest error
# wins. h_0 = 8 * eps**(1/7) * max(|x|, 1) puts the optimum for an O(h**6) rule
# (about eps**(1/7)) in the middle of the candidate windows.
_RICHARDSON_STEPS = 6
_RICHARDSON_BASE = 8.0
_RICHARDSON_EXPONENT = 1.0 / 7.0
# Rounding model: one evaluation of f is taken to be off by
# _ROUNDING * max(eps * max|f|, noise) (the max over the output leaf), so a difference
# quotient with span d is off by twice that over d. max|f| is the size of the result; noise
# is the largest deviation of f when every operand of every operation is moved one ulp
# (_noise.measured_noise), the size of the roundings of a function whose terms cancel,
# which max|f| does not show (x @ S @ x summing terms of 5.6 to 0).
_ROUNDING = 4.0
# Norm-wise floor: every element's error estimate is raised by _FLOOR times the largest
# estimate in its block. Rounding noise in f is set by the magnitudes of f's intermediate
# values, which an element made small by cancellation (1 - tanh**2 near saturation, a
# sum of large terms) does not show; the floor carries the block's noise level to it.
_FLOOR = 0.25
# mps has no float64, so the oracles compute in float32 there; Metal's fast-math
# transcendental functions are also less accurate than CPU/CUDA libm, so the rounding term
# is widened by this factor on mps (on top of float32's larger eps).
_MPS_WIDENING = 4.0


def _check_scheme(api: str, scheme: object, step: object) -> float | None:
    if scheme not in SCHEMES:
        raise ValueError(
            f"{api}: scheme={scheme!r} is not one of 'central', 'richardson', 'complex_step'"
            " (richardson: most accurate for any smooth function; central: cheapest;"
            " complex_step: exact to rounding, for functions that accept complex input)"
        )
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"{api}: step must be a positive float or None, got {type(step).__name__}")
    if not math.isfinite(step) or step <= 0:
        raise ValueError(f"{api}: step={step!r} must be positive and finite (or None)")
    return float(step)


def _compute_dtype(api: str, xs: Sequence[Tensor], requested: object) -> torch.dtype:
    if requested is not None:
        if not isinstance(requested, torch.dtype) or not requested.is_floating_point:
            raise TypeError(
                f"{api}: compute_dtype must be a floating torch.dtype or None, got {requested!r}"
            )
        return requested
    # NOTE: float64 everywhere except mps, which has none (there: float32, wider errors).
    return torch.float32 if any(x.device.type == "mps" for x in xs) else torch.float64


class _Rounding(NamedTuple):
    """The rounding of one evaluation of f, per output leaf: see _ROUNDING."""

    factor: float  # _ROUNDING, widened on mps
    noise: list[Tensor]  # per leaf, 0-d: the measured deviation of one evaluation

    def of(self, leaf: int, eps: float, magnitude: Tensor) -> Tensor:
        """How far one evaluation of output ``leaf`` may be off, ``magnitude`` its max |f|."""
        return self.factor * torch.maximum(eps * magnitude, self.noise[leaf])


class _Line(NamedTuple):
    """One coordinate (or direction) to differentiate along: ``point(t)`` -> inputs."""

    point: Callable[[complex], list[Tensor]]
    span: Callable[[float], float]  # the representable (x + h) - (x - h)
    scale: float  # the default steps are relative to max(|x|, 1) along the line


def _column_line(base: list[Tensor], cbase: list[Tensor] | None, p: int, c: int) -> _Line:
    xc = base[p].reshape(-1)[c]

    def point(t: complex) -> list[Tensor]:
        src = base if isinstance(t, float) else cbase
        assert src is not None
        pts = list(src)
        x = src[p].clone()
        x.view(-1)[c] += t
        pts[p] = x
        return pts

    def span(h: float) -> float:
        return float((xc + h) - (xc - h))

    return _Line(point, span, max(abs(float(xc)), 1.0))


def _direction_line(base: list[Tensor], cbase: list[Tensor] | None, vs: list[Tensor]) -> _Line:
    def point(t: complex) -> list[Tensor]:
        src = base if isinstance(t, float) else cbase
        assert src is not None
        return [x + t * v for x, v in zip(src, vs, strict=True)]

    biggest = max((float(x.abs().max()) for x in base if x.numel()), default=0.0)
    return _Line(point, lambda h: 2.0 * h, max(biggest, 1.0))


_Eval = Callable[[list[Tensor]], list[Tensor]]


def _difference_quotients(
    evaluate: _Eval, line: _Line, h: float
) -> tuple[list[Tensor], list[Tensor], float]:
    """Central differences along ``line`` at step ``h``: quotients, max |f|, and the span.

    NOTE: max |f| is taken over the whole output leaf (norm-wise), not per element: the
    rounding error of an output element is set by the magnitudes that were summed into it,
    which an element made small by cancellation does not show.
    """
    fp = evaluate(line.point(h))
    fm = evaluate(line.point(-h))
    d = line.span(h)
    quotients = [(a - b) / d for a, b in zip(fp, fm, strict=True)]
    magnitudes = [torch.maximum(_scale(a), _scale(b)) for a, b in zip(fp, fm, strict=True)]
    return quotients, magnitudes, d


def _scale(t: Tensor) -> Tensor:
    """The largest finite magnitude in ``t``, as a 0-d tensor (0 when there is none)."""
    finite = torch.where(torch.isfinite(t), t.abs(), torch.zeros_like(t))
    return finite.amax() if t.numel() else t.new_zeros(())


def _nan_to_inf(t: Tensor) -> Tensor:
    return torch.where(torch.isnan(t), torch.full_like(t, math.inf), t)


def _central(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], rounding: _Rounding
) -> tuple[list[Tensor], list[Tensor]]:
    h = step if step is not None else line.scale * eps[0] ** _CENTRAL_EXPONENT
    d1, m1, s1 = _difference_quotients(evaluate, line, h)
    d2, m2, _ = _difference_quotients(evaluate, line, 2 * h)
    values, errors = [], []
    for leaf, (q1, q2, a, b, e) in enumerate(zip(d1, d2, m1, m2, eps, strict=True)):
        truncation = (q2 - q1).abs()
        values.append(q1)
        errors.append(truncation + 2 * rounding.of(leaf, e, torch.maximum(a, b)) / s1)
    return values, errors


def _richardson(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], rounding: _Rounding
) -> tuple[list[Tensor], list[Tensor]]:
    h0 = (
        step if step is not None else line.scale * _RICHARDSON_BASE * eps[0] ** _RICHARDSON_EXPONENT
    )
    quotients, spans, magnitudes = [], [], []
    for k in range(_RICHARDSON_STEPS):
        q, m, s = _difference_quotients(evaluate, line, h0 * 2.0**-k)
        quotients.append(q)
        magnitudes.append(m)
        spans.append(s)
    values, errors = [], []
    for leaf, e in enumerate(eps):
        d = [q[leaf] for q in quotients]
        magnitude = torch.stack([m[leaf] for m in magnitudes]).amax(dim=0)
        # r1[k] and r2[k] end at step k; entries before the first full window are unused
        r1 = [d[0]] + [(4 * d[k] - d[k - 1]) / 3 for k in range(1, len(d))]
        r2 = r1[:2] + [(16 * r1[k] - r1[k - 1]) / 15 for k in range(2, len(d))]
        windows = list(range(2, len(d)))
        best_value, best_error = r2[windows[0]], torch.full_like(r2[windows[0]], math.inf)
        for pos, k in enumerate(windows):
            neighbour = windows[pos + 1] if pos + 1 < len(windows) else windows[pos - 1]
            truncation = torch.maximum((r2[k] - r1[k]).abs(), (r2[k] - r2[neighbour]).abs())
            # R2_k = (64 D_k - 20 D_{k-1} + D_{k-2}) / 45, and |rounding of D_k| <= 2 delta / span_k
            amplification = (64 / spans[k] + 20 / spans[k - 1] + 1 / spans[k - 2]) * 2 / 45
            err = _nan_to_inf(truncation + rounding.of(leaf, e, magnitude) * amplification)
            better = err < best_error
            best_value = torch.where(better, r2[k], best_value)
            best_error = torch.where(better, err, best_error)
        values.append(best_value)
        errors.append(best_error)
    return values, errors


def _with_floor(error: Tensor) -> Tensor:
    """Add the norm-wise floor _FLOOR * max(error) to an error block (NaN/inf kept)."""
    return error + _FLOOR * _scale(error)


def _cast_args(args: tuple[Any, ...], dtype: torch.dtype) -> list[Any]:
    """Every floating tensor argument detached and cast (exactly) to ``dtype``."""
    return [
        a.detach().to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    ]


def _finish(values: Tensor, errors: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Cast a block to ``like``'s dtype and device; the error stays an upper bound.

    Going to a less precise dtype adds the cast's own rounding (computed exactly) to the
    error, and the error itself is rounded up: scaled by 1 + 2 eps and raised by the
    smallest subnormal, so neither rounding to nearest nor underflow can shrink it.
    """
    low = like.dtype
    if torch.finfo(low).eps > torch.finfo(values.dtype).eps:
        cast = values.to(low)
        errors = errors + (values - cast.to(values.dtype)).abs()
        info = torch.finfo(low)
        errors = errors * (1 + 2 * info.eps) + info.tiny * info.eps
        values = cast
    return values.to(low).to(like.device), errors.to(low).to(like.device)
