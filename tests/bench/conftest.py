"""Benchmark fixtures for ``tests/bench``: the tutorial's functions, data and a timing helper.

Opt-in and serial (pytest-benchmark disables itself under xdist)::

    pytest tests/bench -m bench --benchmark-autosave
    pytest tests/bench -m bench --benchmark-compare --benchmark-compare-fail=median:10%
    python -m bench.report

Every benchmark goes through :class:`Bench`, which checks the answer once against a
reference before anything is timed (a wrong answer is never timed), records torch version,
device and shapes in ``extra_info``, synchronises cuda, and keeps slow calls to a few rounds
so that the whole run stays short.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

import torch

from bench.machine import machine_info as bench_machine_info
from bench.timing import Bench

# NOTE: DERIVS_BENCH_THREADS=1 (with --benchmark-timer=time.thread_time) gives steady numbers on
# a shared machine: one thread runs on whichever core is free, and its CPU time does not count
# the time other processes hold that core. Recorded as machine_info["torch_threads"].
if os.environ.get("DERIVS_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["DERIVS_BENCH_THREADS"]))


# NOTE: optionalhook: with pytest-benchmark installed but disabled (-p no:benchmark) its hook
# specs are missing, and a plain hook here would abort the whole session.
@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info.update(bench_machine_info())


# NOTE: the load is recorded beside machine_info, not in it: pytest-benchmark warns on every
# --benchmark-compare whose machine_info differs from the saved run's.
_LOAD_AT_START = os.getloadavg()


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    output_json["load_average"] = {
        "start": [round(v, 2) for v in _LOAD_AT_START],
        "end": [round(v, 2) for v in os.getloadavg()],
    }


@pytest.fixture
def bench(benchmark: Any, device: str) -> Bench:
    """Check-then-time helper bound to this test's ``benchmark`` and ``device``."""
    return Bench(benchmark, device)
