"""pytest_derivs: the derivs verification suite's pytest plugin (entry point ``pytest11``).

Options (all runs; nothing is imported until one is used):

``--impl NAME``
    the implementation under test: ``derivs`` (default), ``torch.func``,
    ``torch.autograd.functional`` or ``package.module:object`` (env ``DERIVS_IMPL``); the
    run ends with the capability matrix (operator x method x declared feature: passed,
    failed, expected failures, skipped and why), in place of a line per skip
``--devices cpu,cuda``
    devices to run on (default: every device present)
``--expected-failures PATH``
    an expected-failure file (array-api-tests' format), repeatable
``--conformance-report PATH``
    write the conformance report as JSON (and PATH.md)

Fixtures: ``derivs_impl`` (the implementation under test, a :class:`SuiteImpl`),
``derivs_adapter`` (its adapter), ``derivs_devices`` (the device list), and the
parametrised ``derivs_device`` / ``derivs_dtype``.

Markers: ``conformance`` (a property of the implementation under test: it must call it)
and ``derivs_only(reason)`` (a guarantee of derivs itself, skipped for other implementations).

NOTE: this module imports neither torch nor Hypothesis: an unrelated project that has derivs
installed pays nothing. They are imported when ``--impl`` is given or a fixture, ``impl()``
or ``devices()`` is first used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_derivs._impl import ABSENT, CAPABILITY, SuiteImpl

ENV_IMPL = "DERIVS_IMPL"
DEFAULT_IMPL = "derivs"

__all__ = ["ABSENT", "ENV_IMPL", "SuiteImpl", "activate", "devices", "impl"]


class _State:
    """The session's choices; set up in pytest_configure, filled in on first use."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.config: pytest.Config | None = None
        self.impl: SuiteImpl | None = None
        self.devices: list[str] | None = None
        self.collector: Any = None


_STATE = _State()


def _spec(config: pytest.Config | None) -> tuple[str, bool]:
    """The --impl name and whether it was given (option or environment)."""
    given = config.getoption("derivs_impl") if config is not None else None
    given = given or os.environ.get(ENV_IMPL) or None
    return (given or DEFAULT_IMPL), given is not None


def activate(config: pytest.Config | None = None) -> SuiteImpl:
    """Load the implementation under test and the devices (idempotent; imports torch).

    Also tells ``derivs.strategies`` the devices, so its ``devices()`` strategy draws them.

    Raises:
        pytest.UsageError: ``--impl`` names no adapter, or ``--devices`` an absent device.
    """
    config = config or _STATE.config
    if _STATE.impl is None:
        from derivs.conformance import load

        spec, _ = _spec(config)
        try:
            adapter = load(spec)
        except (TypeError, ValueError) as error:
            raise pytest.UsageError(f"--impl: {error}") from error
        _STATE.impl = SuiteImpl(adapter, spec)
    if _STATE.devices is None:
        from pytest_derivs._devices import parse_devices

        raw = config.getoption("derivs_devices") if config is not None else None
        _STATE.devices = parse_devices(raw)
        try:
            strategies = importlib.import_module("derivs.strategies")
        except ImportError:  # NOTE: the test extra (Hypothesis) is not installed
            pass
        else:
            strategies.set_devices(_STATE.devices)
    return _STATE.impl


def impl() -> SuiteImpl:
    """The implementation under test (``--impl``), loaded on first use."""
    return _STATE.impl or activate()


