"""Expected-failure files, in array-api-tests' format.

One test-id prefix per line (``tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-jacfwd]``,
or shorter to cover every parameter); ``#`` starts a comment. The comment block just above an
entry (or a comment on its own line) is the reason shown for it. Every matching test is
marked ``xfail`` (not strict: a Hypothesis test may not meet its failing input in every
profile), so a run stays green on the known failures and fails on anything new. An entry that
matches no collected test is warned about, so the file does not rot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Entry:
    prefix: str
    reason: str
    source: str  # path:line


def parse(path: Path) -> list[Entry]:
    """The entries of one expected-failure file, each with its reason."""
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
        reason = trailing.strip() or " ".join(c for c in comments if c) or "listed"
        entries.append(Entry(prefix.strip(), reason, f"{path}:{lineno}"))
    return entries


def apply(items: list[pytest.Item], paths: list[str]) -> None:
    """Mark the items the files list as xfail; warn about entries that match nothing."""
    entries = [e for p in paths for e in parse(Path(p))]
    matched: set[Entry] = set()
    for item in items:
        for entry in entries:
            if item.nodeid.startswith(entry.prefix):
                matched.add(entry)
                item.add_marker(
                    pytest.mark.xfail(reason=f"expected failure ({entry.source}): {entry.reason}", strict=False)
                )
                break
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
