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

For finite differences only the roundings that differ between two evaluations matter:
``measured_noise(..., varying_only=True)`` moves only the values that depend on the points
(see :class:`_UlpJitter`), and its cost follows their size, not that of the constants
(a 16 x 10^6 weight a closure captures).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from derivs.oracles._common import Tensor

# NOTE: four draws: one draw can land near zero where a few terms of equal size cancel
# (three terms: a one-in-four chance), four such draws together one in 256, and the
# rules' spread terms cover the rest.
_DRAWS = 4
_SEED = 20261206
_WORD_BITS = 62  # random bits used of each int64 the generator draws (below 2**62)
_SAME_SIZE_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


class _UlpJitter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Moves every floating operand of every aten op one ulp, up or down at random.

    Views and ops that mutate an argument run untouched: a view of a moved copy would not
    alias the original, and an in-place op on a copy would not reach the caller's tensor.
    The operands of the other ops are the values rounded by whatever produced them, so a
    one-ulp move of each is one full-sized rounding error per value and per use.

    With ``varying`` (the points of the evaluation), only the operands whose value depends on
    them move: the points (rounded where the caller stepped them), every op result computed
    from them, and tensors an op with such an operand wrote into. The others (the arguments
    not differentiated, the tensors func closes over, what it computes from those alone) are
    the same in every evaluation, so their rounding is the same in each and cancels in a
    difference of two; an op of constants alone runs untouched. A constant that meets a
    varying operand moves too when it is no larger than that operand: each move adds a
    random term, and with fewer terms all the draws could cancel (``sin(x) - c``: the
    moves of ``x`` and ``sin(x)`` alone sum to 0 in half the draws). A larger one (``W`` in
    ``W @ x``) stays: the products are moved through ``x``, at a cost of the size of
    ``x``, not of ``W``. NOTE: the data flow is followed by storage, which saved tensors
    unpacked in a backward pass share; a storage reused after a varying tensor is freed only
    moves more. Once a varying value leaves as a Python number (``.item()``, a comparison),
    the flow is lost and every operand moves from then on.
    """

    def __init__(self, seed: int, varying: list[Tensor] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.generator = torch.Generator().manual_seed(seed)
        # the storages of the varying values; None: every operand varies
        self.varying = None if varying is None else {_storage(t) for t in varying}

    def _varies(self, t: Tensor) -> bool:
        if self.varying is None:
            return True
        key = _storage(t)
        return key is None or key in self.varying

    def _track(self, func: Any, operands: list[Tensor], out: Any) -> None:
        """Add the storages ``func`` filled from a varying operand to the varying ones."""
        if self.varying is None or not any(self._varies(t) for t in operands):
            return
        results = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if not results:
            self.varying = None
            return
        written = operands if func._schema.is_mutable else []
        self.varying.update(_storage(t) for t in (*results, *written))

    def _move(self, t: Any) -> Any:
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.numel() == 0:
            return t
        # NOTE: +-1 on the bit pattern is nextafter towards +-inf in magnitude, without
        # nextafter's per-element cost; zeros stay zeros (a relative move), and so do
        # infinities and NaN
        step = self._signs(t.numel()).reshape(t.shape).to(t.device)
        step = step * ((t != 0) & t.isfinite())
        return (t.view(_SAME_SIZE_INT[t.element_size()]) + step).view(t.dtype)

    def _signs(self, n: int) -> Tensor:
        """``n`` random +-1 (int8), 62 of them from each word the generator draws."""
        words = torch.randint(0, 2**_WORD_BITS, (-(-n // _WORD_BITS), 1), generator=self.generator)
        bits = (words >> torch.arange(_WORD_BITS)) & 1
        return (2 * bits - 1).to(torch.int8).reshape(-1)[:n]

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        operands = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        varying = [t.numel() for t in operands if self._varies(t)]
        if func.is_view or func._schema.is_mutable or not varying:
            out = func(*args, **kwargs)
        else:
            move = partial(self._move_some, max(varying))
            out = func(*tree_map(move, args), **tree_map(move, kwargs))
        self._track(func, operands, out)
        return out

    def _move_some(self, limit: int, t: Any) -> Any:
        """Move ``t`` if it varies, or if it is a constant no larger than ``limit``."""
        if isinstance(t, Tensor) and (t.numel() <= limit or self._varies(t)):
            return self._move(t)
        return t


def _storage(t: Tensor) -> int | None:
    """The key of ``t``'s storage (None where it has none: such a tensor always varies)."""
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return None


def measured_noise(
    evaluate: Callable[[list[Tensor]], list[Tensor]],
    points: list[Tensor],
    reference: list[Tensor],
    *,
    varying_only: bool = False,
) -> list[Tensor]:
    """Per output leaf of ``reference = evaluate(points)``, the plain evaluation the caller
    already has: the largest ``|f_jittered - f|``, 0-d.

    ``varying_only``: move only the values that depend on ``points`` (the noise of a
    difference of two evaluations, the finite differences' concern), not every operand.

    Where ``func`` cannot run under a dispatch mode at all (it raises there and only there),
    the measurement is skipped and the rules keep their model: zero noise is returned.
    """
    noise = [r.new_zeros(()) for r in reference]
    for draw in range(_DRAWS):
        try:
            with _UlpJitter(_SEED + draw, points if varying_only else None):
                jittered = evaluate(points)
        except Exception:  # NOTE: the plain evaluation ran; keep the model
            return [r.new_zeros(()) for r in reference]
        for leaf, (j, r) in enumerate(zip(jittered, reference, strict=True)):
            if r.numel():
                deviation = (j - r).abs()
                deviation = torch.where(deviation.isfinite(), deviation, 0.0).amax()
                noise[leaf] = torch.maximum(noise[leaf], deviation)
    return noise
