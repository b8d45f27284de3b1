"""Sparse Jacobians and Hessians: detection, colouring and evaluation, timed apart, against
dense torch.func, on the four problems of issue 15 (``bench/sparse_problems.py``).

Groups (one table each, per device):

* ``sparse <problem>``: ``derivs detect`` (``jacobian_sparsity``/``hessian_sparsity``),
  ``derivs colour`` (``coloring``, every order), ``derivs eager`` (the transform, its plan
  reused: compressed evaluation and recovery only), ``derivs compiled``
  (``torch.compile`` of the transform; compile time recorded apart), and the dense
  ``torch.func.jacfwd``/``jacrev`` (``torch.func.hessian`` for Rosenbrock);
* ``sparse scaling``: the stencil Jacobian and the Rosenbrock Hessian against ``n``, sparse
  eager against the faster dense torch.func transform (for the plot of time against n).

The dense stencil Jacobian and Rosenbrock Hessian at n = 10^4 need 4.7 and 8.5 GB: they run
only with ``DERIVS_BENCH_SPARSE_HEAVY=1`` (under ``flock /tmp/derivs-heavy.lock``), one round.
Every result is checked before it is timed: the sparse ones against the dense Jacobian (or,
at n = 10^4, the closed form), the dense ones against the sparse. ``extra_info`` records the
colours, nonzeros and, for the sparse Rosenbrock Hessian, the peak memory of one evaluation.

    DERIVS_BENCH_THREADS=1 DERIVS_BENCH_SPARSE_HEAVY=1 flock /tmp/derivs-heavy.lock \\
        pytest tests/bench/test_bench_sparse.py -m bench --benchmark-autosave \\
        --benchmark-timer=time.perf_counter \\
        -k "not (jacrev and (stencil or rosenbrock)) and not 10000-dense"
    flock /tmp/derivs-heavy.lock tox -e bench-jax -- --repeats 20 --threads 1   # asdex, right after
    python -m bench.sparse_report      # joins both: docs/bench/sparse.md, sparse_scaling.png

(``-k`` leaves out the dense jacrev of the stencil and of Rosenbrock at n = 10^4, slower than
jacfwd, and the scaling plot's dense n = 10^4 points, which the problems' groups hold.)
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import derivs
from bench import problems as bp
from bench.timing import Bench

pytestmark = pytest.mark.bench

HEAVY = os.environ.get("DERIVS_BENCH_SPARSE_HEAVY") == "1"
SCALING_N = (100, 1000, 10_000)


class Problem:
    """One benchmark problem: the function, its point, Jacobian or Hessian, and a reference."""

    def __init__(
        self,
        name: str,
        func: Callable[..., torch.Tensor],
        x: torch.Tensor,
        hessian: bool,
        closed_form: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.x = x
        self.hessian = hessian
        self.closed_form = closed_form

    @property
    def transform(self) -> Callable[..., Any]:
        return derivs.sparse_hessian if self.hessian else derivs.sparse_jacobian

    @property
    def sparsity(self) -> Callable[..., Any]:
        return derivs.hessian_sparsity if self.hessian else derivs.jacobian_sparsity

    def dense_heavy(self) -> bool:
        n = self.x.numel()
        return n * n >= 10**8

    def reference(self) -> torch.Tensor:
        """The dense matrix, ``(m, n)``: the closed form when there is one, else derivs'."""
        if self.closed_form is not None:
            return self.closed_form(self.x)
        dense = (derivs.hessian if self.hessian else derivs.jacobian)(self.func)(self.x)
        return dense.reshape(-1, self.x.numel())


def problems() -> dict[str, Problem]:
    closed = {"stencil": bp.stencil_jacobian, "rosenbrock": bp.rosenbrock_hessian}
    return {
        name: Problem(name, p.func, p.x, p.hessian, closed.get(name))
        for name, p in bp.sparse().items()
    }


PROBLEMS = problems()
_TRANSFORMS: dict[str, Any] = {}


def transform_of(p: Problem) -> Any:
    """One transform per problem for the whole run: detection and colouring happen once."""
    if p.name not in _TRANSFORMS:
        _TRANSFORMS[p.name] = p.transform(p.func)
    return _TRANSFORMS[p.name]


def check_sparse(result: torch.Tensor, expected: torch.Tensor, context: str) -> None:
    """A sparse (COO, ``(*out, *in)``) result against the dense ``(m, n)`` reference."""
    dense = result.to_dense().reshape(expected.shape)
    derivs.testing.assert_close(dense, expected, context=context)


