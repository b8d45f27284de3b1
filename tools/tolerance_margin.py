"""How much of the suite's tolerance genuine rounding uses: the per-entry count's headroom.

Usage::

    python -m tools.tolerance_margin [--examples 300] [--seed 0] [--dtype float32]

Draws generated problems as the operator properties do (``derivs.strategies.functions``:
half of them with every size free, half with a 16- to 32-element input and output, the
blocks the per-entry count tightens), and compares, as the properties do, derivs' Jacobians
(``rev`` and ``fwd``) and Hessians with the naive-loop oracles in the same dtype, and the
last Jacobian with the finite-difference oracle (complex step where the function allows it,
else Richardson; its error estimate counted twice, as ``assert_close`` does). For each it
records the worst ``|diff| / allowed`` under ``tests/suite_helpers.assert_close_scaled``'s
per-entry count (``entry_terms``) and under the block's count it replaced, and prints the
largest share by comparison and block size: a share of 1 is a false alarm. The figures in
docs/suite/trust.md ("Float32 tolerances per entry") were produced by this script.
"""

from __future__ import annotations

import argparse
import collections
import math
import pathlib
import sys
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import derivs
import derivs.strategies as ds
from derivs import oracles
from derivs.testing import ERROR_SAFETY, Tolerance

# NOTE: the suite's helpers under the name its tests import them by (``suite_helpers``, with
# tests/ on the path as pytest puts it there), so that under pytest this is the same module,
# not a second copy as ``tests.suite_helpers`` would be.
TESTS = str(pathlib.Path(__file__).resolve().parents[1] / "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)
from suite_helpers import fd_estimate, scaled_tolerance, tensor_leaves, values_of  # noqa: E402

# NOTE: Hessians whose loop oracle would take over a second on 2 cores are skipped.
MAX_HESSIAN_ENTRIES = 40_000
LARGE_SHAPES = ((32,), (4, 8), (2, 4, 4), (8, 4), (16,), (24,))
Row = tuple[str, int, float, float]  # comparison, block numel, share per entry, per block


def shares(actual: Any, expected: Any, values: Any, error: Any = None) -> tuple[int, float, float]:
    """The largest block's numel and the worst |diff| / allowed under both counts."""
    entry = scaled_tolerance(actual, expected, values)
    assert entry is not None, "no tensors to compare"
    block = scaled_tolerance(actual, expected, values, terms=entry.numel)
    assert block is not None
    leaves_a, leaves_e = tensor_leaves(actual), tensor_leaves(expected)
    errors = [None] * len(leaves_e) if error is None else tensor_leaves(error)

    def worst(tol: Tolerance) -> float:
        found = 0.0
        for a, e, err in zip(leaves_a, leaves_e, errors, strict=True):
            diff, e = (a.double() - e.double()).abs(), e.double()
            extra = 0.0 if err is None else ERROR_SAFETY * err.double().abs()
            found = max(found, float((diff / (tol.atol + tol.rtol * e.abs() + extra)).max()))
        return found

    return entry.numel, worst(entry), worst(block)


def compare(p: ds.Problem) -> list[Row]:
    """The comparisons of one problem, as the operator properties make them."""
    argnums = tuple(range(p.func.n_args))
    values = values_of(p)
    rows: list[Row] = []
    loop = oracles.loop_jacobian(p.func, p.args, argnums)
    for method in ("rev", "fwd"):
        jac = derivs.jacobian(p.func, argnums, method=method)(*p.args)
        rows.append((f"jacobian {method} vs loop", *shares(jac, loop, values)))
    scheme, est = fd_estimate(p.func, p.args, argnums, order=1, real_analytic=p.func.real_analytic)
    rows.append((f"jacobian fwd vs fd ({scheme})", *shares(jac, est.value, values, est.error)))
    inputs = sum(a.numel() for a in p.args)
    if math.prod(p.func.out_shape) * inputs**2 <= MAX_HESSIAN_ENTRIES:
        hess = derivs.hessian(p.func, argnums)(*p.args)
        ref = oracles.loop_hessian(p.func, p.args, argnums)
        rows.append(("hessian vs loop", *shares(hess, ref, values)))
    return rows


def measure(examples: int, seed: int, dtype: torch.dtype) -> list[Row]:
    rows: list[Row] = []
    large = st.sampled_from(LARGE_SHAPES)

    @settings(
        max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def draw(data: st.DataObject) -> None:
        sized = data.draw(st.booleans(), label="large")
        kwargs: dict[str, Any] = (
            {"in_shapes": st.tuples(large), "out_shape": large} if sized else {"coincide": None}
        )
        func = data.draw(ds.functions(**kwargs), label="func")
        rows.extend(compare(data.draw(ds.problems(func, device="cpu", dtype=dtype))))

    hypothesis_seed(seed)(draw)()
    return rows


def _band(numel: int) -> str:
    return "<= 64" if numel <= 64 else "65-1024" if numel <= 1024 else "> 1024"


def table(rows: list[Row]) -> str:
    groups: dict[tuple[str, str], list[Row]] = collections.defaultdict(list)
    for row in rows:
        groups[(row[0], _band(row[1]))].append(row)
    lines = [
        "| comparison | block numel | comparisons | worst share, per entry | worst share, per block |",
        "|---|---|---|---|---|",
    ]
    for (name, band), group in sorted(groups.items()):
        lines.append(
            f"| {name} | {band} | {len(group)} | {max(r[2] for r in group):.3g} |"
            f" {max(r[3] for r in group):.3g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="problems drawn")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    opts = parser.parse_args()
    rows = measure(opts.examples, opts.seed, getattr(torch, opts.dtype))
    print(f"{len(rows)} comparisons ({opts.examples} problems, seed {opts.seed}, {opts.dtype})")
    print(table(rows))


if __name__ == "__main__":
    main()
