"""``torch.compile`` of derivs' transforms against the closed forms, eager and compiled.

For each case (the tutorial's ``predict(W, b, x) = F.linear(x, W, b).tanh()`` on its three
Jacobian shapes, its Hessians, and ``hvp`` of ``x.sin().sum()``) four calls are timed in
interleaved blocks, each keeping its fastest block: derivs eager, derivs compiled, the closed
form eager and the closed form compiled (the speed-of-light line). Every result is checked
against the closed form first. The compiled derivs call is also checked for graph breaks
(``torch._dynamo.explain``) and recompiles (a second and third call with new values of the
same shapes must not compile again).

    flock /tmp/derivs-heavy.lock python -m bench.compile --threads 1 --clock thread
    python -m bench.compile --device cuda --out /tmp/compile_cuda
    python -m bench.compile --only jacobian --backend aot_eager   # no C++ compiler

Writes ``docs/bench/compile.{json,md}`` by default. Before/after a change: run it from the
other checkout's folder (its ``derivs`` comes first on the path, this ``bench`` after it)::

    cd /path/to/other/checkout && PYTHONPATH=$OLDPWD python -m bench.compile --out /tmp/before

This is the one compile benchmark: ``docs/bench/report.md`` quotes its table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import derivs
from bench import problems as bp
from bench.machine import load_average, run_conditions, run_facts
from bench.output import write_outputs
from bench.timing import CLOCKS, parse_timing, sync, time_interleaved, timing_parser
from derivs import prefers_forward

ROOT = Path(__file__).resolve().parent.parent

JACOBIAN_SHAPES = {
    "square D=16": (16, 16),
    "tall 32->2048": (32, 2048),
    "wide 2048->32": (2048, 32),
}
# NOTE: the wide shape's Hessian would have 32 * 2048**2 entries (512 MiB); the tutorial's own
# Hessian, (32, 512, 512), takes its place.
HESSIAN_SHAPES = {
    "square D=16": (16, 16),
    "tall 32->2048": (32, 2048),
    "tutorial 512->32": (512, 32),
}
HVP_SIZES = {"N=2048": 2048, "N=10**6": 10**6}


def _fresh_predict() -> Callable[..., torch.Tensor]:
    """``predict`` as a new function object: nothing remembered about it from another case."""

    def fresh(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return bp.predict(weight, bias, x)

    return fresh


def jacobian_bound(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The closed form plus the one product with an identity a dense basis push computes.

    Forward mode pushes the identity over the inputs through the first linear map
    (``I @ W.T``), reverse mode the identity over the outputs through its transpose
    (``diag(1 - y**2) @ W``): the cheapest graph a Jacobian that pushes a dense identity
    can compile to. derivs' compiled path goes below it: its basis is ``derivs::identity``,
    whose products a post-grad pass rewrites (``derivs/_compiled.py``).
    """
    y = bp.predict(weight, bias, x)
    if prefers_forward(y.numel(), x.numel(), x.device):
        eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
        return ((eye @ weight.T) * (1 - y**2)).T
    eye = torch.eye(y.numel(), dtype=x.dtype, device=x.device)
    return (eye * (1 - y**2)) @ weight


