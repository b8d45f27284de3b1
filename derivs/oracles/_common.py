"""Shared pieces of the oracles: the Estimate type, argument checks and a tiny pytree."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch

Tensor = torch.Tensor


class Estimate(NamedTuple):
    """A finite-difference result: ``value`` and an elementwise estimate of its abs. error.

    Both have the same structure (a tensor, or tuples of tensors following the oracle's
    ``argnums`` convention), shapes, dtype and device.
    """

    value: Any
    error: Any


# ----------------------------------------------------------------------------- validation


def check_func(api: str, func: object) -> None:
    """TypeError naming ``api`` unless ``func`` is callable."""
    if not callable(func):
        raise TypeError(f"{api}: func must be callable, got {type(func).__name__}")


def check_args(api: str, args: object) -> tuple[Any, ...]:
    """``args``; TypeError naming ``api`` unless it is a tuple of positional arguments."""
    if not isinstance(args, tuple):
        raise TypeError(
            f"{api}: args must be a tuple of positional arguments, got {type(args).__name__}"
            " (wrap a single tensor as (x,))"
        )
    return args


def normalize_argnums(api: str, argnums: object, nargs: int) -> tuple[tuple[int, ...], bool]:
    """``argnums`` as non-negative ints, and whether it was a single int."""
    single = isinstance(argnums, int) and not isinstance(argnums, bool)
    if single:
        raw: tuple[object, ...] = (argnums,)
    elif isinstance(argnums, tuple):
        raw = argnums
        if not raw:
            raise ValueError(f"{api}: argnums=() is empty; give at least one argument index")
    else:
        raise TypeError(
            f"{api}: argnums must be an int or a tuple of ints, got {type(argnums).__name__}"
        )
    out: list[int] = []
    for a in raw:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{api}: argnums={argnums!r} holds {a!r}, which is not an int")
        if not -nargs <= a < nargs:
            raise ValueError(
                f"{api}: argnums={argnums!r} is out of range for {nargs} positional"
                f" argument(s) (valid indices: {-nargs}..{nargs - 1})"
                if nargs
                else f"{api}: argnums={argnums!r} is out of range: args is empty"
            )
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{api}: argnums={argnums!r} refers to the same argument twice")
    return tuple(out), single


def _check_diff_arg(api: str, args: tuple[Any, ...], a: int) -> Tensor:
    x = args[a]
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{api}: args[{a}] is a {type(x).__name__}; only tensors can be differentiated"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{api}: args[{a}] has dtype {x.dtype}; only floating-point tensors can be"
            " differentiated (cast it first, e.g. x.double())"
        )
    return x


def prepare(
    api: str, func: object, args: object, argnums: object
) -> tuple[tuple[Any, ...], tuple[int, ...], bool]:
    check_func(api, func)
    targs = check_args(api, args)
    nums, single = normalize_argnums(api, argnums, len(targs))
    for a in nums:
        _check_diff_arg(api, targs, a)
    return targs, nums, single


def check_out_leaf(api: str, leaf: object, where: str) -> Tensor:
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(
            f"{api}: func must return a tensor or a tuple/list/dict of tensors, but output"
            f"{where} is a {type(leaf).__name__}"
        )
    if leaf.is_complex():
        raise TypeError(
            f"{api}: output{where} is complex ({leaf.dtype}); the oracles differentiate"
            " real-valued functions only"
        )
    return leaf


# ----------------------------------------------------------------------------- pytrees
# A tiny pytree: tensors (or anything else) at the leaves, tuples, lists, NamedTuples and
# dicts as nodes. Enough for function outputs and for the oracles' own nested tuples.

Spec = Any  # None for a leaf, else (kind, type, keys, children)


def flatten(tree: Any) -> tuple[list[Any], Spec]:
    leaves: list[Any] = []

    def go(node: Any) -> Spec:
        if isinstance(node, (tuple, list)):
            return ("seq", type(node), None, [go(c) for c in node])
        if isinstance(node, dict):
            keys = list(node)
            return ("dict", type(node), keys, [go(node[k]) for k in keys])
        leaves.append(node)
        return None

    return leaves, go(tree)


def unflatten(spec: Spec, leaves: Sequence[Any]) -> Any:
    it: Iterator[Any] = iter(leaves)

    def go(s: Spec) -> Any:
        if s is None:
            return next(it)
        kind, typ, keys, children = s
        built = [go(c) for c in children]
        if kind == "dict":
            return typ(zip(keys, built, strict=True))
        if typ is tuple or typ is list:
            return typ(built)
        if hasattr(typ, "_fields"):  # NamedTuple
            return typ(*built)
        return typ(built)

    return go(spec)


def leaf_path(spec: Spec, index: int) -> str:
    """The ``[i]['k']`` path of leaf number ``index`` (for error messages)."""
    paths: list[str] = []

    def go(s: Spec, prefix: str) -> None:
        if s is None:
            paths.append(prefix)
            return
        kind, _, keys, children = s
        for pos, c in enumerate(children):
            go(c, prefix + (f"[{keys[pos]!r}]" if kind == "dict" else f"[{pos}]"))

    go(spec, "")
    return paths[index]
