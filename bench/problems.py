"""Every benchmark problem, in torch, with its closed forms: each is defined here once.

* the tutorial's ``predict(weight, bias, x) = F.linear(x, weight, bias).tanh()``, its inputs
  and its Jacobian, its Hessian and its sum's Hessian-vector product in closed form; two
  deeper networks of the memory model (``mlp``, ``softplus``);
* scalar functions of one vector with their Hessian-vector products in closed form
  (``SCALAR``: the tutorial's ``x.sin().sum()``, a rolled product, a softplus layer, the
  chained Rosenbrock function), for ``hvp``/``vhp``;
* the four sparse problems of ``bench.sparse_problems`` (Brusselator, stencil, Rosenbrock,
  conv) evaluated with torch (``TORCH``), with the stencil's Jacobian and Rosenbrock's
  Hessian in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from bench import sparse_problems as sp

# --- the tutorial's function -----------------------------------------------------------------


def predict(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The tutorial's function: one linear layer and a tanh."""
    return F.linear(x, weight, bias).tanh()


def predict_inputs(
    n_in: int, n_out: int, device: str, *, batch: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, bias, x)`` drawn like the tutorial's (``randn``), float32, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_out, n_in, generator=gen)
    bias = torch.randn(n_out, generator=gen)
    shape = (n_in,) if batch is None else (batch, n_in)
    x = torch.randn(shape, generator=gen)
    return weight.to(device), bias.to(device), x.to(device)


