"""Pinned reproducers of what the curvature runs (tests/test_curvature.py) found upstream.

In the style of tests/test_upstream.py: each asserts the bug as measured on torch 2.13.0, so
it fails the day upstream fixes it; then the entries that name it in
``derivs/conformance/expected_failures/`` go.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import hessian, jacrev, vjp, vmap

X = torch.tensor([[0.7, -0.2]], dtype=torch.float64)
W = torch.tensor([1.3, 0.5], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


def _grad_weight(x: torch.Tensor, batched: bool) -> torch.Tensor:
    """d layer_norm(x, w) . 1 / d w, by vjp, with a batch of one cotangent under vmap or not."""
    _, pull = vjp(lambda w: F.layer_norm(x, (2,), w), W)
    ones = torch.ones(1, 2, dtype=torch.float64)
    return vmap(pull)(ones[None])[0][0] if batched else pull(ones)[0]


def test_torch_func_vmap_drops_layer_norm_normalisation_in_its_double_backward() -> None:
    """The vjp over ``x`` of a vmapped vjp of layer_norm over its weight treats the mean and
    the standard deviation as constants: ``d (dy * xhat) / dx`` comes out as ``rstd * dy``.

    Unbatched (and by central differences) the derivative is ``5.5e-05 * [[1, -1], [-1, 1]]``
    (with two features ``xhat`` is nearly ``+-1`` whatever ``x``; only ``eps`` moves it); under
    vmap it is ``2.2222 * I``, ``rstd`` times the identity, as if ``xhat = (x - mean) * rstd``
    were ``x`` times a constant. Every
    torch.func Hessian (jacrev of jacrev, ``torch.func.hessian``) of a network with a
    LayerNorm inherits it, and so does curvlinops' ``HessianLinearOperator`` (a vmapped
    ``jvp`` of ``jacrev``), on every drawn LayerNorm model of tests/test_curvature.py.
    """
    rstd = 1 / torch.sqrt(X.var(unbiased=False) + 1e-5)
    right = torch.stack([vjp(lambda x: _grad_weight(x, False), X)[1](e)[0] for e in EYE])
    wrong = torch.stack([vjp(lambda x: _grad_weight(x, True), X)[1](e)[0] for e in EYE])
    assert torch.allclose(
        right.squeeze(1), 5.4866e-05 * torch.tensor([[1.0, -1], [-1, 1]]).double(), rtol=1e-3
    )
    assert torch.allclose(wrong.squeeze(1), rstd * EYE)


def test_torch_func_hessian_of_a_layer_norm_is_wrong() -> None:
    """The mixed weight-input block of a LayerNorm loss: torch.func against autograd."""

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (F.layer_norm(x, (2,), w) * 3.0).sum() ** 2

    xx, ww = X.clone().requires_grad_(), W.clone().requires_grad_()
    (gw,) = torch.autograd.grad(f(xx, ww), ww, create_graph=True)
    autograd = torch.stack([torch.autograd.grad(g, xx, retain_graph=True)[0][0] for g in gw])
    func = hessian(f, argnums=(0, 1))(X, W)[1][0].squeeze(1)
    assert torch.allclose(
        autograd, 1.58e-3 * torch.tensor([[1.0, -1], [-1, 1]]).double(), rtol=1e-2
    )
    assert torch.allclose(func, jacrev(jacrev(f, argnums=1), argnums=0)(X, W).squeeze(1))
    assert func.diagonal().min() > 31  # is 1.6e-3: off by four orders of magnitude
