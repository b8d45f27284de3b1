"""A saved pytest-benchmark run, read back: its rows by group, its header, its tables.

The base of the reports: ``bench.sparse_report`` and ``bench.report`` import it (and the
report imports the sparse section: one way, no circle).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.output import fmt_ratio, fmt_time

CROSSOVER_GROUP = "jacobian crossover"


def latest_run(storage: Path) -> Path:
    """The most recently written run under a pytest-benchmark storage folder."""
    runs = sorted(storage.glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(
            f"bench_report: no saved run under {storage}; run "
            "`pytest tests/bench -m bench --benchmark-autosave` first"
        )
    return runs[-1]


class Row:
    """One benchmark: its group (device included), label and statistics."""

    def __init__(self, bench: dict[str, Any]) -> None:
        info = bench.get("extra_info", {})
        self.group: str = bench["group"] or "ungrouped"
        self.question: str = info.get("question", self.group)
        self.device: str = info.get("device", "?")
        self.label: str = info.get("label", bench["name"])
        self.impl: str = info.get("impl", "")
        self.info = info
        stats = bench["stats"]
        self.median: float = stats["median"]
        self.min: float = stats["min"]
        self.iqr: float = stats["iqr"]
        self.rounds: int = stats["rounds"]


def load_rows(run: dict[str, Any]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for bench in run["benchmarks"]:
        row = Row(bench)
        groups[row.group].append(row)
    return dict(groups)


def header(run: dict[str, Any], path: Path) -> list[str]:
    m = run.get("machine_info", {})
    c = run.get("commit_info", {})
    cpu = m.get("cpu_model") or m.get("cpu", {}).get("brand_raw") or m.get("processor", "?")
    load = run.get("load_average", {})
    cuda = ", ".join(m.get("cuda_devices", [])) or "none"
    commit = (c.get("id") or "?")[:10] + (" (uncommitted changes)" if c.get("dirty") else "")
    timers = sorted({b.get("options", {}).get("timer", "?") for b in run.get("benchmarks", [])})
    return [
        "# derivs benchmarks",
        "",
        f"- run: `{path.name}`, {run.get('datetime', '?')[:19]}, commit {commit}",
        f"- torch {m.get('torch', '?')}, Python {m.get('python_version', '?')}, "
        f"pytest-benchmark {run.get('version', '?')}",
        f"- CPU: {cpu}, {m.get('cpu_count', '?')} cores, {m.get('torch_threads', '?')} torch "
        f"threads; GPUs: {cuda}",
        f"- timer: {', '.join(timers)}",
        f"- load average (1, 5, 15 min) at the start: {_load(load.get('start'))}, at the end: "
        f"{_load(load.get('end'))}",
        "",
        "Times are per call: the median over the rounds, the minimum beside it. Every result was",
        "checked against a closed form (or a reference method) before it was timed.",
        "",
    ]


def _load(values: Sequence[float] | None) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"


def best_of(rows: Sequence[Row], labels: Sequence[str]) -> Row | None:
    found = [r for r in rows if r.label in labels]
    return min(found, key=lambda r: r.median) if found else None


def by_label(rows: Sequence[Row]) -> dict[str, Row]:
    return {r.label: r for r in rows}


def group_tables(groups: dict[str, list[Row]]) -> list[str]:
    out = ["## Tables", ""]
    for group, rows in groups.items():
        fastest = min(r.median for r in rows)
        out += [
            f"### {group}",
            "",
            "| method | median | min | IQR | rounds | vs fastest |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: _crossover_key(r)):
            extra = f" (compile {fmt_time(r.info['compile_s'])})" if "compile_s" in r.info else ""
            out.append(
                f"| {r.label}{_size_suffix(r)}{extra} | {fmt_time(r.median)} | "
                f"{fmt_time(r.min)} | {fmt_time(r.iqr)} | {r.rounds} | "
                f"{fmt_ratio(r.median / fastest)} |"
            )
        out.append("")
    return out


def _crossover_key(r: Row) -> tuple[float, float]:
    if r.question.startswith(CROSSOVER_GROUP):
        return (r.info.get("ratio", 0.0), r.median)
    return (0.0, r.median)


def _size_suffix(r: Row) -> str:
    if r.question.startswith(CROSSOVER_GROUP):
        return f" {r.info['n_in']}->{r.info['n_out']}"
    return ""
