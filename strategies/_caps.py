"""Named size caps and value bounds shared by every strategy, and the eager validators.

Every cap says why it has the value it has: the suite runs on a 2-core machine, its oracles
are finite differences (one or two function evaluations per input element for a Jacobian, per
pair of elements for a Hessian) and naive Python loops, so sizes stay small on purpose. The
bugs the suite hunts (transposed blocks, wrong argnums, lost batch dims, bad strides) show up
on a (2, 3) tensor as well as on a (512, 512) one.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis.errors import InvalidArgument

# NOTE: 4 dims reach every layout case (transposes of inner dims, slicing of middle dims,
# size-1 dims in the middle) while a Hessian's shape (*out, *in, *in) stays at most 12-d.
MAX_DIMS = 4
# NOTE: 8 per side lets shapes be clearly non-square (1 x 8, 2 x 7) within MAX_ELEMENTS.
MAX_SIDE = 8
# NOTE: 32 elements per (per-sample) tensor: a finite-difference Hessian of a 32-element
# input needs 4 * 32**2 = 4096 evaluations, about a second on 2 cores; a dense Hessian of a
# 32-element output w.r.t. three 32-element inputs is 32 * 96 * 96 = 295k numbers.
MAX_ELEMENTS = 32
# NOTE: intermediate values of generated functions may be up to twice as large (a linear map
# may widen), never more, so one forward pass stays microseconds.
MAX_INTERMEDIATE = 64
# NOTE: intermediate tensors may have one dim more than inputs (unsqueeze, unflatten).
MAX_INTERMEDIATE_DIMS = MAX_DIMS + 1
# NOTE: three arguments are enough to make argnums tuples, orders and negative indices matter.
MAX_ARGS = 3
# NOTE: batch sizes up to 4: the batched oracle loops over samples, one Jacobian each.
MAX_BATCH = 4
# NOTE: the tutorial's predict(weight, bias, x) with up to 16 features: its Hessian
# (D_out, D_in, D_in) has at most 4096 entries.
MAX_FEATURES = 16
# NOTE: seeds for weights: any range works; small keeps reprs short.
MAX_SEED = 2**16 - 1

# NOTE: inputs lie in [-1, 1]: every primitive is well conditioned there (tanh is not
# saturated, exp of a bounded value cannot overflow), so finite differences with the usual
# step sizes are accurate and the worst-case value bounds below stay small.
INPUT_BOUND = 1.0
# NOTE: a generated function never applies an op that could push its worst-case |value|
# (given |inputs| <= INPUT_BOUND) above this; linear maps and the mandatory adapters may
# exceed it a little, and every GeneratedFunction reports its own rigorous bound.
VALUE_BOUND = 100.0
# NOTE: exp is applied only to sub-expressions bounded by 3, so exp(.) <= e**3 ~ 20.
EXP_INPUT_BOUND = 3.0


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    allowed = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        raise InvalidArgument(f"{name}={value!r} must be {what}")


def check_int(name: str, value: Any, *, min_value: int | None = None) -> None:
    """``value`` is an int (not a bool) and at least ``min_value``."""
    check_type(name, value, int, "an int")
    if min_value is not None and value < min_value:
        raise InvalidArgument(f"{name}={value} must be at least {min_value}")


def check_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    """``lo <= hi`` (either may be None), in Hypothesis' words: ``min_dims=3 is larger than max_dims=2``."""
    if lo is not None and hi is not None and lo > hi:
        raise InvalidArgument(f"{lo_name}={lo} is larger than {hi_name}={hi}")


def check_float(name: str, value: Any) -> None:
    check_type(name, value, (int, float), "a real number")
    if not math.isfinite(value):
        raise InvalidArgument(f"{name}={value!r} must be finite")


def check_optional_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be True, False or None")
