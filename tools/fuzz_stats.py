"""Examples per second (per core) of a HypoFuzz campaign, read back from its database.

Usage (in the ``fuzz`` tox env, or any environment with hypofuzz installed)::

    DERIVS_HYPOTHESIS_DB=/shared/derivs-fuzz python -m tools.fuzz_stats [pytest selection]

HypoFuzz saves progress reports to the example database (``<test key>.hypofuzz.reports``):
per test and worker, the test cases run so far by status and the fuzzing time. This adds up
the latest report of every worker: test cases, seconds fuzzed, failures found, and the rate
``test cases / seconds fuzzed``, which is per core (a worker is one process, one core). The
pytest selection (default ``tests``) says which tests to look up; it must name the tests the
campaign fuzzed, since the database is keyed by test.
"""

from __future__ import annotations

import sys
from typing import Any


def latest_reports(reports: list[Any]) -> list[Any]:
    """The most recent report of every worker."""
    latest: dict[str, Any] = {}
    for r in reports:
        if r.worker_uuid not in latest or r.elapsed_time > latest[r.worker_uuid].elapsed_time:
            latest[r.worker_uuid] = r
    return list(latest.values())


def main(argv: list[str]) -> int:
    from hypofuzz.collection import collect_tests
    from hypofuzz.database import HypofuzzDatabase
    from hypothesis import settings

    collection = collect_tests(argv or ["tests"])
    db = HypofuzzDatabase(settings().database)
    print("| test | workers | test cases | seconds fuzzed | cases/s/core | failures |")
    print("|---|---|---|---|---|---|")
    total_cases, total_seconds, total_failures = 0, 0.0, 0
    for target in collection.fuzz_targets:
        reports = latest_reports(db.reports.fetch(target.database_key))
        if not reports:
            continue
        cases = sum(sum(r.status_counts.values()) for r in reports)
        seconds = sum(r.elapsed_time for r in reports)
        failures = len(list(db.failures(state=_shrunk()).fetch(target.database_key)))
        total_cases += cases
        total_seconds += seconds
        total_failures += failures
        rate = cases / seconds if seconds else 0.0
        print(
            f"| `{target.nodeid}` | {len(reports)} | {cases} | {seconds:.0f} | {rate:.2f} |"
            f" {failures} |"
        )
    rate = total_cases / total_seconds if total_seconds else 0.0
    print(f"| **all** | | {total_cases} | {total_seconds:.0f} | {rate:.2f} | {total_failures} |")
    return 0


def _shrunk() -> Any:
    from hypofuzz.database import FailureState

    return FailureState.SHRUNK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
