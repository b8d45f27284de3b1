"""Detection times and pattern statistics of derivs.sparse on the issue-15 benchmark problems.

Prints, per problem: the pattern's shape, nnz, most nonzeros in a row, whether it equals the
known structure, and the detection time (min and median over ``--repeats`` calls, global and
local, interleaved: global, local, local, global, ...). ``--make-fx`` adds, interleaved with
them, the time ``make_fx`` (fake tensors) takes just to trace the same derivative, for
comparison with tracing through a dispatch mode. Float64, CPU, ``--threads`` intra-op threads
(default 1: thread-pool wake-ups dominate small ops on a busy machine).

    flock /tmp/derivs-heavy.lock python tools/sparse_detect_times.py [--repeats 15] [--make-fx]

Problems (as in issue 15):

- ``brusselator``: 2 species u, v on an N x N = 32 x 32 periodic grid, 5-point Laplacian,
  reaction terms ``B + u^2 v - (A + 1) u`` and ``A u - u^2 v`` (2048 unknowns, 12,288 nonzeros);
- ``stencil``: ``x[i-1] - 2 x[i] + x[i+1] + x[i]^2`` with zero boundaries, n = 10^4;
- ``rosenbrock``: the chained Rosenbrock function's Hessian, n = 10^4;
- ``conv``: a 3x3 conv2d (padding 1) of a 1 x 28 x 28 image to 8 channels, Jacobian with
  respect to the input (6272 x 784).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from derivs.sparse._detect import hessian_pattern, jacobian_pattern

A, B, ALPHA = 3.4, 1.0, 0.02


def laplacian(u: torch.Tensor) -> torch.Tensor:
    return u.roll(1, 0) + u.roll(-1, 0) + u.roll(1, 1) + u.roll(-1, 1) - 4 * u


def brusselator(x: torch.Tensor) -> torch.Tensor:
    u, v = x[0], x[1]
    du = B + u * u * v - (A + 1) * u + ALPHA * laplacian(u)
    dv = A * u - u * u * v + ALPHA * laplacian(v)
    return torch.stack([du, dv])


def stencil(x: torch.Tensor) -> torch.Tensor:
    p = F.pad(x, (1, 1))
    return p[:-2] - 2 * p[1:-1] + p[2:] + x * x


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


CONV_WEIGHT = torch.randn(
    8, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
)


def conv(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, CONV_WEIGHT, padding=1)


def _known_brusselator(n: int) -> set[tuple[int, int]]:
    hw = n * n
    pairs = set()
    for s in range(2):
        for i in range(n):
            for j in range(n):
                row = s * hw + i * n + j
                for di, dj in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                    pairs.add((row, s * hw + ((i + di) % n) * n + (j + dj) % n))
                pairs.add((row, (1 - s) * hw + i * n + j))
    return pairs


def _known_tridiagonal(n: int) -> set[tuple[int, int]]:
    return {(i, j) for i in range(n) for j in (i - 1, i, i + 1) if 0 <= j < n}


def _known_conv(c: int, h: int, w: int) -> set[tuple[int, int]]:
    pairs = set()
    for o in range(c):
        for i in range(h):
            for j in range(w):
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        if 0 <= i + di < h and 0 <= j + dj < w:
                            pairs.add(((o * h + i) * w + j, (i + di) * w + j + dj))
    return pairs


Problem = tuple[
    str,
    Callable[..., Any],
    Callable[[torch.Tensor], torch.Tensor],
    torch.Tensor,
    set[tuple[int, int]],
]


def problems() -> list[Problem]:
    g = torch.Generator().manual_seed(1)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=g, dtype=torch.float64)

    n = 10_000
    return [
        (
            "brusselator N=32",
            jacobian_pattern,
            brusselator,
            rand(2, 32, 32),
            _known_brusselator(32),
        ),
        ("stencil n=1e4", jacobian_pattern, stencil, rand(n), _known_tridiagonal(n)),
        ("rosenbrock H n=1e4", hessian_pattern, rosenbrock, rand(n), _known_tridiagonal(n)),
        ("conv2d 1x28x28->8", jacobian_pattern, conv, rand(1, 1, 28, 28), _known_conv(8, 28, 28)),
    ]


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
    for name, detect, func, x, known in problems():
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
