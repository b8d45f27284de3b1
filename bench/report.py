"""Turn a saved pytest-benchmark run into ``docs/bench/report.md`` and ``docs/bench/crossover.png``.

    pytest tests/bench -m bench --benchmark-autosave   # saves .benchmarks/<machine>/NNNN_*.json
    python -m bench.report                             # the latest saved run
    python -m bench.report path/to/run.json --out docs/bench

The report holds one table per benchmark group (one question each, per device), the derived
ratios (``auto`` against the faster of torch.func's jacrev/jacfwd, derivs against torch.func
on the same call, the closed form against the best AD method), and
the log-log plot of forward and reverse mode Jacobian time against the output/input ratio,
which shows where the two cross. The compiled path comes from the saved
``python -m bench.compile`` run, the grids and the memory model from theirs; the sparse section
(``bench.sparse_report``) joins the sparse groups with the asdex run of ``bench.sparse_jax``
(``--jax``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import auto_grid, hessian_memory, sparse_report
from bench import compile as compile_bench
from bench.output import fmt_ratio, fmt_time
from bench.results import (
    CROSSOVER_GROUP,
    Row,
    best_of,
    by_label,
    group_tables,
    header,
    latest_run,
    load_rows,
)

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL_SHAPES = {
    "square": "jacobian square D=16",
    "tall": "jacobian tall 32->2048",
    "wide": "jacobian wide 2048->32",
}


def ratios_section(groups: dict[str, list[Row]]) -> list[str]:
    out: list[str] = ["## Measured ratios", ""]
    devices = sorted({r.device for rows in groups.values() for r in rows})

    # auto against the faster of torch.func's two Jacobians, on the tutorial's shapes
    lines = []
    for device in devices:
        for shape, question in TUTORIAL_SHAPES.items():
            rows = groups.get(f"{question} [{device}]", [])
            named = by_label(rows)
            best = best_of(rows, ["torch.func.jacrev", "torch.func.jacfwd"])
            auto = named.get("derivs auto")
            if best is None or auto is None:
                continue
            lines.append(
                f"| {shape} ({device}) | {fmt_time(auto.median)} | {best.label} "
                f"{fmt_time(best.median)} | **{fmt_ratio(auto.median / best.median)}** | "
                f"{fmt_ratio(auto.min / best.min)} |"
            )
    if lines:
        out += [
            '`derivs.jacobian(method="auto")` against the faster of `torch.func.jacrev` and '
            "`torch.func.jacfwd` (target: within 1.05x):",
            "",
            "| shape | auto | fastest torch.func | auto / fastest (median) | (min) |",
            "|---|---|---|---|---|",
            *lines,
            "",
        ]

    # derivs against the torch.func call doing the same work
    lines = []
    for group, rows in groups.items():
        named = by_label(rows)
        for r in rows:
            equiv = r.info.get("equiv")
            if r.impl != "derivs" or not equiv or equiv not in named:
                continue
            ref = named[equiv]
            lines.append(
                f"| {group} | {r.label} | {equiv} | {fmt_ratio(r.median / ref.median)} | "
                f"{fmt_ratio(r.min / ref.min)} | {fmt_time(r.median - ref.median)} |"
            )
    if lines:
        out += [
            "derivs against the torch.func call that does the same work (overhead; above 1x "
            "derivs is slower):",
            "",
            "| group | derivs | torch.func | ratio (median) | (min) | difference |",
            "|---|---|---|---|---|---|",
            *lines,
            "",
        ]

    # the closed form against the fastest AD method of its group
    lines = []
    for group, rows in groups.items():
        closed = by_label(rows).get("closed form")
        ad = [r for r in rows if r.impl not in ("closed form", "")]
        if closed is None or not ad:
            continue
        best = min(ad, key=lambda r: r.median)
        lines.append(
            f"| {group} | {fmt_time(closed.median)} | {best.label} {fmt_time(best.median)} | "
            f"{fmt_ratio(best.median / closed.median)} |"
        )
    if lines:
        out += [
            "The closed form (the speed of light) against the fastest AD method of its group:",
            "",
            "| group | closed form | fastest AD | AD / closed form |",
            "|---|---|---|---|",
            *lines,
            "",
        ]
    return out


def crossover_points(rows: Sequence[Row]) -> dict[str, list[tuple[float, float]]]:
    """(out/in, seconds) per method. The fastest round, not the median: on a shared machine
    the median of a sequential run drifts with the load, and the crossover with it."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        series[r.info.get("method", r.label)].append((r.info["ratio"], r.min))
    return {k: sorted(v) for k, v in series.items()}


