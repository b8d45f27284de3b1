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

In a listed Hypothesis test, an example that hits a listed bug (its exception matches
``match``) is rejected rather than failed, and the test explores on: it is ``xfailed`` if
some example hit the bug and every other one passed, and it fails, shrunk as usual, on
anything new. So a bug that some inputs hit (an expanded view, a negative argnum) does not
hide the rest of the property.

An entry with ``*`` (any run of characters, ``::`` and brackets included) is a pattern, for
a bug that any test may meet when its draws do (``tests/*`` for the whole suite): it needs a
``match`` and lists no test. A covered test whose failures all match it is ``xfailed``, as
is one that passed because the matching examples were filtered out; a covered test that
never met the bug is simply ``passed``, not ``xpassed``.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_derivs._ids import suite_id


@dataclass(frozen=True)
class Entry:
    prefix: str
    reason: str
    source: str  # path:line
    match: str | None = None
    repro: str | None = None

    @property
    def pattern(self) -> bool:
        """Whether the entry is a pattern over test ids (a bug class), not a listing."""
        return "*" in self.prefix

    def covers(self, nodeid: str) -> bool:
        if self.pattern:
            return _glob(self.prefix, nodeid)
        return nodeid.startswith(self.prefix)

    def may_cover_file(self, path: str) -> bool:
        """Whether a test in ``path`` could be covered (for the stale-entry warning)."""
        head = self.prefix.split("::")[0]
        return _glob(head, path) if self.pattern else head == path


def _glob(pattern: str, text: str) -> bool:
    """``*`` matches any run of characters; everything else, brackets included, itself."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text, re.DOTALL) is not None


EXPECTED = pytest.StashKey[tuple[Entry, ...]]()
HITS = pytest.StashKey[list[str]]()  # messages of the examples a listed bug was filtered from
# NOTE: what Hypothesis raises when (nearly) every example was rejected.
GAVE_UP = ("FailedHealthCheck", "Unsatisfiable")


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
        # NOTE: several match lines are alternatives; several repro lines, a list.
        found = {
            key: [c.split(":", 1)[1].strip() for c in comments if c.startswith(key + ":")]
            for key in ("match", "repro")
        }
        directives = {
            "match": "|".join(f"(?:{m})" for m in found["match"]) or None,
            "repro": ", ".join(found["repro"]) or None,
        }
        text = [c for c in comments if c and not c.startswith(("match:", "repro:"))]
        reason = trailing.strip() or " ".join(text) or "listed"
        entry = Entry(
            prefix.strip(),
            reason,
            f"{path}:{lineno}",
            directives.get("match"),
            directives.get("repro"),
        )
        if entry.pattern and entry.match is None:
            raise pytest.UsageError(
                f"--expected-failures: {entry.source}: the pattern {entry.prefix!r} needs a"
                " '# match: REGEX' line above it (a pattern covers tests that are not known"
                " to fail; only the failures its match names are expected)"
            )
        entries.append(entry)
    return entries


def apply(items: list[pytest.Item], paths: list[str]) -> None:
    """Attach each listed item's entries; warn about entries that match no collected test."""
    entries = [e for p in paths for e in parse(Path(p))]
    matched: set[Entry] = set()
    for item in items:
        mine = tuple(e for e in entries if e.covers(suite_id(item)))
        if mine:
            matched.update(mine)
            item.stash[EXPECTED] = mine
    collected_files = {suite_id(item).split("::")[0] for item in items}
    for entry in entries:
        # NOTE: only entries whose file was collected: a run of one file stays quiet about the rest.
        if entry not in matched and any(entry.may_cover_file(f) for f in collected_files):
            warnings.warn(
                pytest.PytestWarning(
                    f"{entry.source}: expected failure {entry.prefix!r} matches no collected test"
                ),
                stacklevel=1,
            )


def title(reason: str) -> str:
    """An entry's first sentence: what the bug is, without the why."""
    return reason.split(". ")[0].rstrip(".")


def _expected(entries: tuple[Entry, ...], message: str) -> bool:
    return any(e.match is None or re.search(e.match, message) for e in entries)


def adjust(item: pytest.Item, report: pytest.TestReport, failures: list[dict[str, str]]) -> None:
    """Turn the call report of a listed test into xfailed / xpassed, or leave a new failure.

    ``failures`` are the distinct failures of the call (Hypothesis may find several): the
    test is an expected failure if every one is expected by one of its entries (or is
    Hypothesis giving up because every example hit a listed bug), or if it passed only
    because the examples that hit a listed bug were filtered out.
    """
    entries = item.stash.get(EXPECTED, ())
    if not entries or report.when != "call":
        return
    hits = item.stash.get(HITS, [])
    if report.passed and not hits and all(e.pattern for e in entries):
        return  # covered by a bug class it never met: a plain pass
    seen = hits + [f["error"] for f in failures]
    # the entries whose bug this run met (all of them for entries without a match)
    met = [e for e in entries if e.match is None or any(re.search(e.match, m) for m in seen)]
    shown = met or list(entries)
    why = " | ".join(
        f"{e.reason} ({e.source}{', repro: ' + e.repro if e.repro else ''})" for e in shown
    )
    report.__dict__["derivs_expected"] = [
        {"title": title(e.reason), "source": e.source, "repro": e.repro} for e in shown
    ]
    if hits:
        report.__dict__["derivs_known_hits"] = {"count": len(hits), "first": hits[0]}
        why = f"{len(hits)} examples hit it: {why}"

    def expected(message: str) -> bool:
        return _expected(entries, message) or (bool(hits) and message.startswith(GAVE_UP))

    if report.failed:
        new = [f["error"] for f in failures if not expected(f["error"])]
        if new or not failures:
            text = "\n".join(new) or "(no exception recorded)"
            report.sections.append(
                (
                    "derivs expected failure",
                    f"{item.nodeid} is listed ({why}) but fails anew:\n{text}",
                )
            )
            return
        report.outcome = "skipped"
        report.wasxfail = why
        if hits:  # the listed bug's message, not Hypothesis giving up on it
            kept = [f for f in failures if not f["error"].startswith(GAVE_UP)]
            report.__dict__["derivs_failures"] = [{"error": hits[0], "counterexample": ""}, *kept]
    elif report.passed and hits:
        report.outcome = "skipped"
        report.wasxfail = why
    elif report.passed:
        report.wasxfail = why


@contextlib.contextmanager
def filtering_known_failures(item: pytest.Item) -> Iterator[None]:
    """While a listed Hypothesis test runs, examples that hit a listed bug are rejected.

    An example whose exception matches an entry's ``match`` is not a failure but an invalid
    example (``hypothesis.reject``), so the test goes on to explore the others: it still
    fails on anything new, and a bug that only some inputs hit does not hide the rest.
    """
    test: Any = getattr(item, "obj", None)
    hypothesis: Any = sys.modules.get("hypothesis")
    patterns = [e.match for e in item.stash.get(EXPECTED, ()) if e.match is not None]
    if (
        not patterns
        or hypothesis is None
        or test is None
        or not hypothesis.is_hypothesis_test(test)
    ):
        yield
        return
    # NOTE: inner_test is Hypothesis' documented hook for wrapping each example's call; the
    # test function is shared by every parameter, so the original goes back afterwards.
    handle = test.hypothesis
    inner = handle.inner_test
    hits: list[str] = []

    @functools.wraps(inner)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if any(re.search(p, message) for p in patterns):
                hits.append(message)
                hypothesis.reject()
            raise

    handle.inner_test = filtered
    item.stash[HITS] = hits
    try:
        yield
    finally:
        handle.inner_test = inner
