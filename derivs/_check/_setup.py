"""``derivs.check``'s arguments validated, and the point: ``func`` evaluated there once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from derivs import _registry, _validate
from derivs._check._compare import magnitude

API = "derivs.check"
#: check(reference=): func may be this many times as far from the float64 reference as the
#: reference computed in func's dtype (flash-attention's and PyTorch's SDPA tests use 2).
REFERENCE_K = 2.0
Tensor = torch.Tensor
InDims = int | tuple[int | None, ...]

#: operator -> its methods (name -> hint), in the order the report lists them.
OPERATORS: dict[str, dict[str, str]] = _registry.OPERATORS
ORACLES = {
    "loop": "naive loops of torch.autograd.grad (exact, but share the function's backward "
    "with the rev-mode methods)",
    "fd": "finite differences with error estimates (Richardson), plus the complex step when "
    "func accepts complex input; first order uses only evaluations of func",
}


@dataclass(frozen=True)
class Options:
    """``check``'s arguments, validated and normalised."""

    argnums: _validate.Argnums
    nums: tuple[int, ...]  # argnums as a tuple of indices
    order: int
    selected: dict[str, list[str]]  # operator -> its selected methods, for every operator
    oracles: tuple[str, ...]
    batched: InDims | None
    dims: tuple[int | None, ...] | None  # batched, one entry per argument
    size: int  # the batch size (0 without batched)
    rtol: float | None
    atol: float | None
    mode: str = "auto"  # "auto", "dense" or "projected" (MODES)
    reference: Callable[..., Any] | None = None  # a plain-PyTorch func, see check(reference=)
    reference_k: float = REFERENCE_K

    @property
    def single(self) -> bool:
        """One differentiated argument given as an int: blocks are not indexed."""
        return not isinstance(self.argnums, tuple)


def parse(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    argnums: _validate.Argnums,
    order: int,
    methods: str | Iterable[str],
    oracles: str | Iterable[str],
    batched: InDims | None,
    rtol: float | None,
    atol: float | None,
    raise_exception: bool,
    mode: str = "auto",
    reference: Callable[..., Any] | None = None,
    reference_k: float = REFERENCE_K,
) -> Options:
    """Validate ``check``'s arguments, in the order of its signature."""
    _validate.check_callable(API, func)
    _validate.check_argnums_spec(API, argnums)
    _check_order(order)
    selected = _check_methods(methods)
    chosen = _check_oracles(oracles)
    rtol_, atol_ = _check_tol("rtol", rtol), _check_tol("atol", atol)
    _validate.check_bool(API, "raise_exception", raise_exception)
    _check_mode(mode)
    _check_reference(reference, reference_k, mode)
    nums = _validate.normalize_argnums(API, argnums, len(args))
    _validate.check_diff_args(API, args, nums)
    dims, size = (None, 0) if batched is None else _check_batched(batched, args)
    return Options(
        argnums,
        nums,
        order,
        selected,
        chosen,
        batched,
        dims,
        size,
        rtol_,
        atol_,
        mode=mode,
        reference=reference,
        reference_k=float(reference_k),
    )


def _check_reference(reference: object, k: object, mode: str) -> None:
    if reference is not None and not callable(reference):
        raise TypeError(
            f"{API}: reference must be None or a callable taking func's arguments (a plain "
            f"PyTorch version of func), got {_validate.describe(reference)}"
        )
    if isinstance(k, bool) or not isinstance(k, int | float):
        raise TypeError(f"{API}: reference_k must be a number >= 1, got {_validate.describe(k)}")
    if not (math.isfinite(k) and k >= 1):
        raise ValueError(
            f"{API}: reference_k={k!r} must be a finite number >= 1 (func may be k times as "
            "far from the float64 reference as the reference computed in func's dtype)"
        )
    if reference is not None and mode == "projected":
        raise ValueError(
            f"{API}: reference= compares dense derivatives; it cannot be combined with "
            "mode='projected' (use mode='auto' or 'dense')"
        )


def _check_order(order: object) -> None:
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(f"{API}: order must be 1 or 2, got {_validate.describe(order)}")
    if order not in (1, 2):
        raise ValueError(
            f"{API}: order={order} is not supported; use 1 (Jacobians) or 2 "
            "(also Hessians, hvp/vhp)"
        )


def _check_methods(methods: object) -> dict[str, list[str]]:
    """``methods`` -> operator -> selected method names (in the order of ``OPERATORS``)."""
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Iterable):
        raise TypeError(
            f"{API}: methods must be 'all' or an iterable of names like 'rev' or "
            f"'hessian:fwd_rev', got {_validate.describe(methods)}"
        )
    wanted = list(methods)
    if not wanted:
        raise ValueError(f"{API}: methods is empty; give 'all' or at least one method name")
    chosen: dict[str, set[str]] = {op: set() for op in OPERATORS}
    for item in wanted:
        if not isinstance(item, str):
            raise TypeError(f"{API}: methods holds {_validate.describe(item)}; names are strings")
        op, sep, name = item.rpartition(":")
        if not sep and name in OPERATORS:  # an operator: all of its methods
            op, name = name, "all"
        ops = [o for o in OPERATORS if not op or o == op]
        hits = [o for o in ops if name == "all" or name in OPERATORS[o]]
        if not hits or (sep and op not in OPERATORS):
            valid = ", ".join(f"{o}: {'/'.join(t)}" for o, t in OPERATORS.items())
            raise ValueError(
                f"{API}: methods entry {item!r} names no method; give 'all', a method name "
                f"(applies to every operator that has it), an operator, or 'operator:method', "
                f"from {valid}"
            )
        for o in hits:
            chosen[o] |= set(OPERATORS[o]) if name == "all" else {name}
    return {op: [m for m in OPERATORS[op] if m in chosen[op]] for op in OPERATORS}


