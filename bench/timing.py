"""The benchmarks' timer: device synchronisation, interleaved blocks, and ``Bench``, the
check-then-time helper of the pytest-benchmark fixtures (``tests/bench``)."""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import derivs
from bench.machine import device_name

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
DOCS_BENCH = Path(__file__).resolve().parent.parent / "docs" / "bench"


def timing_parser(
    doc: str | None, name: str, *, rounds: int, block: float
) -> argparse.ArgumentParser:
    """The options of every interleaved-timing tool; ``--out`` defaults to docs/bench/<name>."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved blocks per case")
    parser.add_argument("--block", type=float, default=block, help="seconds per timed block")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (perf_counter, default) or thread (this thread's CPU time: steadier on a "
        "shared machine, meaningful with --threads 1)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before measuring")
    parser.add_argument(
        "--out", default=str(DOCS_BENCH / name), help="path prefix of the .json and .md results"
    )
    return parser


def parse_timing(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and set torch's thread count when ``--threads`` asks for one."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def sync(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (nothing to wait for on CPU)."""
    if torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    wait: Callable[[], None],
    *,
    rounds: int,
    block_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Seconds per call of each function: the fastest of ``rounds`` interleaved blocks.

    Each block repeats one function for about ``block_s`` seconds (planned from one call),
    then ``wait()``s; the blocks rotate through the functions, so a burst of load on a shared
    machine hits all of them alike.
    """
    reps: dict[str, int] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        wait()
        reps[name] = max(1, int(block_s / max(time.perf_counter() - start, 1e-7)))
    best = dict.fromkeys(fns, math.inf)
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], reps[name]
            start = clock()
            for _ in range(n):
                fn()
            wait()
            best[name] = min(best[name], (clock() - start) / n)
    return best


def ms_line(times: dict[str, float]) -> str:
    """``name=   1.234 ms`` for each timed function: the progress line of a measured cell."""
    return "  ".join(f"{name}={t * 1e3:9.3f} ms" for name, t in times.items())


# A benchmarked case: (implementation, method, the torch.func call doing the same work or None,
# a factory building the function to time).
Case = tuple[str, str, str | None, Callable[[], Callable[..., Any]]]

# NOTE: rounds are planned from a measured call time rather than by pytest-benchmark's own
# calibration, which trusts its fastest probe: on a loaded machine it then plans thousands of
# rounds that each run far slower than planned (one benchmark took 65 s instead of 1 s).
# A fast call gets rounds of at least MIN_ROUND_S (several iterations) and as many rounds as
# fit in --benchmark-max-time (at least --benchmark-min-rounds); a call slower than SLOW_CALL_S
# gets SLOW_BUDGET_S / call rounds, at least one and at most the case's max_rounds.
MIN_ROUND_S = 1e-3
SLOW_CALL_S = 0.05
SLOW_BUDGET_S = float(os.environ.get("DERIVS_BENCH_SLOW_BUDGET", "6"))
MAX_ROUNDS = 10_000


def _shape_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, tuple | list):
        return [_shape_of(v) for v in value]
    return None


def check(actual: Any, expected: Any, *, context: str, rtol: float | None = None) -> None:
    """Check a benchmarked result against its reference before it is timed.

    ``derivs.testing.assert_close`` with its derived float32 tolerances (a few eps, scaled by
    the block's size and largest entry): different algorithms agree to rounding, and a wrong
    answer is off by O(1). ``rtol`` loosens it where a case needs that (none does today).
    """
    derivs.testing.assert_close(actual, expected, rtol=rtol, context=context)


class Bench:
    """Check once, record, then time ``fn(*args)`` with the ``benchmark`` fixture."""

    def __init__(self, benchmark: Any, device: str) -> None:
        self.benchmark = benchmark
        self.device = device
        self.is_cuda = torch.device(device).type == "cuda"
        self.sync = sync(device)

    def __call__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        *,
        group: str,
        label: str,
        impl: str,
        expected: Any = None,
        reference: Callable[..., Any] | None = None,
        shapes: dict[str, Any] | None = None,
        rtol: float | None = None,
        max_rounds: int = 5,
        **info: Any,
    ) -> Any:
        """Time ``fn(*args)`` in ``group`` (device appended) under the name ``label``.

        Args:
            fn, args: the call to time.
            group: the question this benchmark helps answer; one table per group and device.
            label: the row name in reports (e.g. ``"derivs rev"``, ``"torch.func.jacrev"``).
            impl: ``"derivs"``, ``"torch.func"``, ``"torch.autograd.functional"`` or
                ``"closed form"``.
            expected: the reference value, or ``reference``: a function of ``args`` giving it.
            shapes: shapes to record; the shapes of ``args`` are recorded as well.
            max_rounds: at most this many rounds for a slow call (see ``SLOW_CALL_S``).
            info: more ``extra_info`` (method, in/out sizes, the torch.func equivalent, ...).
        """
        bm = self.benchmark
        bm.group = f"{group} [{self.device}]"
        start = time.perf_counter()
        result = fn(*args)
        self.sync()
        first_call = time.perf_counter() - start
        if reference is not None:
            expected = reference(*args)
        if expected is not None:
            check(result, expected, context=f"[{group}: {label}]", rtol=rtol)
        del result
        bm.extra_info.update(
            question=group,
            label=label,
            impl=impl,
            device=self.device,
            device_name=device_name(self.device),
            torch=torch.__version__,
            dtype=str(next((a.dtype for a in args if isinstance(a, torch.Tensor)), "")),
            args_shapes=_shape_of(list(args)),
            shapes=shapes or {},
            first_call_s=first_call,
            checked=expected is not None,
            **info,
        )
        target = fn
        if self.is_cuda:

            def target(*a: Any) -> Any:
                out = fn(*a)
                self.sync()
                return out

        if bm.disabled:  # --benchmark-disable: the checked call was the run
            return None
        call = self._call_time(target, args, first_call)
        bm.extra_info["planned_call_s"] = call
        if call > SLOW_CALL_S:
            rounds = max(1, min(max_rounds, math.floor(SLOW_BUDGET_S / call)))
            return bm.pedantic(target, args=tuple(args), rounds=rounds, iterations=1)
        iterations = max(1, math.ceil(MIN_ROUND_S / call))
        budget = float(getattr(bm, "_max_time", 1.0))
        min_rounds = int(getattr(bm, "_min_rounds", 5))
        rounds = max(min_rounds, min(MAX_ROUNDS, math.floor(budget / (call * iterations))))
        return bm.pedantic(
            target, args=tuple(args), rounds=rounds, iterations=iterations, warmup_rounds=1
        )

    @staticmethod
    def _call_time(target: Callable[..., Any], args: Sequence[Any], first_call: float) -> float:
        """Seconds per call: the median of a few calls; one more call if the first was slow.

        A first call can be slow only because it warmed caches up (one took 3 s for a 3 ms
        function), so a slow first call is retimed unless it is too slow to repeat cheaply.
        """
        if first_call >= 0.5:
            if first_call >= 3.0:
                return first_call
            start = time.perf_counter()
            target(*args)
            first_call = min(first_call, time.perf_counter() - start)
            if first_call >= 0.5:
                return first_call
        times = []
        deadline = time.perf_counter() + min(0.1, 3 * first_call)
        while len(times) < 3 or (len(times) < 50 and time.perf_counter() < deadline):
            start = time.perf_counter()
            target(*args)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]
