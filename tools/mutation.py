"""Mutation campaigns with mutmut 3, one per module, and the triage of their survivors.

A campaign mutates one module (or a small group) and runs the tests meant to catch its bugs;
mutmut runs, per mutant, only the selected tests that call the mutated function. Each
campaign works in its own copy of the project (``.mutation/<campaign>/``) whose
``[tool.mutmut]`` (pyproject.toml) is narrowed to the campaign, so campaigns do not share
mutmut's caches and can run one after another, or on different machines.

Usage::

    python -m tools.mutation list                       # the campaigns
    python -m tools.mutation run oracles                # mutate, test, time; resumable
    python -m tools.mutation run jacobian --sample 0.25 # every 4th mutant (by a stable hash)
    python -m tools.mutation estimate jacobian          # mutants and mutmut's time estimate
    python -m tools.mutation triage oracles             # survivors vs the equivalent list
    python -m tools.mutation rerun oracles              # after new tests: re-test survivors
    python -m tools.mutation report                     # the score table of every campaign

``tox -e mutation -- <command> <campaign>`` runs the same. Survivors are triaged against
``docs/suite/mutation-equivalent.toml``: an entry names the function, the line before and
after mutation and why the two cannot be told apart (``equivalent``); everything else is a
real survivor, to be killed by a new property or example. The score is
``killed / (mutants - equivalent)``.

NOTE: mutation runs use ``HYPOTHESIS_PROFILE=mutation`` (the ci profile's 16 derandomised
examples, no shrinking), no example database, and deselect the ``compile`` and ``bench``
tests (torch.compile traces through mutmut's trampolines); see docs/suite/trust.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from typing import Any, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
EQUIVALENT = ROOT / "docs" / "suite" / "mutation-equivalent.toml"
DESELECT = "not bench and not compile"

OPERATOR_TESTS = [
    "tests/test_jacobian.py",
    "tests/test_hessian.py",
    "tests/test_products.py",
    "tests/test_batch.py",
    "tests/test_invariants.py",
    "tests/test_errors.py",
    "tests/test_tutorial.py",
]


class Campaign(NamedTuple):
    modules: list[str]  # only_mutate globs
    tests: list[str]  # the test selection
    why: str


# NOTE: the oracles, testing.py and _validate.py are killed by their own meta-tests (and the
# bad-input table): a wrong oracle must be caught without the operators it checks. The
# operator modules are killed by the operator properties.
CAMPAIGNS = {
    "oracles": Campaign(
        ["derivs/oracles/*"],
        ["tests/test_oracles.py", "tests/test_oracle_noise.py"],
        "oracle meta-tests",
    ),
    "testing": Campaign(
        ["derivs/testing.py"], ["tests/test_testing.py"], "assert_close meta-tests"
    ),
    "validate": Campaign(
        ["derivs/_validate.py"],
        ["tests/test_errors.py", "tests/test_jacobian.py", "tests/test_batch.py"],
        "the bad-input table and the operators that call it",
    ),
    "jacobian": Campaign(
        ["derivs/_jacobian.py", "derivs/_eager.py", "derivs/_blocks.py"],
        OPERATOR_TESTS,
        "operator properties",
    ),
    "hessian": Campaign(
        ["derivs/_hessian.py", "derivs/_memory.py"],
        [*OPERATOR_TESTS, "tests/test_memory.py"],
        "operator properties and the memory budget's tests",
    ),
    "products": Campaign(["derivs/_products.py"], OPERATOR_TESTS, "operator properties"),
    "batch": Campaign(["derivs/_batch.py"], OPERATOR_TESTS, "operator properties"),
}


# ----------------------------------------------------------------------------- working copy


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def _narrow_config(text: str, campaign: Campaign) -> str:
    """pyproject.toml with [tool.mutmut]'s only_mutate and test selection set to the campaign."""
    only = "only_mutate = " + json.dumps(campaign.modules)
    tests = "pytest_add_cli_args_test_selection = " + json.dumps([*campaign.tests, "-m", DESELECT])
    text = re.sub(r"^only_mutate = \[.*?\]", only, text, count=1, flags=re.S | re.M)
    return re.sub(
        r"^pytest_add_cli_args_test_selection = \[.*?\]", tests, text, count=1, flags=re.S | re.M
    )


