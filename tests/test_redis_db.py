"""The shared example database on a real Redis server: what one process finds, another replays.

``DERIVS_HYPOTHESIS_DB=redis://host:port/db`` makes every pytest process (and every
``hypothesis fuzz`` worker) of a campaign save its failing examples to, and replay them from,
one Redis database (pytest_derivs/suite.py; docs/suite/trust.md, "A campaign across
machines"). Here two pytest processes share one: the first, with the default ``dev`` profile,
finds a planted bug and saves the shrunk counterexample; the second, with the ``replay``
profile (explicit and reuse phases: no example of its own), fails with the same
counterexample. Each process draws its own random seed; neither is given
``--hypothesis-seed``, since Hypothesis neither saves to nor reads from the database under a
fixed seed. A third, replaying from an empty database, passes: the
second one's failure came from the database, not from generation.

Needs a server: ``DERIVS_TEST_REDIS_URL=redis://127.0.0.1:PORT/0`` names a database this test
may empty, and database ``N + 1`` beside it for the control. ``tox -e redis`` starts a
private ``redis-server`` on a free loopback port (``python -m tools.redis_server``), runs this
module and stops the server. Without the variable the module is skipped, with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get("DERIVS_TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        not URL,
        reason="DERIVS_TEST_REDIS_URL is unset: no Redis server for the shared example "
        "database (tox -e redis starts one)",
    ),
]

# a planted bug the property below fails on at its first example with a nonzero Jacobian
BUG = "jac-fwd-scale-1e-6"
PROPERTY = "tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-fwd]"


def _database(url: str, offset: int) -> str:
    """``url`` with its database number moved by ``offset`` (``/0`` -> ``/1``)."""
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) + offset
    return urlunsplit(parts._replace(path=f"/{number}"))


def _emptied(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    return client


def draws(counterexample: str) -> list[str]:
    """The shrunk draws of a counterexample, without what Hypothesis' explain phase adds (its
    ``Explanation:`` section and ``# or any other generated value`` comments): the replaying
    process has no explain phase."""
    shown = counterexample.split("\nExplanation:")[0].splitlines()
    return [line.split("  # ")[0] for line in shown]


def run_property(url: str, profile: str, report: Path) -> dict[str, Any]:
    """The property in a fresh pytest process on the database ``url``; its report's case."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DERIVS_", "HYPOTHESIS_", "PYTEST_"))
    }
    env.update(DERIVS_HYPOTHESIS_DB=url, HYPOTHESIS_PROFILE=profile, DERIVS_PLANTED_BUG=BUG)
    options = ("-n", "0", "-p", "no:cacheprovider", "-q")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "--conformance-report", str(report), PROPERTY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    data = json.loads(report.read_text())
    (prop,) = data["properties"]
    (case,) = prop["cases"]
    case["returncode"] = done.returncode
    case["output"] = done.stdout[-3000:] + done.stderr[-3000:]
    return dict(case)


def test_a_failure_found_by_one_process_is_replayed_by_another(tmp_path: Path) -> None:
    shared = _emptied(URL)
    first = run_property(URL, "dev", tmp_path / "first.json")
    assert first["outcome"] == "failed", first["output"]
    (found,) = first["failures"]
    assert found["error"].startswith("AssertionError"), found
    assert found["counterexample"].startswith("Failing test case: "), found
    assert shared.dbsize() > 0  # the failure went to the server

    second = run_property(URL, "replay", tmp_path / "second.json")
    assert second["outcome"] == "failed", second["output"]
    (replayed,) = second["failures"]
    assert draws(replayed["counterexample"]) == draws(found["counterexample"])
    assert replayed["reproduce"] == found["reproduce"]  # the same choices, byte for byte

    empty = _database(URL, 1)
    _emptied(empty)
    control = run_property(empty, "replay", tmp_path / "control.json")
    assert control["outcome"] == "skipped", control["output"]  # nothing to replay, nothing new
    assert "Hypothesis has been told to run no test cases" in control["reason"]
