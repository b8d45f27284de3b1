"""The sparse benchmark problems, shared by ``test_bench_sparse.py`` and the JAX side
(``tools/bench_sparse_jax.py`` writes the same functions in jax.numpy; keep them in step).

Every problem is float64 and deterministic:

* ``brusselator``: the 2-D Brusselator reaction-diffusion right-hand side on an ``N x N``
  periodic grid, state ``(2, N, N)`` (species u, v), 5-point Laplacian, the standard
  reaction terms ``1 + u^2 v - 4.4 u`` and ``3.4 u - u^2 v``, diffusion ``alpha = 10``
  (times ``(N - 1)^2``, as in the DiffEq benchmark). Jacobian ``2 N^2 x 2 N^2``, 6 nonzeros
  per row (12,288 at N = 32).
* ``stencil``: the 1-D stencil ``x[i-1] - 2 x[i] + x[i+1] + sin(x[i])`` with zero boundary,
  ``n -> n``, tridiagonal (``3 n - 2`` nonzeros).
* ``rosenbrock``: the chained Rosenbrock function
  ``sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``; its Hessian is tridiagonal.
* ``conv``: ``tanh(conv2d(x, W, padding=1))``, ``x`` of shape ``(1, 28, 28)``, ``W`` of shape
  ``(8, 1, 3, 3)``: Jacobian ``6272 x 784`` with respect to ``x``, 9 nonzeros per row inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALPHA = 10.0


def brusselator(y: torch.Tensor) -> torch.Tensor:
    """The Brusselator right-hand side for the state ``y`` of shape ``(2, N, N)``."""
    n = y.shape[-1]
    u, v = y[0], y[1]
    scale = ALPHA * (n - 1) ** 2

    def lap(a: torch.Tensor) -> torch.Tensor:
        return a.roll(1, 0) + a.roll(-1, 0) + a.roll(1, 1) + a.roll(-1, 1) - 4 * a

    uuv = u * u * v
    du = 1 + uuv - 4.4 * u + scale * lap(u)
    dv = 3.4 * u - uuv + scale * lap(v)
    return torch.stack([du, dv])


def brusselator_point(n: int) -> torch.Tensor:
    """The classic initial state: ``u = 22 y (1 - y)^1.5``, ``v = 27 x (1 - x)^1.5``."""
    grid = torch.linspace(0, 1, n, dtype=torch.float64)
    x, y = torch.meshgrid(grid, grid, indexing="ij")
    return torch.stack([22 * y * (1 - y) ** 1.5, 27 * x * (1 - x) ** 1.5])


def stencil(x: torch.Tensor) -> torch.Tensor:
    """``x[i-1] - 2 x[i] + x[i+1] + sin(x[i])`` with ``x[-1] = x[n] = 0``."""
    padded = F.pad(x, (1, 1))
    return padded[:-2] - 2 * x + padded[2:] + torch.sin(x)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """The chained Rosenbrock function (scalar)."""
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def conv_weight() -> torch.Tensor:
    """``W``: ``(8, 1, 3, 3)``, entries ``sin(k)`` scaled by ``1/3`` (k = 1, 2, ...)."""
    return (torch.arange(1, 73, dtype=torch.float64).sin() / 3).reshape(8, 1, 3, 3)


def conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``tanh(conv2d(x, W, padding=1))`` for ``x`` of shape ``(1, 28, 28)``."""
    return torch.tanh(F.conv2d(x[None], weight, padding=1)[0])


def point(n: int) -> torch.Tensor:
    """A deterministic point: ``x[i] = cos(i) / 2`` (``n`` entries, float64)."""
    return torch.arange(n, dtype=torch.float64).cos() / 2


def conv_point() -> torch.Tensor:
    return point(28 * 28).reshape(1, 28, 28)


EXPECTED = {
    # problem: (nnz, the most per row), from the formulas above
    "brusselator": (12 * 32 * 32, 6),
    "stencil": (3 * 10**4 - 2, 3),
    "rosenbrock": (3 * 10**4 - 2, 3),
    "conv": (8 * (28 * 28 * 9 - 4 * 28 * 3 + 4), 9),
}
assert math.isfinite(ALPHA)
