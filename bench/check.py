"""derivs.check at scale: the projected mode against one gradient, dense against projected,
and the kill rates of planted wrong rules in projected mode.

The function is issue 25's ``tanh(W1 @ x) @ w2`` (``bench.problems.tanh_layer``: ``W1`` 16 x n,
closed over, float64). In one process, interleaved (``bench.timing.time_interleaved``):

* ``check(f, x, order=k, mode="projected")`` and one gradient (``torch.autograd.grad(f(x),
  x)``) at n = 10^4, 10^5, 10^6, orders 1 and 2: the ratio of their times is the cost of a
  check in gradients (the goals: 50 at order 1, 200 at order 2, at n = 10^6);
* ``mode="dense"`` beside ``mode="projected"`` and the gradient at n = 256 and 512.

Every check is run once first and must pass (a wrong verdict is never timed); the gradient
is checked against its closed form. Then the kill rates: the planted wrong backward, jvp and
double backward of ``tests/test_check_projected.py`` checked in projected mode over 20
direction seeds each (``derivs._check._projected.SEED``), the share of seeds whose verdict
names the rule.

    python -m bench.check --threads 1 --clock thread
    python -m bench.check --sizes 10000 --dense-sizes 256 --kill-seeds 4 --out /tmp/check

Writes ``docs/bench/check.{json,md}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import fmt_time, write_outputs
from bench.problems import tanh_layer, tanh_layer_gradient, tanh_layer_inputs
from bench.timing import CLOCKS, parse_timing, time_interleaved, timing_parser
from derivs._check import _projected

GOALS = {1: 50.0, 2: 200.0}  # issue 25: check / one gradient at n = 10^6, projected mode


def gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One gradient: a forward and a backward pass."""
    x = x.detach().requires_grad_()
    return torch.autograd.grad(f(x), x)[0]


def check_call(f: Callable[..., Any], x: torch.Tensor, order: int, mode: str) -> Callable[[], Any]:
    """``derivs.check`` of ``f`` at ``x``, verified to pass once before it is timed."""
    call = partial(derivs.check, f, x, order=order, mode=mode, raise_exception=False)
    report = call()
    if not report.passed or report.mode != mode:
        raise AssertionError(f"check(mode={mode!r}, order={order}) at n={x.numel()}:\n{report}")
    return call


def measure(
    n: int, order: int, modes: Sequence[str], *, rounds: int, block_s: float, clock: Any
) -> dict[str, Any]:
    w1, w2, x = tanh_layer_inputs(n)
    f = partial(tanh_layer, w1, w2)
    derivs.testing.assert_close(
        gradient(f, x), tanh_layer_gradient(w1, w2, x), context=f"[gradient n={n}]"
    )
    fns: dict[str, Callable[[], Any]] = {"gradient": partial(gradient, f, x)}
    fns.update({f"check {m}": check_call(f, x, order, m) for m in modes})
    times = time_interleaved(fns, lambda: None, rounds=rounds, block_s=block_s, clock=clock)
    ratios = {k: t / times["gradient"] for k, t in times.items() if k != "gradient"}
    shown = "  ".join(f"{k}: {fmt_time(t)}" for k, t in times.items())
    print(f"  n={n} order={order}  {shown}  " + "  ".join(f"{r:.0f}x" for r in ratios.values()))
    return {"n": n, "order": order, "times": times, "ratios": ratios}


def kill_rates(n: int, seeds: int) -> list[dict[str, Any]]:
    """Per planted rule: the seeds whose projected check names it (tests/test_check_projected)."""
    from tests.test_check_projected import PLANTED, _failing, _model  # python -m bench.check

    rows = []
    saved = _projected.SEED
    try:
        for rule, (planted, words, failing) in PLANTED.items():
            func, x = _model(planted.apply, n)
            caught = 0
            for seed in range(seeds):
                _projected.SEED = seed
                report = derivs.check(func, x, order=2, mode="projected", raise_exception=False)
                named = not report.passed and words in report.verdict
                caught += named and failing <= _failing(report)
            rows.append({"rule": rule, "n": n, "seeds": seeds, "caught": caught})
            print(f"  {rule}: {caught}/{seeds}", flush=True)
    finally:
        _projected.SEED = saved
    return rows


def render(result: dict[str, Any]) -> str:
    lines = [
        "# derivs.check at scale: projected mode",
        "",
        f"{run_conditions(result)} (`python -m bench.check`). A shared 2-core machine: the check and the gradient it "
        f"is measured in were timed side by side in one process, in {result['rounds']} "
        "interleaved blocks each (the fastest block counts), so a burst of load hits both.",
        "",
        "The function: `f(x) = tanh(W1 @ x) @ w2`, `W1` 16 x n closed over, float64 "
        "(`bench.problems.tanh_layer`). *Gradients* is the check's time over one "
        "`torch.autograd.grad(f(x), x)`. Every check passed once before it was timed.",
        "",
        "| n | order | mode | one gradient | check | gradients | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        t = row["times"]
        for label, ratio in row["ratios"].items():
            mode = label.removeprefix("check ")
            goal = GOALS[row["order"]] if mode == "projected" and row["n"] >= 10**6 else None
            mark = "" if goal is None else (f"{goal:.0f} " + ("met" if ratio <= goal else "MISSED"))
            lines.append(
                f"| {row['n']:,} | {row['order']} | {mode} | {fmt_time(t['gradient'])} | "
                f"{fmt_time(t[label])} | **{ratio:.0f}** | {mark} |"
            )
    lines += [
        "",
        "## Planted wrong rules, projected mode",
        "",
        "The custom Functions of `tests/test_check_projected.py` inside `sum(tanh(W f(x)))`, "
        'checked at order 2 with `mode="projected"`, one check per direction seed '
        "(`derivs._check._projected.SEED` = 0, 1, ...): *caught* counts the seeds whose verdict "
        "names the rule and whose failing rows are the rule's.",
        "",
        "| planted rule | n | seeds | caught | kill rate |",
        "|---|---|---|---|---|",
    ]
    for k in result["kills"]:
        rate = k["caught"] / k["seeds"]
        lines.append(f"| {k['rule']} | {k['n']:,} | {k['seeds']} | {k['caught']} | {rate:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "check", rounds=3, block=0.5)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dense-sizes", default="256,512")
    parser.add_argument("--kill-n", type=int, default=256)
    parser.add_argument("--kill-seeds", type=int, default=20)
    args = parse_timing(parser, argv)
    load = load_average()
    clock = CLOCKS[args.clock]
    timing = {"rounds": args.rounds, "block_s": args.block, "clock": clock}
    print(f"derivs.check at scale, load average {load}", flush=True)
    rows = [
        measure(int(n), order, modes, **timing)
        for sizes, modes in (
            (args.dense_sizes, ("dense", "projected")),
            (args.sizes, ("projected",)),
        )
        for n in sizes.split(",")
        if n
        for order in (1, 2)
    ]
    kills = kill_rates(args.kill_n, args.kill_seeds)
    result = {**run_facts(args, load), "rows": rows, "kills": kills}
    write_outputs(result, render(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
