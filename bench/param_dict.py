"""Products and Hessians over a model's parameter dict: derivs against torch.func, side by side.

The loss is ``bench.problems.param_mlp_loss``: a two-layer tanh MLP's MSE on a batch of 16,
a function of its parameter dict (``{"0.weight", "0.bias", "2.weight", "2.bias"}``).

* ``hvp`` at ``--hvp-sizes`` parameters (10**6 to 10**7): ``derivs.hvp(loss, (params,),
  (v,))`` (its default method) against the tutorial's ``torch.func.jvp(torch.func.grad(loss),
  (params,), (v,))`` on the same dict; the issue's limit is 1.1x. Peak memory
  (``derivs._memory.measured_peak``: the allocator's, while the call runs, inputs not
  counted) beside one ``torch.autograd.grad`` of the loss (forward and backward).
* ``hessian`` at ``--hessian-sizes`` parameters: ``derivs.hessian(loss)(params)`` against
  ``torch.func.hessian(loss)(params)``, both nested ``H[a][b]``.

Every result is checked against torch.func's before it is timed; times are the fastest of
interleaved blocks (``bench.timing.time_interleaved``), all in one process.

    flock /tmp/derivs-heavy.lock python -m bench.param_dict --threads 1 --clock thread
    python -m bench.param_dict --hvp-sizes 1000000 --hessian-sizes 200 --out /tmp/param_dict

Writes ``docs/bench/param_dict.{json,md}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import derivs
from bench.machine import load_average, run_conditions, run_facts
from bench.output import write_outputs
from bench.problems import param_mlp_inputs, param_mlp_loss
from bench.timing import CLOCKS, parse_timing, sync, time_interleaved, timing_parser
from derivs import _memory

LIMIT = 1.1  # derivs' hvp may take at most this many times torch.func's jvp(grad)
HVP_CALLS = ("derivs hvp", "torch.func jvp(grad)", "fwd+bwd")
HESSIAN_CALLS = ("derivs hessian", "torch.func hessian")


def hvp_calls(X: torch.Tensor, Y: torch.Tensor) -> dict[str, Callable[[Any, Any], Any]]:
    """The hvp of the loss at ``(params, v)``, by each implementation, plus one fwd+bwd."""

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return param_mlp_loss(p, X, Y)

    def forward_backward(params: Any, v: Any) -> Any:
        leaves = {k: t.detach().requires_grad_() for k, t in params.items()}
        return torch.autograd.grad(loss(leaves), list(leaves.values()))

    return {
        "derivs hvp": lambda params, v: derivs.hvp(loss, (params,), (v,))[0],
        "torch.func jvp(grad)": lambda params, v: torch.func.jvp(
            torch.func.grad(loss), (params,), (v,)
        )[1],
        "fwd+bwd": forward_backward,
    }


def hessian_calls(X: torch.Tensor, Y: torch.Tensor) -> dict[str, Callable[[Any], Any]]:
    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return param_mlp_loss(p, X, Y)

    return {
        "derivs hessian": lambda params: derivs.hessian(loss)(params),
        "torch.func hessian": lambda params: torch.func.hessian(loss)(params),
    }


def _size(params: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in params.values())


def measure_hvp(n: int, device: str, **timing: Any) -> dict[str, Any]:
    params, v, X, Y = param_mlp_inputs(n, device)
    fns = hvp_calls(X, Y)
    expected = fns["torch.func jvp(grad)"](params, v)
    peaks = {}
    for label, fn in fns.items():
        peak, result = _memory.measured_peak(lambda fn=fn: fn(params, v), device)
        if label == "derivs hvp":
            derivs.testing.assert_close(result, expected, context=f"[hvp N={n}: {label}]")
        del result
        peaks[label] = peak
    timed = {label: (lambda fn=fn: fn(params, v)) for label, fn in fns.items()}
    times = time_interleaved(timed, sync(device), **timing)
    print(f"  hvp n={_size(params):,}: " + _line(times, peaks), flush=True)
    return {"n": _size(params), "times": times, "peaks": peaks}


def measure_hessian(n: int, device: str, **timing: Any) -> dict[str, Any]:
    params, _, X, Y = param_mlp_inputs(n, device)
    fns = hessian_calls(X, Y)
    expected = fns["torch.func hessian"](params)
    derivs.testing.assert_close(fns["derivs hessian"](params), expected, context=f"[hessian N={n}]")
    timed = {label: (lambda fn=fn: fn(params)) for label, fn in fns.items()}
    times = time_interleaved(timed, sync(device), **timing)
    print(f"  hessian n={_size(params):,}: " + _line(times, {}), flush=True)
    return {"n": _size(params), "times": times}


def _line(times: dict[str, float], peaks: dict[str, int]) -> str:
    return "  ".join(
        f"{k}: {t * 1e3:.1f} ms" + (f" {peaks[k] / 2**20:.0f} MiB" if k in peaks else "")
        for k, t in times.items()
    )


def render(result: dict[str, Any]) -> str:
    lines = [
        "# hvp and Hessian over a parameter dict",
        "",
        f"{run_conditions(result)} (`python -m bench.param_dict`). Times: the fastest of {result['rounds']} "
        "interleaved blocks, every implementation in one process. The machine is a shared "
        "2-core box: other jobs ran beside this one, which the interleaving spreads over "
        "every implementation alike, but single times are noisy; the ratios are the result.",
        "",
        "The loss: `bench.problems.param_mlp_loss`, a two-layer tanh MLP's MSE on a batch of "
        "16, over its parameter dict (float32).",
        "",
        "## hvp: `derivs.hvp(loss, (params,), (v,))` against "
        "`torch.func.jvp(torch.func.grad(loss), (params,), (v,))`",
        "",
        "Peaks: the allocator's while the call runs (`derivs._memory.measured_peak`), the "
        "parameters and tangents not counted; `fwd+bwd` is one `torch.autograd.grad` of the "
        f"loss. Limit: derivs within {LIMIT}x torch.func.",
        "",
        "| parameters | derivs hvp | torch.func jvp(grad) | ratio | derivs peak | "
        "torch.func peak | fwd+bwd peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["hvp"]:
        t, p = row["times"], row["peaks"]
        ratio = t["derivs hvp"] / t["torch.func jvp(grad)"]
        mark = "" if ratio <= LIMIT else f" (above {LIMIT}x)"
        lines.append(
            f"| {row['n']:,} | {t['derivs hvp'] * 1e3:.1f} ms | "
            f"{t['torch.func jvp(grad)'] * 1e3:.1f} ms | **{ratio:.2f}x**{mark} | "
            + " | ".join(f"{p[k] / 2**20:.0f} MiB" for k in HVP_CALLS)
            + " |"
        )
    lines += [
        "",
        "## Hessian: `derivs.hessian(loss)(params)` against `torch.func.hessian(loss)(params)`",
        "",
        "| parameters | derivs hessian | torch.func hessian | ratio |",
        "|---|---|---|---|",
    ]
    for row in result["hessian"]:
        t = row["times"]
        lines.append(
            f"| {row['n']:,} | {t['derivs hessian'] * 1e3:.1f} ms | "
            f"{t['torch.func hessian'] * 1e3:.1f} ms | "
            f"**{t['derivs hessian'] / t['torch.func hessian']:.2f}x** |"
        )
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_parser(__doc__, "param_dict", rounds=5, block=0.2)
    parser.add_argument("--hvp-sizes", default="1e6,1e7", help="parameter counts for hvp")
    parser.add_argument("--hessian-sizes", default="200,1000", help="parameter counts for hessian")
    args = parse_timing(parser, argv)
    load = load_average()
    print(f"parameter dicts on {args.device}, load average {load}", flush=True)
    timing = {"rounds": args.rounds, "block_s": args.block, "clock": CLOCKS[args.clock]}
    result = {
        **run_facts(args, load),
        "hvp": [measure_hvp(n, args.device, **timing) for n in _sizes(args.hvp_sizes)],
        "hessian": [measure_hessian(n, args.device, **timing) for n in _sizes(args.hessian_sizes)],
    }
    write_outputs(result, render(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
