"""The four sparse benchmark problems, written once over an array namespace.

Torch-free: ``bench.problems`` evaluates them with torch, ``bench.sparse_jax`` (the asdex
anchor, its own environment without torch) with jax.numpy, and ``numpy_ops`` with numpy, the
reference both are checked against at the problems' points (``tests/test_bench_problems.py``
for torch, ``bench.sparse_jax`` itself before it times anything). A namespace (``Ops``)
supplies the few array functions the formulas call; everything else is arithmetic, slicing
and ``.sum()``, which the three array types share.

Every problem is float64 and deterministic:

* ``brusselator``: the 2-D Brusselator reaction-diffusion right-hand side on a ``GRID x GRID``
  periodic grid, state ``(2, N, N)`` (species u, v), 5-point Laplacian, reaction terms
  ``1 + u^2 v - 4.4 u`` and ``3.4 u - u^2 v``, diffusion ``ALPHA = 10`` times ``(N - 1)^2``
  (as in the DiffEq benchmark), at the classic initial state. Jacobian ``2 N^2 x 2 N^2``,
  6 nonzeros per row (12,288 at N = 32).
* ``stencil``: ``x[i-1] - 2 x[i] + x[i+1] + sin(x[i])`` with zero boundary, ``n -> n``
  (``N = 10^4``), tridiagonal (``3 n - 2`` nonzeros).
* ``rosenbrock``: the chained Rosenbrock function
  ``sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2`` (``N = 10^4``); its Hessian is tridiagonal.
* ``conv``: ``tanh(conv2d(x, W, padding=1))``, ``x`` of shape ``(1, 28, 28)``, ``W`` of
  shape ``(8, 1, 3, 3)`` with entries ``sin(k) / 3``: Jacobian ``6272 x 784``, at most 9
  nonzeros per row.

The stencil, Rosenbrock and conv points are ``x[i] = cos(i) / 2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

ALPHA = 10.0
GRID = 32
N = 10**4
IMAGE = 28
CHANNELS = 8


class Ops(NamedTuple):
    """The array functions the formulas need, float64, from one array library."""

    roll: Callable[[Any, int, int], Any]  # roll(a, shift, axis)
    stack: Callable[[list[Any]], Any]
    pad1: Callable[[Any], Any]  # one zero on each side of a vector
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    tanh: Callable[[Any], Any]
    conv3x3: Callable[[Any, Any], Any]  # (1, H, W), (C, 1, 3, 3) -> (C, H, W), padding 1
    linspace: Callable[[float, float, int], Any]
    meshgrid: Callable[[Any, Any], tuple[Any, Any]]  # "ij" indexing
    arange: Callable[[int, int], Any]


class Problem(NamedTuple):
    """A benchmark problem: the function, its point, and whether its Hessian is wanted."""

    func: Callable[[Any], Any]
    x: Any
    hessian: bool


def brusselator(ops: Ops) -> Callable[[Any], Any]:
    """The Brusselator right-hand side for a state ``y`` of shape ``(2, N, N)``."""

    def lap(a: Any) -> Any:
        return (
            ops.roll(a, 1, 0) + ops.roll(a, -1, 0) + ops.roll(a, 1, 1) + ops.roll(a, -1, 1) - 4 * a
        )

    def f(y: Any) -> Any:
        n = y.shape[-1]
        u, v = y[0], y[1]
        scale = ALPHA * (n - 1) ** 2
        uuv = u * u * v
        return ops.stack([1 + uuv - 4.4 * u + scale * lap(u), 3.4 * u - uuv + scale * lap(v)])

    return f


def brusselator_point(ops: Ops, n: int = GRID) -> Any:
    """The classic initial state: ``u = 22 y (1 - y)^1.5``, ``v = 27 x (1 - x)^1.5``."""
    grid = ops.linspace(0.0, 1.0, n)
    x, y = ops.meshgrid(grid, grid)
    return ops.stack([22 * y * (1 - y) ** 1.5, 27 * x * (1 - x) ** 1.5])


def stencil(ops: Ops) -> Callable[[Any], Any]:
    """``x[i-1] - 2 x[i] + x[i+1] + sin(x[i])`` with ``x[-1] = x[n] = 0``."""

    def f(x: Any) -> Any:
        padded = ops.pad1(x)
        return padded[:-2] - 2 * x + padded[2:] + ops.sin(x)

    return f


def rosenbrock(x: Any) -> Any:
    """The chained Rosenbrock function (scalar); arithmetic only, so no namespace."""
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def conv_weight(ops: Ops) -> Any:
    """``W``: ``(8, 1, 3, 3)``, entries ``sin(k) / 3`` (k = 1, 2, ...)."""
    return (ops.sin(ops.arange(1, CHANNELS * 9 + 1)) / 3).reshape(CHANNELS, 1, 3, 3)


def conv(ops: Ops) -> Callable[[Any], Any]:
    """``tanh(conv2d(x, W, padding=1))`` for ``x`` of shape ``(1, 28, 28)``."""
    weight = conv_weight(ops)

    def f(x: Any) -> Any:
        return ops.tanh(ops.conv3x3(x, weight))

    return f


def point(ops: Ops, n: int) -> Any:
    """A deterministic point: ``x[i] = cos(i) / 2`` (``n`` entries)."""
    return ops.cos(ops.arange(0, n)) / 2


def problems(ops: Ops) -> dict[str, Problem]:
    """name -> the problem, as benchmarked (issue 15's sizes)."""
    return {
        "brusselator": Problem(brusselator(ops), brusselator_point(ops), False),
        "stencil": Problem(stencil(ops), point(ops, N), False),
        "rosenbrock": Problem(rosenbrock, point(ops, N), True),
        "conv": Problem(conv(ops), point(ops, IMAGE * IMAGE).reshape(1, IMAGE, IMAGE), False),
    }


def numpy_like(xp: Any, conv3x3: Callable[[Any, Any], Any]) -> Ops:
    """The namespace of an array library with numpy's API (numpy, jax.numpy), float64."""
    return Ops(
        roll=xp.roll,
        stack=xp.stack,
        pad1=lambda x: xp.pad(x, (1, 1)),
        sin=xp.sin,
        cos=xp.cos,
        tanh=xp.tanh,
        conv3x3=conv3x3,
        linspace=lambda a, b, n: xp.linspace(a, b, n),
        meshgrid=lambda a, b: tuple(xp.meshgrid(a, b, indexing="ij")),
        arange=lambda a, b: xp.arange(a, b, dtype=xp.float64),
    )


def numpy_ops() -> Ops:
    """The numpy namespace: the reference the torch and jax evaluations are checked against
    (its 3x3 convolution is nine shifted slices, written apart from torch's and XLA's)."""
    import numpy as np

    def conv3x3(x: Any, w: Any) -> Any:
        h, wd = x.shape[-2:]
        padded = np.pad(x[0], 1)
        out = np.zeros((w.shape[0], h, wd))
        for di in range(3):
            for dj in range(3):
                out += w[:, 0, di, dj, None, None] * padded[None, di : di + h, dj : dj + wd]
        return out

    return numpy_like(np, conv3x3)


def pattern(name: str) -> set[tuple[int, int]]:
    """The true nonzeros ``(row, column)`` of a problem's matrix at its size, from the
    formulas (the outputs and inputs flattened in C order)."""
    if name == "brusselator":
        return _brusselator_pattern(GRID)
    if name in ("stencil", "rosenbrock"):
        return {(i, j) for i in range(N) for j in (i - 1, i, i + 1) if 0 <= j < N}
    if name == "conv":
        return _conv_pattern(CHANNELS, IMAGE, IMAGE)
    raise ValueError(f"pattern: no problem named {name!r}")


def _brusselator_pattern(n: int) -> set[tuple[int, int]]:
    """Each species' own 5-point stencil (periodic), plus the other species at the same cell."""
    hw = n * n
    pairs = set()
    for s in range(2):
        for i in range(n):
            for j in range(n):
                row = s * hw + i * n + j
                for di, dj in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                    pairs.add((row, s * hw + ((i + di) % n) * n + (j + dj) % n))
                pairs.add((row, (1 - s) * hw + i * n + j))
    return pairs


def _conv_pattern(c: int, h: int, w: int) -> set[tuple[int, int]]:
    """Every output pixel of every channel reads the 3 x 3 input pixels around it."""
    pairs = set()
    for o in range(c):
        for i in range(h):
            for j in range(w):
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        if 0 <= i + di < h and 0 <= j + dj < w:
                            pairs.add(((o * h + i) * w + j, (i + di) * w + j + dj))
    return pairs