def crossing(fwd: list[tuple[float, float]], rev: list[tuple[float, float]]) -> float | None:
    """The output/input ratio where fwd and rev times cross (log-log interpolation)."""
    rev_at = dict(rev)
    pts = [(x, math.log(t / rev_at[x])) for x, t in fwd if x in rev_at]
    for (x0, d0), (x1, d1) in itertools.pairwise(pts):
        if d0 > 0 >= d1 or d0 < 0 <= d1:
            f = d0 / (d0 - d1)
            return math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0)))
    return None


def load_grid() -> tuple[Any, dict[str, Any]] | None:
    """The saved auto grid (``bench.auto_grid``) and that tool's module, if a grid was saved."""
    saved = ROOT / "docs" / "bench" / "auto_grid.json"
    if not saved.exists():
        return None
    return auto_grid, json.loads(saved.read_text())


def _plot_crossover(ax: Any, group: str, rows: Sequence[Row], m: dict[str, Any]) -> str | None:
    series = crossover_points(rows)
    styles = {"fwd": ("o-", "tab:blue"), "rev": ("s-", "tab:orange"), "auto": ("x--", "tab:gray")}
    for method in ("fwd", "rev", "auto"):
        if method in series:
            xs, ys = zip(*series[method], strict=True)
            style, color = styles[method]
            ax.plot(xs, [y * 1e3 for y in ys], style, color=color, label=f"derivs {method}", ms=4)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain_formatter())
    ax.yaxis.set_minor_formatter(_plain_formatter(minor=True))
    ax.set_xlabel("outputs / inputs (in × out = 2**16)")
    ax.set_ylabel("Jacobian time (ms, fastest round)")
    device = rows[0].device
    where = m.get("cpu_model", "?") if device == "cpu" else ", ".join(m.get("cuda_devices", []))
    ax.set_title(f"fwd vs rev on {device}: {where}, torch {m.get('torch', '?')}", fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7)
    cross = crossing(series.get("fwd", []), series.get("rev", []))
    if cross is None:
        return None
    ax.axvline(cross, color="tab:red", lw=0.8, ls=":")
    ax.annotate(
        f"crossover\nout/in ≈ {cross:.2g}",
        (cross, ax.get_ylim()[1]),
        xytext=(4, -24),
        textcoords="offset points",
        fontsize=7,
        color="tab:red",
    )
    return f"{group}: forward and reverse mode cross at out/in ≈ {cross:.2g}"


def _plain_formatter(minor: bool = False) -> Any:
    """Tick labels as plain numbers; minor ticks labelled at 2 and 5 times a power of ten."""
    from matplotlib.ticker import FuncFormatter

    def label(v: float, _: Any) -> str:
        if minor and round(v / 10 ** math.floor(math.log10(v)), 6) not in (2, 5):
            return ""
        return f"{v:g}"

    return FuncFormatter(label)


