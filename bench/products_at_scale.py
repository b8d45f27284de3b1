"""hvp and vhp at N = 10**7 on CPU: time and peak memory against torch.func.

For each scalar function of ``bench.problems.SCALAR`` (``bench.hvp_grid``'s) (the tutorial's ``x.sin().sum()`` first)
at ``N`` inputs, four products are computed: derivs' ``hvp`` and ``vhp`` with their default
method, and torch.func's ``jvp(grad(f))`` and ``vjp(grad(f))`` (the tutorial's two hvps);
plus one forward and backward pass of ``f`` (``torch.autograd.grad(f(x), x)``), the
reference the products' memory is measured against. Each result is checked against the
closed form first.

* Time: interleaved blocks, each call keeping its fastest (``bench.timing.time_interleaved``).
* Peak memory: ``derivs._memory.measured_peak``, the CPU allocator's allocations and frees
  while the call runs (torch.profiler's memory events). It counts the tensors the call
  allocates and nothing else (not the interpreter, not memory glibc keeps cached), the same
  on a loaded machine as on a quiet one. ``--rss`` adds the operating system's view: one
  fresh process per call, the growth of its peak resident set (``VmHWM``) over its size
  with the inputs allocated.

    flock /tmp/derivs-heavy.lock python -m bench.products_at_scale --threads 1 --clock thread
    python -m bench.products_at_scale --n 1000000 --functions sin_sum --out /tmp/scale
    python -m bench.products_at_scale --rss

Writes ``docs/bench/products_at_scale.{json,md}``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import write_outputs
from bench.problems import SCALAR as PROBLEMS
from bench.problems import vector_inputs as inputs
from bench.timing import CLOCKS, parse_timing, sync, time_interleaved, timing_parser
from derivs import _memory

ROOT = Path(__file__).resolve().parent.parent

CALLS = ("derivs hvp", "derivs vhp", "torch.func jvp(grad)", "torch.func vjp(grad)", "fwd+bwd")
LIMIT = 2.0  # a product's peak may be at most this many times one forward + backward's


def calls(name: str) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    f = PROBLEMS[name].func

    def forward_backward(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_()
        return torch.autograd.grad(f(x), x)[0]

    return {
        "derivs hvp": lambda x, v: derivs.hvp(f, (x,), (v,))[0],
        "derivs vhp": lambda x, v: derivs.vhp(f, (x,), (v,))[0],
        "torch.func jvp(grad)": lambda x, v: torch.func.jvp(torch.func.grad(f), (x,), (v,))[1],
        "torch.func vjp(grad)": lambda x, v: torch.func.vjp(torch.func.grad(f), x)[1](v)[0],
        "fwd+bwd": forward_backward,
    }


def rss_peak(name: str, call: str, n: int) -> int:
    """Growth of a fresh process's resident set over its inputs while ``call`` runs.

    Read from ``/proc/self/status`` (``VmHWM``, reset to the current size through
    ``/proc/self/clear_refs`` just before the call) rather than ``ru_maxrss``, which on Linux
    keeps the high-water mark of the parent process the child was forked from.
    """
    code = (
        f"import bench.products_at_scale as p; x, v = p.inputs({n}, 'cpu'); "
        f"fn = p.calls({name!r})[{call!r}]; before = p.reset_peak_rss(); fn(x, v); "
        "print(p.vm('VmHWM') - before)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1])


def vm(field: str) -> int:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"products_at_scale: no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's peak resident set to its current size; return that size."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return vm("VmRSS")


def measure(
    name: str,
    n: int,
    device: str,
    *,
    rounds: int,
    block_s: float,
    clock: Callable[[], float],
    rss: bool,
) -> dict[str, Any]:
    x, v = inputs(n, device)
    fns = calls(name)
    expected = PROBLEMS[name].hvp(x, v)
    peaks = {}
    for label, fn in fns.items():
        peak, result = _memory.measured_peak(lambda fn=fn: fn(x, v), device)
        if label != "fwd+bwd":
            derivs.testing.assert_close(result, expected, context=f"[{name} N={n}: {label}]")
        del result
        peaks[label] = peak
    timed = {label: (lambda fn=fn: fn(x, v)) for label, fn in fns.items()}
    times = time_interleaved(timed, sync(device), rounds=rounds, block_s=block_s, clock=clock)
    row: dict[str, Any] = {"function": name, "n": n, "peaks": peaks, "times": times}
    if rss:
        row["rss"] = {label: rss_peak(name, label, n) for label in fns}
    print(
        f"  {name:13s} "
        + "  ".join(f"{k}: {times[k] * 1e3:.1f} ms {peaks[k] / 2**20:.0f} MiB" for k in fns),
        flush=True,
    )
    return row


def render(result: dict[str, Any]) -> str:
    n = result["n"]
    lines = [
        f"# hvp and vhp at N = {n:,}",
        "",
        f"{run_conditions(result)} (`python -m bench.products_at_scale`). Times: fastest of "
        f"{result['rounds']} interleaved blocks. Peaks: the allocator's, while the call runs "
        "(`derivs._memory.measured_peak`), the inputs `x` and `v` "
        f"({2 * n * 4 / 2**20:.0f} MiB) not counted; `fwd+bwd` is one "
        "`torch.autograd.grad(f(x), x)`.",
        "",
        "| function | call | time | vs jvp(grad) | vs vjp(grad) | peak | peak / fwd+bwd |"
        + (" RSS growth |" if any("rss" in r for r in result["rows"]) else ""),
        "|---|---|---|---|---|---|---|"
        + ("---|" if any("rss" in r for r in result["rows"]) else ""),
    ]
    for row in result["rows"]:
        t, p = row["times"], row["peaks"]
        for label in CALLS:
            ratio = p[label] / p["fwd+bwd"]
            mark = "" if label == "fwd+bwd" or ratio <= LIMIT else " (above 2x)"
            rss = f" {row['rss'][label] / 2**20:.0f} MiB |" if "rss" in row else ""
            lines.append(
                f"| `{row['function']}` | {label} | {t[label] * 1e3:.1f} ms | "
                f"{t[label] / t['torch.func jvp(grad)']:.2f}x | "
                f"{t[label] / t['torch.func vjp(grad)']:.2f}x | {p[label] / 2**20:.0f} MiB | "
                f"**{ratio:.2f}**{mark} |" + rss
            )
    lines += ["", "Functions:", ""]
    lines += [f"- `{r['function']}`: `{PROBLEMS[r['function']].formula}`" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "products_at_scale", rounds=5, block=0.2)
    parser.add_argument("--n", type=int, default=10**7)
    parser.add_argument("--functions", default=",".join(PROBLEMS))
    parser.add_argument("--rss", action="store_true", help="also fresh-process ru_maxrss growth")
    args = parse_timing(parser, argv)
    load = load_average()
    print(f"products at N={args.n} on {args.device}, load average {load}", flush=True)
    rows = [
        measure(
            name,
            args.n,
            args.device,
            rounds=args.rounds,
            block_s=args.block,
            clock=CLOCKS[args.clock],
            rss=args.rss and args.device == "cpu",
        )
        for name in args.functions.split(",")
    ]
    result = {**run_facts(args, load), "n": args.n, "rows": rows}
    write_outputs(result, render(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
