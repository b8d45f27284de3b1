"""The rounding noise of one evaluation of ``func``, measured rather than modelled.

The finite-difference rules bound the rounding of one evaluation by
``_ROUNDING * eps * max|f|``. That is the rounding of the *result*; a function whose terms
cancel (``x @ S @ x`` summing terms of 5.6 to 0, ``W x + b`` summing 0.5s to 0.016 inside a
``tanh``) rounds relative to its terms, which ``|f|`` does not show. :func:`measured_noise`
finds that level by experiment: ``evaluate`` runs again with every floating operand of every
aten operation moved one ulp up or down at random (a deterministic draw), so each rounding
the computation can make is replayed at full size where it happens, and propagates (or
cancels) through everything after it as a real one would. The largest deviation from the
plain evaluation over a few draws is the measured noise of one evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from derivs.oracles._common import Tensor

# NOTE: four draws: one draw can land near zero where a few terms of equal size cancel
# (three terms: a one-in-four chance), four such draws together one in 256, and the
# rules' spread terms cover the rest.
_DRAWS = 4
_SEED = 20261206


class _UlpJitter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Moves every floating operand of every aten op one ulp, up or down at random.

    Views and ops that mutate an argument run untouched: a view of a moved copy would not
    alias the original, and an in-place op on a copy would not reach the caller's tensor.
    The operands of the other ops are the values rounded by whatever produced them, so a
    one-ulp move of each is one full-sized rounding error per value and per use.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.generator = torch.Generator().manual_seed(seed)

    def _move(self, t: Any) -> Any:
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.numel() == 0:
            return t
        up = torch.randint(0, 2, t.shape, generator=self.generator).to(t.device, torch.bool)
        inf = torch.full_like(t, math.inf)
        moved = torch.nextafter(t, torch.where(up, inf, -inf))
        # zeros stay zeros (a relative move), and so do infinities and NaN
        return torch.where((t == 0) | ~torch.isfinite(t), t, moved)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func.is_view or func._schema.is_mutable:
            return func(*args, **kwargs)
        return func(*tree_map(self._move, args), **tree_map(self._move, kwargs))


def measured_noise(
    evaluate: Callable[[list[Tensor]], list[Tensor]],
    points: list[Tensor],
    reference: list[Tensor],
) -> list[Tensor]:
    """Per output leaf of ``reference = evaluate(points)``, the plain evaluation the caller
    already has: the largest ``|f_jittered - f|``, 0-d.

    Where ``func`` cannot run under a dispatch mode at all (it raises there and only there),
    the measurement is skipped and the rules keep their model: zero noise is returned.
    """
    noise = [r.new_zeros(()) for r in reference]
    for draw in range(_DRAWS):
        try:
            with _UlpJitter(_SEED + draw):
                jittered = evaluate(points)
        except Exception:  # NOTE: the plain evaluation ran; keep the model
            return [r.new_zeros(()) for r in reference]
        for leaf, (j, r) in enumerate(zip(jittered, reference, strict=True)):
            if r.numel():
                deviation = (j - r).abs()
                deviation = torch.where(deviation.isfinite(), deviation, 0.0).amax()
                noise[leaf] = torch.maximum(noise[leaf], deviation)
    return noise
