"""Custom ``torch.autograd.Function``s shared by the tests of ``derivs.check``: softplus as
users write it (setup_context and a vmap rule, with or without a jvp), and a factory that
plants a wrong rule into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class SoftplusNoJvp(torch.autograd.Function):
    """softplus with setup_context, a backward and a vmap rule, but no jvp."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return F.softplus(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class Softplus(SoftplusNoJvp):
    """setup_context, a jvp and a vmap rule: every method of derivs applies."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return tangent * torch.sigmoid(x)


def softplus_with(
    backward: Callable[[Tensor, Tensor], Tensor] | None = None,
    jvp: Callable[[Tensor, Tensor], Tensor] | None = None,
    name: str = "Planted",
) -> type[torch.autograd.Function]:
    """:class:`Softplus` named ``name``, with its backward (``(x, grad) -> dx``) or its jvp
    (``(x, tangent) -> dy``) replaced."""

    def bwd(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return backward(x, grad) if backward else grad * torch.sigmoid(x)

    def fwd_rule(ctx: Any, tangent: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return jvp(x, tangent) if jvp else tangent * torch.sigmoid(x)

    return type(name, (Softplus,), {"backward": staticmethod(bwd), "jvp": staticmethod(fwd_rule)})
