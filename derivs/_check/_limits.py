"""What a check cannot compute, and why: a method that cannot run for a reason other than a
wrong derivative becomes a ``skip`` row with that reason, not an ``error`` row or a FAIL.

The reasons are established, never guessed: by derivs' own exception class for its memory
budget, by the exceptions torch raises for a missing rule, and by probing (which custom
``autograd.Function``s are in func's autograd graph at the point, and what they define; what
this torch does with nested forward mode through a custom jvp rule).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from derivs._check._sources import Operator, Source, summary
from derivs._config import MemoryBudgetError

Tensor = torch.Tensor
_Function = torch.autograd.Function
# NOTE: functools.wraps gives once_differentiable's wrapper the backward's own name; its code
# object is what every such wrapper shares.
_ONCE_CODE = once_differentiable(lambda ctx: None).__code__


@dataclass(frozen=True)
class CustomFunction:
    """A custom ``autograd.Function`` in func's graph, and which of its rules exist."""

    name: str  # the class's qualified name
    old_style: bool  # forward(ctx, ...) without setup_context: torch.func cannot run it
    jvp: bool  # a jvp staticmethod (forward mode)
    vmap: bool  # generate_vmap_rule = True or a vmap staticmethod
    once_differentiable: bool  # backward decorated with @once_differentiable


def describe(cls: type[_Function]) -> CustomFunction:
    backward = getattr(cls, "backward", None)
    old = cls.setup_context is _Function.setup_context
    return CustomFunction(
        name=cls.__qualname__,
        old_style=old,
        jvp=cls.jvp is not _Function.jvp,
        vmap=bool(getattr(cls, "generate_vmap_rule", False)) or cls.vmap is not _Function.vmap,
        once_differentiable=getattr(backward, "__code__", None) is _ONCE_CODE,
    )


def custom_functions(
    func: Callable[..., Any], point: Sequence[Any], nums: Sequence[int]
) -> tuple[CustomFunction, ...] | None:
    """The custom Functions in the autograd graph of ``func`` at ``point``, in the order met
    from the output back; None when the probe (one call of ``func`` with the differentiated
    arguments requiring grad) raised, so nothing is known."""
    call = list(point)
    for a in nums:
        call[a] = call[a].detach().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = func(*call)
    except Exception:  # NOTE: func ran once already; a probe that fails only means "unknown"
        return None
    if not isinstance(out, Tensor) or out.grad_fn is None:
        return ()
    found: dict[type[_Function], None] = {}
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        # NOTE: a custom Function's graph node carries its class (BackwardCFunction)
        cls = getattr(node, "_forward_cls", None)
        if isinstance(cls, type) and issubclass(cls, _Function):
            found.setdefault(cls)
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return tuple(describe(c) for c in found)


class _Square(_Function):
    """x**2 with exact rules: the probe of torch's nested forward mode."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x * x

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        raise NotImplementedError  # NOTE: the probe is forward mode only

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        product: Tensor = 2 * tangent * x
        return product


@functools.cache
def nested_forward_drops_jvp() -> bool:
    """Whether this torch's forward over forward mode ignores a custom Function's jvp rule in
    the inner level: ``jacfwd(jacfwd(square))`` is 0 instead of 2 (torch 2.x)."""
    x = torch.ones((), dtype=torch.float64)
    second = torch.func.jacfwd(torch.func.jacfwd(_Square.apply))(x)
    return bool(second != 2)


def _names(fns: Sequence[CustomFunction]) -> str:
    names = [f.name for f in fns]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _verb(fns: Sequence[CustomFunction]) -> str:
    return "is" if len(fns) == 1 else "are"


class Limits:
    """What cannot be computed for this func: ``functions`` is the probe's finding (None:
    unknown, then only derivs' own refusals are excused)."""

    def __init__(self, functions: tuple[CustomFunction, ...] | None) -> None:
        self.functions = functions or ()

    def blocked(self, tags: frozenset[str]) -> str:
        """Why a result resting on ``tags`` cannot check anything here, known before it is
        computed ('' when it can): a rule its Function declares unavailable, or torch's own
        limitation."""
        once = [f for f in self.functions if f.once_differentiable]
        if once and "d_vjp" in tags:
            return (
                f"not run: {_names(once)}.backward {_verb(once)} @once_differentiable, so the "
                "derivative of the backward (double backward) is not available (torch gives "
                "zeros or raises there)"
            )
        with_jvp = [f for f in self.functions if f.jvp and not f.old_style]
        if with_jvp and "d_jvp_fwd" in tags and nested_forward_drops_jvp():
            return (
                f"not run: torch {torch.__version__} does not differentiate a custom "
                f"Function's jvp rule in nested forward mode (forward over forward through "
                f"{_names(with_jvp)} gives zeros: a torch limitation, not your code); "
                "reverse over forward (rev_fwd) checks the jvp rule's derivative"
            )
        return ""

    def excuse(self, src: Source) -> str:
        """Why ``src`` raised for a reason other than a wrong derivative ('' when none is
        established): derivs' memory budget, or a rule func's code does not define."""
        exc = src.exc
        if exc is None:
            return ""
        if isinstance(exc, MemoryBudgetError):
            return f"not run, above the memory budget: {summary(exc)}"
        text = str(exc)
        old = [f for f in self.functions if f.old_style]
        if old and isinstance(exc, RuntimeError) and "setup_context" in text:
            return (
                f"not run: {_names(old)} {_verb(old)} an old-style autograd.Function "
                "(forward(ctx, ...) without setup_context), which torch.func transforms "
                "(vmap, grad, jvp) cannot run; add setup_context to check these methods"
            )
        no_jvp = [f for f in self.functions if not f.jvp]
        jvp_error = isinstance(exc, NotImplementedError) and "jvp" in text
        if no_jvp and (jvp_error or "jvp" in src.tags):
            return (
                f"not run: {_names(no_jvp)} {_verb(no_jvp)} a custom autograd.Function "
                "without a jvp staticmethod, so forward-mode AD is not available through it"
            )
        no_vmap = [f for f in self.functions if not f.vmap]
        if no_vmap and isinstance(exc, RuntimeError) and "does not have vmap support" in text:
            return (
                f"not run: {_names(no_vmap)} {_verb(no_vmap)} a custom autograd.Function "
                "without a vmap rule (set generate_vmap_rule = True or define vmap)"
            )
        return _torch_excuse(exc)

    def apply(self, operators: dict[str, Operator]) -> dict[str, Operator]:
        """Turn every source that cannot check anything, or raised for an established reason
        other than a wrong derivative, into a ``skip`` with that reason (in place)."""
        for srcs, _ in operators.values():
            for s in srcs:
                reason = self.blocked(s.tags) if s.status in ("ok", "error") else ""
                reason = reason or (self.excuse(s) if s.status == "error" else "")
                if reason:
                    s.status, s.note, s.leaves, s.errors = "skip", reason, None, None
        return operators


def _torch_excuse(exc: BaseException) -> str:
    """A rule torch itself lacks for an operation of func, by the exception torch raises."""
    text = str(exc)
    if isinstance(exc, NotImplementedError) and "forward AD" in text:
        return f"not run: torch has no forward-mode rule for an operation of func ({summary(exc)})"
    if isinstance(exc, RuntimeError) and "Batching rule not implemented" in text:
        return f"not run: torch has no vmap rule for an operation of func ({summary(exc)})"
    if isinstance(exc, RuntimeError) and text.startswith("vmap: It looks like you're"):
        return (
            "not run: func cannot run under torch.vmap (data-dependent Python control flow "
            f"or .item()): {summary(exc)}"
        )
    return ""