def devices() -> list[str]:
    """The devices chosen with ``--devices`` (every device present by default)."""
    activate()
    assert _STATE.devices is not None
    return list(_STATE.devices)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# ------------------------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("derivs", "derivs conformance suite (pytest_derivs)")
    group.addoption(
        "--impl",
        "--derivs-impl",
        dest="derivs_impl",
        default=None,
        metavar="NAME",
        help="implementation under test: derivs (default), torch.func, "
        f"torch.autograd.functional or package.module:object (env {ENV_IMPL})",
    )
    group.addoption(
        "--devices",
        "--derivs-devices",
        dest="derivs_devices",
        default=None,
        metavar="LIST",
        help="comma-separated devices to test on (default: every device present)",
    )
    group.addoption(
        "--expected-failures",
        dest="derivs_expected_failures",
        action="append",
        default=[],
        metavar="PATH",
        help="expected-failure file (test-id prefixes, # comments); may be repeated",
    )
    group.addoption(
        "--conformance-report",
        dest="derivs_report",
        default=None,
        metavar="PATH",
        help="write the conformance report as JSON to PATH and markdown to PATH with .md",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _STATE.reset()
    _STATE.config = config
    config.addinivalue_line(
        "markers", "conformance: a property of the implementation under --impl (must call it)"
    )
    config.addinivalue_line(
        "markers",
        "derivs_only(reason): a guarantee of derivs itself; skipped for other implementations",
    )
    config.addinivalue_line(
        "markers",
        "derivs_capability(operator, method, feature): what a case exercises (the matrix)",
    )
    wanted = config.getoption("derivs_report") or _spec(config)[1]
    if wanted and not _is_worker(config):
        from pytest_derivs._report import Collector

        _STATE.collector = Collector()
    paths = config.getoption("derivs_expected_failures")
    if paths and not _is_worker(config):
        from pytest_derivs._expected import Outcomes

        config.pluginmanager.register(Outcomes(paths), "derivs-expected-outcomes")
    if _spec(config)[1]:
        activate(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE.config is config:
        _STATE.reset()


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _STATE.impl is None:
        return []
    chosen = _STATE.impl
    lines = [
        f"derivs conformance: implementation {chosen.name} {chosen.version} "
        f"(--impl {chosen.spec}), devices {','.join(_STATE.devices or [])}"
    ]
    return lines + [f"  {line}" for line in chosen.features.summary()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "derivs_device" in names:
        metafunc.parametrize("derivs_device", devices(), scope="session")
    if "derivs_dtype" in names:
        import torch

        dtypes = [getattr(torch, name) for name in impl().features.dtypes]
        ids = list(impl().features.dtypes)
        metafunc.parametrize("derivs_dtype", dtypes, ids=ids, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _STATE.impl is not None and not _STATE.impl.is_derivs:
        for item in items:
            marker = item.get_closest_marker("derivs_only")
            if marker is not None:
                why = marker.args[0] if marker.args else "derivs' own guarantee"
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"a guarantee of derivs itself ({why}), not of the contract "
                        f"{_STATE.impl.name} is held to"
                    )
                )
    paths = config.getoption("derivs_expected_failures")
    if paths:
        from pytest_derivs._expected import apply

        apply(items, paths)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    guarded = _STATE.impl is not None and item.get_closest_marker("conformance") is not None
    guarded = guarded and item.get_closest_marker("derivs_only") is None
    before = _STATE.impl.calls if guarded and _STATE.impl is not None else 0
    if _STATE.impl is not None:
        _STATE.impl.touched.clear()
    from pytest_derivs._expected import filtering_known_failures

    with filtering_known_failures(item):
        result = yield
    if guarded and _STATE.impl is not None and _STATE.impl.calls == before:
        raise AssertionError(
            f"{item.nodeid} is a conformance property but never called the implementation "
            "under test: call it through pytest_derivs.impl() or mark the test "
            "@pytest.mark.derivs_only(reason)"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if _STATE.impl is not None and (report.when == "call" or report.skipped):
        from pytest_derivs._report import capability_of

        touched = _STATE.impl.touched if report.when == "call" else []
        report.__dict__[CAPABILITY] = capability_of(item, touched)
    if report.when != "call":
        return report
    failures = _failures(call.excinfo.value) if call.excinfo is not None and report.failed else []
    if failures:
        report.__dict__["derivs_failures"] = failures
    if item.config.getoption("derivs_expected_failures"):
        from pytest_derivs._expected import adjust

        adjust(item, report, failures)
    return report


_REPRODUCE = "You can reproduce this test case by temporarily adding @reproduce_failure("


def _failures(error: BaseException) -> list[dict[str, str]]:
    """Each distinct failure (Hypothesis groups several) with its message and counterexample.

    The counterexample is what Hypothesis attached as notes: the shrunk draws.
    """
    # NOTE: duck-typed: Python 3.10 has ExceptionGroup only from the exceptiongroup backport.
    subs = getattr(error, "exceptions", None)
    if isinstance(subs, tuple) and subs and all(isinstance(e, BaseException) for e in subs):
        return [f for sub in subs for f in _failures(sub)]
    notes = [str(n) for n in getattr(error, "__notes__", None) or []]
    message = f"{type(error).__name__}: {error}".strip()
    failure = {"error": message}
    # NOTE: print_blob (on under CI) adds a "@reproduce_failure(...)" note: kept on its own, so
    # the counterexample reads the same wherever the suite runs.
    blobs = [n.strip() for n in notes if n.strip().startswith(_REPRODUCE)]
    failure["counterexample"] = "\n".join(n for n in notes if n.strip() not in blobs).strip()
    if blobs:
        failure["reproduce"] = blobs[0]
    return [failure]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _STATE.collector is not None:
        _STATE.collector.add(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _STATE.collector is None or _is_worker(config) or not config.getoption("derivs_report"):
        return
    from pytest_derivs._report import header, write

    path = Path(config.getoption("derivs_report"))
    md = write(path, header(config, impl(), devices()), _STATE.collector)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"derivs conformance report: {path} and {md}")


def _prints_matrix(config: pytest.Config) -> bool:
    """Whether this process ends the run with the capability matrix (an ``--impl`` run)."""
    return _STATE.collector is not None and bool(_spec(config)[1])


def pytest_sessionstart(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _prints_matrix(session.config):
        from pytest_derivs._report import fold_report_chars

        fold_report_chars(reporter)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _STATE.impl is None or not _prints_matrix(terminalreporter.config):
        return
    from pytest_derivs._report import print_matrix

    print_matrix(terminalreporter, _STATE.impl, _STATE.collector)


@pytest.fixture(scope="session")
def derivs_impl() -> SuiteImpl:
    """The implementation under test (``--impl``), operators with derivs' signatures."""
    return impl()


@pytest.fixture(scope="session")
def derivs_adapter() -> Any:
    """The adapter behind ``derivs_impl``, as ``derivs.conformance.load`` returned it."""
    return impl().adapter


@pytest.fixture(scope="session")
def derivs_devices() -> list[str]:
    """The devices chosen with ``--devices``."""
    return devices()