def peak_cpu_bytes(fn: Callable[[], Any]) -> int:
    """The most memory ``fn`` holds at once (CPU), from the profiler's memory records: each
    op's own allocations net of its frees, and the frees between ops, in time order (so a
    peak inside one op counts at that op's net)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    now = peak = 0
    for e in events:
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return peak


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _info(p: Problem, plan: Any) -> dict[str, Any]:
    return {
        "problem": p.name,
        "n": p.x.numel(),
        "nnz": plan.pattern.nnz,
        "colors": plan.num_colors,
        "mode": plan.mode,
        "max_per_row": plan.pattern.max_per_row,
        # NOTE: the JAX anchor records the same sum: the report shows both evaluated one function.
        "value_abs_sum": float(p.func(p.x).abs().sum()),
    }


@pytest.fixture(scope="module", autouse=True)
def _cpu_only(device: str) -> None:
    if device != "cpu":
        pytest.skip("the sparse benchmarks are sized for CPU")


STAGES = ["detect", "colour", "eager", "compiled", "jacfwd", "jacrev"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_sparse(bench: Bench, name: str, stage: str, tmp_path: Any) -> None:
    """How long do detection, colouring and evaluation take, against dense torch.func?"""
    p = PROBLEMS[name]
    transform = transform_of(p)
    plan = transform.prepare(p.x)
    group = f"sparse {name}"
    info = _info(p, plan)
    expected = None
    if stage == "detect":
        fn: Callable[..., Any] = p.sparsity(p.func)
        assert fn(p.x) == plan.pattern
    elif stage == "colour":
        mode = "star" if p.hessian else "auto"

        def fn(x: torch.Tensor) -> Any:
            return derivs.coloring(plan.pattern, mode=mode)

        assert fn(p.x).num_colors == plan.num_colors
    elif stage in ("eager", "compiled"):
        fn = transform
        if stage == "compiled":
            fn = torch.compile(transform)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as cache, _env(TORCHINDUCTOR_CACHE_DIR=cache):
                fn(p.x)
            info["compile_s"] = time.perf_counter() - start
        check_sparse(fn(p.x), p.reference(), f"{group}: derivs {stage}")
        if p.hessian:
            info["peak_bytes"] = peak_cpu_bytes(lambda: transform(p.x))
    else:
        if p.dense_heavy() and not HEAVY:
            pytest.skip("dense at n = 10^4 needs 4.7-8.5 GB: set DERIVS_BENCH_SPARSE_HEAVY=1")
        fn = dense_transform(p, stage)
        # NOTE: Bench checks the dense result against this (its one untimed call): at n = 10^4
        # the dense transforms run twice in all, the check included.
        expected = transform(p.x).to_dense().reshape(fn_shape(p))
    label = {
        "detect": "derivs detect",
        "colour": "derivs colour",
        "eager": "derivs eager",
        "compiled": "derivs compiled",
        "jacfwd": "torch.func.hessian" if p.hessian else "torch.func.jacfwd",
        "jacrev": "torch.func.jacrev(jacrev)" if p.hessian else "torch.func.jacrev",
    }[stage]
    rss_before = _max_rss()
    bench(
        fn,
        (p.x,),
        group=group,
        label=label,
        impl="torch.func" if stage.startswith("jac") else "derivs",
        expected=expected,
        stage=stage,
        max_rounds=1 if p.dense_heavy() else 5,
        **info,
    )
    if stage.startswith("jac"):
        # NOTE: the process's peak resident memory grew by at least this much in the call.
        bench.benchmark.extra_info["max_rss_growth_bytes"] = _max_rss() - rss_before


def dense_transform(p: Problem, stage: str) -> Callable[..., Any]:
    """The dense torch.func transform of a stage: jacfwd/jacrev, or for Hessians
    torch.func.hessian (forward over reverse) and jacrev of jacrev."""
    if p.hessian:
        inner = torch.func.jacrev(p.func)
        return torch.func.jacfwd(inner) if stage == "jacfwd" else torch.func.jacrev(inner)
    return torch.func.jacfwd(p.func) if stage == "jacfwd" else torch.func.jacrev(p.func)


def fn_shape(p: Problem) -> tuple[int, ...]:
    out = () if p.hessian else tuple(p.func(p.x).shape)
    return (*out, *p.x.shape) if not p.hessian else (*p.x.shape, *p.x.shape)


def _max_rss() -> int:
    """Peak resident memory of this process so far, in bytes (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


SCALING = [
    pytest.param(kind, n, impl, id=f"{kind}-{n}-{impl}")
    for kind in ("stencil", "rosenbrock")
    for n in SCALING_N
    for impl in ("sparse", "dense")
]


@pytest.mark.parametrize(("kind", "n", "impl"), SCALING)
def test_sparse_scaling(bench: Bench, kind: str, n: int, impl: str) -> None:
    """How do sparse and dense evaluation grow with n (the stencil and Rosenbrock)?"""
    hessian = kind == "rosenbrock"
    func = bp.rosenbrock if hessian else bp.stencil
    x = bp.point(n)
    if impl == "dense" and n * n >= 10**8 and not HEAVY:
        pytest.skip("dense at n = 10^4 needs 4.7-8.5 GB: set DERIVS_BENCH_SPARSE_HEAVY=1")
    closed = bp.rosenbrock_hessian if hessian else bp.stencil_jacobian
    if impl == "sparse":
        fn: Callable[..., Any] = (derivs.sparse_hessian if hessian else derivs.sparse_jacobian)(
            func
        )
        check_sparse(fn(x), closed(x), f"scaling {kind} n={n}")
        label = "derivs eager"
    else:
        fn = torch.func.hessian(func) if hessian else torch.func.jacfwd(func)
        label = "torch.func.hessian" if hessian else "torch.func.jacfwd"
        derivs.testing.assert_close(fn(x), closed(x), context=f"scaling {kind} n={n} dense")
    bench(
        fn,
        (x,),
        group=f"sparse scaling {kind}",
        label=label,
        impl="derivs" if impl == "sparse" else "torch.func",
        problem=kind,
        n=n,
        max_rounds=1 if n * n >= 10**8 else 5,
    )
