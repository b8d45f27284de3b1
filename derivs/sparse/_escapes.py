"""Escapes from global tracing: values that leave torch, and ops whose results depend on values.

A trace holds for every point only if input-dependent (*varying*) values never steer it:
Python could branch on ``.item()``, ``bool()``, ``.tolist()`` or ``.numpy()``, and an op like
``nonzero`` gives a shape that depends on the values. Those are caught here: ATen ops by the
dispatch mode (``data_dependent_inputs``), the escapes without an ATen op by a
torch-function mode (``EscapeMode``), entered around custom backwards too (``custom_nodes``:
the autograd engine runs them without torch-function modes). The mode reports to a
``Watcher`` (the tracer's ``Tracker``), which decides whether an escape is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch.overrides import TorchFunctionMode
from torch.overrides import _get_current_function_mode_stack as _function_modes

from derivs.sparse._storage import tensors_of


class Untraceable(Exception):
    """The derivative cannot be traced in this mode; ``args[0]`` says what stopped it."""


# NOTE: ops whose output depends on input values in ways a rule cannot bound: their result
# is a Python value (item, equal) or its shape depends on the values (nonzero, unique).
_DATA_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


def data_dependent_inputs(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The arguments whose values shape ``func``'s result (empty: ``func`` is not data-dependent)."""
    if not any(tag in func.tags for tag in _DATA_TAGS):
        return []
    flat = tensors_of(args) + tensors_of(kwargs)
    if func is torch.ops.aten.index.Tensor:
        # NOTE: only boolean masks make indexing data-dependent (they go through nonzero).
        return [a for a in flat[1:] if a.dtype in (torch.bool, torch.uint8)]
    return flat


def custom_nodes(outputs: Sequence[torch.Tensor]) -> list[Any]:
    """The custom ``autograd.Function`` nodes of the graph behind ``outputs``."""
    stack: list[Any] = [o.grad_fn for o in outputs]
    seen: set[int] = set()
    found = []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found.append(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def enter(modes: list[EscapeMode], mode: EscapeMode) -> None:
    mode.__enter__()  # type: ignore[no-untyped-call]
    modes.append(mode)


def leave(modes: list[EscapeMode]) -> None:
    # NOTE: the engine restores the mode stack when a backward raises: pop only what is there.
    if modes:
        mode = modes.pop()
        if mode in _function_modes():  # type: ignore[no-untyped-call]
            mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]


_ESCAPES = {
    torch.Tensor.tolist: ".tolist()",
    torch.Tensor.numpy: ".numpy()",
    torch.Tensor.__array__: "numpy (__array__)",
    torch.Tensor.__dlpack__: "__dlpack__",
}
_REPRS = {torch.Tensor.__repr__, torch.Tensor.__str__, torch.Tensor.__format__}


class Watcher(Protocol):
    """What ``EscapeMode`` reports to: the tracer's ``Tracker``."""

    def silenced(self) -> AbstractContextManager[None]:
        """No escape is checked inside (a tensor's repr reads its values)."""
        ...

    def check_escape(self, what: str, tensors: list[torch.Tensor]) -> None:
        """Raise ``Untraceable`` if ``tensors`` may not leave torch by ``what``."""
        ...


class EscapeMode(TorchFunctionMode):
    """Catches the ways values leave torch without an ATen op (``tolist``, ``numpy``)."""

    def __init__(self, tracker: Watcher) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _REPRS:
            with self.tracker.silenced():
                return func(*args, **kwargs)
        what = _ESCAPES.get(func)
        if what is not None:
            self.tracker.check_escape(what, tensors_of(args) + tensors_of(kwargs))
        return func(*args, **kwargs)
