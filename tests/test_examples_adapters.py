"""The example adapters under the suite: the loop adapter passes, the wrong one is caught.

Each case runs the suite in a fresh pytest (``--impl examples.<module>:ADAPTER``) on a few
operator properties, float64 only, to keep CI fast; ``tox -e conformance-example`` runs
the loop adapter through the whole suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(adapter: str, *selection: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERIVS_", "PYTEST_XDIST"))}
    env["HYPOTHESIS_PROFILE"] = "dev"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--impl",
            f"examples.{adapter}:ADAPTER",
            *selection,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_loop_adapter_passes() -> None:
    done = run_suite(
        "loop_adapter",
        "tests/test_jacobian.py",
        "tests/test_hessian.py",
        "tests/test_products.py",
        "tests/test_invariants.py",
        "-k",
        "float64 or meta",
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 25 and "failed" not in summary, summary


def test_wrong_adapter_fails_with_readable_counterexamples() -> None:
    done = run_suite(
        "wrong_adapter",
        "tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-loop]",
        "tests/test_hessian.py::test_matches_loop_oracle[cpu-float64-loop]",
    )
    out = done.stdout
    assert done.returncode == 1, out[-4000:] + done.stderr[-2000:]
    assert "2 failed" in out
    # the transposed Jacobian: a shrunk generated function (its formula), its draws, the call
    assert "[jacobian(f, argnums=" in out and "method='loop')] values differ" in out
    assert "Draw 1 (problem): Problem(func=f(x0: " in out
    # the dropped mixed block: named, with both values
    assert "values differ in block[0][1]" in out
    assert "actual 0, expected" in out
