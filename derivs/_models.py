"""A model as a function of its parameters, the way every derivs operator and check takes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from derivs import _validate

API = "derivs.functional_model"


def functional_model(
    model: torch.nn.Module,
) -> tuple[Callable[..., Any], dict[str, torch.Tensor]]:
    """``model`` as a function of its parameter dict: ``func(params, *inputs)``, and ``params``.

    ``func(params, *inputs, **kwargs)`` is ``model(*inputs, **kwargs)`` computed with the
    tensors of ``params`` in place of the model's parameters
    (``torch.func.functional_call``), so a derivative with respect to ``params`` (a dict, a
    pytree every operator, oracle and ``derivs.check`` takes) is the derivative with respect
    to the model's parameters. ``params`` holds the parameters as they are now, detached
    (views without autograd history: no copy, and derivs never writes to them).

    The model is never changed: its parameters are only read, and every call of ``func``
    runs on fresh copies of the buffers taken when ``functional_model`` was called, so a
    ``BatchNorm`` in training mode updates copies of its running statistics, not the
    model's, and every evaluation starts from the same ones. (Under forward-mode methods
    torch.func refuses those in-place updates; check a model with ``BatchNorm`` in
    ``model.eval()`` mode, or with ``torch.func.replace_all_batch_norm_modules_``.)

    Args:
        model: a ``torch.nn.Module``.

    Returns:
        ``(func, params)``; ``params`` maps each name of ``model.named_parameters()`` to its
        tensor.

    Raises:
        TypeError: ``model`` is not a module.

    >>> import torch, derivs
    >>> model = torch.nn.Linear(2, 1).double()
    >>> func, params = derivs.functional_model(model)
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> grads = derivs.jacobian(lambda p: func(p, x).sum())(params)
    >>> grads["weight"].tolist(), grads["bias"].tolist()
    ([[1.0, 2.0]], [1.0])
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{API}: model must be a torch.nn.Module, got {_validate.describe(model)}")
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def func(params: dict[str, torch.Tensor], *inputs: Any, **kwargs: Any) -> Any:
        fresh = {name: b.clone() for name, b in buffers.items()}
        return torch.func.functional_call(model, {**fresh, **params}, inputs, kwargs)

    func.__name__ = func.__qualname__ = type(model).__name__
    return func, params