def _plot_grid(ax: Any, auto_grid: Any, grid: dict[str, Any]) -> None:
    """Heat map of log2(fwd / rev) over the grid, with auto's wrong picks crossed out."""
    cells = grid["cells"]
    rule = auto_grid.auto_rule(grid["device"])
    ins = sorted({c["n_in"] for c in cells})
    outs = sorted({c["n_out"] for c in cells})
    by = {(c["n_in"], c["n_out"]): c for c in cells}
    values = [[math.log2(by[(i, o)]["t_fwd"] / by[(i, o)]["t_rev"]) for o in outs] for i in ins]
    lim = max(abs(v) for row in values for v in row)
    image = ax.imshow(values, cmap="coolwarm", vmin=-lim, vmax=lim, origin="lower")
    for y, i in enumerate(ins):
        for x, o in enumerate(outs):
            c = by[(i, o)]
            if rule(o, i) != auto_grid.faster_is_fwd(c):
                mark = "~" if auto_grid.is_tie(c) else "x"
                ax.text(x, y, mark, ha="center", va="center", fontsize=7)
            elif rule(o, i):
                ax.text(x, y, "f", ha="center", va="center", fontsize=6, color="0.3")
    ax.set_xticks(range(len(outs)), [str(o) for o in outs], fontsize=6)
    ax.set_yticks(range(len(ins)), [str(i) for i in ins], fontsize=6)
    ax.set_xlabel("outputs")
    ax.set_ylabel("inputs")
    s = auto_grid.score(cells, rule)
    ax.set_title(
        f"log2(fwd time / rev time), {grid['device']}; f: auto picks fwd\n"
        f"x: auto picks the slower ({s['accuracy'] * 100:.0f}% right)",
        fontsize=7,
    )
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("red: rev faster, blue: fwd faster", fontsize=6)


def plot(groups: dict[str, list[Row]], run: dict[str, Any], path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(g, rows) for g, rows in groups.items() if g.startswith(CROSSOVER_GROUP)]
    grid = load_grid()
    if not panels and grid is None:
        return []
    m = run.get("machine_info", {})
    n = len(panels) + (grid is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6), squeeze=False)
    notes = []
    for ax, (group, rows) in zip(axes[0], panels, strict=False):
        note = _plot_crossover(ax, group, rows, m)
        if note:
            notes.append(note)
    if grid is not None:
        _plot_grid(axes[0][-1], *grid)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return notes


def grid_summary() -> list[str]:
    """One line on the saved auto grid (bench.auto_grid), re-scored with today's rule."""
    found = load_grid()
    if found is None:
        return []
    auto_grid, result = found
    s = auto_grid.score(result["cells"], auto_grid.auto_rule(result["device"]))
    return [
        f'`method="auto"` on the {len(result["cells"])}-cell grid of `bench.auto_grid` '
        f"({result['date']}, {result['device_name']}): picks the faster of fwd and rev in "
        f"{s['accuracy'] * 100:.1f}% of cells ({s['accuracy_ties_ok'] * 100:.1f}% counting "
        f"ties within {(auto_grid.TIE - 1) * 100:.0f}%); see `auto_grid.md`.",
        "",
    ]


# --- the compiled path, products at scale, the memory model (issue 16) ----------------------


def _saved(name: str) -> dict[str, Any] | None:
    saved = ROOT / "docs" / "bench" / f"{name}.json"
    return json.loads(saved.read_text()) if saved.exists() else None


def compiled_section() -> list[str]:
    """torch.compile of derivs against the closed form, from the saved ``bench.compile`` run."""
    tool = _saved("compile")
    if tool is None:
        return []
    clean = all(
        c["graphs"] == 1 and c["graph_breaks"] == 0 and c["graphs_after_3_calls"] == 1
        for c in tool["cases"]
    )
    return [
        "## The compiled path",
        "",
        "`torch.compile` of derivs (default methods) against the closed form, compiled and "
        f"eager (`python -m bench.compile`, {tool['date']}, {tool['device_name']}, "
        f"{tool['threads']} threads, {tool['clock']} clock, fastest of {tool['rounds']} "
        "interleaved blocks; target: within 2.5x of the closed form compiled; every case in "
        "`compile.md`). "
        + (
            "Each case one graph, no graph break, no recompile over three calls with new values."
            if clean
            else "Graph breaks or recompiles found: see `compile.md`."
        ),
        "",
        *compile_bench.table(tool),
        "",
    ]


