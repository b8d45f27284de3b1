"""Sources: each way of computing an operator (a method of derivs or an oracle), run so that
a failure is recorded on the source instead of raised."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils._pytree import tree_flatten

Tensor = torch.Tensor


@dataclass
class Source:
    """One way of computing an operator: a method of derivs or an oracle.

    ``tags`` name the derivative rules its result rests on (see ``_diagnose.CAUSES``), plus
    ``m:<method>`` or ``o:<oracle>`` for its own code.
    """

    name: str
    oracle: bool
    tags: frozenset[str]
    leaves: list[Tensor] | None = None
    errors: list[Tensor] | None = None
    status: str = "ok"  # ok | error | skip | n/a
    note: str = ""
    seconds: float = 0.0
    exc: BaseException | None = None  # what it raised (traceback dropped), for _limits


class Operator(NamedTuple):
    """Every source of one operator, and the labels of its blocks (``[0][1]`` ...)."""

    sources: list[Source]
    labels: list[str]


def leaves(tree: Any) -> list[Tensor]:
    return list(tree_flatten(tree)[0])


def summary(exc: BaseException) -> str:
    """``Type: first line`` of an exception, the line cut at 400 characters."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 400:
        first = first[:397] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run(
    name: str,
    oracle: bool,
    tags: Iterable[str],
    thunk: Callable[[], Any],
    *,
    estimate: bool = False,
    skip: tuple[type[Exception], ...] = (),
    refused: str | None = None,
) -> Source:
    """Compute one source; whatever it raises is recorded on it, not propagated.

    ``estimate``: the thunk returns ``(value, error)``; ``skip``: these exceptions make the
    source ``skip`` (does not apply); ``refused``: the status of any other exception
    (default ``error``).

    NOTE: func itself was already evaluated once at the given point (its exceptions
    propagate from there); what fails here fails under a transform or at a perturbed point,
    and belongs in the report next to the results that did work.
    """
    src = Source(name, oracle, frozenset(tags))
    start = time.perf_counter()
    try:
        result = thunk()
    except skip as exc:
        src.status, src.note = "skip", summary(exc)
    except Exception as exc:
        src.status, src.note = (refused or "error"), summary(exc)
        src.exc = exc.with_traceback(None)
    else:
        if estimate:
            src.leaves, src.errors = leaves(result[0]), leaves(result[1])
        else:
            src.leaves = leaves(result)
    src.seconds = time.perf_counter() - start
    return src
