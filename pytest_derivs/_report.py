"""The conformance report: per property, passed / failed (with the counterexample) / skipped (why).

Collected from the test reports where pytest (or pytest-xdist's controller) receives them,
written at the end of the session as JSON and as a markdown table. A property is a test
function (``tests/test_jacobian.py::test_matches_loop_oracle``); its cases are the
parametrised ids. ``tools/conformance_table.py`` joins several reports into one table.
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
