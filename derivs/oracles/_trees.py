"""Pytree arguments of the oracles: differentiated by their leaves, results nested like torch.func.

A differentiated argument may be a tuple, list, namedtuple or dict of tensors, nested. Each
oracle runs on the flat leaves (a tuple ``argnums`` over them) and its result is nested:
a Jacobian with the output's structure outside and each argument's inside (a tuple over
``argnums`` between them for a tuple ``argnums``), a Hessian with the output's structure
outside and the argument's structure twice inside, as ``torch.func.jacrev`` and
``torch.func.hessian`` nest them.

NOTE: this is the oracles' own flattening, on their tiny pytree (``_common``), not the
operators' (``derivs/_pytree.py``, built on ``torch.utils._pytree``): the oracles share no
code with what they check, so a wrong order of leaves in one shows up against the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from derivs.oracles._common import (
    Spec,
    check_args,
    check_func,
    flatten,
    leaf_path,
    normalize_argnums,
    unflatten,
)


def _is_tree(value: object) -> bool:
    return isinstance(value, tuple | list | dict)


def _up_to(spec: Spec, tree: Any) -> list[Any]:
    """The subtrees of ``tree`` at the leaves of ``spec`` (a prefix of ``tree``'s structure)."""
    if spec is None:
        return [tree]
    kind, _, keys, children = spec
    items = [tree[k] for k in keys] if kind == "dict" else list(tree)
    return [sub for c, item in zip(children, items, strict=True) for sub in _up_to(c, item)]


class Leaves:
    """``args`` with the differentiated pytrees replaced by their leaves.

    ``args``/``nums``: the flat arguments and the flat argnums (a tuple); ``func``: the user's
    function of the flat arguments (it records its output structure); ``trivial``: no
    argument was a pytree, and the oracle runs as it always did.
    """

    def __init__(
        self, api: str, func: object, args: object, argnums: object, in_dims: object = None
    ) -> None:
        check_func(api, func)
        targs = check_args(api, args)
        nums, self.single = normalize_argnums(api, argnums, len(targs))
        batched = _batched_positions(in_dims, len(targs))
        at = {a for a in nums if _is_tree(targs[a])} | {a for a in batched if _is_tree(targs[a])}
        self.trivial = not at
        self.flat_single = self.single and self.trivial  # the flat oracle's ``single``
        self.user: Callable[..., Any] = func  # type: ignore[assignment]
        self.func: Callable[..., Any] = self.user if self.trivial else self._call
        self.args: tuple[Any, ...] = targs
        self.nums: tuple[int, ...] = nums
        self.in_dims = in_dims
        if self.trivial:
            return
        self.layout: list[tuple[int, int, Spec | None, bool]] = []
        flat: list[Any] = []
        for k, a in enumerate(targs):
            if k not in at:
                self.layout.append((len(flat), len(flat) + 1, None, False))
                flat.append(a)
                continue
            leaves, spec = flatten(a)
            if k in nums:
                _check_leaves(api, leaves, spec, f"args[{k}]")
            self.layout.append((len(flat), len(flat) + len(leaves), spec, True))
            flat.extend(leaves)
        self.args = tuple(flat)
        self.groups = [(self.layout[a][0], self.layout[a][1]) for a in nums]
        self.argspecs = [self.layout[a][2] if self.layout[a][3] else None for a in nums]
        self.nums = tuple(i for start, stop in self.groups for i in range(start, stop))
        self.out: list[Spec] = []
        if in_dims is not None:
            self.in_dims = self._flat_in_dims(api, in_dims, targs)

    def _call(self, *flat: Any) -> Any:
        """The user's function of the flat arguments; records its output's structure."""
        rebuilt = [
            flat[start] if not tree else unflatten(spec, flat[start:stop])
            for start, stop, spec, tree in self.layout
        ]
        out = self.user(*rebuilt)
        if not self.out:
            self.out.append(flatten(out)[1])
        return out

    def _flat_in_dims(self, api: str, in_dims: object, targs: tuple[Any, ...]) -> object:
        if isinstance(in_dims, int) or not isinstance(in_dims, tuple):
            return in_dims  # an int applies to every leaf; a bad one is refused by the loop
        if len(in_dims) != len(targs):
            return in_dims
        flat: list[object] = []
        for k, (d, (start, stop, spec, tree)) in enumerate(zip(in_dims, self.layout, strict=True)):
            if not tree:
                flat.append(d)
            elif d is None or isinstance(d, int):
                flat.extend([d] * (stop - start))
            else:
                leaves, dspec = flatten(d)
                if dspec != spec:
                    raise ValueError(
                        f"{api}: in_dims[{k}]={d!r} is not structured like args[{k}]; give an "
                        f"int, None, or a pytree of them shaped like args[{k}]"
                    )
                flat.extend(leaves)
        return tuple(flat)

    def _per_argnum(self, row: Any) -> Any:
        """A tuple over the flat leaves, nested per argnum (a tuple over argnums unless single)."""
        items = [
            row[start] if spec is None else unflatten(spec, row[start:stop])
            for (start, stop), spec in zip(self._relative(), self.argspecs, strict=True)
        ]
        return items[0] if self.single else tuple(items)

    def _relative(self) -> list[tuple[int, int]]:
        """``groups`` as slices of ``nums``."""
        out, at = [], 0
        for start, stop in self.groups:
            out.append((at, at + stop - start))
            at += stop - start
        return out

    def jacobian(self, result: Any) -> Any:
        """A Jacobian over the flat leaves (tuple argnums) nested like torch.func.jacrev's."""
        if self.trivial:
            return result
        spec = self.out[0]
        return unflatten(spec, [self._per_argnum(row) for row in _up_to(spec, result)])

    def hessian(self, result: Any) -> Any:
        """A Hessian over the flat leaves (``H[a][b]`` per output leaf, in the output's
        structure) nested like torch.func.hessian's: the output's structure outside."""
        if self.trivial:
            return result
        spec = self.out[0]
        return unflatten(
            spec,
            [self._per_argnum([self._per_argnum(row) for row in H]) for H in _up_to(spec, result)],
        )


def _batched_positions(in_dims: object, n: int) -> list[int]:
    # NOTE: derivs/_pytree.py's batched_positions does the same; not imported (see the module
    # NOTE): which arguments are batched decides which get flattened, so it stays independent.
    if in_dims is None:
        return []
    if isinstance(in_dims, int):
        return list(range(n))
    if isinstance(in_dims, tuple):
        return [k for k, d in enumerate(in_dims[:n]) if d is not None]
    return []


def _check_leaves(api: str, leaves: list[Any], spec: Spec, name: str) -> None:
    if not leaves:
        raise ValueError(f"{api}: {name} is an empty pytree; it has no tensors to differentiate")
    for i, leaf in enumerate(leaves):
        where = f"{name}{leaf_path(spec, i)}"
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"{api}: {where} is {type(leaf).__name__} {leaf!r}, not a tensor; every leaf "
                f"of a differentiated argument must be a floating-point tensor"
            )
        if not leaf.is_floating_point():
            raise TypeError(
                f"{api}: {where} has dtype {leaf.dtype}; only floating-point tensors can be"
                " differentiated (cast it first, e.g. x.double())"
            )
