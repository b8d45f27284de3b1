"""Measure the accuracy, error-estimate coverage and cost of derivs.oracles' fd schemes.

Usage::

    python -m tools.oracle_accuracy [--draws 200] [--seed 0] [--markdown]

For each scheme (central, richardson, complex_step), each compute dtype (float64, and
float32 as on mps) and each closed form (linear map, sin, x^T A x, the tutorial's
tanh-linear; Hessians of x^T A x, sum(sin x) and the vector-valued tanh-linear), draws
random inputs (numpy, seeded), and reports:

* the relative error, norm-wise: max|value - true| / max|true|, median and worst over draws;
* coverage: the share of draws whose every element satisfies |value - true| <= error;
* worst error/estimate: the largest elementwise |value - true| / error over all draws;
* tightness: the median over draws of max(error) / max|value - true| (1 = exact estimate);
* cost: evaluations of func (fd_jacobian) or of its autograd gradient (fd_hessian) per
  input element, fixed costs (the reference call, the noise measurement and the
  complex-step guard) excluded.

The accuracy table in docs/oracles.md was produced by this script.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from derivs import oracles
from derivs.oracles._noise import _DRAWS as NOISE_DRAWS

# A case: func, its args (float64 tensors holding values exact in the compute dtype) and
# the closed-form derivative, computed in numpy's long double (80-bit on x86: eps 1e-19) so
# that its own rounding does not count against the oracle.
Case = tuple[Callable[..., Any], tuple[torch.Tensor, ...], np.ndarray]
L = np.longdouble


def _draw(
    rng: np.random.Generator, exact: torch.dtype, low: float, high: float, size: Any
) -> np.ndarray:
    a = rng.uniform(low, high, size) if low < high else rng.normal(size=size)
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(exact).double().numpy()


def _operands(rng: np.random.Generator, exact: torch.dtype, n: int, m: int) -> tuple[Any, ...]:
    """x (n), A (m, n), b (m), S (n, n) exactly representable in ``exact``; x, A, S in long
    double (the reference precision); and ``y = tanh(A x + b)`` in long double."""
    x = _draw(rng, exact, -2, 2, n)
    A, b, S = (_draw(rng, exact, 0, 0, s) for s in ((m, n), m, (n, n)))
    xl, Al, bl, Sl = (np.asarray(v, dtype=L) for v in (x, A, b, S))
    return x, A, b, S, xl, Al, Sl, np.tanh(Al @ xl + bl)


def jac_cases(rng: np.random.Generator, exact: torch.dtype) -> dict[str, Case]:
    x, A, b, S, xl, Al, Sl, y = _operands(
        rng, exact, int(rng.integers(2, 17)), int(rng.integers(1, 9))
    )
    t = torch.from_numpy
    return {
        "linear A x + b": (lambda x, A, b: A @ x + b, (t(x), t(A), t(b)), Al),
        "sin(x)": (torch.sin, (t(x),), np.diag(np.cos(xl))),
        "x^T S x (gradient)": (lambda x, S: x @ S @ x, (t(x), t(S)), (Sl + Sl.T) @ xl),
        "tanh(W x + b)": (
            lambda x, W, b: torch.tanh(W @ x + b),
            (t(x), t(A), t(b)),
            (1 - y**2)[:, None] * Al,
        ),
    }


def hess_cases(rng: np.random.Generator, exact: torch.dtype) -> dict[str, Case]:
    x, A, b, S, xl, Al, Sl, y = _operands(
        rng, exact, int(rng.integers(2, 9)), int(rng.integers(1, 5))
    )
    t = torch.from_numpy
    return {
        "x^T S x": (lambda x, S: x @ S @ x, (t(x), t(S)), Sl + Sl.T),
        "sum(sin x)": (lambda x: torch.sin(x).sum(), (t(x),), np.diag(-np.sin(xl))),
        "tanh(W x + b) (vector)": (
            lambda x, W, b: torch.tanh(W @ x + b),
            (t(x), t(A), t(b)),
            (-2 * y * (1 - y**2))[:, None, None] * Al[:, :, None] * Al[:, None, :],
        ),
    }


class Counter:
    def __init__(self, func: Callable[..., Any]) -> None:
        self.func, self.calls = func, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.func(*args)


def measure(draws: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for kind, cases, oracle in (
        ("jacobian", jac_cases, oracles.fd_jacobian),
        ("hessian", hess_cases, oracles.fd_hessian),
    ):
        for scheme in oracles.SCHEMES:
            for cdtype in (torch.float64, torch.float32):
                rng = np.random.default_rng(seed)
                stats: dict[str, dict[str, list[float]]] = {}
                for _ in range(draws):
                    for name, (func, args, true) in cases(rng, cdtype).items():
                        counted = Counter(func)
                        est = oracle(counted, args, scheme=scheme, compute_dtype=cdtype)
                        n = args[0].numel()
                        err = np.abs(est.value.numpy().astype(L) - true)
                        bound = est.error.numpy().astype(L)
                        scale = float(np.abs(true).max())
                        s = stats.setdefault(
                            name, {"rel": [], "cover": [], "ratio": [], "tight": [], "cost": []}
                        )
                        s["rel"].append(float(err.max()) / scale if scale else float(err.max()))
                        s["cover"].append(float(bool((err <= bound).all())))
                        s["ratio"].append(float((err / np.maximum(bound, L(1e-300))).max()))
                        if float(err.max()) > 0:
                            s["tight"].append(float(bound.max()) / float(err.max()))
                        # the reference call, the noise measurement's jittered runs; for
                        # complex step also the probe and the guard
                        fixed = 1 + NOISE_DRAWS + (1 + 4 * 6 if scheme == "complex_step" else 0)
                        s["cost"].append((counted.calls - fixed) / n)
                for name, s in stats.items():
                    rows.append(
                        {
                            "kind": kind,
                            "case": name,
                            "scheme": scheme,
                            "dtype": str(cdtype).removeprefix("torch."),
                            "median": statistics.median(s["rel"]),
                            "worst": max(s["rel"]),
                            "coverage": statistics.mean(s["cover"]),
                            "ratio": max(s["ratio"]),
                            "tightness": statistics.median(s["tight"]) if s["tight"] else 0.0,
                            "cost": statistics.median(s["cost"]),
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    opts = parser.parse_args()
    rows = measure(opts.draws, opts.seed)
    header = (
        "| oracle | closed form | scheme | compute dtype | median rel. error | worst rel. error"
        " | coverage | worst error/estimate | tightness | evals/element |"
    )
    print(header if opts.markdown else header.replace("|", " "))
    if opts.markdown:
        print("|" + "---|" * 10)
    for r in rows:
        cells = [
            r["kind"],
            r["case"],
            r["scheme"],
            r["dtype"],
            f"{r['median']:.1e}",
            f"{r['worst']:.1e}",
            f"{100 * r['coverage']:.1f}%",
            f"{r['ratio']:.2g}",
            f"{r['tightness']:.0f}x" if r["tightness"] >= 10 else f"{r['tightness']:.1f}x",
            f"{r['cost']:g}",
        ]
        print("| " + " | ".join(cells) + " |" if opts.markdown else "  ".join(cells))


if __name__ == "__main__":
    main()
