"""Measure ``hvp``'s methods on a grid of functions and sizes and score ``method="auto"``.

For every cell (a scalar function of ``n`` inputs, ``n`` from 10**2 to 10**6 by default) the
Hessian-vector product is computed by ``fwd_rev`` (jvp of grad) and ``rev_rev`` (vjp of
grad), forced, and by ``auto``; each result is checked once against the closed form before
it is timed. The methods of one cell are timed in interleaved blocks (so a burst of load hits
all of them alike) and each keeps its fastest block.

The report says, per cell, how much slower ``fwd_rev`` is than ``rev_rev`` (both torch.func,
forced) and how ``auto`` (the default: reverse over reverse, by torch.autograd in plain eager
code) compares with the faster of the two; the default must stay within 1.10x of the faster
method on every cell.

    python -m bench.hvp_grid                      # cpu, writes docs/bench/hvp_grid.{json,md}
    python -m bench.hvp_grid --device cuda --out /tmp/hvp_grid_cuda
    python -m bench.hvp_grid --rescore docs/bench/hvp_grid.json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import write_outputs
from bench.problems import SCALAR as PROBLEMS
from bench.problems import Scalar, vector_inputs
from bench.timing import CLOCKS, ms_line, parse_timing, sync, time_interleaved, timing_parser

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SIZES = (10**2, 10**3, 10**4, 10**5, 10**6)
METHODS = ("fwd_rev", "rev_rev", "auto")
# NOTE: the default may be at most this much slower than the faster method on any cell.
SLACK = 1.10


def _hvp(problem: Scalar, method: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return derivs.hvp(problem.func, (x,), (v,), method=method)[0]

    return call


def measure(
    sizes: Sequence[int],
    device: str,
    *,
    rounds: int,
    block_s: float,
    clock: Callable[[], float] = time.perf_counter,
    problems: Sequence[str] = tuple(PROBLEMS),
) -> list[dict[str, Any]]:
    wait = sync(device)
    cells = []
    for name in problems:
        problem = PROBLEMS[name]
        for n in sizes:
            x, v = vector_inputs(n, device, seed=n)
            expected = problem.hvp(x, v)
            fns = {}
            for method in METHODS:
                call = _hvp(problem, method)
                derivs.testing.assert_close(
                    call(x, v), expected, context=f"[hvp grid: {name} n={n} {method}]"
                )
                fns[method] = lambda call=call, x=x, v=v: call(x, v)
            times = time_interleaved(fns, wait, rounds=rounds, block_s=block_s, clock=clock)
            cells.append({"function": name, "n": n, **{f"t_{m}": times[m] for m in METHODS}})
            print(f"  {name:13s} n={n:8d}  {ms_line(times)}", flush=True)
    return cells


def auto_slowdown(cell: dict[str, Any]) -> float:
    """How much slower ``auto`` (measured) is than the faster of fwd_rev and rev_rev."""
    return float(cell["t_auto"] / min(cell["t_fwd_rev"], cell["t_rev_rev"]))


def render(result: dict[str, Any]) -> str:
    cells = result["cells"]
    sizes = sorted({c["n"] for c in cells})
    names = list(dict.fromkeys(c["function"] for c in cells))
    by = {(c["function"], c["n"]): c for c in cells}
    lines = [
        "# `hvp` methods on a grid of functions and sizes",
        "",
        f"{run_conditions(result)}; "
        f"each time is the fastest of {result['rounds']} interleaved blocks "
        "(`python -m bench.hvp_grid`).",
        "",
        "Cell: `fwd_rev time / rev_rev time` (above 1: `rev_rev` is faster), then "
        "`auto time / the faster one's`; `*` marks an `auto` more than "
        f"{(SLACK - 1) * 100:.0f}% slower than the faster method.",
        "",
        "| function \\ n | " + " | ".join(f"{n:.0e}".replace("e+0", "e") for n in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
    ]
    worst = 1.0
    for name in names:
        row = []
        for n in sizes:
            c = by.get((name, n))
            if c is None:
                row.append("-")
                continue
            slow = auto_slowdown(c)
            worst = max(worst, slow)
            row.append(
                f"{c['t_fwd_rev'] / c['t_rev_rev']:.2f} / {slow:.2f}{'*' if slow > SLACK else ''}"
            )
        lines.append(f"| `{name}` | " + " | ".join(row) + " |")
    auto_ratio = [auto_slowdown(c) for c in cells]
    rev_ratio = [c["t_rev_rev"] / min(c["t_fwd_rev"], c["t_rev_rev"]) for c in cells]
    fwd_ratio = [c["t_fwd_rev"] / min(c["t_fwd_rev"], c["t_rev_rev"]) for c in cells]
    lines += [
        "",
        f"- `auto` (the default), measured with its checks: median "
        f"{sorted(auto_ratio)[len(auto_ratio) // 2]:.2f}x, worst **{worst:.2f}x** the faster "
        f"method (limit {SLACK:.2f}x) over {len(cells)} cells.",
        f"- `rev_rev` forced: median {sorted(rev_ratio)[len(rev_ratio) // 2]:.2f}x, worst "
        f"{max(rev_ratio):.2f}x the faster method.",
        f"- the old default `fwd_rev`: median {sorted(fwd_ratio)[len(fwd_ratio) // 2]:.2f}x, "
        f"worst {max(fwd_ratio):.2f}x the faster method.",
        "",
        "Functions:",
        "",
    ]
    lines += [f"- `{p.name}`: `{p.formula}`" for p in PROBLEMS.values() if p.name in names]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "hvp_grid", rounds=7, block=0.05)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--functions", default=",".join(PROBLEMS))
    parser.add_argument("--rescore", metavar="JSON", help="re-score a saved grid, measure nothing")
    args = parse_timing(parser, argv)
    if args.rescore:
        result = json.loads(Path(args.rescore).read_text())
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        load = load_average()
        print(f"hvp grid on {args.device}: sizes {sizes}, load average {load}", flush=True)
        start = time.perf_counter()
        cells = measure(
            sizes,
            args.device,
            rounds=args.rounds,
            block_s=args.block,
            clock=CLOCKS[args.clock],
            problems=args.functions.split(","),
        )
        result = {
            **run_facts(args, load),
            "seconds": round(time.perf_counter() - start, 1),
            "cells": cells,
        }
    write_outputs(result, render(result), args.out, json_too=not args.rescore)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
