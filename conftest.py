"""Root conftest: what only the derivs repository's own run adds to the suite's setup.

The suite's setup itself (Hypothesis profiles, the ``device``/``dtype`` parameters, skipping
what is not a conformance property for other implementations) is the plugin
``pytest_derivs.suite``, which this conftest loads, as does the conftest of the properties the
wheel ships (``derivs.conformance.suite``). The options (``--impl``, ``--devices``,
``--expected-failures``, ``--conformance-report``) come from ``pytest_derivs``, registered here
and as the ``pytest11`` entry point, once. Here:

* the planted bug named by ``DERIVS_PLANTED_BUG`` (tests/planted.py, tools/planted_bugs.py);
* two fixes for HypoFuzz 25.11 when the suite is collected by ``hypothesis fuzz``
  (docs/suite/trust.md).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

# NOTE: the entry point has the same name, so an installed plugin is not registered twice.
pytest_plugins = ["pytest_derivs", "pytest_derivs.suite"]


def _align_hypofuzz_keys() -> None:
    """Give HypoFuzz's fuzz targets the database keys plain pytest uses.

    NOTE: Hypothesis' pytest plugin keys every parametrized invocation of a test by its node
    id (``_hypothesis_internal_add_digest``), set when the test runs; HypoFuzz 25.11 computes
    its keys at collection, before that, so every parametrization of a test shared one key
    and the failures it saved were invisible to pytest. Setting the node id just before
    HypoFuzz computes each key makes them the ones pytest replays.
    """
    from hypofuzz.hypofuzz import FuzzTarget

    original = FuzzTarget.from_hypothesis_test.__func__  # type: ignore[attr-defined]

    def keyed(cls: Any, wrapped_test: Any, *, pytest_item: Any = None, **kwargs: Any) -> Any:
        if pytest_item is not None and hasattr(pytest_item, "callspec"):
            inner = wrapped_test.hypothesis.inner_test
            inner._hypothesis_internal_add_digest = pytest_item.nodeid.encode()
        return original(cls, wrapped_test, pytest_item=pytest_item, **kwargs)

    FuzzTarget.from_hypothesis_test = classmethod(keyed)  # type: ignore[method-assign]


def _keep_hypofuzz_hub_waiting() -> None:
    """Keep HypoFuzz's hub from exiting before its workers have reported.

    NOTE: HypoFuzz 25.11's hub checks every 60 s whether any worker still has tests to fuzz,
    and exits when none has; a worker first reports after collecting and running its first
    100 examples, which on a loaded 2-core machine took longer than 60 s, so the hub quit
    ("Found a failing input for every test!") after one minute. Until a worker has reported,
    the hub now counts the tests it assigned to it.
    """
    from hypofuzz.hypofuzz import FuzzWorkerHub

    original = FuzzWorkerHub._rebalance

    def rebalance(self: Any) -> None:
        original(self)
        for state in self.shared_states:
            worker = state["worker_state"]
            if not worker["current_lifetime"]:
                worker["valid_nodeids"] = list(state["hub_state"]["nodeids"])

    FuzzWorkerHub._rebalance = rebalance  # type: ignore[method-assign]


if "hypofuzz" in sys.modules:  # collected by `hypothesis fuzz` (docs/suite/trust.md)
    _align_hypofuzz_keys()
    _keep_hypofuzz_hub_waiting()


# NOTE: last, so the bug is planted into the implementation pytest_derivs has loaded.
@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    planted = os.environ.get("DERIVS_PLANTED_BUG")
    if planted:
        _load_planted().apply(planted)


def _load_planted():  # type: ignore[no-untyped-def]
    """tests/planted.py, loaded by path (tests/ is not a package)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent / "tests" / "planted.py"
    spec = importlib.util.spec_from_file_location("derivs_planted", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header(config: pytest.Config) -> list[str]:
    planted = os.environ.get("DERIVS_PLANTED_BUG")
    return [f"derivs: PLANTED BUG {planted!r} is active"] if planted else []