def predict_jacobian(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Closed form d predict / d x = (1 - y**2)[..., :, None] * W (x may carry a batch dim)."""
    y = predict(weight, bias, x)
    return (1 - y**2)[..., :, None] * weight


def predict_hessian(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Closed form d2 predict_i / dx_j dx_k = -2 y_i (1 - y_i**2) W_ij W_ik."""
    y = predict(weight, bias, x)
    return (-2 * y * (1 - y**2))[..., :, None, None] * weight[:, :, None] * weight[:, None, :]


def predict_hvp(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Closed form ``H v`` of ``predict(weight, bias, x).sum()`` in ``x``: ``W^T (s * (W v))``
    with ``s = -2 y (1 - y**2)``, without the Hessian (x and v may carry a batch dim)."""
    y = predict(weight, bias, x)
    return (-2 * y * (1 - y**2) * (v @ weight.T)) @ weight


def mlp(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Two tanh layers: ``tanh(W2 tanh(W1 x))``."""
    return torch.tanh(w2 @ torch.tanh(w1 @ x))


def softplus(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Two layers, softplus then sin: more intermediates per layer than tanh."""
    return (w2 @ F.softplus(w1 @ x)).sin()


# --- scalar functions and their Hessian-vector products -------------------------------------

WIDTH = 10  # softplus_mlp reads x as (n / WIDTH, WIDTH) rows: n must be a multiple


class Scalar(NamedTuple):
    """A scalar function of one vector, with its Hessian-vector product in closed form."""

    name: str
    formula: str
    func: Callable[[torch.Tensor], torch.Tensor]
    hvp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sin_sum(x: torch.Tensor) -> torch.Tensor:
    """The tutorial's scalar function."""
    return x.sin().sum()


def sin_sum_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``H = diag(-sin x)``, so ``H v = v H = -sin(x) * v``."""
    return -x.sin() * v


def sin_sum_products(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor]:
    """``sin_sum_hvp`` as ``derivs.hvp`` and ``derivs.vhp`` return it: one entry per primal."""
    return (sin_sum_hvp(x, v),)


def sin_roll(x: torch.Tensor) -> torch.Tensor:
    return (x.sin() * x.roll(1)).sum()


def sin_roll_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # f = sum_i sin(x_i) x_{i-1}: d2f/dx_i^2 = -sin(x_i) x_{i-1}, d2f/dx_i dx_{i-1} = cos(x_i)
    return -x.sin() * x.roll(1) * v + x.cos() * v.roll(1) + (x.cos() * v).roll(-1)


def _mixing(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(n)
    return (torch.randn(WIDTH, WIDTH, generator=gen) / math.sqrt(WIDTH)).to(device, dtype)


def softplus_mlp(x: torch.Tensor) -> torch.Tensor:
    a = _mixing(x.numel(), x.device, x.dtype)
    return F.softplus(x.reshape(-1, WIDTH) @ a).sum()


def softplus_mlp_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # f = sum softplus(X A): H v = (sigmoid'(X A) * (V A)) A^T, sigmoid' = s (1 - s)
    a = _mixing(x.numel(), x.device, x.dtype)
    s = torch.sigmoid(x.reshape(-1, WIDTH) @ a)
    return ((s * (1 - s) * (v.reshape(-1, WIDTH) @ a)) @ a.T).reshape(x.shape)


def rosenbrock_bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chained Rosenbrock Hessian's diagonal and its (symmetric) first off-diagonal."""
    a, b = x[:-1], x[1:]
    diag = torch.zeros_like(x)
    diag[:-1] += 1200 * a**2 - 400 * b + 2
    diag[1:] += 200
    return diag, -400 * a


def rosenbrock_hvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    diag, off = rosenbrock_bands(x)
    out = diag * v
    out[:-1] += off * v[1:]
    out[1:] += off * v[:-1]
    return out


def rosenbrock_hessian(x: torch.Tensor) -> torch.Tensor:
    """The chained Rosenbrock Hessian, dense: tridiagonal."""
    diag, off = rosenbrock_bands(x)
    return torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)


SCALAR = {
    p.name: p
    for p in (
        Scalar("sin_sum", "x.sin().sum() (the tutorial's)", sin_sum, sin_sum_hvp),
        Scalar("sin_roll", "(x.sin() * x.roll(1)).sum()", sin_roll, sin_roll_hvp),
        Scalar(
            "softplus_mlp",
            f"F.softplus(x.reshape(-1, {WIDTH}) @ A).sum(), A {WIDTH}x{WIDTH}",
            softplus_mlp,
            softplus_mlp_hvp,
        ),
        Scalar(
            "rosenbrock",
            "(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2).sum() (the sparse problem's)",
            sp.rosenbrock,
            rosenbrock_hvp,
        ),
    )
}


def vector_inputs(n: int, device: str, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, v)``: two ``randn`` vectors of ``n`` float32 entries on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen).to(device), torch.randn(n, generator=gen).to(device)


# --- the sparse problems ---------------------------------------------------------------------

F64 = torch.float64

TORCH = sp.Ops(
    roll=torch.roll,
    stack=torch.stack,
    pad1=lambda x: F.pad(x, (1, 1)),
    sin=torch.sin,
    cos=torch.cos,
    tanh=torch.tanh,
    conv3x3=lambda x, w: F.conv2d(x[None], w, padding=1)[0],
    linspace=lambda a, b, n: torch.linspace(a, b, n, dtype=F64),
    meshgrid=lambda a, b: torch.meshgrid(a, b, indexing="ij"),
    arange=lambda a, b: torch.arange(a, b, dtype=F64),
)

brusselator = sp.brusselator(TORCH)
stencil = sp.stencil(TORCH)
rosenbrock = sp.rosenbrock
conv = sp.conv(TORCH)


def point(n: int) -> torch.Tensor:
    """The sparse problems' point ``x[i] = cos(i) / 2``, float64."""
    return sp.point(TORCH, n)  # type: ignore[no-any-return]


def sparse() -> dict[str, sp.Problem]:
    """The four sparse problems at their benchmark sizes, in torch."""
    return sp.problems(TORCH)


def stencil_jacobian(x: torch.Tensor) -> torch.Tensor:
    """d stencil / dx: tridiagonal, 1 off the diagonal, cos(x) - 2 on it."""
    ones = torch.ones(x.numel() - 1, dtype=x.dtype, device=x.device)
    return torch.diag(x.cos() - 2) + torch.diag(ones, 1) + torch.diag(ones, -1)


# --- a model's loss over its parameter dict ---------------------------------------------------


def param_mlp_loss(
    params: dict[str, torch.Tensor], X: torch.Tensor, Y: torch.Tensor
) -> torch.Tensor:
    """An MLP's MSE loss as a function of its parameter dict (``nn.Module`` names)."""
    h = torch.tanh(F.linear(X, params["0.weight"], params["0.bias"]))
    out = torch.tanh(F.linear(h, params["2.weight"], params["2.bias"]))
    return ((out - Y) ** 2).mean()


def param_mlp_inputs(
    n: int, device: str, *, batch: int = 16, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``(params, tangents, X, Y)`` for ``param_mlp_loss`` with about ``n`` parameters.

    Two square tanh layers of width ``round(sqrt(n / 2))`` (``2 w**2 + 2 w`` parameters),
    weights ``randn / sqrt(w)``, float32, on ``device``.
    """
    width = max(1, round(math.sqrt(n / 2)))
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "0.weight": (width, width),
        "0.bias": (width,),
        "2.weight": (width, width),
        "2.bias": (width,),
    }
    params = {k: torch.randn(s, generator=gen) / math.sqrt(width) for k, s in shapes.items()}
    tangents = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    X, Y = torch.randn(batch, width, generator=gen), torch.randn(batch, width, generator=gen)

    def to(tree: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: t.to(device) for k, t in tree.items()}

    return to(params), to(tangents), X.to(device), Y.to(device)


# --- derivs.check at scale: one tanh layer, its weight closed over ------------------------------


def tanh_layer(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``tanh(W1 @ x) @ w2``: issue 25's function for ``derivs.check`` at 10^4 to 10^6 inputs."""
    return torch.tanh(w1 @ x) @ w2


def tanh_layer_gradient(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Closed form d tanh_layer / dx = W1^T (w2 (1 - tanh(W1 x)**2))."""
    return w1.T @ (w2 * (1 - torch.tanh(w1 @ x) ** 2))


def tanh_layer_inputs(
    n: int, *, hidden: int = 16, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w1, w2, x)``: ``w1`` hidden x n ``randn / sqrt(n)``, ``w2`` and ``x`` ``randn``;
    float64 on the cpu (check's oracles compute in float64)."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    w2 = torch.randn(hidden, generator=gen, dtype=torch.float64)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    return w1, w2, x
