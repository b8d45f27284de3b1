"""The example adapters under the suite: the loop adapter passes, the wrong one is caught.

Each case runs the suite in a fresh pytest (``--impl examples.<module>:ADAPTER``) on a few
operator properties, float64 only, to keep CI fast; ``tox -e conformance-example`` runs
the loop adapter through the whole suite (it passes every property it declares).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(adapter: str, *selection: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERIVS_", "PYTEST_XDIST"))}
    # NOTE: the derandomised profile: the same examples on every run and no database, so
    # the verdict does not hang on a lucky draw or on what an earlier run saved.
    env["HYPOTHESIS_PROFILE"] = "ci"
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
        "tests/test_jacobian.py::test_matches_loop_oracle",
        "tests/test_jacobian.py::test_tuple_argnums_are_the_single_blocks",
        "tests/test_hessian.py::test_matches_loop_oracle",
        "tests/test_products.py::test_mixed_blocks_of_an_asymmetric_coupling",
        "tests/test_invariants.py::test_layout_does_not_change_values",
        "tests/test_invariants.py::test_shapes_on_meta_device",
        "-k",
        "float64 or meta",
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("13 passed") and "failed" not in summary, summary


def test_wrong_adapter_fails_with_readable_counterexamples() -> None:
    done = run_suite(
        "wrong_adapter",
        "tests/test_jacobian.py::test_matches_loop_oracle[cpu-float64-loop]",
        "tests/test_hessian.py::test_mixed_blocks_match_loop_oracle[cpu-float64-loop]",
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
