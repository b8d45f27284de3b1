"""Measure the peak memory of every Hessian method and compare it with derivs' memory model.

For every case (a vector-valued function, its input and output sizes, a ``chunk_size``) and
every method, the peak is measured by ``derivs._memory.measured_peak`` (the allocator's
allocations and frees while the Hessian is computed, from ``torch.profiler`` on CPU,
``max_memory_allocated`` on CUDA) and predicted by ``derivs._memory.hessian_peak``, the
model the memory guard refuses by. The model must never be below the measurement and at most
twice it. ``--fit`` searches the model's coefficients that meet that on the measured cases
(it prints them; they live in ``derivs/_memory.py``).

    python -m bench.hessian_memory                   # writes docs/bench/hessian_memory.{json,md}
    python -m bench.hessian_memory --fit             # measure, then fit the coefficients
    python -m bench.hessian_memory --big             # also the tutorial's 32 x 512 (needs ~5 GB)
    python -m bench.hessian_memory --rescore docs/bench/hessian_memory.json [--fit]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import derivs
from bench.problems import mlp, predict, softplus
from derivs import _memory, prefers_forward

ROOT = Path(__file__).resolve().parent.parent

METHODS = ("fwd_rev", "rev_rev", "fwd_fwd", "rev_fwd", "loop", "auto")
# NOTE: keeps a case's reverse-outer basis, (out * in)**2 elements, to 16 MiB.
MAX_JACOBIAN = 2048
MAX_LOOP = 1024  # loop runs one backward per gradient entry: out * in of them
LIMIT = 2.0  # the model may be at most this many times the measured peak
FLOORS = ("result", "pieces")  # terms whose coefficient is at least 1


FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "predict": predict,
    "mlp": mlp,
    "softplus": softplus,
}


def _args(name: str, n: int, m: int, h: int, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(n * 1000 + m)
    x = torch.randn(n, generator=gen)
    if name == "predict":
        w, b = torch.randn(m, n, generator=gen), torch.randn(m, generator=gen)
        return w.to(device), b.to(device), x.to(device)
    w1 = torch.randn(h, n, generator=gen) / math.sqrt(n)
    w2 = torch.randn(m, h, generator=gen) / math.sqrt(h)
    return w1.to(device), w2.to(device), x.to(device)


def cases(big: bool) -> list[dict[str, Any]]:
    """Sizes whose peaks run from about 1 to 100 MiB (the guard matters for large ones)."""
    found = []
    for n, m in (
        (64, 16), (16, 64), (32, 32), (128, 8), (8, 128), (128, 32), (32, 128), (128, 64),
        (64, 128), (16, 48),
    ):  # fmt: skip
        found.append({"function": "predict", "n": n, "m": m, "h": 0, "chunk_size": None})
    for n, m, h in (
        (16, 16, 256), (32, 8, 128), (8, 32, 128), (32, 32, 64), (16, 4, 512), (64, 16, 256),
        (16, 16, 128),
    ):  # fmt: skip
        for name in ("mlp", "softplus"):
            found.append({"function": name, "n": n, "m": m, "h": h, "chunk_size": None})
    for chunk in (8, 64, 256):
        found.append({"function": "predict", "n": 64, "m": 32, "h": 0, "chunk_size": chunk})
        found.append({"function": "mlp", "n": 32, "m": 16, "h": 128, "chunk_size": chunk})
    if big:
        found.append({"function": "predict", "n": 512, "m": 32, "h": 0, "chunk_size": None})
    return found


def _resolved(method: str, m: int, n: int, device: str) -> str:
    """The composition ``auto`` runs: forward over the mode jacobian's auto picks."""
    if method != "auto":
        return method
    return "fwd_fwd" if prefers_forward(m, n, device) else "fwd_rev"


def measure(case: dict[str, Any], methods: Sequence[str], device: str) -> dict[str, Any]:
    args = _args(case["function"], case["n"], case["m"], case["h"], device)
    func = FUNCTIONS[case["function"]]
    probed = _memory.probe(func, args, (2,))
    assert probed is not None
    m, a = probed
    p = sum(t.numel() for t in args[:2])
    d = {f"d_{c}": _memory.second_order(func, args, (2,), c) for c in _memory.PROBED}
    row = {**case, "a": a, **d, "p": p, "itemsize": args[2].element_size(), "peaks": {}}
    big = case["n"] * m > MAX_JACOBIAN
    for method in methods:
        if method.startswith("rev") and big and case["n"] != 512:
            continue
        if method == "loop" and (case["chunk_size"] is not None or case["n"] * m > MAX_LOOP):
            continue
        fn = derivs.hessian(func, argnums=2, method=method, chunk_size=case["chunk_size"])
        with derivs.memory_budget(2**40):
            peak, result = _memory.measured_peak(lambda fn=fn: fn(*args), device)
        assert result.shape == (m, case["n"], case["n"])
        row["peaks"][method] = peak
        print(
            f"  {case['function']:8s} n={case['n']:3d} m={m:3d} h={case['h']:3d} "
            f"chunk={case['chunk_size']}  {method:8s} {peak / 2**20:9.3f} MiB",
            flush=True,
        )
    return row


def _sizes(row: dict[str, Any], method: str, *, screen: bool = False) -> _memory.Sizes:
    d = 0 if screen or method not in _memory.PROBED else row[f"d_{method}"]
    return _memory.Sizes(
        row["m"], row["n"], row["a"], d, row["p"], row["itemsize"], row["chunk_size"]
    )


