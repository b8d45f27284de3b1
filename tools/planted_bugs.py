"""Run the verification suite against every planted bug and report killed/total.

Usage::

    python -m tools.planted_bugs                 # every variant in tests/planted.py
    python -m tools.planted_bugs jac-rev-transposed hess-drop-mixed-blocks
    python -m tools.planted_bugs --list

Each variant runs ``pytest -x -n auto`` over the operator properties (``SUITE``) with ``DERIVS_PLANTED_BUG=<name>`` (the
root conftest patches derivs with it) and the ``dev`` Hypothesis profile unless
``HYPOTHESIS_PROFILE`` says otherwise. A variant is killed when pytest reports a failing test. The table gives the time to kill and the first failing test; the command
exits 1 if any variant survived.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


# NOTE: the operator properties first, so a kill comes as early as the suite can give it;
# the meta-tests of oracles, testing, strategies and check exercise no planted code path.
SUITE = [
    "tests/test_jacobian.py",
    "tests/test_hessian.py",
    "tests/test_products.py",
    "tests/test_batch.py",
    "tests/test_invariants.py",
    "tests/test_tutorial.py",
    "tests/test_errors.py",
    "tests/test_sparse.py",
    "tests/test_sparse_detect.py",
    "tests/test_compile.py",
    "tests/test_memory.py",
]


def variants() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("derivs_planted", ROOT / "tests" / "planted.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: v.description for name, v in module.VARIANTS.items()}


def run(name: str, workers: str, extra: list[str]) -> tuple[str, float, str]:
    env = dict(os.environ, DERIVS_PLANTED_BUG=name)
    env.setdefault("HYPOTHESIS_PROFILE", "dev")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-n",
        workers,
        "-p",
        "no:cacheprovider",
        *extra,
        *SUITE,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    # NOTE: with -x, xdist ends the session as "interrupted" (exit 2) after the first failure.
    if proc.returncode == 1 or (proc.returncode == 2 and failed):
        return "killed", elapsed, failed[0] if failed else "(failure)"
    if proc.returncode == 0:
        return "SURVIVED", elapsed, ""
    return f"error (exit {proc.returncode})", elapsed, proc.stdout[-300:] + proc.stderr[-300:]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="variants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument(
        "-n", "--workers", default="auto", help="pytest-xdist workers (default: auto)"
    )
    parser.add_argument(
        "--pytest-args", default="", help="extra pytest arguments, e.g. '--devices cpu'"
    )
    opts = parser.parse_args()
    table = variants()
    if opts.list:
        for name, text in table.items():
            print(f"{name:36} {text}")
        return 0
    names = opts.names or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown variant(s): {unknown}; see --list")
    print("| variant | what is wrong | result | time to kill (s) | first failing test |")
    print("|---|---|---|---|---|")
    killed = 0
    for name in names:
        result, elapsed, first = run(name, opts.workers, opts.pytest_args.split())
        killed += result == "killed"
        print(f"| {name} | {table[name]} | {result} | {elapsed:.1f} | {first} |", flush=True)
    print(f"\nkilled {killed}/{len(names)}")
    return 0 if killed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
