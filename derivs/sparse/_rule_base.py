"""The rule registry and the rules every op family builds on.

A rule gets a ``Call`` (the op, its real arguments and outputs) and returns one ``Deps`` (or
None: no dependence) per output tensor. Here: the registry (``rule``, ``RULES``), the helpers
the rule modules share, ``fallback`` (each output element depends on every seed any input
depends on: may overestimate, never misses a dependence), pointwise ops (the union of the
broadcast inputs), copies, and ops whose output does not depend on their inputs' values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._trace import Call, fallback_rows, is_float

_I64 = torch.int64
Rule = Callable[[Call], list[Deps | None]]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a rule for the ops ``names`` (their in-place and ``out=`` forms too)."""

    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def op_name(func: Any) -> str:
    """``aten::add_`` -> ``add``: the functional name an op's rule is registered under."""
    name: str = func._schema.name.split("::")[-1]
    if name.endswith("_") and not name.endswith("__") and _mutates_self(func):
        name = name[:-1]
    return name


def _mutates_self(func: Any) -> bool:
    args = func._schema.arguments
    return bool(args) and args[0].alias_info is not None and args[0].alias_info.is_write


def fallback(call: Call) -> list[Deps | None]:
    """Each output element depends on everything any input depends on."""
    return [fallback_rows(call, o) for o in call.outs]


# --------------------------------------------------------------------------------------------
# helpers


_FUNCTIONAL: dict[Any, Any] = {}


def functional_op(func: Any) -> Any:
    """The functional overload of an in-place or ``out=`` op (``add_.Tensor`` -> ``add.Tensor``)."""
    if func in _FUNCTIONAL:
        return _FUNCTIONAL[func]
    found = _find_functional(func)
    _FUNCTIONAL[func] = found
    return found


def _find_functional(func: Any) -> Any:
    schema = func._schema
    writes = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    if not writes:
        return func
    packet = getattr(torch.ops.aten, op_name(func), None)
    if packet is None:
        return None
    if _mutates_self(func):
        return getattr(packet, func._overloadname, None)
    wanted = [a.name for a in schema.arguments if a not in writes]
    for overload in packet.overloads():
        candidate = getattr(packet, overload)
        names = [a.name for a in candidate._schema.arguments]
        if names == wanted and not any(
            a.alias_info is not None and a.alias_info.is_write for a in candidate._schema.arguments
        ):
            return candidate
    return None


def float_inputs(call: Call) -> list[torch.Tensor]:
    return [t for t in call.tensors() if is_float(t) and call.deps(t) is not None]


def union_broadcast(call: Call, inputs: list[torch.Tensor], shape: tuple[int, ...]) -> Deps | None:
    """The union of ``inputs``' rows, each broadcast to ``shape``."""
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for t in inputs:
        d = call.deps(t)
        if d is None or (id(d), tuple(t.shape)) in seen:
            continue
        seen.add((id(d), tuple(t.shape)))
        parts.append((d, None, _deps.broadcast_index(t.shape, shape)))
    if not parts:
        return None
    return _deps.gather_union(math.prod(shape), call.n_seeds, parts)


def union_rows(call: Call, shape: int | Sequence[int], parts: Sequence[Deps | None]) -> Deps | None:
    """The union of rows of the same tensor (``shape`` or its numel); None for no part."""
    found = [p for p in parts if p is not None]
    if not found:
        return None
    size = shape if isinstance(shape, int) else math.prod(shape)
    return _deps.union(size, call.n_seeds, [(p, None) for p in found])


def index_args_vary(call: Call) -> bool:
    """In global mode: an integer or boolean tensor argument changes with the point."""
    return not call.local and any(not is_float(t) and call.is_varying(t) for t in call.tensors())


def ids_like(t: torch.Tensor, start: int) -> torch.Tensor:
    """``start, start + 1, ...``: one id per element of ``t``, shaped like it, on the CPU."""
    return torch.arange(start, start + t.numel(), dtype=_I64).view(t.shape)


def cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu() if t.device.type != "cpu" else t


# --------------------------------------------------------------------------------------------
# pointwise


def _scalar_zero_factor(call: Call) -> bool:
    """``x * 0`` with a literal zero: no dependence (a compile-time constant zero)."""
    if op_name(call.func) != "mul":
        return False
    return any(isinstance(a, int | float) and not isinstance(a, bool) and a == 0 for a in call.args)


def pointwise(call: Call) -> list[Deps | None]:
    """Each output element depends on the inputs' elements broadcast to it."""
    if _scalar_zero_factor(call):
        return [None for _ in call.outs]
    inputs = float_inputs(call)
    try:
        return [union_broadcast(call, inputs, tuple(o.shape)) for o in call.outs]
    except RuntimeError:
        # NOTE: an input that does not broadcast to the output the usual way.
        return fallback(call)


# NOTE: elementwise ops ATen does not tag ``pointwise`` (mostly activation backwards).
_UNTAGGED_POINTWISE = (
    "softplus_backward", "elu_backward", "hardtanh_backward", "leaky_relu_backward",
    "log_sigmoid_forward", "log_sigmoid_backward", "mish_backward", "hardswish",
    "hardswish_backward", "hardsigmoid_backward", "rrelu_with_noise",
    "rrelu_with_noise_backward", "softshrink_backward", "hardshrink_backward", "polar",
    "complex", "gelu_backward", "silu_backward", "logit_backward",
)  # fmt: skip
rule(*_UNTAGGED_POINTWISE)(pointwise)


@rule("_to_copy", "copy", "lift_fresh_copy", "alias_copy", "detach_copy", "_conj_copy")
def same_elements(call: Call) -> list[Deps | None]:
    """Copies: ``copy(self, src)`` takes src's elements; the others their input's."""
    if op_name(call.func) == "copy":
        src = call.args[1]
        d = call.deps(src)
        return [None if d is None else _deps.broadcast(d, src.shape, call.outs[0].shape)]
    return pointwise(call)


# --------------------------------------------------------------------------------------------
# outputs whose values do not depend on the tensor inputs' values


_VALUE_FREE = (
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided",
    "zero", "empty_strided", "scalar_tensor", "_efficientzerotensor", "bernoulli",
)  # fmt: skip


@rule(*_VALUE_FREE)
def value_free(call: Call) -> list[Deps | None]:
    return [None for _ in call.outs]


@rule("fill")
def fill(call: Call) -> list[Deps | None]:
    """``fill(self, value)``: a tensor ``value`` is broadcast to every element."""
    value = call.args[1] if len(call.args) > 1 else call.kwargs.get("value")
    d = call.deps(value)
    if d is None or not isinstance(value, torch.Tensor):
        return [None]
    out = call.outs[0]
    return [_deps.broadcast(d, value.shape, out.shape)]
