"""The scalar families of sparse functions (Hessians): chained Rosenbrock, stencil energies,
per-sample energies; each structure derived from the parameters by plain loops."""

from __future__ import annotations

import itertools

import torch
from hypothesis import strategies as st

from ._caps import MAX_ELEMENTS, MAX_SIDE
from ._sparse_spec import Spec, coef, pairs_to_bool, seed


def _symmetric(n: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    return pairs_to_bool(n, n, pairs + [(j, i) for i, j in pairs])


def rosenbrock(draw: st.DrawFn) -> Spec:
    """The chained Rosenbrock function with lag ``L``: Hessian nonzero at ``|i - j| in {0, L}``."""
    n = draw(st.integers(2, MAX_ELEMENTS))
    lag = draw(st.integers(1, min(3, n - 1)))
    a = draw(st.sampled_from([100.0, 1.0, 10.0]))
    body = f"({a} * (x[{lag}:] - x[:-{lag}] ** 2) ** 2 + (1.0 - x[:-{lag}]) ** 2).sum()"
    pairs = [p for i in range(n - lag) for p in ((i, i), (i + lag, i + lag), (i, i + lag))]
    return Spec(
        "rosenbrock", "rosenbrock", ("x",), ((n,),), (), body, _symmetric(n, pairs),
        params={"lag": lag},
    )  # fmt: skip


def energy(draw: st.DrawFn) -> Spec:
    """``sum c (grad x)^2 + sum phi(x)``: a nearest-neighbour energy in 1-D or 2-D."""
    two_d = draw(st.booleans())
    periodic = draw(st.booleans())
    onsite = draw(st.sampled_from(["cos(x).sum()", "(x ** 4).sum()"]))
    c = coef(draw)
    if two_d:
        h = draw(st.integers(1, MAX_SIDE))
        w = draw(st.integers(1, MAX_ELEMENTS // h))
    else:
        h, w = 1, draw(st.integers(1 if periodic else 2, MAX_ELEMENTS))
    shape = (h, w) if two_d else (w,)
    dims = [0, 1] if two_d else [0]
    diffs = []
    for d in dims:
        if periodic:
            diffs.append(f"(x.roll(-1, {d}) - x)")
        elif two_d:
            diffs.append("(x[1:, :] - x[:-1, :])" if d == 0 else "(x[:, 1:] - x[:, :-1])")
        else:
            diffs.append("(x[1:] - x[:-1])")
    body = " + ".join(f"({c} * {t} ** 2).sum()" for t in diffs) + f" + {onsite}"
    pairs = [(i * w + j, i * w + j) for i in range(h) for j in range(w)]
    for i, j in itertools.product(range(h), range(w)):
        for di, dj in ((1, 0), (0, 1)) if two_d else ((0, 1),):
            r, s = i + di, j + dj
            if periodic:
                r, s = r % h, s % w
            if r < h and s < w:
                pairs.append((i * w + j, r * w + s))
    return Spec(
        "energy", "energy", ("x",), (shape,), (), body, _symmetric(h * w, pairs),
        params={"periodic": periodic, "two_d": two_d},
    )  # fmt: skip


def block_energy(draw: st.DrawFn) -> Spec:
    """``softplus(x @ W1).sum() + (x ** 2).sum()`` over a batch ``(B, k)``: block-diagonal H."""
    b = draw(st.integers(1, 4))
    k = draw(st.integers(1, MAX_ELEMENTS // b))
    p = draw(st.integers(1, MAX_SIDE))
    pairs = [(s * k + i, s * k + j) for s in range(b) for i in range(k) for j in range(k)]
    return Spec(
        "block_energy", "block_energy", ("x",), ((b, k),), (), "softplus(x @ W1).sum() + (x ** 2).sum()",
        pairs_to_bool(b * k, b * k, pairs), consts={"W1": f"randn(({k}, {p}), seed={seed(draw, 1)})"},
        params={"batch": b},
    )  # fmt: skip
