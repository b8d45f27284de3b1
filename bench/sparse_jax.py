"""The JAX anchor of the sparse benchmarks: asdex on the problems of ``bench.sparse_problems``,
evaluated with jax.numpy (``jax_ops``), float64.

Runs in its own environment (Python >= 3.12, ``jax==0.11.2``, ``asdex==0.5.2``; jax 0.12
breaks asdex's import): ``tox -e bench-jax``, right after the torch side, on the same
machine. Writes ``.benchmarks/sparse_jax.json``; ``python -m bench.report`` joins it with the
torch run into one table.

For each problem, interleaved over ``--repeats`` rounds: asdex's detection
(``jacobian_sparsity``/``hessian_sparsity``), colouring (``*_coloring_from_sparsity``), and
the jitted evaluation (``jax.jit(*_from_coloring(f, coloring))``, its compile timed apart),
plus the jitted dense ``jax.jacfwd`` where it fits in memory. Times are medians (and
minima). Before timing, each function's value at its point is checked against the numpy
reference of ``bench.sparse_problems`` (so both sides time one definition), asdex's pattern to hold the true nonzeros (from the
formulas) and its values against the closed form or the dense Jacobian; ``checksum`` (the
sum of the absolute values) lets the report compare them with derivs' to rounding, as
``value_abs_sum`` does the function values.

    tox -e bench-jax                                  # or, in a py312 env with jax/asdex:
    python -m bench.sparse_jax --repeats 20 --threads 1 --out .benchmarks/sparse_jax.json
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

from bench import sparse_problems as sp

ROOT = Path(__file__).resolve().parent.parent


def _configure(threads: int | None) -> None:
    """XLA's CPU thread pool, set before jax is imported (DERIVS_BENCH_THREADS on the torch side)."""
    if threads is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
        ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def jax_ops(jnp: Any, lax: Any) -> sp.Ops:
    """The jax.numpy namespace of ``bench.sparse_problems`` (float64: x64 enabled)."""

    def conv3x3(x: Any, w: Any) -> Any:
        return lax.conv_general_dilated(x[None], w, (1, 1), ((1, 1), (1, 1)))[0]

    return sp.numpy_like(jnp, conv3x3)


def check_against_numpy(name: str, problem: sp.Problem, reference: sp.Problem) -> float:
    """The largest difference between jax's and numpy's value of one problem at its point;
    more than a few ulps of the values' size means the two evaluate different functions."""
    import numpy as np

    # NOTE: a handful of float64 operations per entry (the 9-term conv sums most): 64 ulps
    # of the largest value bounds their reordering between XLA and numpy.
    def differ(got: Any, want: Any, what: str) -> float:
        got, want = np.asarray(got), np.asarray(want)
        diff = float(np.abs(got - want).max())
        if diff > 64 * np.finfo(np.float64).eps * max(1.0, float(np.abs(want).max())):
            raise AssertionError(f"sparse_jax: {name}: jax and numpy {what} differ by {diff:.3g}")
        return diff

    differ(problem.x, reference.x, "points")
    diff = differ(problem.func(problem.x), reference.func(reference.x), "values")
    return diff


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
    reference = sp.problems(sp.numpy_ops())
    for name, problem in sp.problems(jax_ops(jnp, lax)).items():
        if args.only and name not in args.only:
            continue
        diff = check_against_numpy(name, problem, reference[name])
        func, x, hessian = problem
        dense_ok = x.size <= 4096
        record = run_problem(name, func, x, hessian, args.repeats, dense_ok)
        record["value_abs_sum"] = float(jnp.abs(func(x)).sum())
        record["max_abs_diff_vs_numpy"] = diff
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
    print(f"sparse_jax: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