def workdir(name: str, fresh: bool = False) -> pathlib.Path:
    """``.mutation/<name>``: a copy of the project narrowed to the campaign (made once)."""
    where = WORK / name
    if fresh and where.exists():
        shutil.rmtree(where)
    if not (where / "pyproject.toml").exists():
        for rel in _project_files():
            target = where / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        _write_config(where, name)
    return where


def _write_config(where: pathlib.Path, name: str) -> None:
    """The working copy's pyproject.toml: the project's, narrowed to campaign ``name``."""
    text = (ROOT / "pyproject.toml").read_text()
    (where / "pyproject.toml").write_text(_narrow_config(text, CAMPAIGNS[name]))


def _env() -> dict[str, str]:
    return dict(os.environ, HYPOTHESIS_PROFILE="mutation", DERIVS_HYPOTHESIS_DB="none")


def _mutmut(where: pathlib.Path, *args: str, capture: bool = True) -> str:
    cmd = [sys.executable, "-m", "mutmut", *args]
    proc = subprocess.run(cmd, cwd=where, env=_env(), capture_output=capture, text=True)
    return (proc.stdout or "") + (proc.stderr or "")


# ----------------------------------------------------------------------------- results


def results(where: pathlib.Path) -> dict[str, str]:
    """mutant name -> status (killed, survived, no tests, timeout, not checked, ...)."""
    found = {}
    for line in _mutmut(where, "results", "--all", "true").splitlines():
        if ": " in line and "__mutmut_" in line:
            name, status = line.strip().rsplit(": ", 1)
            found[name.strip()] = status.strip()
    return found


def _sampled(names: list[str], fraction: float) -> list[str]:
    """A stable sample: the mutants whose name hashes below ``fraction``."""

    def unit(name: str) -> float:
        return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8

    return [n for n in names if unit(n) < fraction]


def cmd_run(opts: argparse.Namespace) -> int:
    where = workdir(opts.campaign, fresh=opts.fresh)
    started = time.time()
    if opts.sample < 1.0:
        # mutmut generates every mutant and collects stats on its first run: run none first
        first = _mutmut(where, "run", "--max-children", str(opts.max_children), "no-such-mutant")
        if "failed to collect stats" in first:
            print(first[-3000:])
            print(f"mutation.py: the tests fail without any mutant in {where}; fix them first")
            return 1
        names = _sampled(sorted(results(where)), opts.sample)
        for i in range(0, len(names), 200):
            chunk = names[i : i + 200]
            _mutmut(where, "run", "--max-children", str(opts.max_children), *chunk, capture=False)
    else:
        _mutmut(where, "run", "--max-children", str(opts.max_children), capture=False)
    timing = where / "timing.json"
    runs = json.loads(timing.read_text()) if timing.exists() else []
    runs.append({"seconds": round(time.time() - started), "sample": opts.sample})
    timing.write_text(json.dumps(runs))
    return cmd_report(argparse.Namespace(campaigns=[opts.campaign]))


def _sync_tests(where: pathlib.Path, name: str) -> None:
    """Copy the project's current tests, strategies and conftest into the working copy.

    The campaign's test selection is narrowed again too, so tests added to it since the
    first run are run (mutmut collects coverage stats for tests it has not seen).

    NOTE: when that selection changed, mutmut 3.8.1 marks every mutant the rerun does not
    name "not checked" again (seen on the hessian campaign): ``report`` then counts the
    rerun's mutants only, so note the first run's figures before such a rerun.
    """
    _write_config(where, name)
    for rel in _project_files():
        if rel.startswith(("tests/", "strategies/")) or rel == "conftest.py":
            for base in (where, where / "mutants"):
                target = base / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)


