"""Expected-failure files, in array-api-tests' format.

One test-id prefix per line (``tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-jacfwd]``,
or shorter to cover every parameter); ``#`` starts a comment, and the comment block just above
an entry is its reason. Two comment lines are read as directives:

``# match: REGEX``   the failure is expected only if its message (the exception line) matches;
                     any other failure of a listed test is new, and fails the run
``# repro: WHERE``   the pinned reproducer of the failure (shown with the reason)

A listed test that fails (as expected) is reported ``xfailed``; one that passes, ``xpassed``
(not an error: a Hypothesis test may not meet its failing input in every profile). An entry
that matches no collected test is warned about, so the file does not rot.

A listed Hypothesis test runs without the shrink phase: its shrunk counterexample is
documented with its reproducer, and shrinking is most of a failing test's time. A new
failure is therefore reported unshrunk; run the test alone, without the file, to shrink it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Entry:
    prefix: str
    reason: str
    source: str  # path:line
    match: str | None = None
    repro: str | None = None


EXPECTED = pytest.StashKey[tuple[Entry, ...]]()


def parse(path: Path) -> list[Entry]:
    """The entries of one expected-failure file, each with its reason and directives."""
    entries: list[Entry] = []
    comments: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        prefix, _, trailing = line.partition("#")
        directives = {
            k: c.split(":", 1)[1].strip()
            for c in comments
            for k in ("match", "repro")
            if c.startswith(k + ":")
        }
        text = [c for c in comments if c and not c.startswith(("match:", "repro:"))]
        reason = trailing.strip() or " ".join(text) or "listed"
        entries.append(
            Entry(
                prefix.strip(),
                reason,
                f"{path}:{lineno}",
                directives.get("match"),
                directives.get("repro"),
            )
        )
    return entries


def apply(items: list[pytest.Item], paths: list[str]) -> None:
    """Attach each listed item's entries; warn about entries that match no collected test."""
    entries = [e for p in paths for e in parse(Path(p))]
    matched: set[Entry] = set()
    for item in items:
        mine = tuple(e for e in entries if item.nodeid.startswith(e.prefix))
        if mine:
            matched.update(mine)
            item.stash[EXPECTED] = mine
    collected_files = {item.nodeid.split("::")[0] for item in items}
    for entry in entries:
        # NOTE: only entries whose file was collected: a run of one file stays quiet about the rest.
        if entry not in matched and entry.prefix.split("::")[0] in collected_files:
            warnings.warn(
                pytest.PytestWarning(
                    f"{entry.source}: expected failure {entry.prefix!r} matches no collected test"
                ),
                stacklevel=1,
            )


def _expected(entries: tuple[Entry, ...], message: str) -> bool:
    return any(e.match is None or re.search(e.match, message) for e in entries)


def adjust(item: pytest.Item, report: pytest.TestReport, failures: list[dict[str, str]]) -> None:
    """Turn the call report of a listed test into xfailed / xpassed, or leave a new failure.

    ``failures`` are the distinct failures of the call (Hypothesis may find several): the
    test is an expected failure only if every one is expected by one of its entries.
    """
    entries = item.stash.get(EXPECTED, ())
    if not entries or report.when != "call":
        return
    why = "; ".join(
        f"{e.reason} ({e.source}{', repro: ' + e.repro if e.repro else ''})" for e in entries
    )
    if report.failed:
        new = [f["error"] for f in failures if not _expected(entries, f["error"])]
        if new or not failures:
            shown = "\n".join(new) or "(no exception recorded)"
            report.sections.append(
                (
                    "derivs expected failure",
                    f"{item.nodeid} is listed ({why}) but fails anew:\n{shown}",
                )
            )
            return
        report.outcome = "skipped"
        report.wasxfail = why
    elif report.passed:
        report.wasxfail = why


@contextlib.contextmanager
def without_shrinking(item: pytest.Item) -> Iterator[None]:
    """While a listed Hypothesis test runs, its settings without the shrink phase."""
    test: Any = getattr(item, "obj", None)
    hypothesis: Any = sys.modules.get("hypothesis")
    listed = item.stash.get(EXPECTED, ())
    if not listed or hypothesis is None or test is None or not hypothesis.is_hypothesis_test(test):
        yield
        return
    # NOTE: the attribute Hypothesis' own pytest plugin adjusts the same way; the test
    # function is shared by every parameter, so the settings are restored afterwards.
    target = getattr(test, "__func__", test)
    before = getattr(target, "_hypothesis_internal_use_settings", hypothesis.settings.default)
    phases = tuple(p for p in before.phases if p is not hypothesis.Phase.shrink)
    target._hypothesis_internal_use_settings = hypothesis.settings(before, phases=phases)
    try:
        yield
    finally:
        target._hypothesis_internal_use_settings = before
