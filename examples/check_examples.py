"""The functions of the ``derivs.check`` examples (docs/guide/check.md), importable for the CLI.

``python -m derivs check examples.check_examples:predict_d16 --shape 16`` checks the
tutorial's ``predict`` with fixed weights; ``energy_wrong_backward`` and
``energy_wrong_jvp`` each hide one deliberate bug in a custom ``torch.autograd.Function``.

Fixed parameters are float64 and follow the input's dtype and device (``.to(x)``), so the
functions work at any precision and on any device, and with complex input (the complex step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def predict(weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    """The tutorial's model: ``tanh(weight @ x + bias)``."""
    return F.linear(x, weight, bias).tanh()


def _draw(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


_W16, _B16 = _draw(16, 16, seed=16), _draw(16, seed=17)
_W512, _B512 = _draw(512, 512, seed=512), _draw(512, seed=513)
_W32, _B32 = _draw(32, 512, seed=32), _draw(32, seed=33)
_A = _draw(6, 4, seed=6)


def predict_d16(x: Tensor) -> Tensor:
    """``predict`` with a fixed 16 x 16 weight: the tutorial's first example (D = 16)."""
    return predict(_W16.to(x), _B16.to(x), x)


def predict_d512(x: Tensor) -> Tensor:
    """``predict`` with a fixed 512 x 512 weight (D = 512)."""
    return predict(_W512.to(x), _B512.to(x), x)


def predict_d512_out32(x: Tensor) -> Tensor:
    """``predict`` with a fixed 32 x 512 weight: the tutorial's Hessian example (32, 512, 512)."""
    return predict(_W32.to(x), _B32.to(x), x)


def _softplus(x: Tensor) -> Tensor:
    # log(1 + e^x), written with holomorphic operations so the complex step applies
    return torch.log1p(torch.exp(x))


class SoftplusWrongBackward(torch.autograd.Function):
    """softplus with a sign slip in its backward: ``sigmoid(-x)`` instead of ``sigmoid(x)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return _softplus(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(-x)  # BUG: should be sigmoid(x)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return tangent * torch.sigmoid(x)


class SoftplusWrongJvp(torch.autograd.Function):
    """softplus with the same sign slip in its forward-mode rule (``jvp``) only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return _softplus(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return tangent * torch.sigmoid(-x)  # BUG: should be sigmoid(x)


def energy(x: Tensor) -> Tensor:
    """``sum(softplus(A @ x))`` for a fixed 6 x 4 ``A``, in plain torch: correct."""
    return _softplus(_A.to(x) @ x).sum()


def energy_wrong_backward(x: Tensor) -> Tensor:
    """``energy`` through :class:`SoftplusWrongBackward`: rev-mode derivatives are wrong."""
    return SoftplusWrongBackward.apply(_A.to(x) @ x).sum()  # type: ignore[no-untyped-call,no-any-return]


def energy_wrong_jvp(x: Tensor) -> Tensor:
    """``energy`` through :class:`SoftplusWrongJvp`: forward-mode derivatives are wrong."""
    return SoftplusWrongJvp.apply(_A.to(x) @ x).sum()  # type: ignore[no-untyped-call,no-any-return]


def per_sample_norm(x: Tensor) -> Tensor:
    """``x / |x|`` along the last dim: sample-independent, so the sum trick is valid."""
    return x / x.pow(2).sum(-1, keepdim=True).sqrt()


def batch_norm(x: Tensor) -> Tensor:
    """``x - mean(x)`` over dim 0 when given a batch: it couples samples (no sum trick)."""
    return x - x.mean(0)