def cmd_rerun(opts: argparse.Namespace) -> int:
    """After new tests: re-test the survivors (named, so mutmut runs them again)."""
    where = workdir(opts.campaign)
    _sync_tests(where, opts.campaign)
    names = [n for n, s in results(where).items() if s in ("survived", "no tests")]
    started = time.time()
    for i in range(0, len(names), 200):
        chunk = names[i : i + 200]
        _mutmut(where, "run", "--max-children", str(opts.max_children), *chunk, capture=False)
    timing = where / "timing.json"
    runs = json.loads(timing.read_text()) if timing.exists() else []
    runs.append(
        {
            "seconds": round(time.time() - started),
            "sample": runs[-1]["sample"] if runs else 1.0,
            "rerun": len(names),
        }
    )
    timing.write_text(json.dumps(runs))
    return cmd_report(argparse.Namespace(campaigns=[opts.campaign]))


def _worst_case_seconds(where: pathlib.Path, names: list[str]) -> dict[str, float]:
    """mutant -> the summed duration of the tests covering its function (mutmut's stats)."""
    stats = json.loads((where / "mutants" / "mutmut-stats.json").read_text())
    tests = stats["tests_by_mangled_function_name"]
    durations = stats["duration_by_test"]
    return {
        n: sum(durations.get(t, 0.0) for t in tests.get(n.partition("__mutmut_")[0], []))
        for n in names
    }


def cmd_estimate(opts: argparse.Namespace) -> int:
    where = workdir(opts.campaign)
    started = time.time()
    _mutmut(where, "run", "--max-children", "1", "no-such-mutant")
    stats = time.time() - started
    # NOTE: read mutmut-stats.json rather than `mutmut print-time-estimates`: in mutmut 3.8.1
    # that command prunes every function from the stats as stale (it computes no function
    # hashes), so the next run would find no covering test for any mutant.
    seconds = _worst_case_seconds(where, sorted(results(where)))
    print(
        f"{opts.campaign}: {len(seconds)} mutants; stats run {stats:.0f} s; covering tests"
        f" {sum(seconds.values()):.0f} s in all (an upper bound: a killed mutant stops at its"
        f" first failing test), 0 tests for {sum(1 for s in seconds.values() if not s)}"
    )
    return 0


# ----------------------------------------------------------------------------- triage


class Entry(NamedTuple):
    function: str
    before: str
    after: str
    why: str


def equivalents() -> list[Entry]:
    data = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    return [
        Entry(e["function"], e["before"].strip(), e["after"].strip(), e["why"])
        for e in data.get("equivalent", [])
    ]


def _function(name: str) -> str:
    """``derivs.testing.x__check_values__mutmut_14`` -> ``derivs.testing._check_values``."""
    module, _, mangled = name.rpartition(".")
    base = mangled.rsplit("__mutmut_", 1)[0]
    base = base.removeprefix("x_").removeprefix("x")
    return f"{module}.{base.replace('ǁ', '.').strip('.')}"