def hvp_derivs(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return derivs.hvp(bp.sin_sum, (x,), (v,))


class Case:
    """One row: a derivs call, its closed form and a factory of fresh inputs of fixed shapes."""

    def __init__(
        self,
        kind: str,
        shape: str,
        fn: Callable[..., Any],
        closed: Callable[..., Any],
        make: Callable[[int], tuple[torch.Tensor, ...]],
    ) -> None:
        self.kind, self.shape, self.fn, self.closed, self.make = kind, shape, fn, closed, make


def _predict_inputs(n_in: int, n_out: int, device: str) -> Callable[[int], tuple[Any, ...]]:
    return lambda seed: bp.predict_inputs(n_in, n_out, device, seed=seed)


def _vector_inputs(n: int, device: str) -> Callable[[int], tuple[Any, ...]]:
    return lambda seed: bp.vector_inputs(n, device, seed=seed)


def cases(device: str, only: set[str]) -> list[Case]:
    found = []
    if "jacobian" in only:
        for name, (n_in, n_out) in JACOBIAN_SHAPES.items():
            fn = derivs.jacobian(_fresh_predict(), argnums=2)
            found.append(
                Case(
                    "jacobian", name, fn, bp.predict_jacobian, _predict_inputs(n_in, n_out, device)
                )
            )
    if "hessian" in only:
        for name, (n_in, n_out) in HESSIAN_SHAPES.items():
            fn = derivs.hessian(_fresh_predict(), argnums=2)
            found.append(
                Case("hessian", name, fn, bp.predict_hessian, _predict_inputs(n_in, n_out, device))
            )
    if "hvp" in only:
        for name, n in HVP_SIZES.items():
            found.append(
                Case("hvp", name, hvp_derivs, bp.sin_sum_products, _vector_inputs(n, device))
            )
    return found


def _compiles(fn: Callable[..., Any], args: tuple[Any, ...], backend: str) -> tuple[Any, int]:
    """``torch.compile(fn)`` after three calls with new values, and how many graphs it built."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(fn, backend=backend)
    for seed in (1, 2, 3):
        compiled(*tuple(a + 0.01 * seed for a in args))
    return compiled, int(counters["stats"]["unique_graphs"])


def _breaks(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, int]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    return explained.graph_count, explained.graph_break_count


def measure_case(
    case: Case,
    device: str,
    *,
    backend: str,
    rounds: int,
    block_s: float,
    clock: Callable[[], float],
) -> dict[str, Any]:
    args = case.make(0)
    expected = case.closed(*args)
    # NOTE: compiled first: explain replays what the traced code stores (jacobian's auto
    # remembers output sizes), and the first call after an empty store is the one that
    # shows whether storing recompiles.
    start = time.perf_counter()
    compiled, frames = _compiles(case.fn, args, backend)
    compile_s = time.perf_counter() - start
    graphs, breaks = _breaks(case.fn, args)
    closed_compiled, _ = _compiles(case.closed, args, backend)
    fns = {
        "derivs_eager": lambda: case.fn(*args),
        "derivs_compiled": lambda: compiled(*args),
        "closed_eager": lambda: case.closed(*args),
        "closed_compiled": lambda: closed_compiled(*args),
    }
    if case.kind == "jacobian":
        bound_compiled, _ = _compiles(jacobian_bound, args, backend)
        fns["bound_compiled"] = lambda: bound_compiled(*args)
    for name, fn in fns.items():
        derivs.testing.assert_close(fn(), expected, context=f"[{case.kind} {case.shape}: {name}]")
    times = time_interleaved(fns, sync(device), rounds=rounds, block_s=block_s, clock=clock)
    return {
        "kind": case.kind,
        "shape": case.shape,
        "graphs": graphs,
        "graph_breaks": breaks,
        "graphs_after_3_calls": frames,
        "compile_s": round(compile_s, 2),
        **{f"t_{k}": v for k, v in times.items()},
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        "# `torch.compile` of derivs against the closed forms",
        "",
        f"{run_conditions(result)}, backend `{result['backend']}`; each time is the fastest of "
        f"{result['rounds']} interleaved blocks (`python -m bench.compile`). Jacobians and "
        "Hessians of the tutorial's `predict(W, b, x) = F.linear(x, W, b).tanh()` with respect "
        'to `x` (`method="auto"`), `hvp` of `x.sin().sum()` (default method); closed forms '
        "`(1 - y**2)[:, None] * W`, `-2 y (1 - y**2) W_i W_i^T` and `-sin(x) * v`. "
        "Dense-basis bound: the closed form plus the one identity product a dense basis push "
        "computes (`I @ W.T` in forward mode, `diag(1 - y**2) @ W` in reverse), compiled; "
        "derivs' rewrite of its `derivs::identity` products takes it below that.",
        "",
        *table(result),
    ]
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> list[str]:
    """One row per case: the four timings, their ratios, graphs, breaks, compile time."""
    lines = [
        "| case | derivs compiled | closed compiled | closed eager | derivs eager | "
        "compiled / closed compiled | compiled / closed eager | dense-basis bound / closed compiled | "
        "graphs (breaks) | graphs after 3 calls | compile |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cases"]:
        dc, cc, ce, de = (
            c["t_derivs_compiled"],
            c["t_closed_compiled"],
            c["t_closed_eager"],
            c["t_derivs_eager"],
        )
        bound = f"{c['t_bound_compiled'] / cc:.2f}x" if "t_bound_compiled" in c else "-"
        lines.append(
            f"| {c['kind']} {c['shape']} | {dc * 1e6:.1f} µs | {cc * 1e6:.1f} µs | "
            f"{ce * 1e6:.1f} µs | {de * 1e6:.1f} µs | **{dc / cc:.2f}x** | **{dc / ce:.2f}x** | "
            f"{bound} | {c['graphs']} ({c['graph_breaks']}) | {c['graphs_after_3_calls']} | "
            f"{c['compile_s']:.1f} s |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = timing_parser(__doc__, "compile", rounds=15, block=0.02)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--only", default="jacobian,hessian,hvp", help="comma-separated kinds")
    args = parse_timing(parser, argv)
    load = load_average()
    print(f"compile bench on {args.device} ({args.backend}), load average {load}", flush=True)
    found = []
    for case in cases(args.device, set(args.only.split(","))):
        row = measure_case(
            case,
            args.device,
            backend=args.backend,
            rounds=args.rounds,
            block_s=args.block,
            clock=CLOCKS[args.clock],
        )
        found.append(row)
        print(
            f"  {case.kind} {case.shape}: compiled/closed compiled "
            f"{row['t_derivs_compiled'] / row['t_closed_compiled']:.2f}x, graphs "
            f"{row['graphs']} breaks {row['graph_breaks']} after 3 calls "
            f"{row['graphs_after_3_calls']}",
            flush=True,
        )
    result = {
        **run_facts(args, load),
        "derivs_from": str(Path(derivs.__file__).parent),
        "backend": args.backend,
        "cases": found,
    }
    write_outputs(result, render(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
