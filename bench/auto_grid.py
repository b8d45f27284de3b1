"""Measure forward vs reverse mode Jacobians on a grid of sizes and score ``method="auto"``.

For every cell ``(n_in, n_out)`` of a grid of input and output sizes (8 to 2048 by default),
the tutorial's ``predict(weight, bias, x) = F.linear(x, weight, bias).tanh()`` is
differentiated with respect to ``x`` by ``auto``'s two eager modes forced (``fwd``, ``rev``:
what ``auto`` picks between at the top level of eager code), by ``derivs.jacobian`` with
``method="auto"``, and by the torch.func methods ``"fwd"`` and ``"rev"`` (``tf_fwd``,
``tf_rev``: what ``auto`` picks between inside other transforms). Each result is checked
once against the closed form ``(1 - y**2)[:, None] * W`` before it is timed. The methods of one cell are timed in interleaved blocks (so a burst of
load hits all of them alike) and each keeps its fastest block.

The report says how often ``derivs.prefers_forward`` (the ``auto`` rule) picks the
faster of fwd and rev, how much slower ``auto`` is than the faster one, and which rules of the
form "forward iff n_out > c * n_in" fit the data best, which is how the rule was derived.

    python -m bench.auto_grid                      # cpu, writes docs/bench/auto_grid.{json,md}
    python -m bench.auto_grid --device cuda --sizes 8,64,512,2048 --out /tmp/grid
    python -m bench.auto_grid --rescore docs/bench/auto_grid.json   # re-score saved timings
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import write_outputs
from bench.problems import predict, predict_inputs, predict_jacobian
from bench.timing import CLOCKS, ms_line, parse_timing, sync, time_interleaved, timing_parser
from derivs import _eager as eager_path
from derivs import _jacobian as _J
from derivs import prefers_forward

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
METHODS = ("fwd", "rev", "auto", "tf_fwd", "tf_rev")
# The tutorial's three shapes (n_in, n_out): auto must be within 1.05x of torch.func's faster.
TUTORIAL_SHAPES = {
    "square D=16": (16, 16),
    "tall 32->2048": (32, 2048),
    "wide 2048->32": (2048, 32),
}
# NOTE: two timings within this factor of each other are a tie: on a shared, loaded machine
# the order of such a pair flips from run to run, so either pick is right.
TIE = 1.03


def _eager(forward: bool) -> Callable[..., torch.Tensor]:
    def jac(*args: torch.Tensor) -> torch.Tensor:
        blocks = eager_path.eager_jacobian(
            predict, args, (2,), False, None, _J.API, lambda *_: forward
        )[0]
        return blocks[0][0]

    return jac


def _jacobian(method: str) -> Callable[..., torch.Tensor]:
    if method in ("fwd", "rev"):
        return _eager(method == "fwd")
    return derivs.jacobian(predict, argnums=2, method=method.removeprefix("tf_"))


def measure(
    sizes: Sequence[int],
    device: str,
    *,
    rounds: int,
    block_s: float,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
) -> list[dict[str, Any]]:
    wait = sync(device)
    cells = []
    gen = torch.Generator().manual_seed(seed)
    for n_in in sizes:
        for n_out in sizes:
            w = torch.randn(n_out, n_in, generator=gen).div_(math.sqrt(n_in)).to(device)
            b = torch.randn(n_out, generator=gen).to(device)
            x = torch.randn(n_in, generator=gen).to(device)
            expected = predict_jacobian(w, b, x)
            fns = {}
            for method in METHODS:
                jac = _jacobian(method)
                torch.testing.assert_close(jac(w, b, x), expected, rtol=1e-4, atol=1e-5)
                fns[method] = lambda jac=jac, w=w, b=b, x=x: jac(w, b, x)
            times = time_interleaved(fns, wait, rounds=rounds, block_s=block_s, clock=clock)
            cells.append({"n_in": n_in, "n_out": n_out, **{f"t_{m}": times[m] for m in METHODS}})
            print(f"  in={n_in:5d} out={n_out:5d}  {ms_line(times)}", flush=True)
    return cells


def measure_shapes(
    device: str, *, rounds: int, block_s: float, clock: Callable[[], float] = time.perf_counter
) -> list[dict[str, Any]]:
    """auto against torch.func.jacrev/jacfwd on the tutorial's shapes (its ``randn`` data)."""
    wait = sync(device)
    found = []
    for name, (n_in, n_out) in TUTORIAL_SHAPES.items():
        w, b, x = predict_inputs(n_in, n_out, device)
        expected = predict_jacobian(w, b, x)
        jacs = {
            "auto": derivs.jacobian(predict, argnums=2, method="auto"),
            "rev": derivs.jacobian(predict, argnums=2, method="rev"),
            "fwd": derivs.jacobian(predict, argnums=2, method="fwd"),
            "jacrev": torch.func.jacrev(predict, argnums=2),
            "jacfwd": torch.func.jacfwd(predict, argnums=2),
        }
        fns = {}
        for label, jac in jacs.items():
            torch.testing.assert_close(jac(w, b, x), expected, rtol=1e-4, atol=1e-5)
            fns[label] = lambda jac=jac, w=w, b=b, x=x: jac(w, b, x)
        times = time_interleaved(fns, wait, rounds=rounds, block_s=block_s, clock=clock)
        found.append(
            {"shape": name, "n_in": n_in, "n_out": n_out, **{f"t_{k}": v for k, v in times.items()}}
        )
        print(f"  {name:14s} {ms_line(times)}", flush=True)
    return found


