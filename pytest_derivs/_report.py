"""The conformance report: per property, passed / failed (with the counterexample) / skipped (why).

Collected from the test reports where pytest (or pytest-xdist's controller) receives them,
written at the end of the session as JSON and as a markdown table. A property is a test
function (``tests/test_jacobian.py::test_matches_loop_oracle``); its cases are the
parametrised ids. ``tools/conformance_table.py`` joins several reports into one table.

The capability matrix: the same cases counted by what each exercises, operator x method x
declared feature (the ``derivs_capability`` marks of ``SuiteImpl.params``, else the
operators, methods and features the test asked ``SuiteImpl`` for while it ran). A ``--impl``
run prints it at its end in place of a line per skip; the report stores it under ``matrix``.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_derivs._impl import CAPABILITY, OPERATORS

# the order a property's outcome is decided in: the first present wins
SEVERITY = ("error", "failed", "xpassed", "xfailed", "passed", "skipped")

_PHASE = re.compile(
    r"during (\w+) phase \(([\d.]+) seconds\):.*?(\d+) passing, (\d+) failing, and (\d+) invalid",
    re.S,
)


def parse_statistics(text: str | None) -> dict[str, Any] | None:
    """Hypothesis' statistics text as numbers per phase, and why it stopped."""
    if not text:
        return None
    phases = {}
    for chunk in text.split("  - during ")[1:]:
        m = _PHASE.search("during " + chunk)
        if m:
            phases[m.group(1)] = {
                "seconds": float(m.group(2)),
                "passing": int(m.group(3)),
                "failing": int(m.group(4)),
                "invalid": int(m.group(5)),
            }
    stopped = re.search(r"Stopped because (.*)", text)
    return {"phases": phases, "stopped_because": stopped.group(1).strip() if stopped else None}


def _failures(report: pytest.TestReport) -> list[dict[str, str]]:
    """The distinct failures the plugin recorded, else one from the report's text."""
    recorded = report.__dict__.get("derivs_failures")
    if recorded:
        return list(recorded)
    hits = report.__dict__.get("derivs_known_hits")
    if hits:  # passed once the examples that hit a listed bug were filtered out
        return [{"error": hits["first"], "counterexample": ""}]
    return [{"error": _crash(report), "counterexample": _counterexample(report) or ""}]


def _crash(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    text = str(report.longrepr or "")
    return text.strip().splitlines()[-1] if text.strip() else ""


def _counterexample(report: pytest.TestReport) -> str | None:
    """Hypothesis' falsifying example (the shrunk draws), else the lines that name it."""
    for title, content in report.sections:
        if title == "Hypothesis" and "Falsifying" in content:
            return content.strip()
    text = str(report.longrepr or "")
    start = text.find("Falsifying example")
    return text[start:].split("\n\n")[0].strip() if start >= 0 else None


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr or "")


class Collector:
    """Accumulates one outcome per test id from the test reports."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    def add(self, report: pytest.TestReport) -> None:
        case = self.cases.setdefault(report.nodeid, {"id": report.nodeid, "duration_s": 0.0})
        case["duration_s"] = round(case["duration_s"] + report.duration, 4)
        stats = report.__dict__.get("_hypothesis_stats")
        if stats:
            case["hypothesis"] = parse_statistics(stats)
        hits = report.__dict__.get("derivs_known_hits")
        if hits:
            case["known_hits"] = hits
        listed = report.__dict__.get("derivs_expected")
        if listed:
            case["expected_entries"] = listed
        exercised = report.__dict__.get(CAPABILITY)
        if exercised:
            case["capability"] = exercised
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self._outcome(case, report)
        elif report.when == "teardown" and report.failed:
            case.update(outcome="error", failures=_failures(report))

    def _outcome(self, case: dict[str, Any], report: pytest.TestReport) -> None:
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
            case.update(outcome=outcome, expected=report.wasxfail)
            if report.skipped:
                case["failures"] = _failures(report)
        elif report.skipped:
            case.update(outcome="skipped", reason=_skip_reason(report))
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
            case.update(outcome=outcome, failures=_failures(report))
        else:
            case["outcome"] = "passed"

    def properties(self) -> list[dict[str, Any]]:
        """Cases grouped by test function, each with its outcome and counts."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for case in self.cases.values():
            grouped.setdefault(case["id"].split("[")[0], []).append(case)
        result = []
        for name, cases in grouped.items():
            counts = Counter(c.get("outcome", "error") for c in cases)
            outcome = next(o for o in SEVERITY if counts[o]) if counts else "error"
            reasons = sorted({c["reason"] for c in cases if c.get("outcome") == "skipped"})
            result.append(
                {
                    "property": name,
                    "outcome": outcome,
                    "counts": dict(counts),
                    "skip_reasons": reasons,
                    "duration_s": round(sum(c["duration_s"] for c in cases), 3),
                    "cases": sorted(cases, key=lambda c: c["id"]),
                }
            )
        return sorted(result, key=lambda p: p["property"])


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def header(config: pytest.Config, impl: Any, devices: list[str]) -> dict[str, Any]:
    """What was tested, with what, where: the report's first keys."""
    torch = sys.modules.get("torch")
    hypothesis = sys.modules.get("hypothesis")
    profile = None
    if hypothesis is not None:
        profile = getattr(hypothesis.settings, "_current_profile", None)
    root = Path(str(config.rootpath))
    status = _git(root, "status", "--porcelain")
    return {
        "implementation": impl.name,
        "spec": impl.spec,
        "version": impl.version,
        "features": impl.features.to_dict(),
        "torch": getattr(torch, "__version__", None),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": devices,
        "hypothesis": getattr(hypothesis, "__version__", None),
        "hypothesis_profile": profile,
        "suite_commit": _git(root, "rev-parse", "HEAD"),
        "suite_dirty": None if status is None else bool(status),
        "args": list(config.invocation_params.args),
    }


