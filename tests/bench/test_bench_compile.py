"""``torch.compile`` of derivs' transforms against eager, on the tutorial's three shapes.

The compiled function's first call (tracing and code generation) is timed once and recorded
as ``extra_info["compile_s"]``; the benchmark itself times the calls after it, so compile
time and run time are reported apart. Each compile starts from an empty inductor cache (a
fresh ``TORCHINDUCTOR_CACHE_DIR``), in a process where inductor has already been started
once (``inductor_started``), so ``compile_s`` is what a new program pays for that transform,
without the one-off start-up of the compiler itself. Compiling is slow: one compile per
shape, of ``method="auto"``; add ``"rev"``/``"fwd"`` to ``METHODS`` to compare its compiled
graph with the one of the method it picks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import derivs
from tests.bench.bench_helpers import Bench, predict, predict_inputs, predict_jacobian

pytestmark = pytest.mark.bench

SHAPES = {"square D=16": (16, 16), "tall 32->2048": (32, 2048), "wide 2048->32": (2048, 32)}
METHODS = ["auto"]
CASES = [
    pytest.param(shape, method, mode, id=f"{shape}-{method}-{mode}")
    for shape in SHAPES
    for method in METHODS
    for mode in ("eager", "compiled")
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


@pytest.mark.parametrize(("shape", "method", "mode"), CASES)
def test_compiled_vs_eager(
    bench: Bench, shape: str, method: str, mode: str, inductor_started: None, tmp_path: Path
) -> None:
    """Does torch.compile make derivs.jacobian faster, and what does compiling cost?"""
    n_in, n_out = SHAPES[shape]
    args = predict_inputs(n_in, n_out, bench.device)
    fn = derivs.jacobian(predict, argnums=2, method=method)
    info = {}
    if mode == "compiled":
        # NOTE: a fresh dynamo cache per shape, so that the previous shape cannot turn this
        # one into a dynamic-shape recompile, and an empty inductor (and triton) cache, so
        # that compile_s does not depend on what earlier runs left on disk.
        torch._dynamo.reset()
        fn = torch.compile(fn)
        start = time.perf_counter()
        try:
            with _env(
                TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
                TRITON_CACHE_DIR=str(tmp_path / "triton"),
            ):
                fn(*args)
        except Exception as exc:  # a compile failure is a finding: report it plainly
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            pytest.fail(
                f"torch.compile(derivs.jacobian(predict, argnums=2, method={method!r})) failed "
                f"on {shape}: {type(exc).__name__}: {first}"
            )
        bench.sync()
        info["compile_s"] = time.perf_counter() - start
    bench(
        fn,
        args,
        group=f"compiled vs eager: {shape}",
        label=f"derivs {method} {mode}",
        impl="derivs",
        method=method,
        mode=mode,
        reference=predict_jacobian,
        n_in=n_in,
        n_out=n_out,
        shape_name=shape.split()[0],
        shapes={"x": [n_in], "jacobian": [n_out, n_in]},
        **info,
    )
