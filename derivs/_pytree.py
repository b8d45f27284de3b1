"""Pytree arguments: differentiated by their leaves, results nested as torch.func nests them.

Every operator takes the same route: the pytree-valued positional arguments (dicts, lists,
tuples, namedtuples of tensors, nested) are flattened into their leaves, the tensor
machinery runs on the leaves as on a tuple ``argnums``, and the results are unflattened:

* a Jacobian: ``func``'s output structure outside, each argument's structure inside (a tuple
  over ``argnums`` between them when ``argnums`` is a tuple), as ``torch.func.jacrev``;
* a Hessian: ``func``'s output structure outside, the argument's structure twice inside, as
  ``torch.func.hessian`` (the batch operators likewise, each leaf with the batch dim first);
* ``hvp``/``vhp``: shaped like ``primals`` (``func`` returns a scalar tensor there).

Plain tensor arguments are not touched (``Flat.trivial``): the operators then run exactly as
before. Every leaf of a differentiated argument must be a real floating-point tensor; a
leaf that is not is named by its path (``args[0]['lr']``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._pytree import (
    SUPPORTED_NODES,
    TreeSpec,
    _broadcast_to_and_flatten,
    _get_node_type,
    keystr,
    tree_flatten,
    tree_flatten_with_path,
    tree_unflatten,
)

from derivs import _validate

Dims = int | None | tuple[Any, ...]


def is_pytree(value: object) -> bool:
    """A container torch.func flattens (dict, list, tuple, namedtuple, ...), not a leaf."""
    return not isinstance(value, torch.Tensor) and _get_node_type(value) in SUPPORTED_NODES


def batched_positions(in_dims: object, n: int) -> list[int]:
    """The positions of the ``n`` arguments that ``in_dims`` (vmap's) batches; none for an
    ``in_dims`` the validators refuse."""
    if isinstance(in_dims, bool):
        return []
    if isinstance(in_dims, int):
        return list(range(n))
    if isinstance(in_dims, tuple):
        return [k for k, d in enumerate(in_dims[:n]) if d is not None]
    return []


def check_leaves(api: str, value: Any, name: str) -> tuple[list[torch.Tensor], TreeSpec]:
    """The leaves of the differentiated pytree ``value`` (called ``name``), each checked."""
    with_path, spec = tree_flatten_with_path(value)
    if not with_path:
        raise ValueError(
            f"{api}: {name} is an empty {type(value).__name__}; it has no tensors to differentiate"
        )
    leaves = []
    for path, leaf in with_path:
        where = f"{name}{keystr(path)}"
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"{api}: {where} is {_article(leaf)}, not a tensor; every leaf of a "
                f"differentiated argument must be a floating-point tensor (keep other values "
                f"in an argument that argnums does not name, or close over them)"
            )
        if not leaf.dtype.is_floating_point:
            raise TypeError(
                f"{api}: {where} is {_validate.describe(leaf)}; only real floating-point "
                f"tensors can be differentiated (convert with .double() or .float())"
            )
        leaves.append(leaf)
    return leaves, spec


def _article(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def paths(spec: TreeSpec) -> list[str]:
    """The ``['k'][0]`` path of each leaf of ``spec``, in leaf order."""
    dummy = tree_unflatten([0] * spec.num_leaves, spec)
    return [keystr(path) for path, _ in tree_flatten_with_path(dummy)[0]]


def first_difference(a: TreeSpec, b: TreeSpec, where: str = "") -> str | None:
    """Where the structures ``a`` and ``b`` first differ (a path, ``""`` for the root)."""
    if a.is_leaf() and b.is_leaf():
        return None
    if a.type != b.type or a.context != b.context or a.num_children != b.num_children:
        return where
    for key, ca, cb in zip(_child_keys(a), _children(a), _children(b), strict=True):
        found = first_difference(ca, cb, where + key)
        if found is not None:
            return found
    return None


def _children(spec: TreeSpec) -> list[TreeSpec]:
    """``spec``'s child specs: ``children()`` where torch has it (2.13 deprecates the
    ``children_specs`` field), the field on older torch (2.6 has no ``children()``)."""
    children = getattr(spec, "children", None)
    return list(children()) if callable(children) else list(spec.children_specs)


def _child_keys(spec: TreeSpec) -> list[str]:
    """The path piece of each child of ``spec``: ``['k']``, ``[0]`` or ``.field``."""
    return [key for key, _ in _children_with_keys(tree_unflatten([0] * spec.num_leaves, spec))]


def check_same_structure(
    api: str, primals: Any, p_spec: TreeSpec, other: Any, name: str
) -> list[Any]:
    """The leaves of ``other`` (the tangents), which must be structured like ``primals``."""
    leaves, spec = tree_flatten(other)
    if spec != p_spec:
        where = first_difference(p_spec, spec) or ""
        raise ValueError(
            f"{api}: {name} is not structured like primals: they first differ at "
            f"{name}{where} ({_describe_node(other, where)}) against primals{where} "
            f"({_describe_node(primals, where)})"
        )
    return leaves


def _describe_node(tree: Any, where: str) -> str:
    node = _at(tree, where)
    if isinstance(node, dict):
        return f"a {type(node).__name__} with keys {sorted(map(str, node))}"
    if isinstance(node, tuple | list):
        return f"a {type(node).__name__} of {len(node)}"
    return _validate.describe(node)


def _at(tree: Any, where: str) -> Any:
    """The subtree of ``tree`` at the path ``where`` (a path ``first_difference`` returned)."""
    if not where:
        return tree
    for key, child in _children_with_keys(tree):
        if where.startswith(key):
            return _at(child, where[len(key) :])
    return tree


def _children_with_keys(tree: Any) -> list[tuple[str, Any]]:
    node = SUPPORTED_NODES.get(_get_node_type(tree))
    if node is None:
        return []
    if node.flatten_with_keys_fn is None:
        return [(f"[{i}]", c) for i, c in enumerate(node.flatten_fn(tree)[0])]
    return [(keystr((k,)), c) for k, c in node.flatten_with_keys_fn(tree)[0]]


def flatten_primals(
    api: str, primals: Any, vectors: Any, name: str
) -> tuple[Any, Any, TreeSpec | None]:
    """``primals`` and ``vectors`` (tangents or cotangents) as tuples of their leaves, and the
    structure of ``primals``, where ``primals`` holds pytrees; else unchanged, and ``None``."""
    if not isinstance(primals, tuple) or not any(is_pytree(p) for p in primals):
        return primals, vectors, None
    leaves, spec = check_leaves(api, primals, "primals")
    if not isinstance(vectors, tuple):
        raise TypeError(
            f"{api}: {name} must be a tuple structured like primals, got "
            f"{_validate.describe(vectors)}"
        )
    return tuple(leaves), tuple(check_same_structure(api, primals, spec, vectors, name)), spec


def on_leaves(func: Callable[..., Any], spec: TreeSpec) -> Callable[..., Any]:
    """``func`` of the tuple of pytrees ``spec`` as a function of its leaves."""

    def call(*leaves: Any) -> Any:
        return func(*tree_unflatten(list(leaves), spec))

    _named_like(call, func)
    return call


def _named_like(wrapper: Callable[..., Any], func: object) -> None:
    """Give ``wrapper`` the names of ``func`` (in messages and reports)."""
    wrapper.__name__ = _validate.func_name(func)
    wrapper.__qualname__ = getattr(func, "__qualname__", wrapper.__name__)


class Flat:
    """Positional ``args`` with the pytree-valued ones at ``positions`` flattened into leaves.

    ``args``/``nums``: the flat arguments and the flat positions of the differentiated
    leaves (argnums order); ``groups[i]``: the slice of ``nums`` that argnum ``i`` became;
    ``specs[i]``: its structure (``None`` for a tensor). ``wrap(func)`` is ``func`` as a
    function of the flat arguments. ``trivial``: nothing was flattened.
    """

    def __init__(
        self,
        api: str,
        args: Sequence[Any],
        argnums: tuple[int, ...],
        *,
        name: str = "args",
        also: Sequence[int] = (),
    ) -> None:
        flatten_at = {a for a in argnums if is_pytree(args[a])} | {
            a for a in also if is_pytree(args[a])
        }
        self.trivial = not flatten_at
        self.argnums = argnums
        if self.trivial:
            self.args: tuple[Any, ...] = tuple(args)
            self.nums = argnums
            self.groups = [(i, i + 1) for i in range(len(argnums))]
            self.specs: list[TreeSpec | None] = [None] * len(argnums)
            return
        flat: list[Any] = []
        self._layout: list[tuple[int, int, TreeSpec | None]] = []  # per arg: flat slice, spec
        for k, a in enumerate(args):
            if k in flatten_at:
                if k in argnums:
                    leaves, spec = check_leaves(api, a, f"{name}[{k}]")
                else:
                    leaves, spec = tree_flatten(a)
                self._layout.append((len(flat), len(flat) + len(leaves), spec))
                flat.extend(leaves)
            else:
                self._layout.append((len(flat), len(flat) + 1, None))
                flat.append(a)
        self.args = tuple(flat)
        nums: list[int] = []
        self.groups = []
        self.specs = []
        for a in argnums:
            start, stop, arg_spec = self._layout[a]
            self.groups.append((len(nums), len(nums) + stop - start))
            nums.extend(range(start, stop))
            self.specs.append(arg_spec)
        self.nums = tuple(nums)

    def rebuild(self, flat: Sequence[Any]) -> list[Any]:
        """The original arguments from flat ones."""
        return [
            flat[start] if spec is None else tree_unflatten(list(flat[start:stop]), spec)
            for start, stop, spec in self._layout
        ]

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` as a function of the flat arguments (``func`` itself when trivial)."""
        if self.trivial:
            return func

        def call(*flat: Any) -> Any:
            return func(*self.rebuild(flat))

        _named_like(call, func)
        call.__wrapped__ = func  # type: ignore[attr-defined]
        return call

    def in_dims(self, api: str, in_dims: Dims, nargs: int) -> Dims:
        """``in_dims`` (vmap's: an int, or per argument an int, None or a pytree of them)
        for the flat arguments."""
        if self.trivial or isinstance(in_dims, int) or in_dims is None:
            return in_dims
        if not isinstance(in_dims, tuple) or len(in_dims) != nargs:
            return in_dims  # check_in_dims explains what is wrong with it
        flat: list[Any] = []
        for k, (d, (start, stop, spec)) in enumerate(zip(in_dims, self._layout, strict=True)):
            if spec is None:
                flat.append(d)
                continue
            leaves = _broadcast_to_and_flatten(d, spec)
            if leaves is None:
                raise ValueError(
                    f"{api}: in_dims[{k}]={d!r} does not match the structure of args[{k}]; give "
                    f"an int, None, or a pytree of them shaped like args[{k}]"
                )
            flat.extend(leaves)
            assert len(leaves) == stop - start
        return tuple(flat)

    def nest(self, row: Sequence[Any], i: int) -> Any:
        """The results ``row[groups[i]]`` for argnum ``i``, nested like that argument."""
        start, stop = self.groups[i]
        spec = self.specs[i]
        return row[start] if spec is None else tree_unflatten(list(row[start:stop]), spec)

    def per_argnum(self, row: Sequence[Any], single: bool) -> Any:
        """One result per argnum (nested like it), or the only one when ``single``."""
        items = [self.nest(row, i) for i in range(len(self.groups))]
        return items[0] if single else tuple(items)

    def jacobian(
        self, blocks: Sequence[Sequence[torch.Tensor]], spec: TreeSpec, single: bool
    ) -> Any:
        """``blocks[k][leaf]`` nested: the output structure ``spec`` outside, the inputs' inside."""
        rows = [self.per_argnum(row, single) for row in blocks]
        return rows[0] if spec.is_leaf() else tree_unflatten(rows, spec)

    def hessian(self, H: Sequence[Sequence[torch.Tensor]], single: bool) -> Any:
        """``H[leaf_a][leaf_b]`` nested as ``torch.func.hessian`` (``jacfwd(jacrev)``) nests it:
        a tuple over argnums ``i``, argument ``i``'s structure, a tuple over argnums ``j``,
        argument ``j``'s structure (the tuples only for a tuple ``argnums``)."""
        rows = [self.per_argnum(H[a], single) for a in range(len(self.nums))]
        return self.per_argnum(rows, single)

    def hessians(
        self, per_leaf: Sequence[Sequence[Sequence[torch.Tensor]]], spec: TreeSpec, single: bool
    ) -> Any:
        """``per_leaf[k]``, output leaf ``k``'s ``H[leaf_a][leaf_b]``, nested as
        ``torch.func.hessian`` nests a pytree output: its structure ``spec`` outside, then
        as ``hessian``."""
        return tree_unflatten([self.hessian(H, single) for H in per_leaf], spec)


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` cut into consecutive lists of ``size`` (a flat row-major nest, regrouped)."""
    return [list(items[k : k + size]) for k in range(0, len(items), size)]
