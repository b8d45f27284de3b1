"""The sparse part of the benchmark report: derivs' sparse groups joined with asdex's JSON.

Reads the groups of ``tests/bench/test_bench_sparse.py`` (``sparse <problem>``, ``sparse
scaling <kind>``) from a torch run and, when present, the asdex run that ``bench.sparse_jax``
(``tox -e bench-jax``) wrote. Gives one table against issue 15's goals and the plot of time
against n (``sparse_scaling.png``). ``bench.report`` adds the section to its report; on its
own (for a run of the sparse benchmarks only)::

    python -m bench.sparse_report [run.json] [--jax .benchmarks/sparse_jax.json] [--out docs/bench]

writes ``docs/bench/sparse.md`` and the plot.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import results
from bench.output import fmt_bytes, fmt_time

ROOT = Path(__file__).resolve().parent.parent

PROBLEMS = ("brusselator", "stencil", "rosenbrock", "conv")
# issue 15's goals: eager evaluation at least this many times faster than the faster dense
# torch.func transform (None: no eager goal), and asdex's colours (ours must not exceed them).
SPEEDUP_GOAL = {"brusselator": 50, "stencil": 1000, "rosenbrock": 1000, "conv": None}
DENSE_LABELS = (
    "torch.func.jacfwd",
    "torch.func.jacrev",
    "torch.func.hessian",
    "torch.func.jacrev(jacrev)",
)


def load_jax(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _rows(groups: dict[str, list[Any]], name: str) -> dict[str, Any]:
    rows = next((r for g, r in groups.items() if g.startswith(f"sparse {name} [")), [])
    return {r.label: r for r in rows}


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def section(groups: dict[str, list[Any]], jax_path: Path, out: Path) -> list[str]:
    """The report's sparse section (empty when the run has no sparse groups)."""
    if not any(g.startswith("sparse ") for g in groups):
        return []
    jax = load_jax(jax_path)
    asdex = {p["problem"]: p for p in jax["problems"]} if jax else {}
    lines = [
        "## Sparse Jacobians and Hessians (issue 15)",
        "",
        "Medians; derivs from this run, asdex "
        + (
            f"{jax['asdex']} (jax {jax['jax']}, Python {jax['python']}, {jax['date']}, "
            f"{jax['threads'] or 'default'} XLA threads) from `{jax_path.name}`"
            if jax
            else "not run (`tox -e bench-jax`)"
        )
        + ". Eager evaluation reuses the plan (detection and colouring once per signature);",
        "compiled is `torch.compile(transform)` after its first call, asdex's the jitted "
        "`*_from_coloring` function.",
        "",
        "| problem | colours derivs / asdex | detect derivs / asdex | colour derivs / asdex "
        "| eager derivs | dense torch.func (best) | eager speedup (goal) | compiled derivs "
        "| asdex jitted | compiled / asdex (goal <= 1) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    goals: list[str] = []
    for name in PROBLEMS:
        named = _rows(groups, name)
        if not named:
            continue
        a = asdex.get(name, {})
        eager, compiled = named.get("derivs eager"), named.get("derivs compiled")
        dense = [named[d] for d in DENSE_LABELS if d in named]
        best = min(dense, key=lambda r: r.median) if dense else None
        colours = (eager or next(iter(named.values()))).info.get("colors")
        speed = best.median / eager.median if best and eager else None
        goal = SPEEDUP_GOAL[name]
        ratio = compiled.median / a["eval_s"] if compiled and "eval_s" in a else None
        lines.append(
            f"| {name} | {colours} / {a.get('colors', '-')} | "
            f"{fmt_time(_median(named, 'derivs detect'))} / {fmt_time(a.get('detect_s'))} | "
            f"{fmt_time(_median(named, 'derivs colour'))} / {fmt_time(a.get('colour_s'))} | "
            f"{fmt_time(eager.median if eager else None)} | "
            f"{(best.label + ' ' + fmt_time(best.median)) if best else 'not run'} | "
            f"{f'{speed:.0f}x' if speed else '-'} ({f'>= {goal}x' if goal else 'none'}) | "
            f"{fmt_time(compiled.median if compiled else None)} | "
            f"{fmt_time(a.get('eval_s'))} | {f'{ratio:.2f}' if ratio else '-'} |"
        )
        if a:
            goals.append(
                f"- {name}: colours {colours} vs asdex {a['colors']}: "
                f"{_verdict(colours is not None and colours <= a['colors'])}; "
                f"detection {_verdict(_le(_median(named, 'derivs detect'), a.get('detect_s')))}; "
                f"compiled {_verdict(None if ratio is None else ratio <= 1)}"
                + (
                    f"; eager speedup {_verdict(None if speed is None else speed >= goal)}"
                    if goal
                    else ""
                )
            )
        mine = (eager or next(iter(named.values()))).info.get("value_abs_sum")
        if mine is not None and "value_abs_sum" in a:
            goals.append(
                f"- {name}: one function on both sides: sum |f(x)| at the point, derivs "
                f"{mine:.15g}, asdex {a['value_abs_sum']:.15g} (`bench.sparse_problems`)"
            )
        peak = eager.info.get("peak_bytes") if eager else None
        if peak is not None:
            grown = [
                f"; {r.label} grew the process's peak RSS by {fmt_bytes(g)} (at least)"
                for r in dense
                if (g := r.info.get("max_rss_growth_bytes"))
            ]
            goals.append(
                f"- {name}: peak memory of one sparse evaluation {fmt_bytes(peak)} (goal: a few "
                f"MB; the dense {eager.info['n']}^2 float64 matrix alone is "
                f"{fmt_bytes(8 * eager.info['n'] ** 2)}{''.join(grown)})"
            )
    lines += ["", "Against the goals:", "", *goals, ""]
    plot = _plot_scaling(groups, out / "sparse_scaling.png")
    if plot:
        lines += [f"![sparse vs dense against n]({plot})", ""]
    return lines


def _median(named: dict[str, Any], label: str) -> float | None:
    row = named.get(label)
    return None if row is None else float(row.median)


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def _plot_scaling(groups: dict[str, list[Any]], path: Path) -> str | None:
    panels = sorted(g for g in groups if g.startswith("sparse scaling "))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, group in zip(axes[0], panels, strict=True):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in groups[group]:
            series[r.label].append((r.info["n"], r.median))
        # NOTE: the problem's own group holds n = 10^4 (dense only with the heavy option).
        kind = group.removeprefix("sparse scaling ").split(" [")[0]
        for r in next((rows for g, rows in groups.items() if g.startswith(f"sparse {kind} [")), []):
            if r.label in series and all(n != r.info["n"] for n, _ in series[r.label]):
                series[r.label].append((r.info["n"], r.median))
        for label, pts in sorted(series.items()):
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, [y * 1e3 for y in ys], "o-", label=label, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel("time per call (ms, median)")
        ax.set_title(group.replace("sparse scaling ", ""), fontsize=8)
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", nargs="?", help="a saved run (default: the latest one)")
    parser.add_argument("--storage", default=str(ROOT / ".benchmarks"))
    parser.add_argument("--jax", default=str(ROOT / ".benchmarks" / "sparse_jax.json"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    args = parser.parse_args(argv)
    path = Path(args.run) if args.run else results.latest_run(Path(args.storage))
    run = json.loads(path.read_text())
    out = Path(args.out)
    lines = results.header(run, path)
    lines[0] = "# derivs sparse benchmarks"
    lines += section(results.load_rows(run), Path(args.jax), out)
    groups = {g: r for g, r in results.load_rows(run).items() if g.startswith("sparse ")}
    lines += results.group_tables(groups)
    (out / "sparse.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"sparse_report: {path} -> {out / 'sparse.md'}, {out / 'sparse_scaling.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
