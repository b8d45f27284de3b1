"""A pytest plugin that replays one Hypothesis failure blob, for tools/false_alarm_sweep.py.

``DERIVS_REPLAY_BLOB="<hypothesis version> <blob>"`` (the two arguments of the
``@reproduce_failure(...)`` line Hypothesis prints with ``print_blob=True``) makes every
collected Hypothesis test run exactly that example, as if it were decorated with
``@reproduce_failure(version, blob)``: it fails with the original error, or with
``DidNotReproduce`` when the example passes (or no longer fits the test's draws).
Loaded with ``-p sweep_replay`` and ``tools/`` on ``PYTHONPATH``; run one test id at a time.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    raw = os.environ.get("DERIVS_REPLAY_BLOB")
    if not raw:
        return
    version, blob = raw.split(" ", 1)
    for item in items:
        test = getattr(item, "obj", None)
        # NOTE: @given copies this attribute onto the wrapper pytest calls, and reads it from
        # there at call time; setting it is what the @reproduce_failure decorator does.
        if test is not None and hasattr(test, "_hypothesis_internal_use_reproduce_failure"):
            test._hypothesis_internal_use_reproduce_failure = (version, blob.encode())
