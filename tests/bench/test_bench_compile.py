"""``torch.compile`` of derivs' transforms against eager and against the closed forms.

The tutorial's three Jacobian shapes, its Hessians and ``hvp`` of ``x.sin().sum()``; each
group also times the closed form eager and compiled (the speed-of-light line).

The compiled function's first call (tracing and code generation) is timed once and recorded
as ``extra_info["compile_s"]``; the benchmark itself times the calls after it, so compile
time and run time are reported apart. Each compile starts from an empty inductor cache (a
fresh ``TORCHINDUCTOR_CACHE_DIR``), in a process where inductor has already been started
once (``inductor_started``), so ``compile_s`` is what a new program pays for that transform,
without the one-off start-up of the compiler itself. Compiling is slow: one compile per
case, of the default methods; add ``"rev"``/``"fwd"`` to ``METHODS`` to compare the compiled
graph of a Jacobian with the one of the method ``auto`` picks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import derivs
from tests.bench.bench_helpers import (
    Bench,
    predict,
    predict_hessian,
    predict_inputs,
    predict_jacobian,
)
from tests.bench.test_bench_products import closed_form as hvp_closed_form
from tests.bench.test_bench_products import f as sin_sum

pytestmark = pytest.mark.bench

SHAPES = {"square D=16": (16, 16), "tall 32->2048": (32, 2048), "wide 2048->32": (2048, 32)}
# NOTE: the wide shape's Hessian would be (32, 2048, 2048), 512 MiB; the tutorial's own
# (32, 512, 512) takes its place.
HESSIAN_SHAPES = {"square D=16": (16, 16), "tutorial 512->32": (512, 32)}
HVP_SIZES = {"N=2048": 2048, "N=10**6": 10**6}
METHODS = ["auto"]
MODES = ("eager", "compiled")
CASES = [
    pytest.param(shape, method, mode, id=f"{shape}-{method}-{mode}")
    for shape in SHAPES
    for method in [*METHODS, "closed form"]
    for mode in MODES
]
HESSIAN_CASES = [
    pytest.param(shape, impl, mode, id=f"{shape}-{impl}-{mode}")
    for shape in HESSIAN_SHAPES
    for impl in ("derivs", "closed form")
    for mode in MODES
]
HVP_CASES = [
    pytest.param(size, impl, mode, id=f"{size}-{impl}-{mode}")
    for size in HVP_SIZES
    for impl in ("derivs", "closed form")
    for mode in MODES
]


@pytest.fixture(scope="session")
def inductor_started(device: str) -> None:
    """Compile something trivial once, so that no benchmark pays inductor's start-up."""
    with tempfile.TemporaryDirectory() as cache, _env(TORCHINDUCTOR_CACHE_DIR=cache):
        torch.compile(lambda x: x.sin() + 1)(torch.ones(3, device=device))
    torch._dynamo.reset()


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


def _compiled(fn: Any, args: Any, what: str, tmp_path: Path, bench: Bench) -> tuple[Any, float]:
    """``torch.compile(fn)`` after its first call, and the seconds that call took."""
    # NOTE: a fresh dynamo cache per case, so that the previous shape cannot turn this one
    # into a dynamic-shape recompile, and an empty inductor (and triton) cache, so that
    # compile_s does not depend on what earlier runs left on disk.
    torch._dynamo.reset()
    compiled = torch.compile(fn)
    start = time.perf_counter()
    try:
        with _env(
            TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
            TRITON_CACHE_DIR=str(tmp_path / "triton"),
        ):
            compiled(*args)
    except Exception as exc:  # a compile failure is a finding: report it plainly
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        pytest.fail(f"torch.compile({what}) failed: {type(exc).__name__}: {first}")
    bench.sync()
    return compiled, time.perf_counter() - start


@pytest.mark.parametrize(("shape", "method", "mode"), CASES)
def test_compiled_vs_eager(
    bench: Bench, shape: str, method: str, mode: str, inductor_started: None, tmp_path: Path
) -> None:
    """Does torch.compile make derivs.jacobian faster, and how far is it from the closed form?"""
    n_in, n_out = SHAPES[shape]
    args = predict_inputs(n_in, n_out, bench.device)
    closed = method == "closed form"
    fn = predict_jacobian if closed else derivs.jacobian(predict, argnums=2, method=method)
    info = {}
    if mode == "compiled":
        what = "the closed form" if closed else f"derivs.jacobian(predict, 2, method={method!r})"
        fn, info["compile_s"] = _compiled(fn, args, f"{what} on {shape}", tmp_path, bench)
    bench(
        fn,
        args,
        group=f"compiled vs eager: {shape}",
        label=f"{'closed form' if closed else 'derivs ' + method} {mode}",
        impl="closed form" if closed else "derivs",
        method=method,
        mode=mode,
        reference=predict_jacobian,
        n_in=n_in,
        n_out=n_out,
        shape_name=shape.split()[0],
        shapes={"x": [n_in], "jacobian": [n_out, n_in]},
        **info,
    )


@pytest.mark.parametrize(("shape", "impl", "mode"), HESSIAN_CASES)
def test_compiled_hessian(
    bench: Bench, shape: str, impl: str, mode: str, inductor_started: None, tmp_path: Path
) -> None:
    """torch.compile(derivs.hessian(predict, 2)) against the closed form, both modes."""
    n_in, n_out = HESSIAN_SHAPES[shape]
    args = predict_inputs(n_in, n_out, bench.device)
    fn = predict_hessian if impl == "closed form" else derivs.hessian(predict, argnums=2)
    info = {}
    if mode == "compiled":
        fn, info["compile_s"] = _compiled(fn, args, f"{impl} Hessian on {shape}", tmp_path, bench)
    bench(
        fn,
        args,
        group=f"compiled vs eager: hessian {shape}",
        label=f"{'closed form' if impl == 'closed form' else 'derivs auto'} {mode}",
        impl=impl,
        method="closed form" if impl == "closed form" else "auto",
        mode=mode,
        reference=predict_hessian,
        n_in=n_in,
        n_out=n_out,
        shapes={"x": [n_in], "hessian": [n_out, n_in, n_in]},
        max_rounds=3,
        **info,
    )


def _hvp(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return derivs.hvp(sin_sum, (x,), (v,))


@pytest.mark.parametrize(("size", "impl", "mode"), HVP_CASES)
def test_compiled_hvp(
    bench: Bench, size: str, impl: str, mode: str, inductor_started: None, tmp_path: Path
) -> None:
    """torch.compile(derivs.hvp) of x.sin().sum() against -sin(x) * v, both modes."""
    n = HVP_SIZES[size]
    gen = torch.Generator().manual_seed(0)
    args = (
        torch.randn(n, generator=gen).to(bench.device),
        torch.randn(n, generator=gen).to(bench.device),
    )
    fn = hvp_closed_form if impl == "closed form" else _hvp
    info = {}
    if mode == "compiled":
        fn, info["compile_s"] = _compiled(fn, args, f"{impl} hvp at {size}", tmp_path, bench)
    bench(
        fn,
        args,
        group=f"compiled vs eager: hvp {size}",
        label=f"{'closed form' if impl == 'closed form' else 'derivs hvp auto'} {mode}",
        impl=impl,
        method="closed form" if impl == "closed form" else "auto",
        mode=mode,
        reference=hvp_closed_form,
        n=n,
        shapes={"x": [n], "v": [n]},
        **info,
    )
