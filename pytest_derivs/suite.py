"""The derivs suite's session setup: Hypothesis profiles, device and dtype parameters.

A pytest plugin for the suite's own test modules, wherever they run from: the repository's
root ``conftest.py`` and the conftest of the properties the wheel ships
(``pytest --pyargs derivs.conformance.suite``) both load it with
``pytest_plugins = ["pytest_derivs.suite"]``. The ``pytest11`` entry point does not: a project
that merely has derivs installed keeps its own Hypothesis settings. Importing it imports torch
and Hypothesis.

What it does:

* registers the Hypothesis profiles and loads the one ``HYPOTHESIS_PROFILE`` names;
* parametrises the tests that take ``device`` and/or ``dtype`` over ``--devices`` and the
  floating dtypes of each device, skipping (ids unchanged) what the implementation under test
  does not declare;
* for an implementation other than derivs, skips every test module not marked
  ``conformance`` (it tests derivs' own tools or the suite itself) and leaves out Hypothesis'
  explain phase.

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
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

import pytest_derivs
from derivs.strategies import dtypes_for

__all__ = ["PROFILE"]


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compile: torch.compile agrees with eager (few examples, slow)"
    )
    # NOTE: the suite draws through @given only; .example() belongs in an interactive session.
    config.addinivalue_line(
        "filterwarnings", "error::hypothesis.errors.NonInteractiveExampleWarning"
    )
    # torch.func's first call goes through a torch.jit.script'ed helper inside torch itself.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:`torch.jit.script` is deprecated",  # Future- on torch 2.14
    )
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


def pytest_report_header(config: pytest.Config) -> list[str]:
    profile = settings._current_profile
    lines = [f"derivs: hypothesis profile={profile} torch={torch.__version__}"]
    for var in ("DERIVS_HYPOTHESIS_DB", "DERIVS_MAX_EXAMPLES"):
        if os.environ.get(var):
            lines.append(f"derivs: {var}={os.environ[var]}")
    return lines


def _dtypes(device: str) -> list[torch.dtype]:
    """The floating dtypes of ``device``, in the order of the test ids (float32 first)."""
    return sorted(dtypes_for(device), key=str)


def _device_dtype_param(device: str, dtype: torch.dtype | None) -> Any:
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
        pairs = [_device_dtype_param(d, dt) for d in devices for dt in _dtypes(d)]
        metafunc.parametrize(("device", "dtype"), pairs, scope="session")
    elif "device" in names:
        metafunc.parametrize(
            "device", [_device_dtype_param(d, None) for d in devices], scope="session"
        )
    elif "dtype" in names:
        dts = sorted({dt for d in devices for dt in _dtypes(d)}, key=str)
        ids = [str(dt).removeprefix("torch.") for dt in dts]
        metafunc.parametrize("dtype", dts, ids=ids, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    impl = pytest_derivs.impl()
    if impl.is_derivs:
        return
    # NOTE: a skipif, put first: pytest evaluates every skipif before any skip, closest
    # first, so the reason is this one, not a module's own skipif (a Redis server unset).
    skip = pytest.mark.skipif(
        True,
        reason=f"not a conformance property: tests derivs' own tools or the suite itself, not {impl.name}",
    )
    for item in items:
        if item.get_closest_marker("conformance") is None:
            item.add_marker(skip, append=False)
