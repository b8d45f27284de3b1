"""Library-wide settings: the memory budget that guards against giant materialisations."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

# NOTE: 4 GiB is large enough for every tutorial example (the biggest, a (32, 512, 512) float32
# Hessian, needs 32 MiB) and small enough that an accidental dense Hessian of a model's
# parameters (N**2 entries) is refused before it takes the machine down.
DEFAULT_MEMORY_BUDGET = 4 * 2**30


class MemoryBudgetError(ValueError):
    """derivs refused a computation whose size or predicted peak is above the memory budget.

    A ``ValueError`` (as before it had a class of its own), so callers that catch
    ``ValueError`` still do; ``derivs.check`` tells it apart from a wrong derivative by this
    class and reports the method as not run.
    """


_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "tib": 2**40,
}


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"derivs: DERIVS_MEMORY_BUDGET={text!r} is not a size; use bytes or a unit, e.g. '8GiB'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _initial_budget() -> int:
    raw = os.environ.get("DERIVS_MEMORY_BUDGET")
    return DEFAULT_MEMORY_BUDGET if raw is None else _parse_bytes(raw)


_budget: list[int] = [_initial_budget()]


def _check_budget_value(nbytes: object) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(
            f"derivs.set_memory_budget: nbytes must be an int number of bytes, got {type(nbytes).__name__}"
        )
    if nbytes < 1:
        raise ValueError(f"derivs.set_memory_budget: nbytes must be >= 1, got {nbytes}")
    return nbytes


def get_memory_budget() -> int:
    """Return the largest Jacobian/Hessian/basis (in bytes) derivs will materialise."""
    return _budget[0]


def set_memory_budget(nbytes: int) -> int:
    """Set the memory budget in bytes and return the previous one.

    The default is 4 GiB, or the ``DERIVS_MEMORY_BUDGET`` environment variable (e.g. ``8GiB``).
    A Jacobian, Hessian or basis block that would exceed it raises ``ValueError`` before it is
    allocated, with the size it needs and a hint (``hvp``/``vhp``, ``chunk_size``).

    >>> import derivs
    >>> old = derivs.set_memory_budget(2**20)
    >>> derivs.get_memory_budget()
    1048576
    >>> _ = derivs.set_memory_budget(old)
    """
    previous = _budget[0]
    _budget[0] = _check_budget_value(nbytes)
    return previous


@contextlib.contextmanager
def memory_budget(nbytes: int) -> Iterator[None]:
    """Context manager that sets the memory budget for the duration of a ``with`` block."""
    previous = set_memory_budget(nbytes)
    try:
        yield
    finally:
        _budget[0] = previous
