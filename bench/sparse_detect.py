"""Detection times and pattern statistics of derivs.sparse on the issue-15 benchmark problems.

Prints, per problem: the pattern's shape, nnz, most nonzeros in a row, whether it equals the
known structure, and the detection time (min and median over ``--repeats`` calls, global and
local, interleaved: global, local, local, global, ...). ``--make-fx`` adds, interleaved with
them, the time ``make_fx`` (fake tensors) takes just to trace the same derivative, for
comparison with tracing through a dispatch mode. Float64, CPU, ``--threads`` intra-op threads
(default 1: thread-pool wake-ups dominate small ops on a busy machine).

    flock /tmp/derivs-heavy.lock python -m bench.sparse_detect [--repeats 15] [--make-fx]

The problems are ``bench.sparse_problems``' (the sparse benchmarks' and the JAX anchor's), at
their points; each detected pattern is compared with the true one from the formulas.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench import problems as bp
from bench import sparse_problems as sp
from derivs.sparse._detect import hessian_pattern, jacobian_pattern

LABELS = {
    "brusselator": "brusselator N=32",
    "stencil": "stencil n=1e4",
    "rosenbrock": "rosenbrock H n=1e4",
    "conv": "conv2d 1x28x28->8",
}


def make_fx_trace(detect: Callable[..., Any], func: Callable[..., Any], x: torch.Tensor) -> None:
    """Only trace the derivative ``detect`` propagates through, with make_fx on fake tensors."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def vjp(x: torch.Tensor, v: torch.Tensor) -> Any:
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = func(leaf.clone())
            if detect is hessian_pattern:
                (g,) = torch.autograd.grad(out, leaf, create_graph=True)
                return torch.autograd.grad(g, leaf, v)
            return torch.autograd.grad(out, leaf, v)

    v = torch.ones(x.shape if detect is hessian_pattern else func(x).shape, dtype=x.dtype)
    make_fx(vjp, tracing_mode="fake", _allow_non_fake_inputs=True)(x, v)


def _stats(ms: list[float]) -> str:
    return f"{min(ms):8.1f} / {statistics.median(ms):7.1f}" if ms else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--make-fx", action="store_true", help="also time make_fx tracing alone")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    header = (
        f"{'problem':22s} {'shape':>14s} {'nnz':>7s} {'max/row':>7s} {'exact':>5s} "
        f"{'global min/med ms':>18s} {'local min/med ms':>18s}"
        + (f" {'make_fx min/med ms':>18s}" if opts.make_fx else "")
    )
    print(header)
    for key, problem in bp.sparse().items():
        name, func, x, known = LABELS[key], problem.func, problem.x, sp.pattern(key)
        detect = hessian_pattern if problem.hessian else jacobian_pattern
        result = detect(func, (x,), (0,))
        runs: dict[str, Callable[[], Any]] = {
            "global": lambda: detect(func, (x,), (0,)),  # noqa: B023
            "local": lambda: detect(func, (x,), (0,), local=True),  # noqa: B023
        }
        if opts.make_fx:
            runs["make_fx"] = lambda: make_fx_trace(detect, func, x)  # noqa: B023
        times: dict[str, list[float]] = {k: [] for k in runs}
        order = list(runs.items())
        for i in range(opts.repeats):
            # NOTE: the order alternates, so none of them always runs first.
            for k, run in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1e3)
        rows, cols, shape = result
        per_row = torch.bincount(rows, minlength=shape[0]).max().item() if rows.numel() else 0
        exact = set(zip(rows.tolist(), cols.tolist(), strict=True)) == known
        print(
            f"{name:22s} {shape!s:>14s} {rows.numel():7d} {per_row:7d} {exact!s:>5s} "
            f"{_stats(times['global']):>18s} {_stats(times['local']):>18s}"
            + (f" {_stats(times['make_fx']):>18s}" if opts.make_fx else "")
        )


if __name__ == "__main__":
    main()
