"""Join conformance reports (``pytest --conformance-report``) into one markdown table.

Usage::

    python tools/conformance_table.py derivs.json torch.func.json torch.autograd.functional.json

One row per conformance property (test function), one column per implementation; a cell
counts the property's cases by outcome (``8 pass``, ``2 xfail``, ``4 skip``) and names the
skip reason where every case was skipped. Rows that are not conformance properties (tests of
derivs' own tools, skipped for every other implementation) are left out. Then the run facts
per implementation (version, torch, profile, time, totals) and, for each expected failure,
the distinct messages, so the table says at a glance which bug a failure is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SHORT = {
    "passed": "pass",
    "failed": "FAIL",
    "error": "ERROR",
    "xfailed": "xfail",
    "xpassed": "XPASS",
    "skipped": "skip",
}
NOT_CONFORMANCE = "not a conformance property"


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _reason(text: str) -> str:
    """A skip reason without the implementation's name in front (it heads the column)."""
    text = re.sub(
        r"^a guarantee of derivs itself \((.*)\), not of the contract .* is held to$",
        r"derivs only: \1",
        text,
    )
    return re.sub(r"^\S+ (does not declare|provides no|has no) ", r"\1 ", text)


def cell(prop: dict[str, Any] | None) -> str:
    if prop is None:
        return "not run"
    counts = Counter(prop["counts"])
    if set(counts) == {"skipped"}:
        return "skip: " + "; ".join(sorted({_reason(r) for r in prop["skip_reasons"]}))
    return ", ".join(f"{counts[o]} {SHORT[o]}" for o in SHORT if counts.get(o))


def conformance_rows(reports: list[dict[str, Any]]) -> list[str]:
    """Properties that some implementation other than derivs is held to (or skips for a feature)."""
    names: dict[str, None] = {}
    for report in reports:
        for prop in report["properties"]:
            reasons = prop["skip_reasons"]
            if not all(r.startswith(NOT_CONFORMANCE) for r in reasons) or prop["counts"].keys() - {
                "skipped"
            }:
                names.setdefault(prop["property"], None)
    others = [r for r in reports if r["implementation"] != "derivs"]
    keep = []
    for name in names:
        props = [next((p for p in r["properties"] if p["property"] == name), None) for r in others]
        if not others or any(
            p and not all(x.startswith(NOT_CONFORMANCE) for x in p["skip_reasons"]) for p in props
        ):
            keep.append(name)
    return keep


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


def failures(reports: list[dict[str, Any]]) -> str:
    """Each implementation's failing cases grouped by their first message line."""
    out = []
    for r in reports:
        groups: dict[str, list[str]] = {}
        for prop in r["properties"]:
            for case in prop["cases"]:
                if case.get("outcome") not in ("failed", "error", "xfailed", "xpassed"):
                    continue
                for f in case.get("failures") or [{"error": case.get("outcome", "")}]:
                    first = f["error"].splitlines()[0]
                    first = re.sub(r"\[.*?\] ", "", first)[:160]
                    groups.setdefault(first, []).append(case["id"].removeprefix("tests/"))
        if not groups:
            continue
        out += ["", f"{r['implementation']}:", ""]
        for message, ids in sorted(groups.items(), key=lambda g: -len(g[1])):
            out.append(f"- `{message}` ({len(set(ids))} cases)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="JSON reports, one per implementation")
    args = parser.parse_args(argv)
    reports = load(args.reports)
    print(facts(reports), "", table(reports), failures(reports), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