def diff(where: pathlib.Path, name: str) -> tuple[str, str]:
    """The changed source lines of a mutant, before and after (whitespace-normalised)."""
    text = _mutmut(where, "show", name)
    minus = [ln[1:] for ln in text.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in text.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    squash = lambda lines: " ".join(" ".join(lines).split())  # noqa: E731
    return squash(minus), squash(plus)


def match(entries: list[Entry], function: str, before: str, after: str) -> Entry | None:
    for e in entries:
        if fnmatch.fnmatchcase(function, e.function) and e.before == before and e.after == after:
            return e
    return None


def triage(name: str) -> dict[str, Any]:
    where = workdir(name)
    entries = equivalents()
    survivors = [n for n, s in results(where).items() if s in ("survived", "no tests")]
    rows = []
    for mutant in sorted(survivors):
        function = _function(mutant)
        before, after = diff(where, mutant)
        entry = match(entries, function, before, after)
        rows.append(
            {
                "mutant": mutant,
                "function": function,
                "before": before,
                "after": after,
                "equivalent": entry.why if entry else None,
            }
        )
    return {"campaign": name, "rows": rows}


def cmd_triage(opts: argparse.Namespace) -> int:
    found = triage(opts.campaign)
    real = [r for r in found["rows"] if not r["equivalent"]]
    for r in real:
        print(f"[[equivalent]]  # {r['mutant']}")
        print(f"function = {json.dumps(r['function'])}")
        print(f"before = {json.dumps(r['before'])}")
        print(f"after = {json.dumps(r['after'])}")
        print('why = ""\n')
    print(f"# {len(found['rows'])} survivors, {len(real)} not in {EQUIVALENT.name}")
    (WORK / opts.campaign / "triage.json").write_text(json.dumps(found, indent=1))
    return 0 if not real else 1


def score(name: str) -> dict[str, Any]:
    where = WORK / name
    statuses = results(where)
    timing = where / "timing.json"
    runs = json.loads(timing.read_text()) if timing.exists() else []
    tri = where / "triage.json"
    rows = json.loads(tri.read_text())["rows"] if tri.exists() else []
    equivalent = sum(1 for r in rows if r["equivalent"])
    checked = {n: s for n, s in statuses.items() if s != "not checked"}
    killed = sum(1 for s in checked.values() if s in ("killed", "timeout", "segfault"))
    survived = sum(1 for s in checked.values() if s in ("survived", "no tests"))
    other = len(checked) - killed - survived
    denominator = len(checked) - equivalent - other
    return {
        "campaign": name,
        "mutants": len(statuses),
        "checked": len(checked),
        "killed": killed,
        "equivalent": equivalent,
        "survivors": survived - equivalent,
        "other": other,
        "score": killed / denominator if denominator else float("nan"),
        "seconds": sum(r["seconds"] for r in runs),
        "sample": runs[-1]["sample"] if runs else None,
    }


def cmd_report(opts: argparse.Namespace) -> int:
    names = opts.campaigns or [n for n in CAMPAIGNS if (WORK / n / "mutants").exists()]
    print(
        "| campaign | modules | mutants | checked | killed | equivalent | real survivors"
        " | score | time (min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        s = score(name)
        sample = "" if s["sample"] in (None, 1.0) else f" (sample {s['sample']:g})"
        print(
            f"| {name}{sample} | {', '.join(CAMPAIGNS[name].modules)} | {s['mutants']} |"
            f" {s['checked']} | {s['killed']} | {s['equivalent']} | {s['survivors']} |"
            f" {100 * s['score']:.1f}% | {s['seconds'] / 60:.0f} |"
        )
    return 0


def cmd_list(opts: argparse.Namespace) -> int:
    for name, c in CAMPAIGNS.items():
        print(f"{name:10} {', '.join(c.modules):50} tests: {', '.join(c.tests)} ({c.why})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    run = sub.add_parser("run")
    run.add_argument("campaign", choices=list(CAMPAIGNS))
    run.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    run.add_argument("--sample", type=float, default=1.0, help="fraction of mutants to run")
    run.add_argument("--fresh", action="store_true", help="rebuild the working copy")
    again = sub.add_parser("rerun", help="re-test the survivors with the current tests")
    again.add_argument("campaign", choices=list(CAMPAIGNS))
    again.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    est = sub.add_parser("estimate")
    est.add_argument("campaign", choices=list(CAMPAIGNS))
    tri = sub.add_parser("triage")
    tri.add_argument("campaign", choices=list(CAMPAIGNS))
    rep = sub.add_parser("report")
    rep.add_argument("campaigns", nargs="*", help="default: every campaign run so far")
    opts = parser.parse_args()
    unknown = [c for c in getattr(opts, "campaigns", []) if c not in CAMPAIGNS]
    if unknown:
        parser.error(f"unknown campaign(s) {unknown}; see list")
    commands = {
        "list": cmd_list,
        "run": cmd_run,
        "rerun": cmd_rerun,
        "estimate": cmd_estimate,
        "triage": cmd_triage,
        "report": cmd_report,
    }
    return commands[opts.command](opts)


if __name__ == "__main__":
    sys.exit(main())