def _check_oracles(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise TypeError(
            f"{API}: oracles must be an iterable of {list(ORACLES)}, got "
            f"{_validate.describe(value)}"
        )
    out = []
    for item in value:
        if item not in ORACLES:
            listing = "; ".join(f"{k!r}: {v}" for k, v in ORACLES.items())
            raise ValueError(
                f"{API}: oracles entry {item!r} is not one of {list(ORACLES)} ({listing})"
            )
        out.append(item)
    return tuple(dict.fromkeys(out))


#: check's modes (name -> what it does), in the order the docs list them.
MODES = {
    "auto": "dense up to DENSE_MAX_INPUTS differentiated elements (and while the dense "
    "Jacobian or Hessian fits the memory budget), projected past it",
    "dense": "full Jacobians and Hessians by every method, against dense oracles",
    "projected": "Jacobian and Hessian products along seeded random directions, against "
    "directional finite differences (for large inputs)",
}


def _check_mode(mode: object) -> None:
    if not isinstance(mode, str):
        raise TypeError(f"{API}: mode must be one of {list(MODES)}, got {_validate.describe(mode)}")
    if mode not in MODES:
        listing = "; ".join(f"{k!r}: {v}" for k, v in MODES.items())
        raise ValueError(f"{API}: mode={mode!r} is not one of {list(MODES)} ({listing})")


def _check_tol(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{API}: {name} must be None or a non-negative number, got {_validate.describe(value)}"
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{API}: {name}={value!r} must be a finite number >= 0 (or None)")
    return float(value)


def _check_batched(batched: object, args: tuple[Any, ...]) -> tuple[tuple[int | None, ...], int]:
    """(in_dims per argument, batch size)."""
    if isinstance(batched, bool) or not isinstance(batched, int | tuple):
        raise TypeError(
            f"{API}: batched must be None or the in_dims of args as in torch.vmap (an int, "
            f"or a tuple of int/None per argument, e.g. (None, None, 0)), got "
            f"{_validate.describe(batched)}"
        )
    dims, size = _validate.check_in_dims(f"{API}: batched", batched, args)
    if size == 0:
        raise ValueError(f"{API}: batched: the batch is empty (batch size 0)")
    return dims, size


@dataclass(frozen=True)
class Case:
    """What is checked: ``func``, its arguments and its value at the point.

    With ``batched``, ``args`` is the batch and ``point`` its first sample; else both are
    the arguments.
    """

    func: Callable[..., Any]
    args: tuple[Any, ...]
    opts: Options
    name: str
    point: tuple[Any, ...]
    out: Tensor
    value_scale: float  # the largest finite |value| of the point's inputs and output

    @property
    def diff(self) -> list[Tensor]:
        """The differentiated arguments at the point."""
        return [self.point[a] for a in self.opts.nums]


def evaluate(func: Callable[..., Any], args: tuple[Any, ...], opts: Options) -> Case:
    """Call ``func`` once at the point; its own exceptions propagate from here, unchanged."""
    point = args if opts.dims is None else sample(args, opts.dims, 0)
    name = str(
        getattr(func, "__qualname__", None)
        or getattr(func, "__name__", None)
        or type(func).__name__
    )
    out = func(*point)  # NOTE: func's own exceptions propagate from this call, unchanged
    if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point:
        raise TypeError(
            f"{API}: func must return a real floating-point tensor, got {_validate.describe(out)} "
            "(check one output at a time, e.g. lambda *a: func(*a)[0])"
        )
    if opts.reference is not None:
        _check_reference_output(opts.reference(*point), out)
    return Case(func, args, opts, name, point, out, magnitude([*point, out]))


def _check_reference_output(ref_out: object, out: Tensor) -> None:
    if not isinstance(ref_out, torch.Tensor) or not ref_out.dtype.is_floating_point:
        raise ValueError(
            f"{API}: reference must return a real floating-point tensor like func, got "
            f"{_validate.describe(ref_out)}"
        )
    if ref_out.shape != out.shape:
        raise ValueError(
            f"{API}: reference returned shape {tuple(ref_out.shape)} at args, but func "
            f"returned {tuple(out.shape)}; reference must compute the same function"
        )


def sample(args: Sequence[Any], dims: Sequence[int | None], b: int) -> tuple[Any, ...]:
    """Sample ``b`` of a batch of arguments (the unbatched ones as they are)."""
    return tuple(a if d is None else a.select(d, b) for a, d in zip(args, dims, strict=True))
