"""Whether the finite differences themselves show a kink: one-sided differences at the worst
element of a first-order disagreement, compared with each other.

A kink (relu or abs at 0) makes the right and left derivatives differ by O(1); where func is
differentiable they agree to within their error estimates, and then AD results that disagree
with the central differences have wrong rules, not a kink to blame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from derivs import testing
from derivs._check._setup import Case, sample
from derivs._check._sources import Source

Tensor = torch.Tensor


class Sided(NamedTuple):
    """The right and left derivatives of output ``out`` along input ``arg``'s ``element``."""

    right: float
    left: float
    error: float  # the estimated error of right - left
    where: str  # e.g. "d out[3] / d args[0][1]"

    @property
    def kink(self) -> bool:
        return abs(self.right - self.left) > testing.ERROR_SAFETY * self.error


def _derivative(
    f: Callable[[float], float], x: float, step: float, f0: float, eps: float
) -> tuple[float, float]:
    """A one-sided derivative at ``x`` toward ``x + step`` (step may be negative),
    Richardson-extrapolated from steps ``step`` and ``step/2``, and its error estimate (the
    two differences' spread plus the rounding of ``f``, ``4 eps |f|`` per evaluation)."""
    far, near = f(x + step), f(x + step / 2)
    d_far, d_near = (far - f0) / step, (near - f0) / (step / 2)
    rounding = 4 * eps * max(abs(f0), abs(far), abs(near))
    return 2 * d_near - d_far, abs(d_near - d_far) + 10 * rounding / abs(step)


def one_sided(
    func: Callable[..., Any], point: Sequence[Any], arg: int, out: int, element: int
) -> Sided:
    """The one-sided derivatives of ``func(*point).flatten()[out]`` along
    ``point[arg].flatten()[element]``, in the argument's own dtype."""
    x = point[arg].detach()
    dtype_eps = torch.finfo(x.dtype).eps
    origin = float(x.reshape(-1)[element])

    def f(value: float) -> float:
        moved = x.clone().reshape(-1)
        moved[element] = value
        call = list(point)
        call[arg] = moved.reshape(x.shape)
        with torch.no_grad():
            return float(func(*call).reshape(-1)[out])

    # NOTE: eps**(1/3), not the sqrt(eps) of a plain one-sided difference: the extrapolated
    # difference is O(h**2), and the larger step keeps rounding that |f| does not show (terms
    # that cancel, such as log(cosh(x)) near 0) far below the truncation estimate. The
    # representable step is the one actually taken.
    h = dtype_eps ** (1 / 3) * max(1.0, abs(origin))
    h = float(torch.tensor(origin + h, dtype=x.dtype)) - origin
    f0 = f(origin)
    right, e_right = _derivative(f, origin, h, f0, dtype_eps)
    left, e_left = _derivative(f, origin, -h, f0, dtype_eps)
    return Sided(right, left, e_right + e_left, f"output {out}, input {element}")


def at_worst(case: Case, operator: str, ad: Source, ref: Source) -> Sided | None:
    """The one-sided derivatives where ``ad`` and ``ref`` (a Jacobian, or a batch Jacobian
    stacked over samples) differ most; None when they cannot be located or computed."""
    if ad.leaves is None or ref.leaves is None or operator not in ("jacobian", "batch_jacobian"):
        return None
    worst = max(
        ((k, _largest(a, e)) for k, (a, e) in enumerate(zip(ad.leaves, ref.leaves, strict=False))),
        key=lambda t: t[1][1],
        default=None,
    )
    if worst is None or not worst[1][1] > 0:
        return None
    k, (flat, _) = worst
    nums = case.opts.nums
    point, arg = case.point, nums[k]
    numel_in = point[arg].numel()
    numel_out = case.out.numel()
    if operator == "batch_jacobian":
        assert case.opts.dims is not None
        b, flat = divmod(flat, numel_out * numel_in)
        point = sample(case.args, case.opts.dims, b)
    out, element = divmod(flat, numel_in)
    try:
        return one_sided(case.func, point, arg, out, element)
    except Exception:  # NOTE: func failing at a nearby point leaves the question open
        return None


def _largest(a: Tensor, e: Tensor) -> tuple[int, float]:
    """(flat index, value) of the largest finite |a - e|."""
    if a.shape != e.shape or a.numel() == 0:
        return 0, 0.0
    diff = (a.detach().double() - e.detach().double()).abs().reshape(-1).cpu()
    diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
    index = int(torch.argmax(diff))
    return index, float(diff[index])
