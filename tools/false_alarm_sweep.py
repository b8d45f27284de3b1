"""Sweep the property tests over many random seeds; collect, reproduce and classify failures.

A false alarm teaches people to ignore the suite, so "no false alarms" is measured, not
assumed: each seed is one ``pytest`` run of the Hypothesis tests (``-m hypothesis``) with
``--hypothesis-seed=<seed>``, no example database (``DERIVS_HYPOTHESIS_DB=none``: seeds are
independent) and the ``dev`` profile unless ``--profile`` says otherwise. Every failure is
recorded with its reproducer (the ``@reproduce_failure`` blob Hypothesis prints, the seed
and the test id) and classified by replaying it (see ``VERDICTS`` and docs/suite/trust.md).

Usage::

    python -m tools.false_alarm_sweep run --seeds 0:200            # resumable: done seeds skip
    python -m tools.false_alarm_sweep run --seeds 0:100 --jobs 2 --workers 1
    python -m tools.false_alarm_sweep run --seeds 0:25 --max-examples 64   # same examples, 8x fewer runs
    python -m tools.false_alarm_sweep report                        # the tables, from the results
    python -m tools.false_alarm_sweep classify                      # re-classify recorded failures
    python -m tools.false_alarm_sweep replay --index 0              # replay one failure again

Each seed writes ``<out>/seed-<seed>.json`` when it finishes (atomically), so an interrupted
sweep resumes where it stopped, and disjoint ``--seeds`` ranges can run on several machines
into separate directories that are merged by copying the files into one ``--out``.

NOTE: the equivalence of ``--max-examples``: with ``--hypothesis-seed`` every test draws from
``Random(seed)``, and ``max_examples`` bounds the test cases it runs, so N seeds of the dev
profile (8 each) run 8 N test cases per test; N / k seeds with ``--max-examples 8k`` run as
many. They are not the same cases: one long run spends part of its budget mutating earlier
examples (more diverse), while many short runs repeat Hypothesis' first, simplest examples
once per seed. The report counts the test cases actually run (``--hypothesis-show-statistics``),
and that count, not the number of seeds, is the figure to compare.

Verdict heuristics (replays run one test id, without xdist, with the same profile):

1. the blob is replayed (``tools/sweep_replay.py``); without a blob, the test id is rerun with
   the same seed. A failure that does not come back is ``flaky``: a false alarm of the suite.
2. Hypothesis' own errors (Flaky, FailedHealthCheck, Unsatisfiable, DeadlineExceeded) are
   ``suite``: false alarms of the suite's configuration, not of derivs.
3. any exception other than an AssertionError is ``bug (exception)``: in the code or the test.
4. a float32 failure is replayed on the float64 twin of the test id (same draws, higher
   precision): if it passes there and the excess over the tolerance is under 100x, it is a
   ``false alarm (float32 precision)``: the float32 tolerance or oracle is wrong, not the
   operator (a wrong axis, sign or scale fails in float64 too); above 100x, ``suspect``.
5. otherwise the excess ``|diff| / tolerance`` decides (read from assert_close's message, the
   oracle meta-tests' "exceeds the estimate by", or a plain ``assert err <= bound``): under
   10x ``suspect (near the tolerance)``, none stated ``suspect (no tolerance stated)``, both
   to be triaged by hand; else ``bug``.

The verdicts are heuristics that sort the failures for a person: a "bug" is a failure far
beyond its tolerance that reproduces at the highest precision, and a "suspect" one that needs
a look. Every failure, whatever its verdict, is a bug somewhere (in the code, the oracle or
the tolerance's derivation) until explained.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".sweep"
MARK = "hypothesis and not bench"
SUITE_ERRORS = ("Flaky", "FailedHealthCheck", "Unsatisfiable", "DeadlineExceeded", "FlakyFailure")
VERDICTS = (
    "bug",
    "bug (exception)",
    "suspect",
    "suspect (near the tolerance)",
    "suspect (no tolerance stated)",
    "false alarm (float32 precision)",
    "false alarm (flaky)",
    "false alarm (suite)",
)
FALSE_ALARM_LIMIT = 100.0  # float32-only excess below this: a precision false alarm
NEAR_LIMIT = 10.0  # excess below this (float64 or no twin): triage by hand

BLOB = re.compile(r"@reproduce_failure\('([^']+)', (b'[^']*')\)")
CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")
EXCESS = (
    re.compile(r"\|diff\| ([0-9.e+-]+|inf|nan) > tolerance ([0-9.e+-]+)"),
    re.compile(r"exceeds the estimate by ([0-9.e+-]+)x"),
)
# pytest's rewrite of a plain ``assert err <= bound`` in the suite's meta-tests
PLAIN_BOUND = re.compile(r"^(?:E\s+)?assert ([0-9.e+-]+) <= (.+)$", re.M)


# ----------------------------------------------------------------------------- running pytest


def _env(opts: argparse.Namespace, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HYPOTHESIS_PROFILE=opts.profile, DERIVS_HYPOTHESIS_DB="none")
    if opts.max_examples:
        env["DERIVS_MAX_EXAMPLES"] = str(opts.max_examples)
    env.pop("DERIVS_PLANTED_BUG", None)
    if opts.planted:
        env["DERIVS_PLANTED_BUG"] = opts.planted
    env.update(extra)
    return env


LOCK: pathlib.Path | None = None  # --lock: every pytest run holds this file's flock


def _pytest(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    if LOCK is None:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    import fcntl

    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def _junit_failures(path: pathlib.Path) -> list[dict[str, str]]:
    """Failed or errored test cases in a junit xml file: nodeid, message, full text."""
    if not path.exists():
        return []
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            module = case.get("classname", "").replace(".", "/")
            found.append(
                {
                    "nodeid": f"{module}.py::{case.get('name')}",
                    "message": (bad.get("message") or "").strip(),
                    "text": bad.text or "",
                }
            )
    return found


def _blobs(text: str) -> list[tuple[str, str]]:
    """Every ``@reproduce_failure(version, blob)`` in ``text``, in order, without repeats."""
    seen: list[tuple[str, str]] = []
    for version, literal in BLOB.findall(text):
        pair = (version, ast.literal_eval(literal).decode())
        if pair not in seen:
            seen.append(pair)
    return seen


def _test_cases(stdout: str) -> int:
    return sum(int(p) + int(f) for p, f, _ in CASES.findall(stdout))


def run_seed(seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """One pytest run with ``--hypothesis-seed=seed``; failures recorded, then classified."""
    xml = opts.out / "tmp" / f"seed-{seed}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    args = ["-n", opts.workers, "-m", MARK, f"--hypothesis-seed={seed}"]
    args += ["--hypothesis-show-statistics", f"--junitxml={xml}", *opts.pytest_args, *opts.paths]
    started = time.time()
    proc = _pytest(args, _env(opts))
    seconds = time.time() - started
    failures = [
        {**f, "blobs": _blobs(f["text"]), "text": f["text"][-4000:]} for f in _junit_failures(xml)
    ]
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    result = {
        "seed": seed,
        "profile": opts.profile,
        "max_examples": opts.max_examples,
        "planted": opts.planted,
        "returncode": proc.returncode,
        "summary": summary,
        "test_cases": _test_cases(proc.stdout),
        "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "failures": failures,
    }
    if proc.returncode not in (0, 1):
        result["stderr"] = (proc.stdout[-2000:] + proc.stderr[-2000:]).strip()
    if not opts.no_classify:
        for failure in failures:
            failure["classification"] = classify(failure, seed, opts)
    xml.unlink(missing_ok=True)
    return result


# ----------------------------------------------------------------------------- classification


def _replay(
    nodeid: str, opts: argparse.Namespace, blob: tuple[str, str] | None, seed: int
) -> dict[str, str]:
    """Run one test id on one example (the blob) or one seed; what happened."""
    xml = opts.out / "tmp" / f"replay-{os.getpid()}-{time.time_ns()}.xml"
    extra = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")])}
    args = ["-n", "0", f"--junitxml={xml}", nodeid]
    if blob is not None:
        extra["DERIVS_REPLAY_BLOB"] = f"{blob[0]} {blob[1]}"
        args = ["-p", "sweep_replay", *args]
    else:
        args = [f"--hypothesis-seed={seed}", *args]
    proc = _pytest(args, _env(opts, **extra))
    failures = _junit_failures(xml)
    xml.unlink(missing_ok=True)
    if "no tests ran" in proc.stdout or proc.returncode == 5:
        return {"status": "missing", "message": ""}
    if not failures:
        return {"status": "pass", "message": ""}
    message = failures[0]["message"]
    if "DidNotReproduce" in message:
        return {"status": "did not reproduce", "message": message[:300]}
    return {"status": "fail", "message": message[:2000], "text": failures[0]["text"][-3000:]}


def _arithmetic(text: str) -> float | None:
    """The value of a numeric expression such as ``((8.0 * 2.2e-16) * 0.0255)``, else None."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(
            node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)
        ):
            a, b = value(node.left), value(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            return ops[type(node.op)] if type(node.op) in ops else a / b
        raise ValueError(node)

    try:
        return value(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _excess(text: str) -> float | None:
    """How far over its tolerance the worst element was (|diff| / tolerance), if stated."""
    found = EXCESS[0].search(text)
    if found:
        diff, tol = float(found.group(1)), float(found.group(2))
        return diff / tol if tol > 0 else float("inf")
    found = EXCESS[1].search(text)
    if found:
        return float(found.group(1))
    found = PLAIN_BOUND.search(text)
    if found:
        bound = _arithmetic(found.group(2))
        if bound is not None:
            return float(found.group(1)) / bound if bound > 0 else float("inf")
    return None


def _exception(message: str) -> str:
    head = message.split(":", 1)[0].strip()
    return head.rsplit(".", 1)[-1] if head else "?"


def _twin(nodeid: str) -> str | None:
    """The float64 test id of a float32 one (same test, same other parameters)."""
    if "[" not in nodeid or "float32" not in nodeid.split("[", 1)[1]:
        return None
    name, params = nodeid.split("[", 1)
    return f"{name}[{params.replace('float32', 'float64')}"


def verdict(exception: str, reproduced: bool, twin: str | None, excess: float | None) -> str:
    """The heuristics of the module docstring, in order."""
    if any(exception.startswith(e) for e in SUITE_ERRORS):
        return "false alarm (suite)"
    if not reproduced:
        return "false alarm (flaky)"
    if exception not in ("AssertionError", "CheckFailure"):
        return "bug (exception)"
    if twin == "pass":
        small = excess is not None and excess < FALSE_ALARM_LIMIT
        return "false alarm (float32 precision)" if small else "suspect"
    if excess is None:
        return "suspect (no tolerance stated)"
    if excess < NEAR_LIMIT:
        return "suspect (near the tolerance)"
    return "bug"


def _classify_example(
    failure: dict[str, Any], seed: int, opts: argparse.Namespace, blob: tuple[str, str] | None
) -> dict[str, Any]:
    nodeid = failure["nodeid"]
    first = _replay(nodeid, opts, blob, seed)
    reproduced = first["status"] == "fail"
    message = first["message"] if reproduced else failure["message"]
    text = first.get("text", "") + message if reproduced else failure["text"] + message
    twin_id = _twin(nodeid) if reproduced and blob is not None else None
    twin = _replay(twin_id, opts, blob, seed)["status"] if twin_id else None
    # a twin that passes is reported by Hypothesis as DidNotReproduce
    twin_status = {"did not reproduce": "pass"}.get(twin or "", twin)
    excess = _excess(text)
    exception = _exception(message)
    return {
        "blob": list(blob) if blob else None,
        "replay": first["status"],
        "exception": exception,
        "float64_twin": twin_status,
        "excess": excess,
        "verdict": verdict(exception, reproduced, twin_status, excess),
        "message": message.splitlines()[0][:400] if message else "",
    }


def classify(failure: dict[str, Any], seed: int, opts: argparse.Namespace) -> list[dict[str, Any]]:
    """One classification per distinct failing example (per blob; by seed without one)."""
    blobs: list[tuple[str, str] | None] = [tuple(b) for b in failure["blobs"]] or [None]  # type: ignore[misc]
    return [_classify_example(failure, seed, opts, blob) for blob in blobs]


# ----------------------------------------------------------------------------- driver


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if ":" in part:
            lo, hi = part.split(":")
            seeds.extend(range(int(lo), int(hi)))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def _result_path(out: pathlib.Path, seed: int) -> pathlib.Path:
    return out / f"seed-{seed:05d}.json"


def _write(path: pathlib.Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def cmd_run(opts: argparse.Namespace) -> int:
    opts.out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in _parse_seeds(opts.seeds) if not _result_path(opts.out, s).exists()]
    print(f"{len(todo)} seed(s) to run into {opts.out} (profile {opts.profile})", flush=True)

    def one(seed: int) -> None:
        result = run_seed(seed, opts)
        _write(_result_path(opts.out, seed), result)
        verdicts = [c["verdict"] for f in result["failures"] for c in f.get("classification", [])]
        print(
            f"seed {seed}: {result['summary'] or result['returncode']} "
            f"({result['test_cases']} test cases, {result['seconds']:.0f} s)"
            + (f" -> {verdicts}" if verdicts else ""),
            flush=True,
        )

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        list(pool.map(one, todo))
    return cmd_report(opts)


def _load(out: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("seed-*.json"))]


def _examples(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    """(result, failure, classification) for every classified failing example."""
    rows = []
    for r in results:
        for f in r["failures"]:
            for c in f.get("classification") or [None]:
                rows.append((r, f, c))
    return rows


def cmd_report(opts: argparse.Namespace) -> int:
    results = _load(opts.out)
    if not results:
        print(f"no results in {opts.out}")
        return 1
    rows = _examples(results)
    counts = {v: sum(1 for _, _, c in rows if c and c["verdict"] == v) for v in VERDICTS}
    broken = [r["seed"] for r in results if r["returncode"] not in (0, 1)]
    total = sum(r["seconds"] for r in results)
    profiles = sorted(
        {
            f"{r['profile']}" + (f" x{r['max_examples']}" if r["max_examples"] else "")
            for r in results
        }
    )
    print(
        "| seeds run | profile | test cases | failing runs | failures | classified | false alarms | bugs / suspects | time (s, summed) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    false_alarms = sum(n for v, n in counts.items() if v.startswith("false alarm"))
    real = sum(n for v, n in counts.items() if not v.startswith("false alarm"))
    print(
        f"| {len(results)} | {', '.join(profiles)} | {sum(r['test_cases'] for r in results)} |"
        f" {sum(1 for r in results if r['failures'])} | {len(rows)} |"
        f" {sum(1 for _, _, c in rows if c)} | {false_alarms} | {real} | {total:.0f} |"
    )
    if broken:
        print(f"\nruns that did not complete (pytest exit not 0/1): seeds {broken}")
    if rows:
        print("\n| seed | test | verdict | replay | float64 twin | excess | reproducer |")
        print("|---|---|---|---|---|---|---|")
        for r, f, c in rows:
            c = c or {}
            blob = c.get("blob")
            repro = (
                f"@reproduce_failure({blob[0]!r}, {blob[1].encode()!r})"
                if blob
                else f"--hypothesis-seed={r['seed']}"
            )
            excess = c.get("excess")
            print(
                f"| {r['seed']} | `{f['nodeid']}` | {c.get('verdict', 'unclassified')} |"
                f" {c.get('replay', '')} | {c.get('float64_twin') or ''} |"
                f" {'' if excess is None else f'{excess:.3g}x'} | `{repro}` |"
            )
        print("\nverdict counts: " + ", ".join(f"{v}: {n}" for v, n in counts.items() if n))
    return 0


def cmd_classify(opts: argparse.Namespace) -> int:
    for path in sorted(opts.out.glob("seed-*.json")):
        result = json.loads(path.read_text())
        for failure in result["failures"]:
            failure["classification"] = classify(failure, result["seed"], opts)
        _write(path, result)
    return cmd_report(opts)


def cmd_replay(opts: argparse.Namespace) -> int:
    rows = _examples(_load(opts.out))
    r, f, c = rows[opts.index]
    blob = tuple(c["blob"]) if c and c.get("blob") else None
    print(f"seed {r['seed']}: {f['nodeid']}\n{f['message'][:400]}\n")
    print(json.dumps(_replay(f["nodeid"], opts, blob, r["seed"]), indent=1))  # type: ignore[arg-type]
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "report", "classify", "replay"])
    parser.add_argument("--index", type=int, default=0, help="replay: row of the failure table")
    parser.add_argument("--seeds", default="0:200", help="'0:200', '3,17,40' or '0:10,50:60'")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--profile", default="dev", help="Hypothesis profile (default dev)")
    parser.add_argument("--max-examples", type=int, default=0, help="override max_examples")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--workers", default="2", help="pytest-xdist workers per seed (-n)")
    parser.add_argument("--no-classify", action="store_true", help="record failures only")
    parser.add_argument("--planted", default="", help="DERIVS_PLANTED_BUG for every run")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments")
    parser.add_argument("--paths", nargs="+", default=["tests"], help="test paths (default tests)")
    parser.add_argument("--lock", type=pathlib.Path, help="flock this file around each run")
    opts = parser.parse_args()
    global LOCK
    LOCK = opts.lock
    opts.out = opts.out.resolve()
    opts.pytest_args = opts.pytest_args.split()
    return {"run": cmd_run, "report": cmd_report, "classify": cmd_classify, "replay": cmd_replay}[
        opts.command
    ](opts)


if __name__ == "__main__":
    sys.exit(main())
