"""Measure the strategies: generation rate and what 1,000 draws look like.

Run from the repository root: ``python -m tools.strategy_stats [--draws 1000] [--examples 3]``.
Prints Markdown (used for docs/strategies.md). Draws go through ``@given`` exactly as in
the suite (generation phase only, no database), so the rate includes Hypothesis' overhead.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import derivs.strategies as ds


def collect(strategy: st.SearchStrategy[Any], n: int, seed: int) -> tuple[list[Any], float]:
    """``n`` draws of ``strategy`` and the seconds they took."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(__import__("hypothesis").HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        out.append(value)

    run = __import__("hypothesis").seed(seed)(run)
    start = time.perf_counter()
    run()
    return out, time.perf_counter() - start


def layout_of(t: torch.Tensor) -> str:
    if (
        0 in t.stride()
        and t.numel() > 1
        and any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape, strict=True))
    ):
        return "expanded"
    if t.is_contiguous():
        return "offset" if t.storage_offset() > 0 else "contiguous"
    base = t._base
    if base is not None and base.numel() > t.numel():
        return "sliced"
    return "transposed"


def histogram(values: list[Any], key: Callable[[Any], Any] = lambda v: v) -> str:
    counts = collections.Counter(key(v) for v in values)
    total = sum(counts.values())
    return ", ".join(f"{k}: {100 * c / total:.1f}%" for k, c in sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    n = opts.draws
    torch.set_num_threads(max(1, torch.get_num_threads()))

    funcs, t_funcs = collect(ds.functions(), n, opts.seed)
    probs, t_probs = collect(ds.problems(device="cpu"), n, opts.seed + 1)
    coupled, t_coupled = collect(ds.coupled_functions(), min(n, 300), opts.seed + 2)

    print(f"## Measured on this machine ({os.cpu_count()} CPUs, torch {torch.__version__})\n")
    print("| strategy | draws | seconds | draws per second |")
    print("|---|---|---|---|")
    for name, count, secs in (
        ("`functions()`", n, t_funcs),
        ("`problems(device='cpu')` (function + inputs)", n, t_probs),
        ("`coupled_functions()`", len(coupled), t_coupled),
    ):
        print(f"| {name} | {count} | {secs:.1f} | {count / secs:.0f} |")

    print(f"\n## Distribution over {n} draws of `functions()`\n")
    fs = funcs
    print(f"- arguments: {histogram(fs, lambda f: f.n_args)}")
    ins = [s for f in fs for s in f.in_shapes]
    print(f"- input dims (per argument): {histogram(ins, len)}")
    print(f"- input sizes (elements): {histogram(ins, lambda s: _bucket(S_numel(s)))}")
    print(f"- size-1 dims: {100 * sum(1 in s for s in ins) / len(ins):.1f}% of inputs have one")
    nonsquare = [s for s in ins if len(s) >= 2]
    share = 100 * sum(len(set(s)) > 1 for s in nonsquare) / max(len(nonsquare), 1)
    print(f"- non-square: {share:.1f}% of inputs with 2+ dims")
    print(f"- output dims: {histogram(fs, lambda f: len(f.out_shape))}")
    print(f"- tree depth (full height): {histogram(fs, lambda f: f.depth)}")
    print(
        f"- drawn depth (ops drawn by choice, max_depth=3): {histogram(fs, lambda f: f.drawn_depth)}"
    )
    ops = [f.n_ops for f in fs]
    print(
        f"- ops per function: median {statistics.median(ops):.0f}, "
        f"mean {statistics.mean(ops):.1f}, max {max(ops)}"
    )
    print(
        f"- flags: batch-polymorphic {100 * sum(f.batch_polymorphic for f in fs) / n:.1f}%, "
        f"real-analytic {100 * sum(f.real_analytic for f in fs) / n:.1f}%"
    )
    bounds = sorted(f.value_bound for f in fs)
    print(
        f"- value bound |f| <=: median {bounds[n // 2]:.3g}, 90th percentile "
        f"{bounds[9 * n // 10]:.3g}, max {bounds[-1]:.3g}"
    )
    usage = collections.Counter(op for f in fs for op in f.ops)
    print(
        "- functions using each op: "
        + ", ".join(f"{op} {100 * c / n:.0f}%" for op, c in usage.most_common())
    )
    args = [a for p in probs for a in p.args]
    print(f"\n## Layouts of {len(args)} arguments from `problems()`\n")
    print(f"- {histogram(args, layout_of)}")
    print(f"- dtypes: {histogram(probs, lambda p: str(p.dtype).removeprefix('torch.'))}")
    print(f"\n## Couplings over {len(coupled)} draws of `coupled_functions()`\n")
    kinds = [next(op for op in ds.COUPLINGS if op in f.ops) for f in coupled]
    print(f"- {histogram(kinds)}")

    print(f"\n## {opts.examples} example draws of `problems()`\n")
    # NOTE: Hypothesis starts with the simplest draws; show typical ones from later on, each
    # with a different number of arguments and at least one non-contiguous argument.
    picks = []
    for want in range(1, 4):
        picks += [
            p
            for p in probs[n // 10 :]
            if p.func.n_args == want
            and 3 <= p.func.n_ops <= 8
            and any(layout_of(a) in ds.NON_CONTIGUOUS_LAYOUTS for a in p.args)
        ][:1]
    for p in picks[: opts.examples]:
        print("```")
        print(f"func   = {p.func!r}")
        f = p.func
        print(
            f"flags  = batch_polymorphic={f.batch_polymorphic}, real_analytic={f.real_analytic}, "
            f"depth={f.depth}, value_bound={f.value_bound:.3g}"
        )
        for name, a in zip(p.func.arg_names, p.args, strict=True):
            values = a.cpu().double().numpy().round(4).tolist()
            print(f"{name:<6} = {layout_of(a)} {p.dtype} stride={a.stride()}: {values}")
        print("```")


def S_numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _bucket(n: int) -> str:
    for hi in (1, 4, 8, 16, 32):
        if n <= hi:
            return f"<={hi:>2}"
    return ">32"


if __name__ == "__main__":
    main()
