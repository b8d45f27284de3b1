"""Join conformance reports (``pytest --conformance-report``) into one markdown table.

Usage::

    python -m tools.conformance_table derivs.json torch.func.json torch.autograd.functional.json
    python -m tools.conformance_table --run --write docs/suite/conformance.md

``--run`` first runs the conformance properties (``pytest -n auto -m conformance``, the
``ci`` profile unless ``HYPOTHESIS_PROFILE`` says otherwise) against every built-in adapter
and the example loop adapter, each with its expected-failure file, writing the reports to
``--out``; ``--write PAGE`` replaces the page's two generated sections: the capability
matrices (between ``<!-- capability matrices: begin -->`` and ``<!-- capability matrices:
end -->``), one matrix per report (pytest_derivs._report.matrix, recomputed from the
report's cases), and the property table (between ``<!-- property table: begin -->`` and
``<!-- property table: end -->``): the run facts, the table below and the failures.

One row per conformance property (test function), one column per implementation; a cell
counts the property's cases by outcome (``8 pass``, ``2 xfail``, ``4 skip``) and names the
skip reason where every case was skipped. Rows that are no part of the contract (derivs' own
tools and guarantees, skipped for every other implementation) are left out. Then the run facts
per implementation (version, torch, profile, time, totals) and, for each expected failure,
the distinct messages, so the table says at a glance which bug a failure is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from derivs.conformance import BUILTIN
from pytest_derivs._report import matrix, matrix_markdown, not_contract, short_reason

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "derivs" / "conformance" / "expected_failures"
# every built-in adapter, then the example of docs/suite/conformance.md: report name -> --impl
ADAPTERS = {**{name: name for name in BUILTIN}, "example": "examples.loop_adapter:ADAPTER"}

SHORT = {
    "passed": "pass",
    "failed": "FAIL",
    "error": "ERROR",
    "xfailed": "xfail",
    "xpassed": "XPASS",
    "skipped": "skip",
}


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def cell(prop: dict[str, Any] | None) -> str:
    if prop is None:
        return "not run"
    counts = Counter(prop["counts"])
    if set(counts) == {"skipped"}:
        return "skip: " + "; ".join(sorted({short_reason(r) for r in prop["skip_reasons"]}))
    return ", ".join(f"{counts[o]} {SHORT[o]}" for o in SHORT if counts.get(o))


def _held_to(prop: dict[str, Any] | None) -> bool:
    """Whether the implementation was held to the property: it ran, or skipped for its own reason.

    A skip as derivs' own tool or guarantee (``not a conformance property``, ``derivs only``)
    is no part of the contract.
    """
    return prop is not None and any(not_contract(case) is None for case in prop["cases"])


def conformance_rows(reports: list[dict[str, Any]]) -> list[str]:
    """Properties some implementation other than derivs is held to (all, with derivs alone)."""
    names = list(dict.fromkeys(p["property"] for r in reports for p in r["properties"]))
    others = [
        {p["property"]: p for p in r["properties"]}
        for r in reports
        if r["implementation"] != "derivs"
    ]
    return [n for n in names if not others or any(_held_to(o.get(n)) for o in others)]


def table(reports: list[dict[str, Any]]) -> str:
    by_impl = [{p["property"]: p for p in r["properties"]} for r in reports]
    head = ["property", *(f"{r['implementation']}" for r in reports)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in conformance_rows(reports):
        shown = name.removeprefix("tests/")
        lines.append(f"| `{shown}` | " + " | ".join(cell(b.get(name)) for b in by_impl) + " |")
    return "\n".join(lines)


def facts(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| implementation | version | torch | devices | Hypothesis profile | suite commit | wall time | totals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        totals = ", ".join(f"{n} {SHORT.get(o, o)}" for o, n in sorted(r["totals"].items()))
        commit = (r["suite_commit"] or "?")[:10] + (" (modified)" if r["suite_dirty"] else "")
        lines.append(
            f"| {r['implementation']} | {r['version']} | {r['torch']} | {', '.join(r['devices'])} | "
            f"{r['hypothesis_profile']} | {commit} | {r['duration_s']} s | {totals} |"
        )
    return "\n".join(lines)


def _cause(case: dict[str, Any]) -> list[str]:
    """An expected failure's listed bugs (their titles), else each message's first line."""
    if case.get("expected_entries"):
        return [e["title"] for e in case["expected_entries"]]
    return [f["error"].splitlines()[0][:160] for f in case.get("failures", [])] or [case["outcome"]]


def failures(reports: list[dict[str, Any]]) -> str:
    """Each implementation's failing and expected-failing cases, grouped by cause."""
    out = []
    for r in reports:
        groups: dict[str, set[str]] = {}
        for prop in r["properties"]:
            for case in prop["cases"]:
                if case.get("outcome") in ("failed", "error", "xfailed", "xpassed"):
                    for cause in _cause(case):
                        groups.setdefault(f"{SHORT[case['outcome']]}: {cause}", set()).add(
                            case["id"]
                        )
        if groups:
            out += ["", f"{r['implementation']}:", ""]
            out += [
                f"- {c} ({len(ids)} cases)"
                for c, ids in sorted(groups.items(), key=lambda g: -len(g[1]))
            ]
    return "\n".join(out)