def ratios(
    rows: Sequence[dict[str, Any]], method: str, device: str, *, screen: bool = False
) -> list[float]:
    """predicted / measured for every row that measured ``method``."""
    found = []
    for row in rows:
        if method in row["peaks"]:
            resolved = _resolved(method, row["m"], row["n"], device)
            sizes = _sizes(row, resolved, screen=screen)
            found.append(_memory.hessian_peak(resolved, sizes) / row["peaks"][method])
    return found


def _fit_one(data: list[tuple[dict[str, int], float]]) -> tuple[float, dict[str, float]]:
    """Weights with predicted >= measured everywhere and the least max/min ratio.

    A grid search over the relative weights of the terms, scaled so that the smallest ratio
    is exactly 1; ``FLOORS`` terms keep a weight of at least 1.
    """
    grid = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    keys = list(data[0][0])
    best: tuple[float, dict[str, float]] | None = None
    for weights in itertools.product(grid, repeat=len(keys)):
        if not any(weights):
            continue
        coeffs = dict(zip(keys, weights, strict=True))
        rs = [sum(coeffs[k] * t[k] for k in keys) / peak for t, peak in data]
        if min(rs) <= 0:
            continue
        scale = 1 / min(rs)
        # NOTE: the result is in memory at the end, and a chunked pass's pieces with it.
        if any(coeffs[k] * scale < 1 for k in FLOORS if k in coeffs):
            continue
        spread = max(rs) / min(rs)
        if best is None or spread < best[0]:
            best = (spread, {k: round(v * scale, 3) for k, v in coeffs.items()})
    assert best is not None
    return best


def fit(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """MODEL and SCREEN coefficients per method, fitted to the measured peaks."""
    fitted: dict[str, dict[str, dict[str, float]]] = {"MODEL": {}, "SCREEN": {}}
    for method in (*_memory.COMPOSED, "loop"):
        for table, screen in (("MODEL", False), ("SCREEN", True)):
            if method not in _memory.PROBED and not screen:
                continue
            data = [
                (
                    _memory.terms(method, _sizes(r, method, screen=screen), screen=screen),
                    r["peaks"][method] / r["itemsize"],
                )
                for r in rows
                if method in r["peaks"]
            ]
            spread, coeffs = _fit_one(data)
            fitted[table][method] = coeffs
            print(f"  {table} {method}: spread {spread:.2f}x  {coeffs}")
    return fitted


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    device = result["device"]
    lines = [
        "# Peak memory of every Hessian method, measured and predicted",
        "",
        f"torch {result['torch']}, {device}, {result['date']} (`python -m bench.hessian_memory`). "
        "Peaks measured by `derivs._memory.measured_peak` (the allocator's allocations and "
        "frees while the Hessian is computed: torch.profiler's memory events on CPU); "
        "predicted by `derivs._memory.hessian_peak`, the model the memory guard refuses by. "
        "Functions of `x` (float32): `predict = tanh(W x + b)` (the tutorial's), "
        "`mlp = tanh(W2 tanh(W1 x))`, `softplus = sin(W2 softplus(W1 x))`; `n` inputs, `m` "
        "outputs, `h` hidden units, `a` the intermediates the probe counted.",
        "",
        "| method | cases | model / measured: min | median | max | screen / measured: min "
        "| max | screen x margin / model: min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        rs = sorted(ratios(rows, method, device))
        ss = sorted(ratios(rows, method, device, screen=True))
        if rs:
            cover = min(
                s * _memory.SCREEN_MARGIN / r
                for s, r in zip(
                    ratios(rows, method, device, screen=True),
                    ratios(rows, method, device),
                    strict=True,
                )
            )
            lines.append(
                f"| {method} | {len(rs)} | {rs[0]:.2f} | {rs[len(rs) // 2]:.2f} | "
                f"**{rs[-1]:.2f}** | {ss[0]:.2f} | {ss[-1]:.2f} | {cover:.2f} |"
            )
    lines += [
        "",
        f"The model must stay within [1, {LIMIT:g}] on every case. Every case and method:",
        "",
        "| function | n | m | h | a | chunk | "
        + " | ".join(f"{m} MiB (pred/meas)" for m in METHODS)
        + " |",
        "|---" * (6 + len(METHODS)) + "|",
    ]
    for row in rows:
        cells = []
        for method in METHODS:
            if method not in row["peaks"]:
                cells.append("-")
                continue
            peak = row["peaks"][method]
            resolved = _resolved(method, row["m"], row["n"], device)
            pred = _memory.hessian_peak(resolved, _sizes(row, resolved))
            cells.append(f"{peak / 2**20:.3g} ({pred / peak:.2f})")
        lines.append(
            f"| {row['function']} | {row['n']} | {row['m']} | {row['h'] or '-'} | {row['a']} | "
            f"{row['chunk_size'] or '-'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--big", action="store_true", help="add the tutorial's 32 x 512 case")
    parser.add_argument("--fit", action="store_true", help="fit the model's coefficients")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "hessian_memory"))
    parser.add_argument("--rescore", metavar="JSON", help="re-score saved peaks, measure nothing")
    args = parser.parse_args(argv)
    if args.rescore:
        result = json.loads(Path(args.rescore).read_text())
    else:
        methods = args.methods.split(",")
        rows = [measure(c, methods, args.device) for c in cases(args.big)]
        result = {
            "torch": torch.__version__,
            "device": args.device,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "rows": rows,
        }
    if args.fit:
        fitted = fit(result["rows"])
        print(json.dumps(fitted, indent=1))
        _memory.MODEL.update(fitted["MODEL"])
        _memory.SCREEN.update(fitted["SCREEN"])
    text = render(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.rescore:
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
