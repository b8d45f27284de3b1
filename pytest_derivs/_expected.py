"""Expected-failure files, in array-api-tests' format.

One test-id prefix per line (``tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-jacfwd]``,
or shorter to cover every parameter); ``#`` starts a comment, and the comment block just above
an entry is its reason. Three comment lines are read as directives:

``# match: REGEX``   the failure is expected only if its message (the exception line) matches;
                     any other failure of a listed test is new, and fails the run
``# repro: WHERE``   the pinned reproducer of the failure (shown with the reason)
``# torch: SPEC``    the torch versions the entry holds for, a PEP 440 specifier set
                     (``>=2.6``, ``>=2.6,<2.15``; local labels such as ``+cpu`` are ignored).
                     On any other torch the entry is not applied (its tests run plainly)
                     and the run's summary says so. No such line: every torch.

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

The end of the run, under "derivs expected failures", has a line per listed bug (the entries
whose reasons share a first sentence): how many covered tests met it. A bug that no test of
the run failed on (every test its entries cover passed, or never met it) is called out:
upstream may have fixed it, and a fix is recorded with the first fixed version in its
``# torch:`` line, not left as a silent pass. Entries of a bug that the run met elsewhere,
whose own tests drew no case of it, are counted on the bug's line (listed one by one with
``-v``): a bug some draws hit is still there when these draws missed it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from pytest_derivs._ids import suite_id


@dataclass(frozen=True)
class Entry:
    prefix: str
    reason: str
    source: str  # path:line
    match: str | None = None
    repro: str | None = None
    torch: str | None = None  # a PEP 440 specifier set; None: every torch

    @property
    def pattern(self) -> bool:
        """Whether the entry is a pattern over test ids (a bug class), not a listing."""
        return "*" in self.prefix

    def covers(self, nodeid: str) -> bool:
        if self.pattern:
            return _glob(self.prefix, nodeid)
        return nodeid.startswith(self.prefix)

    def holds_for(self, version: str) -> bool:
        """Whether the entry applies to torch ``version`` (its ``# torch:`` line)."""
        if self.torch is None:
            return True
        # NOTE: prereleases too: a nightly (2.16.0.dev...) is judged by its number.
        return SpecifierSet(self.torch).contains(Version(version).public, prereleases=True)

    def may_cover_file(self, path: str) -> bool:
        """Whether a test in ``path`` could be covered (for the stale-entry warning)."""
        head = self.prefix.split("::")[0]
        return _glob(head, path) if self.pattern else head == path


def _glob(pattern: str, text: str) -> bool:
    """``*`` matches any run of characters; everything else, brackets included, itself."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text, re.DOTALL) is not None


def torch_version() -> str:
    """The installed torch's version, from its metadata (torch is not imported)."""
    return importlib.metadata.version("torch")


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
        # NOTE: several match lines are alternatives; several repro lines, a list; several
        # torch lines, all of them (a specifier set is an intersection).
        found = {
            key: [c.split(":", 1)[1].strip() for c in comments if c.startswith(key + ":")]
            for key in DIRECTIVES
        }
        text = [c for c in comments if c and not c.startswith(tuple(k + ":" for k in DIRECTIVES))]
        reason = trailing.strip() or " ".join(text) or "listed"
        entry = Entry(
            prefix.strip(),
            reason,
            f"{path}:{lineno}",
            "|".join(f"(?:{m})" for m in found["match"]) or None,
            ", ".join(found["repro"]) or None,
            _torch_spec(found["torch"], f"{path}:{lineno}"),
        )
        if entry.pattern and entry.match is None:
            raise pytest.UsageError(
                f"--expected-failures: {entry.source}: the pattern {entry.prefix!r} needs a"
                " '# match: REGEX' line above it (a pattern covers tests that are not known"
                " to fail; only the failures its match names are expected)"
            )
        entries.append(entry)
    return entries


DIRECTIVES = ("match", "repro", "torch")


def _torch_spec(lines: list[str], source: str) -> str | None:
    """The ``# torch:`` lines as one specifier set (checked), or None where there is none."""
    if not lines:
        return None
    spec = ",".join(lines)
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        raise pytest.UsageError(
            f"--expected-failures: {source}: '# torch: {spec}' is not a version specifier"
            " (PEP 440, e.g. '>=2.6' or '>=2.6,<2.15')"
        ) from None
    return spec


def load(paths: list[str]) -> list[Entry]:
    """The entries of every file that apply to the installed torch."""
    version = torch_version()
    return [e for p in paths for e in parse(Path(p)) if e.holds_for(version)]


def apply(items: list[pytest.Item], paths: list[str]) -> None:
    """Attach each listed item's entries; warn about entries that match no collected test.

    Entries whose ``# torch:`` line excludes the installed torch are left out.
    """
    entries = load(paths)
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


def _meets(entry: Entry, seen: list[str], failed: bool) -> bool:
    """Whether the messages ``seen`` in a test's call show ``entry``'s bug."""
    if entry.match is None:
        return failed
    return any(re.search(entry.match, m) for m in seen)


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
    seen = hits + [f["error"] for f in failures]
    # the entries whose bug this run met (a failure, or a filtered example, that it expects)
    met = [e for e in entries if _meets(e, seen, report.failed)]
    report.__dict__["derivs_entries"] = {e.source: e in met for e in entries}
    if report.passed and not hits and all(e.pattern for e in entries):
        return  # covered by a bug class it never met: a plain pass
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


def spans(entries: list[Entry], chosen: list[Entry]) -> str:
    """Where ``chosen`` stand among ``entries``: ``file:44-49, 54`` (runs of neighbours joined)."""
    out = []
    for path in dict.fromkeys(e.source.rsplit(":", 1)[0] for e in chosen):
        in_file = [e for e in entries if e.source.rsplit(":", 1)[0] == path]
        runs: list[list[str]] = []  # line numbers of neighbouring chosen entries
        previous = False
        for e in in_file:
            line = e.source.rsplit(":", 1)[1]
            if e in chosen and previous:
                runs[-1].append(line)
            elif e in chosen:
                runs.append([line])
            previous = e in chosen
        out.append(f"{path}:" + ", ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs))
    return "; ".join(out)


class Outcomes:
    """What each listed bug did in the run, for the summary (a plugin, on the xdist controller).

    Reads the ``derivs_entries`` that :func:`adjust` puts on each call report (which
    entries cover the test, and whether the test met their bug). The summary has one line
    per listed bug (entries with the same first sentence), not per entry: a per-draw bug
    (a negative argnum, an expanded view) that the run met somewhere is still there, and its
    entries whose tests drew no such case are counted, not each called stale. With ``-v``,
    every such entry gets its own line.
    """

    def __init__(self, paths: list[str]) -> None:
        self.version = torch_version()
        self.entries = [e for p in paths for e in parse(Path(p))]
        self.covered: dict[str, set[str]] = {}  # entry source -> covered tests that ran
        self.met: dict[str, set[str]] = {}  # entry source -> tests that met its bug

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for source, met in report.__dict__.get("derivs_entries", {}).items():
            self.covered.setdefault(source, set()).add(report.nodeid)
            if met:
                self.met.setdefault(source, set()).add(report.nodeid)

    def bugs(self) -> dict[str, list[Entry]]:
        """The applied entries that ran, by listed bug (the title of their reason)."""
        out: dict[str, list[Entry]] = {}
        for e in self.entries:
            if e.holds_for(self.version) and e.source in self.covered:
                out.setdefault(title(e.reason), []).append(e)
        return out

    def lines(self, verbose: bool = False) -> list[str]:
        """Entries not applied, then one line per listed bug: met by how many tests, or none."""
        out = [
            f"{e.source}: {e.prefix!r} ({title(e.reason)}): not applied, holds for torch"
            f" {e.torch}, not {self.version}"
            for e in self.entries
            if not e.holds_for(self.version)
        ]
        for bug, entries in self.bugs().items():
            out.append(self._bug_line(bug, entries))
            if verbose:
                out += [self._entry_line(e) for e in entries if e.source not in self.met]
        return out

    def _bug_line(self, bug: str, entries: list[Entry]) -> str:
        covered = set().union(*(self.covered[e.source] for e in entries))
        met = set().union(*(self.met.get(e.source, set()) for e in entries))
        quiet = [e for e in entries if e.source not in self.met]
        head = f"{bug} ({spans(self.entries, entries)})"
        if not met:
            repro = (
                ", ".join(dict.fromkeys(e.repro for e in entries if e.repro)) or "its reproducer"
            )
            return (
                f"{head}: no test failed on it on torch {self.version} ({len(covered)} covered"
                f" tests ran); fixed upstream? re-measure {repro} and record the first fixed"
                " version in a '# torch:' line"
            )
        line = f"{head}: met by {len(met)} of {len(covered)} covered tests"
        if quiet:
            line += (
                f"; {len(quiet)} of its {len(entries)} entries met no example of it in this"
                f" run's draws ({spans(self.entries, quiet)}), which is no fix: the bug showed"
                " elsewhere in the run (-v lists them)"
            )
        return line

    def _entry_line(self, e: Entry) -> str:
        return (
            f"{e.source}: {e.prefix!r}: no test failed on it on torch {self.version}"
            f" ({len(self.covered[e.source])} covered tests ran)"
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.lines(verbose=terminalreporter.verbosity > 0)
        if lines:
            terminalreporter.section("derivs expected failures")
            for line in lines:
                terminalreporter.write_line(line)
