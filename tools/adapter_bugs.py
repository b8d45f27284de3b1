"""The README's conformance command against each planted adapter bug, over random seeds.

Usage::

    python -m tools.adapter_bugs --seeds 20                      # every bug, 20 seeds each
    python -m tools.adapter_bugs --seeds 20 dropped_last_chunk   # one bug
    python -m tools.adapter_bugs --seeds 3 --baseline            # also the unplanted adapter
    python -m tools.adapter_bugs --seeds 20 --paths tests/test_jacobian.py tests/test_hessian.py
    python -m tools.adapter_bugs --seeds 20 --focus -n 1 --jobs 2   # each bug on its modules
    python -m tools.adapter_bugs --list

Each run is the README's command, ``pytest -n auto --impl examples.planted_adapters:<bug>
--expected-failures derivs/conformance/expected_failures/torch.func.txt`` (the bugs are planted
in the torch.func adapter, so its listed upstream bugs stay listed), with the profile the
README's command gets (``dev`` unless ``HYPOTHESIS_PROFILE`` is set), ``-x`` (a kill needs one
failure), ``--hypothesis-seed`` drawn at random (printed, so a run can be repeated) and no
example database (``DERIVS_HYPOTHESIS_DB=none``: a failure one run found is not replayed by
the next). A bug is killed by a run that fails; ``--baseline`` runs the unplanted adapter
(``none``) on as many random seeds, whose runs must all pass. ``--paths`` restricts the runs to
those test files (the whole suite by default), ``--focus`` each bug's runs to the modules of
the operators it breaks (``FOCUS``). Prints the kill-rate table as markdown;
``--out FILE`` also appends every run to FILE as a JSON
line when it ends, and ``--report FILE`` prints the table of such a file (an interrupted
campaign included). Exits 1 when a bug is caught in under 95% of its
runs or a baseline run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPECTED = "derivs/conformance/expected_failures/torch.func.txt"
MODULE = "examples.planted_adapters"
REQUIRED = 0.95
# --focus: per bug, the pytest selection that tests the operators it breaks (paths and -k):
# the README's command restricted to them
FOCUS = {
    "none": ["tests/test_jacobian.py", "tests/test_hessian.py", "-k", "loop_oracle or chunk"],
    "transposed_mixed_block": ["tests/test_hessian.py", "-k", "mixed_blocks"],
    "negative_argnums": ["tests/test_jacobian.py", "-k", "loop_oracle or agree"],
    "dropped_last_chunk": ["tests/test_jacobian.py", "tests/test_batch.py", "-k", "chunk"],
    "batch_axis_swapped": ["tests/test_batch.py", "-k", "sample_b or per_sample"],
    "hessian_summed_over_outputs": ["tests/test_hessian.py", "-k", "loop_oracle or predict"],
    "hvp_ignores_mixed": ["tests/test_products.py"],
    "downcast_float32": ["tests/test_jacobian.py", "-k", "loop_oracle"],
}


def catalogue() -> dict[str, str]:
    from examples.planted_adapters import CATALOGUE  # the repository root: python -m tools....

    return dict(CATALOGUE)


def command(bug: str, seed: int, workers: str, paths: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        workers,
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--impl",
        f"{MODULE}:{bug}",
        "--expected-failures",
        EXPECTED,
        f"--hypothesis-seed={seed}",
        *paths,
    ]


def failures(junit: pathlib.Path) -> list[str]:
    """The ids of the failed (or erroring) tests a JUnit XML report lists."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            found.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return found