def run(out: Path, extra: list[str]) -> list[str]:
    """The conformance properties against every adapter of ADAPTERS; the report paths."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HYPOTHESIS_PROFILE=os.environ.get("HYPOTHESIS_PROFILE", "ci"))
    paths = []
    for name, spec in ADAPTERS.items():
        report = out / f"{name}.json"
        command = [sys.executable, "-m", "pytest", "-n", "auto", "-p", "no:cacheprovider"]
        command += ["-q", "-m", "conformance", "--impl", spec, "--conformance-report", str(report)]
        listed = EXPECTED / f"{name}.txt"
        if listed.exists():
            command += ["--expected-failures", str(listed)]
        print("$", " ".join(command), flush=True)
        subprocess.run([*command, *extra], cwd=ROOT, env=env, check=False)
        paths.append(str(report))
    return paths


def matrices(reports: list[dict[str, Any]]) -> str:
    """One capability matrix per report, under a heading with the run's facts."""
    lines: list[str] = []
    for r in reports:
        cases = [case for prop in r["properties"] for case in prop["cases"]]
        totals = ", ".join(f"{n} {o}" for o, n in sorted(r["totals"].items()))
        lines += [f"### {r['implementation']}", ""]
        lines += [
            f"{r['implementation']} {r['version']}, torch {r['torch']}, devices "
            f"{', '.join(r['devices'])}, Hypothesis profile {r['hypothesis_profile']}, "
            f"suite {(r['suite_commit'] or '?')[:10]}{' (modified)' if r['suite_dirty'] else ''}: "
            f"{totals}; {r['duration_s']} s.",
            "",
        ]
        lines += [*matrix_markdown(matrix(cases)), ""]
    return "\n".join(lines)


def marked(name: str) -> tuple[str, str]:
    """The comments that open and close a generated section of a page."""
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with what stands between the section's markers replaced by ``body``."""
    begin, end = marked(name)
    head, found_begin, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found_begin and found_end):
        raise ValueError(f"no {begin} ... {end} section")
    return f"{head}{begin}\n\n{body}\n{end}{tail}"


def write_page(page: Path, reports: list[dict[str, Any]]) -> None:
    """Fill the page's generated sections from the reports."""
    bodies = {
        "capability matrices": matrices(reports),
        "property table": "\n".join([facts(reports), "", table(reports), failures(reports), ""]),
    }
    text = page.read_text(encoding="utf-8")
    try:
        for name, body in bodies.items():
            text = replace_section(text, name, body)
    except ValueError as e:
        raise SystemExit(f"conformance_table: {page} has {e}") from None
    page.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="*", help="JSON reports, one per implementation")
    parser.add_argument("--run", action="store_true", help="run every adapter first")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "conformance")
    parser.add_argument("--write", type=Path, metavar="PAGE", help="the page to put matrices in")
    parser.add_argument("--pytest-arg", action="append", default=[], help="passed to each run")
    args = parser.parse_args(argv)
    paths = run(args.out, args.pytest_arg) if args.run else args.reports
    if not paths:
        parser.error("give JSON reports, or --run")
    reports = load(paths)
    if args.write:
        write_page(args.write, reports)
    print(facts(reports), "", table(reports), failures(reports), "", matrices(reports), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
