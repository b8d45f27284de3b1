"""The JAX anchor of the sparse benchmarks: asdex on the problems of
``tests/bench/sparse_problems.py``, written again in jax.numpy, float64.

Runs in its own environment (Python >= 3.12, ``jax==0.11.2``, ``asdex==0.5.2``; jax 0.12
breaks asdex's import): ``tox -e bench-jax``, right after the torch side, on the same
machine. Writes ``.benchmarks/sparse_jax.json``; ``tools/bench_report.py`` joins it with the
torch run into one table.

For each problem, interleaved over ``--repeats`` rounds: asdex's detection
(``jacobian_sparsity``/``hessian_sparsity``), colouring (``*_coloring_from_sparsity``), and
the jitted evaluation (``jax.jit(*_from_coloring(f, coloring))``, its compile timed apart),
plus the jitted dense ``jax.jacfwd`` where it fits in memory. Times are medians (and
minima). Before timing, asdex's pattern is checked to hold the true nonzeros (from the
formulas) and its values against the closed form or the dense Jacobian; ``checksum`` (the
sum of the absolute values) lets the report compare them with derivs' to rounding.

    tox -e bench-jax                                  # or, in a py312 env with jax/asdex:
    python tools/bench_sparse_jax.py --repeats 20 --threads 1 --out .benchmarks/sparse_jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ALPHA = 10.0  # as in tests/bench/sparse_problems.py


def _configure(threads: int | None) -> None:
    """XLA's CPU thread pool, set before jax is imported (DERIVS_BENCH_THREADS on the torch side)."""
    if threads is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def problems(jnp: Any, lax: Any) -> dict[str, tuple[Callable[..., Any], Any, bool]]:
    """name -> (function, point, is a Hessian), the same formulas as sparse_problems.py."""

    def brusselator(y: Any) -> Any:
        n = y.shape[-1]
        u, v = y[0], y[1]
        scale = ALPHA * (n - 1) ** 2

        def lap(a: Any) -> Any:
            return (
                jnp.roll(a, 1, 0) + jnp.roll(a, -1, 0) + jnp.roll(a, 1, 1) + jnp.roll(a, -1, 1)
            ) - 4 * a

        uuv = u * u * v
        return jnp.stack([1 + uuv - 4.4 * u + scale * lap(u), 3.4 * u - uuv + scale * lap(v)])

    def brusselator_point(n: int) -> Any:
        grid = jnp.linspace(0.0, 1.0, n)
        x, y = jnp.meshgrid(grid, grid, indexing="ij")
        return jnp.stack([22 * y * (1 - y) ** 1.5, 27 * x * (1 - x) ** 1.5])

    def stencil(x: Any) -> Any:
        padded = jnp.pad(x, (1, 1))
        return padded[:-2] - 2 * x + padded[2:] + jnp.sin(x)

    def rosenbrock(x: Any) -> Any:
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    weight = (jnp.sin(jnp.arange(1, 73, dtype=jnp.float64)) / 3).reshape(8, 1, 3, 3)

    def conv(x: Any) -> Any:
        out = lax.conv_general_dilated(x[None], weight, (1, 1), ((1, 1), (1, 1)))
        return jnp.tanh(out[0])

    def point(n: int) -> Any:
        return jnp.cos(jnp.arange(n, dtype=jnp.float64)) / 2

    return {
        "brusselator": (brusselator, brusselator_point(32), False),
        "stencil": (stencil, point(10**4), False),
        "rosenbrock": (rosenbrock, point(10**4), True),
        "conv": (conv, point(28 * 28).reshape(1, 28, 28), False),
    }


def _median_min(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), min(times)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    out = fn()
    _block(out)
    return time.perf_counter() - start


def _block(out: Any) -> None:
    import jax

    for leaf in jax.tree_util.tree_leaves(out):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()


def _dense_pattern(np: Any, sparsity: Any) -> Any:
    """asdex's pattern as a dense bool numpy array (m, n)."""
    for name in ("todense", "to_dense"):
        if hasattr(sparsity, name):
            return np.asarray(getattr(sparsity, name)()).astype(bool)
    return np.asarray(sparsity).astype(bool)


def run_problem(
    name: str, func: Callable[..., Any], x: Any, hessian: bool, repeats: int, dense_ok: bool
) -> dict[str, Any]:
    import asdex
    import jax
    import numpy as np

    detect = asdex.hessian_sparsity if hessian else asdex.jacobian_sparsity
    color = (
        asdex.hessian_coloring_from_sparsity if hessian else asdex.jacobian_coloring_from_sparsity
    )
    build = asdex.hessian_from_coloring if hessian else asdex.jacobian_from_coloring
    sparsity = detect(func, x)
    coloring = color(sparsity)
    evaluate = jax.jit(build(func, coloring))
    start = time.perf_counter()
    _block(evaluate(x))
    compile_s = time.perf_counter() - start
    dense_fn = jax.jit(jax.hessian(func) if hessian else jax.jacfwd(func)) if dense_ok else None
    if dense_fn is not None:
        _block(dense_fn(x))
    times: dict[str, list[float]] = {"detect": [], "colour": [], "eval": [], "dense": []}
    for _ in range(repeats):
        times["detect"].append(_timed(lambda: detect(func, x)))
        times["colour"].append(_timed(lambda: color(sparsity)))
        for _ in range(10):
            times["eval"].append(_timed(lambda: evaluate(x)))
        if dense_fn is not None:
            times["dense"].append(_timed(lambda: dense_fn(x)))
    result = evaluate(x)
    values = np.asarray(result.data if hasattr(result, "data") else result)
    pattern = _dense_pattern(np, sparsity)
    record: dict[str, Any] = {
        "problem": name,
        "n": int(x.size),
        "nnz": int(pattern.sum()),
        "max_per_row": int(pattern.sum(1).max()),
        "colors": int(coloring.num_colors if hasattr(coloring, "num_colors") else -1),
        "coloring": repr(coloring).splitlines()[0][:200],
        "compile_s": compile_s,
        "checksum": float(np.abs(values).sum()),
    }
    for stage, ts in times.items():
        if ts:
            record[f"{stage}_s"], record[f"{stage}_min_s"] = _median_min(ts)
    if dense_fn is not None:
        dense = np.asarray(dense_fn(x)).reshape(pattern.shape)
        record["pattern_holds_nonzeros"] = bool(((dense != 0) <= pattern).all())
        sparse = np.asarray(result.todense()).reshape(pattern.shape)
        record["max_abs_error_vs_dense"] = float(np.abs(sparse - dense).max())
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds per problem")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ["DERIVS_BENCH_THREADS"])
        if os.environ.get("DERIVS_BENCH_THREADS")
        else None,
        help="XLA CPU threads (default: DERIVS_BENCH_THREADS, else XLA's own choice)",
    )
    parser.add_argument("--out", default=str(ROOT / ".benchmarks" / "sparse_jax.json"))
    parser.add_argument("--only", nargs="*", help="problems to run (default: all)")
    args = parser.parse_args(argv)
    _configure(args.threads)

    import asdex  # noqa: F401  (fails early, before any timing, if the env is wrong)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    records = []
    for name, (func, x, hessian) in problems(jnp, lax).items():
        if args.only and name not in args.only:
            continue
        dense_ok = x.size <= 4096
        record = run_problem(name, func, x, hessian, args.repeats, dense_ok)
        print(json.dumps(record), flush=True)
        records.append(record)
    from importlib.metadata import version

    out = {
        "jax": jax.__version__,
        "asdex": version("asdex"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "problems": records,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"bench_sparse_jax: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
