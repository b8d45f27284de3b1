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

    python tools/hvp_grid.py                      # cpu, writes docs/bench/hvp_grid.{json,md}
    python tools/hvp_grid.py --device cuda --out /tmp/hvp_grid_cuda
    python tools/hvp_grid.py --rescore docs/bench/hvp_grid.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from auto_grid import (  # noqa: E402
    CLOCKS,
    _sync,
    run_facts,
    time_interleaved,
    write_outputs,
)

import derivs  # noqa: E402

DEFAULT_SIZES = (10**2, 10**3, 10**4, 10**5, 10**6)
METHODS = ("fwd_rev", "rev_rev", "auto")
# NOTE: the default may be at most this much slower than the faster method on any cell.
SLACK = 1.10
WIDTH = 10  # the MLP-like function reads x as (n / WIDTH, WIDTH) rows: n must be a multiple


class Problem:
    """A scalar function of one vector, with its Hessian-vector product in closed form."""

    def __init__(
        self,
        name: str,
        formula: str,
        func: Callable[[torch.Tensor], torch.Tensor],
        closed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.name, self.formula, self.func, self.closed = name, formula, func, closed


def _sin_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sin().sum()


def _sin_roll(x: torch.Tensor) -> torch.Tensor:
    return (x.sin() * x.roll(1)).sum()


def _sin_roll_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # f = sum_i sin(x_i) x_{i-1}: d2f/dx_i^2 = -sin(x_i) x_{i-1}, d2f/dx_i dx_{i-1} = cos(x_i)
    return -x.sin() * x.roll(1) * v + x.cos() * v.roll(1) + (x.cos() * v).roll(-1)


def _mixing(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(n)
    return (torch.randn(WIDTH, WIDTH, generator=gen) / math.sqrt(WIDTH)).to(device, dtype)


def _softplus_mlp(x: torch.Tensor) -> torch.Tensor:
    a = _mixing(x.numel(), x.device, x.dtype)
    return F.softplus(x.reshape(-1, WIDTH) @ a).sum()


def _softplus_mlp_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # f = sum softplus(X A): H v = (sigmoid'(X A) * (V A)) A^T, sigmoid' = s (1 - s)
    a = _mixing(x.numel(), x.device, x.dtype)
    s = torch.sigmoid(x.reshape(-1, WIDTH) @ a)
    return ((s * (1 - s) * (v.reshape(-1, WIDTH) @ a)) @ a.T).reshape(x.shape)


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()


def _rosenbrock_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a, b = x[:-1], x[1:]
    diag = torch.zeros_like(x)
    diag[:-1] += 2 - 400 * (b - a**2) + 800 * a**2
    diag[1:] += 200
    off = -400 * a  # d2f / dx_i dx_{i+1}
    out = diag * v
    out[:-1] += off * v[1:]
    out[1:] += off * v[:-1]
    return out


PROBLEMS = {
    p.name: p
    for p in (
        Problem("sin_sum", "x.sin().sum() (the tutorial's)", _sin_sum, lambda x, v: -x.sin() * v),
        Problem("sin_roll", "(x.sin() * x.roll(1)).sum()", _sin_roll, _sin_roll_hvp),
        Problem(
            "softplus_mlp",
            f"F.softplus(x.reshape(-1, {WIDTH}) @ A).sum(), A {WIDTH}x{WIDTH}",
            _softplus_mlp,
            _softplus_mlp_hvp,
        ),
        Problem(
            "rosenbrock",
            "((1 - x[:-1])**2 + 100 * (x[1:] - x[:-1]**2)**2).sum()",
            _rosenbrock,
            _rosenbrock_hvp,
        ),
    )
}


def _hvp(problem: Problem, method: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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
    sync = _sync(device)
    cells = []
    for name in problems:
        problem = PROBLEMS[name]
        for n in sizes:
            gen = torch.Generator().manual_seed(n)
            x = torch.randn(n, generator=gen).to(device)
            v = torch.randn(n, generator=gen).to(device)
            expected = problem.closed(x, v)
            fns = {}
            for method in METHODS:
                call = _hvp(problem, method)
                derivs.testing.assert_close(
                    call(x, v), expected, context=f"[hvp grid: {name} n={n} {method}]"
                )
                fns[method] = lambda call=call, x=x, v=v: call(x, v)
            times = time_interleaved(fns, sync, rounds=rounds, block_s=block_s, clock=clock)
            cells.append({"function": name, "n": n, **{f"t_{m}": times[m] for m in METHODS}})
            print(
                f"  {name:13s} n={n:8d}  "
                + "  ".join(f"{m}={times[m] * 1e3:9.3f} ms" for m in METHODS),
                flush=True,
            )
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
        f"torch {result['torch']} on {result['device_name']} ({result['threads']} threads), "
        f"{result['date']}, load average at start {result['load']}, {result['clock']} clock; "
        f"each time is the fastest of {result['rounds']} interleaved blocks "
        "(`tools/hvp_grid.py`).",
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--functions", default=",".join(PROBLEMS))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved blocks per cell")
    parser.add_argument("--block", type=float, default=0.05, help="seconds per timed block")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before measuring")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "hvp_grid"))
    parser.add_argument("--rescore", metavar="JSON", help="re-score a saved grid, measure nothing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rescore:
        result = json.loads(Path(args.rescore).read_text())
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
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