def write(path: Path, head: dict[str, Any], collector: Collector) -> Path:
    """The JSON report at ``path`` and its markdown table next to it (``.md``)."""
    props = collector.properties()
    totals = Counter(c.get("outcome", "error") for c in collector.cases.values())
    data = {
        **head,
        "duration_s": round(time.time() - collector.started, 1),
        "totals": dict(totals),
        "matrix": matrix(list(collector.cases.values())),
        "properties": props,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    md = path.with_suffix(".md")
    md.write_text(markdown(data))
    return md


def _cell(prop: dict[str, Any]) -> str:
    counts = prop["counts"]
    total = sum(counts.values())
    shown = ", ".join(f"{counts[o]} {o}" for o in SEVERITY if counts.get(o))
    return f"{prop['outcome']} ({shown} of {total})"


def markdown(data: dict[str, Any]) -> str:
    """One report as markdown: the run's facts, the table, then every failure in full."""
    lines = [
        f"# Conformance: {data['implementation']} {data['version']}",
        "",
        f"torch {data['torch']}, Python {data['python']}, devices {', '.join(data['devices'])}, "
        f"Hypothesis {data['hypothesis']} (profile {data['hypothesis_profile']}), "
        f"suite {data['suite_commit'] or 'unknown'}{' (modified)' if data['suite_dirty'] else ''}; "
        f"{data['duration_s']} s.",
        "",
        "Totals: " + ", ".join(f"{n} {o}" for o, n in sorted(data["totals"].items())),
        "",
        "## Capability matrix",
        "",
        *matrix_markdown(data["matrix"]),
        "",
        "## Properties",
        "",
        "| property | outcome | notes |",
        "|---|---|---|",
    ]
    for prop in data["properties"]:
        notes = "; ".join(prop["skip_reasons"])
        lines.append(f"| `{prop['property']}` | {_cell(prop)} | {notes} |")
    failures = [
        c
        for p in data["properties"]
        for c in p["cases"]
        if c.get("outcome") in ("failed", "error", "xfailed", "xpassed")
    ]
    if failures:
        lines += ["", "## Failures and expected failures", ""]
    for case in failures:
        lines += [f"### `{case['id']}`: {case['outcome']}", ""]
        if case.get("expected"):
            lines += [f"Expected: {case['expected']}", ""]
        for failure in case.get("failures", []):
            lines += ["```text", failure["error"].strip()]
            if failure.get("counterexample"):
                lines += ["", failure["counterexample"]]
            if failure.get("reproduce"):
                lines += ["", failure["reproduce"]]
            lines += ["```", ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ capability matrix

Capability = tuple[str, "str | None", "str | None"]

# the matrix's outcome columns, in order; a column no case reached is left out, except these
MATRIX_OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")
_ALWAYS = ("passed", "failed", "skipped")
# the row of the cases that exercise no operator the matrix can name
NO_OPERATOR = "(no operator)"
# the row of the cases skipped as no part of the contract: derivs' own tools and guarantees
NOT_CONTRACT = "(not the contract)"
_NOT_CONTRACT_REASONS = ("not a conformance property", "derivs only")


def _narrowest(touched: list[Capability]) -> list[Capability]:
    """The records no other record of the same operator makes more specific, in order.

    ``need("hvp")`` then ``need("hvp", method="jvp_grad")`` is one capability,
    ``("hvp", "jvp_grad", None)``; a None method or feature is "any".
    """

    def covers(wide: Capability, narrow: Capability) -> bool:
        return (
            wide != narrow
            and wide[0] == narrow[0]
            and wide[1] in (None, narrow[1])
            and wide[2] in (None, narrow[2])
        )

    unique = list(dict.fromkeys(touched))
    return [c for c in unique if not any(covers(c, other) for other in unique)]


def capability_of(item: pytest.Item, touched: list[Capability]) -> list[list[str | None]]:
    """What a test case exercises: its ``derivs_capability`` marks, else what it asked for."""
    marked = [tuple(mark.args) for mark in item.iter_markers(CAPABILITY)]
    chosen = marked or _narrowest(touched)
    return [list(c) for c in dict.fromkeys(chosen)]


def short_reason(text: str) -> str:
    """A skip reason without the implementation's name in front (the run names it)."""
    text = re.sub(
        r"^a guarantee of derivs itself \((.*)\), not of the contract .* is held to$",
        r"derivs only: \1",
        text,
    )
    text = re.sub(r"^not a conformance property: .*", "not a conformance property", text)
    return re.sub(r"^\S+ (does not declare|provides no|has no|declares) ", r"\1 ", text)


def not_contract(case: dict[str, Any]) -> str | None:
    """Why a skipped case is no part of the contract (its reason, without the detail)."""
    if case.get("outcome") != "skipped":
        return None
    reason = short_reason(case.get("reason", ""))
    return next((r for r in _NOT_CONTRACT_REASONS if reason.startswith(r)), None)


def _row_key(capability: list[str | None]) -> tuple[int, str, str, str]:
    operator, method, feature = capability
    rank = OPERATORS.index(operator) if operator in OPERATORS else len(OPERATORS)
    rank += operator == NOT_CONTRACT
    return (rank, operator or "", method or "", feature or "")


def matrix(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outcome counts per (operator, method, feature), with the distinct skip reasons.

    A case that exercises several capabilities (hvp and vhp) counts in each of their rows;
    one that exercises none counts in the ``(no operator)`` row, and one skipped as no part of
    the contract (derivs' own tools and guarantees) in the ``(not the contract)`` row.
    """
    rows: dict[tuple[str | None, ...], dict[str, Any]] = {}
    for case in cases:
        outside = not_contract(case)
        caps = [[NOT_CONTRACT, None, None]] if outside else case.get("capability")
        for cap in caps or [[NO_OPERATOR, None, None]]:
            row = rows.setdefault(
                tuple(cap),
                {"operator": cap[0], "method": cap[1], "feature": cap[2], "counts": Counter()},
            )
            outcome = case.get("outcome", "error")
            row["counts"][outcome] += 1
            if outcome == "skipped":
                why = outside or short_reason(case.get("reason", ""))
                row.setdefault("why", Counter())[why] += 1
    ordered = sorted(
        rows.values(), key=lambda r: _row_key([r["operator"], r["method"], r["feature"]])
    )
    for row in ordered:
        row["counts"] = dict(row["counts"])
        row["why"] = dict(row.get("why", {}))
    return ordered


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return [o for o in MATRIX_OUTCOMES if o in _ALWAYS or any(r["counts"].get(o) for r in rows)]


def _why(row: dict[str, Any]) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in sorted(row["why"].items()))


def _cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    head = [row["operator"], row["method"] or "-", row["feature"] or "-"]
    return head + [str(row["counts"].get(o, 0)) for o in columns] + [_why(row)]


def matrix_text(rows: list[dict[str, Any]]) -> list[str]:
    """The matrix as aligned plain-text lines (the end of a ``--impl`` run)."""
    columns = _columns(rows)
    table = [["operator", "method", "feature", *columns, "skipped because"]]
    table += [_cells(r, columns) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    numeric = range(3, 3 + len(columns))
    out = []
    for line in table:
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return out


def matrix_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The matrix as a markdown table."""
    columns = _columns(rows)
    head = ["operator", "method", "feature", *columns, "skipped because"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = _cells(row, columns)
        cells[:3] = [
            f"`{c}`" if c not in ("-", NO_OPERATOR, NOT_CONTRACT) else c for c in cells[:3]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def explicit_report_chars(config: pytest.Config) -> bool:
    """Whether the command line itself (not addopts) asks for a short summary (``-r``)."""
    return any(isinstance(a, str) and a.startswith("-r") for a in config.invocation_params.args)


# the short-summary letters the matrix stands for: skips, expected failures, xpasses
FOLDED = "sxX"


def fold_report_chars(reporter: Any) -> None:
    """Drop from the short summary the lines the matrix counts, unless ``-r`` asked for them.

    NOTE: pyproject's ``-ra`` lists every skip (about 90 lines per ``--impl`` run), every
    expected failure (about 100 for torch.func) and every xpass; the matrix says each skip
    reason once with its count, counts the expected failures and xpasses, and the "derivs
    expected failures" section names their bugs. ``-r`` on the command line keeps the lines.
    Called when the session starts: pytest prints its XPASSES section before the summary
    hooks run.
    """
    if not explicit_report_chars(reporter.config):
        reporter.reportchars = "".join(c for c in reporter.reportchars if c not in FOLDED)


def print_matrix(reporter: Any, impl: Any, collector: Collector) -> None:
    """The capability matrix at the end of a ``--impl`` run."""
    reporter.write_sep("=", f"derivs capability matrix: {impl.name} {impl.version}")
    for line in matrix_text(matrix(list(collector.cases.values()))):
        reporter.write_line(line)