def run(bug: str, seed: int, workers: str, paths: list[str]) -> dict[str, Any]:
    """One run of the command; ``caught`` when a test failed (read from its JUnit report)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERIVS_", "PYTEST_XDIST"))}
    env["DERIVS_HYPOTHESIS_DB"] = "none"
    with tempfile.TemporaryDirectory() as tmp:
        junit = pathlib.Path(tmp) / "junit.xml"
        start = time.perf_counter()
        proc = subprocess.run(
            [*command(bug, seed, workers, paths), f"--junitxml={junit}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if not junit.exists():
            raise RuntimeError(
                f"{bug} seed {seed}: pytest exited {proc.returncode} without a report\n"
                + proc.stdout[-2000:]
                + proc.stderr[-2000:]
            )
        failed = failures(junit)
    return {"bug": bug, "seed": seed, "caught": bool(failed), "seconds": elapsed, "failed": failed}


def table(runs: list[dict[str, Any]], descriptions: dict[str, str]) -> str:
    lines = [
        "| bug | what is wrong | runs caught | median time (s) | caught first by |",
        "|---|---|---|---|---|",
    ]
    for bug in dict.fromkeys(r["bug"] for r in runs):
        mine = [r for r in runs if r["bug"] == bug]
        caught = sum(r["caught"] for r in mine)
        times = sorted(r["seconds"] for r in mine)
        firsts = Counter(r["failed"][0].split("[")[0] for r in mine if r["failed"])
        shown = ", ".join(
            f"{name.removeprefix('tests.')} ({n})" for name, n in firsts.most_common(3)
        )
        lines.append(
            f"| {bug} | {descriptions.get(bug, 'the torch.func adapter unchanged')} "
            f"| {caught}/{len(mine)} | {times[len(times) // 2]:.0f} | {shown} |"
        )
    return "\n".join(lines)


def verdict(runs: list[dict[str, Any]]) -> bool:
    """Every bug caught in >= 95% of its runs, and no baseline run failed."""
    ok = True
    for bug in dict.fromkeys(r["bug"] for r in runs):
        mine = [r["caught"] for r in runs if r["bug"] == bug]
        rate = sum(mine) / len(mine)
        ok = ok and (not any(mine) if bug == "none" else rate >= REQUIRED)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bugs", nargs="*", help="bugs to run (default: the whole catalogue)")
    parser.add_argument("--seeds", type=int, default=20, help="random seeds per bug (default 20)")
    parser.add_argument("--baseline", action="store_true", help="also run the unplanted adapter")
    parser.add_argument("--paths", nargs="*", default=[], help="test files (default: all)")
    parser.add_argument(
        "--focus", action="store_true", help="each bug on the tests of its operators (FOCUS)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("-n", "--workers", default="auto", help="pytest-xdist workers")
    parser.add_argument(
        "--out", type=pathlib.Path, help="append every run to this file, one JSON line each"
    )
    parser.add_argument(
        "--report", type=pathlib.Path, help="print the table of the runs in this --out file"
    )
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    opts = parser.parse_args()
    descriptions = catalogue()
    if opts.report:
        done = [json.loads(line) for line in opts.report.read_text().splitlines() if line]
        print(table(done, descriptions))
        return 0 if verdict(done) else 1
    if opts.list:
        for name, text in descriptions.items():
            print(f"{name:30} {text}")
        return 0
    unknown = [b for b in opts.bugs if b not in descriptions]
    if unknown:
        parser.error(f"unknown bug(s) {unknown}; see --list")
    bugs = (["none"] if opts.baseline else []) + (opts.bugs or list(descriptions))
    rng = random.SystemRandom()
    # NOTE: seed-major order, so an interrupted campaign has as many runs of every bug
    plan = [(bug, rng.randrange(2**32)) for _ in range(opts.seeds) for bug in bugs]

    def one(item: tuple[str, int]) -> dict[str, Any]:
        bug, seed = item
        paths = FOCUS[bug] if opts.focus else opts.paths
        result = run(bug, seed, opts.workers, paths)
        if opts.out:
            with opts.out.open("a") as log:
                log.write(json.dumps(result) + "\n")
        print(
            f"{bug} seed={seed} {'caught' if result['caught'] else 'MISSED'}"
            f" {result['seconds']:.0f}s {' '.join(result['failed'][:1])}",
            file=sys.stderr,
            flush=True,
        )
        return result

    with ThreadPoolExecutor(opts.jobs) as pool:
        runs = list(pool.map(one, plan))
    print(table(runs, descriptions))
    return 0 if verdict(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