def faster_is_fwd(cell: dict[str, Any], modes: str = "") -> bool:
    """``modes``: "" for auto's eager modes, "tf_" for the torch.func methods."""
    return bool(cell[f"t_{modes}fwd"] < cell[f"t_{modes}rev"])


def is_tie(cell: dict[str, Any], modes: str = "") -> bool:
    lo, hi = sorted((cell[f"t_{modes}fwd"], cell[f"t_{modes}rev"]))
    return bool(hi <= TIE * lo)


def score(
    cells: list[dict[str, Any]], rule: Callable[[int, int], bool], modes: str = ""
) -> dict[str, float]:
    """Share of cells where ``rule(n_out, n_in)`` picks the faster mode (strict; ties as right)."""
    fwd, rev = f"t_{modes}fwd", f"t_{modes}rev"
    right = sum(rule(c["n_out"], c["n_in"]) == faster_is_fwd(c, modes) for c in cells)
    right_or_tie = sum(
        rule(c["n_out"], c["n_in"]) == faster_is_fwd(c, modes) or is_tie(c, modes) for c in cells
    )
    picked = [
        (c[fwd] if rule(c["n_out"], c["n_in"]) else c[rev]) / min(c[fwd], c[rev]) for c in cells
    ]
    return {
        "accuracy": right / len(cells),
        "accuracy_ties_ok": right_or_tie / len(cells),
        "worst_pick_slowdown": max(picked),
        "mean_pick_slowdown": sum(picked) / len(picked),
    }


def auto_rule(device: str) -> Callable[[int, int], bool]:
    """``prefers_forward`` for the device a grid was measured on, as ``rule(n_out, n_in)``."""
    return lambda n_out, n_in: prefers_forward(n_out, n_in, device)


def candidate_rules() -> dict[str, Callable[[int, int], bool]]:
    """The rule families the grid was scored against when the ``auto`` rule was chosen."""
    rules: dict[str, Callable[[int, int], bool]] = {}
    for c in (0.25, 0.5, 1, 2, 4, 8):
        rules[f"out > {c:g} * in"] = lambda out, n, c=c: out > c * n
    for t in (64, 128, 256, 512, 1024):
        rules[f"out > in and out >= {t}"] = lambda out, n, t=t: out > n and out >= t
    return rules


