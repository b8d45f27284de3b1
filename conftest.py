"""Root conftest: devices, dtypes, Hypothesis profiles and markers for the derivs suite.

Options come from the suite's pytest plugin, ``pytest_derivs`` (registered here and as the
``pytest11`` entry point, once): ``--impl NAME`` (the implementation under test, default
``derivs``), ``--devices cpu,cuda`` (default: every device present), ``--expected-failures``
and ``--conformance-report``. Test modules marked ``conformance`` hold the properties of the
implementation under test; every other module tests derivs' own tools or the suite itself
and is skipped, with that reason, for other implementations.

Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE`` (default ``dev``):

* ``dev``      fast local feedback (the whole ``pytest -n auto`` run in about 3 minutes on 2 cores);
* ``ci``       derandomised, more examples: what ``.ci/run`` uses;
* ``thorough`` many more examples, for long runs before a release;
* ``mutation`` the ci examples without shrinking, for mutation runs (tools/mutation.py);
* ``replay``   only the examples in the database (what ``hypothesis fuzz`` found), no new ones.

Environment (docs/suite/trust.md):

* ``DERIVS_MAX_EXAMPLES=N``    the chosen profile with ``max_examples=N`` (the false-alarm sweep
  scales examples per run this way);
* ``DERIVS_HYPOTHESIS_DB=...`` the example database: unset, Hypothesis' default
  (``.hypothesis/examples``); ``none``, no database (every sweep seed independent);
  ``redis://host:port/db``, a ``RedisExampleDatabase`` shared between machines (needs the
  ``redis`` package); any other value, a ``DirectoryBasedExampleDatabase`` at that path (a
  shared filesystem). Failures found by ``hypothesis fuzz`` land there and the next plain
  ``pytest`` run replays them first.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

import pytest_derivs

# NOTE: the entry point has the same name, so an installed plugin is not registered twice.
pytest_plugins = ["pytest_derivs"]


def _database() -> dict[str, Any]:
    """The ``database`` setting DERIVS_HYPOTHESIS_DB asks for (none: Hypothesis' default)."""
    where = os.environ.get("DERIVS_HYPOTHESIS_DB", "")
    if not where:
        return {}
    if where.lower() == "none":
        return {"database": None}
    if where.startswith("redis://"):
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase

        return {"database": RedisExampleDatabase(redis.Redis.from_url(where))}
    return {"database": DirectoryBasedExampleDatabase(where)}


# NOTE: deadline=None everywhere: first calls into torch.func trace and warm caches, so
# per-example timings are noisy and a deadline would only produce flaky failures.
_COMMON: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# NOTE: derandomised profiles use no database (Hypothesis requires it), the others the one
# DERIVS_HYPOTHESIS_DB names.
_DB = _database()
settings.register_profile("dev", max_examples=8, **_COMMON, **_DB)
settings.register_profile("ci", max_examples=16, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON, **_DB)
# NOTE: derandomize=True ignores --hypothesis-seed; a seed given with the ci profile means
# "these ci settings, but from this seed" (used to sweep seeds for false failures).
settings.register_profile("ci-seeded", max_examples=16, **_COMMON, **_DB)
# NOTE: mutation runs (tools/mutation.py) need a verdict per mutant, fast and the same every
# time: the ci profile's derandomised examples, and no shrinking (a kill needs one failing
# example, not the smallest one; shrinking was most of the time a kill took).
settings.register_profile(
    "mutation",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=False,
)
# NOTE: replay runs only what the database holds (no new examples): with DERIVS_HYPOTHESIS_DB
# pointing at a fuzzing campaign's database, a failure can only come from what the fuzzer
# (or an earlier run) saved there.
settings.register_profile(
    "replay", parent=settings.get_profile("dev"), phases=[Phase.explicit, Phase.reuse]
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")


def _load_profile(name: str) -> None:
    """Load profile ``name``, with ``max_examples`` from DERIVS_MAX_EXAMPLES when set."""
    scaled = os.environ.get("DERIVS_MAX_EXAMPLES")
    if scaled:
        settings.register_profile(
            f"{name}-scaled", parent=settings.get_profile(name), max_examples=int(scaled)
        )
        name = f"{name}-scaled"
    settings.load_profile(name)


_load_profile(PROFILE)


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


def pytest_configure(config: pytest.Config) -> None:
    impl = pytest_derivs.activate(config)  # the implementation under test and the devices
    if PROFILE == "ci" and config.getoption("hypothesis_seed", None) is not None:
        _load_profile("ci-seeded")
    if not impl.is_derivs:
        # NOTE: another implementation's failures are reported with their shrunk examples;
        # the explain phase (which lines every failing case ran) says nothing about them
        # and costs a quarter of a failing test's time.
        phases = tuple(p for p in settings().phases if p is not Phase.explain)
        settings.register_profile(f"{PROFILE}-conformance", parent=settings(), phases=phases)
        settings.load_profile(f"{PROFILE}-conformance")
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
    lines = [f"derivs: hypothesis profile={settings._current_profile} torch={torch.__version__}"]
    for var in ("DERIVS_HYPOTHESIS_DB", "DERIVS_MAX_EXAMPLES"):
        if os.environ.get(var):
            lines.append(f"derivs: {var}={os.environ[var]}")
    if os.environ.get("DERIVS_PLANTED_BUG"):
        lines.append(f"derivs: PLANTED BUG {os.environ['DERIVS_PLANTED_BUG']!r} is active")
    return lines


def dtypes_for(device: str) -> list[torch.dtype]:
    """Floating dtypes the suite checks on ``device`` (mps has no float64)."""
    return [torch.float32] if device.startswith("mps") else [torch.float32, torch.float64]


def _device_dtype_param(device: str, dtype: torch.dtype | None) -> object:
    """One (device, dtype) parameter, skipped where the implementation under test declares
    neither (ids stay those of derivs' run)."""
    impl = pytest_derivs.impl()
    values = (device,) if dtype is None else (device, dtype)
    name = None if dtype is None else str(dtype).removeprefix("torch.")
    marks = []
    if not impl.features.supports_device(device):
        marks.append(pytest.mark.skip(reason=f"{impl.name} does not declare device {device!r}"))
    if name is not None and name not in impl.features.dtypes:
        marks.append(pytest.mark.skip(reason=f"{impl.name} does not declare dtype {name}"))
    ident = device if name is None else f"{device}-{name}"
    return pytest.param(*values, marks=marks, id=ident)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    devices = pytest_derivs.devices()
    names = metafunc.fixturenames
    if "device" in names and "dtype" in names:
        pairs = [_device_dtype_param(d, dt) for d in devices for dt in dtypes_for(d)]
        metafunc.parametrize(("device", "dtype"), pairs, scope="session")
    elif "device" in names:
        metafunc.parametrize(
            "device", [_device_dtype_param(d, None) for d in devices], scope="session"
        )
    elif "dtype" in names:
        dts = sorted({dt for d in devices for dt in dtypes_for(d)}, key=str)
        ids = [str(dt).removeprefix("torch.") for dt in dts]
        metafunc.parametrize("dtype", dts, ids=ids, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    impl = pytest_derivs.impl()
    if impl.is_derivs:
        return
    skip = pytest.mark.skip(
        reason=f"not a conformance property: tests derivs' own tools or the suite itself, not {impl.name}"
    )
    for item in items:
        if item.get_closest_marker("conformance") is None:
            item.add_marker(skip)
