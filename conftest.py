"""Root conftest: devices, dtypes, Hypothesis profiles and markers for the derivs suite.

Options
-------
``--devices cpu,cuda``   devices to run every property on (default: every device present).

Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE`` (default ``dev``):

* ``dev``      fast local feedback (the whole ``pytest -n auto`` run in about 3 minutes on 2 cores);
* ``ci``       derandomised, more examples: what ``.ci/run`` uses;
* ``thorough`` many more examples, for long runs before a release.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# NOTE: deadline=None everywhere: first calls into torch.func trace and warm caches, so
# per-example timings are noisy and a deadline would only produce flaky failures.
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=8, **_COMMON)
settings.register_profile("ci", max_examples=16, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
# NOTE: derandomize=True ignores --hypothesis-seed; a seed given with the ci profile means
# "these ci settings, but from this seed" (used to sweep seeds for false failures).
settings.register_profile("ci-seeded", max_examples=16, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


def available_devices() -> list[str]:
    """Every device torch can use here, cpu first."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--devices",
        default=None,
        help="comma-separated devices to test on (default: every device present: "
        + ",".join(available_devices())
        + ")",
    )


def pytest_configure(config: pytest.Config) -> None:
    raw = config.getoption("--devices")
    present = available_devices()
    devices = present if raw is None else [d.strip() for d in raw.split(",") if d.strip()]
    for d in devices:
        if d not in present:
            raise pytest.UsageError(f"--devices: {d!r} is not available here (present: {present})")
    if not devices:
        raise pytest.UsageError("--devices: give at least one device")
    import strategies

    strategies.set_devices(devices)
    if PROFILE == "ci" and config.getoption("hypothesis_seed", None) is not None:
        settings.load_profile("ci-seeded")
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
    import strategies

    lines = [
        f"derivs: devices={','.join(strategies.get_devices())} "
        f"hypothesis profile={settings._current_profile} torch={torch.__version__}"
    ]
    if os.environ.get("DERIVS_PLANTED_BUG"):
        lines.append(f"derivs: PLANTED BUG {os.environ['DERIVS_PLANTED_BUG']!r} is active")
    return lines


def dtypes_for(device: str) -> list[torch.dtype]:
    """Floating dtypes the suite checks on ``device`` (mps has no float64)."""
    return [torch.float32] if device.startswith("mps") else [torch.float32, torch.float64]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import strategies

    devices = strategies.get_devices()
    names = metafunc.fixturenames
    if "device" in names and "dtype" in names:
        pairs = [(d, dt) for d in devices for dt in dtypes_for(d)]
        ids = [f"{d}-{str(dt).removeprefix('torch.')}" for d, dt in pairs]
        metafunc.parametrize(("device", "dtype"), pairs, ids=ids, scope="session")
    elif "device" in names:
        metafunc.parametrize("device", devices, scope="session")
    elif "dtype" in names:
        dts = sorted({dt for d in devices for dt in dtypes_for(d)}, key=str)
        ids = [str(dt).removeprefix("torch.") for dt in dts]
        metafunc.parametrize("dtype", dts, ids=ids, scope="session")