def render(result: dict[str, Any]) -> str:
    cells = result["cells"]
    sizes = sorted({c["n_in"] for c in cells})
    outs = sorted({c["n_out"] for c in cells})
    by = {(c["n_in"], c["n_out"]): c for c in cells}
    rule = auto_rule(result["device"])
    cur = score(cells, rule)
    tf = score(cells, rule, "tf_") if "t_tf_fwd" in cells[0] else None
    auto_ratio = [c["t_auto"] / min(c["t_fwd"], c["t_rev"]) for c in cells]
    lines = [
        '# `method="auto"` on a grid of Jacobian sizes',
        "",
        f"{run_conditions(result)}. Function: "
        "`predict(W, b, x) = F.linear(x, W, b).tanh()`, Jacobian w.r.t. `x`; each time is the "
        f"fastest of {result['rounds']} interleaved blocks.",
        "",
        "Cell: `fwd_time / rev_time` of `auto`'s eager modes (what it runs at the top level of "
        "eager code; below 1: forward mode is faster); `*` marks the cells where",
        "`auto`'s rule picks the slower mode (a pick within "
        f"{(TIE - 1) * 100:.0f}% of the faster counts as a tie).",
        "",
        "| in \\ out | " + " | ".join(str(o) for o in outs) + " |",
        "|---" * (len(outs) + 1) + "|",
    ]
    for n_in in sizes:
        row = []
        for n_out in outs:
            c = by[(n_in, n_out)]
            wrong = rule(n_out, n_in) != faster_is_fwd(c)
            mark = ("*" if not is_tie(c) else "~") if wrong else ""
            row.append(f"{c['t_fwd'] / c['t_rev']:.2f}{mark}")
        lines.append(f"| **{n_in}** | " + " | ".join(row) + " |")
    lines += [
        "",
        f"- rule (`derivs.prefers_forward`): picks the faster mode in "
        f"**{cur['accuracy'] * 100:.1f}%** of {len(cells)} cells "
        f"({cur['accuracy_ties_ok'] * 100:.1f}% counting ties as right); worst pick "
        f"{cur['worst_pick_slowdown']:.2f}x the faster, mean {cur['mean_pick_slowdown']:.3f}x.",
        f"- the same rule on the torch.func methods `fwd`/`rev` (what `auto` runs inside other "
        f"transforms): **{tf['accuracy'] * 100:.1f}%** ({tf['accuracy_ties_ok'] * 100:.1f}% "
        f"counting ties as right); worst pick {tf['worst_pick_slowdown']:.2f}x."
        if tf
        else "",
        f"- `auto` measured: median {sorted(auto_ratio)[len(auto_ratio) // 2]:.2f}x, worst "
        f"{max(auto_ratio):.2f}x the faster of its two modes forced (includes the argument "
        "checks of `derivs.jacobian`).",
        "",
    ]
    shapes = result.get("shapes", [])
    if shapes:
        lines += [
            "The tutorial's shapes (its `randn` data): `auto` against the faster of "
            "`torch.func.jacrev` and `torch.func.jacfwd` (target: within 1.05x), and derivs' "
            "`rev`/`fwd` against the torch.func call doing the same work, all timed interleaved:",
            "",
            "| shape | auto | jacrev | jacfwd | auto / faster | derivs rev / jacrev | "
            "derivs fwd / jacfwd |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in shapes:
            best = min(c["t_jacrev"], c["t_jacfwd"])
            rev = f"{c['t_rev'] / c['t_jacrev']:.2f}x" if "t_rev" in c else "-"
            fwd = f"{c['t_fwd'] / c['t_jacfwd']:.2f}x" if "t_fwd" in c else "-"
            lines.append(
                f"| {c['shape']} | {c['t_auto'] * 1e3:.3f} ms | {c['t_jacrev'] * 1e3:.3f} ms | "
                f"{c['t_jacfwd'] * 1e3:.3f} ms | **{c['t_auto'] / best:.2f}x** | {rev} | {fwd} |"
            )
        lines.append("")
    lines += [
        "Other rules on the same data (forward mode iff the condition holds):",
        "",
        "| rule | accuracy | ties ok | worst pick | mean pick |",
        "|---|---|---|---|---|",
    ]
    for name, rule in candidate_rules().items():
        s = score(cells, rule)
        lines.append(
            f"| `{name}` | {s['accuracy'] * 100:.1f}% | {s['accuracy_ties_ok'] * 100:.1f}% | "
            f"{s['worst_pick_slowdown']:.2f}x | {s['mean_pick_slowdown']:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "auto_grid", rounds=7, block=0.02)
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated"
    )
    parser.add_argument("--rescore", metavar="JSON", help="re-score a saved grid, measure nothing")
    args = parse_timing(parser, argv)
    clock = CLOCKS[args.clock]
    if args.rescore:
        result = json.loads(Path(args.rescore).read_text())
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        load = load_average()
        print(f"auto grid on {args.device}: sizes {sizes}, load average {load}", flush=True)
        start = time.perf_counter()
        cells = measure(sizes, args.device, rounds=args.rounds, block_s=args.block, clock=clock)
        shapes = measure_shapes(args.device, rounds=args.rounds, block_s=args.block, clock=clock)
        result = {
            **run_facts(args, load),
            "seconds": round(time.perf_counter() - start, 1),
            "cells": cells,
            "shapes": shapes,
        }
    write_outputs(result, render(result), args.out, json_too=not args.rescore)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