def products_section(groups: dict[str, list[Row]]) -> list[str]:
    """hvp/vhp at N = 10**7: time against torch.func, peak against one forward + backward."""
    out = []
    for group, rows in groups.items():
        if not group.startswith("hvp/vhp N=10**7"):
            continue
        named = by_label(rows)
        jvp, vjp = named.get("torch.func jvp(grad)"), named.get("torch.func vjp(grad)")
        lines = []
        for r in rows:
            peak, ref = r.info.get("peak_bytes"), r.info.get("fwd_bwd_bytes")
            if peak is None or not ref or jvp is None or vjp is None:
                continue
            lines.append(
                f"| {r.label} | {fmt_time(r.median)} | {fmt_ratio(r.median / jvp.median)} | "
                f"{fmt_ratio(r.median / vjp.median)} | {peak / 2**20:.0f} MiB | "
                f"**{peak / ref:.2f}** |"
            )
        if lines:
            out += [
                f"### {group}",
                "",
                "Peak: the allocator's while the call runs; the last column against one forward "
                "and backward pass of `f` (target: within 2x).",
                "",
                "| call | time | vs jvp(grad) | vs vjp(grad) | peak | peak / fwd+bwd |",
                "|---|---|---|---|---|---|",
                *lines,
                "",
            ]
    grid = _saved("hvp_grid")
    if grid:
        worst = max(c["t_auto"] / min(c["t_fwd_rev"], c["t_rev_rev"]) for c in grid["cells"])
        old = max(c["t_fwd_rev"] / min(c["t_fwd_rev"], c["t_rev_rev"]) for c in grid["cells"])
        out += [
            f"`hvp`'s default (`auto`) on the {len(grid['cells'])}-cell grid of "
            f"`bench.hvp_grid` ({grid['date']}): at worst {worst:.2f}x the faster of "
            f"`fwd_rev` and `rev_rev` (the old default `fwd_rev`: {old:.2f}x); see "
            "`hvp_grid.md`.",
            "",
        ]
    scale = _saved("products_at_scale")
    if scale:
        out.append(
            f"Every scalar function of the grid at N = {scale['n']:,}: `products_at_scale.md`."
        )
        out.append("")
    return ["## Products", "", *out] if out else []


def memory_section() -> list[str]:
    """The memory guard's model against measured Hessian peaks (bench.hessian_memory)."""
    result = _saved("hessian_memory")
    if result is None:
        return []
    lines = []
    for method in hessian_memory.METHODS:
        rs = sorted(hessian_memory.ratios(result["rows"], method, result["device"]))
        if rs:
            lines.append(
                f"| {method} | {len(rs)} | {rs[0]:.2f} | {rs[len(rs) // 2]:.2f} | "
                f"**{rs[-1]:.2f}** |"
            )
    return [
        "## Memory the guard predicts",
        "",
        f"Hessian peaks predicted by the memory guard's model against measured ones "
        f"(`bench.hessian_memory`, {result['date']}; every case in `hessian_memory.md`):",
        "",
        "| method | cases | predicted / measured: min | median | max |",
        "|---|---|---|---|---|",
        *lines,
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", nargs="?", help="a saved run (default: the latest one)")
    parser.add_argument("--storage", default=str(ROOT / ".benchmarks"), help="where runs are saved")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"), help="output folder")
    parser.add_argument(
        "--jax",
        default=str(ROOT / ".benchmarks" / "sparse_jax.json"),
        help="the asdex run of bench.sparse_jax, joined into the sparse table",
    )
    args = parser.parse_args(argv)

    path = Path(args.run) if args.run else latest_run(Path(args.storage))
    run = json.loads(path.read_text())
    groups = load_rows(run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = plot(groups, run, out / "crossover.png")
    lines = header(run, path)
    if notes:
        lines += ["![fwd vs rev crossover](crossover.png)", "", *[f"- {n}" for n in notes], ""]
    lines += grid_summary()
    lines += ratios_section(groups)
    lines += compiled_section() + products_section(groups) + memory_section()
    lines += sparse_report.section(groups, Path(args.jax), out)
    lines += group_tables(groups)
    (out / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"bench_report: {path} -> {out / 'report.md'}, {out / 'crossover.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
