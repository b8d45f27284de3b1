"""Pytree problems: a drawn function whose arguments come packed in dicts, lists and tuples.

A ``PytreeProblem`` packs the tensor arguments of a ``Problem`` (or a ``BatchedProblem``)
into pytrees (a dict named like a model's parameters, a list, a namedtuple, a random nest
of tuples, lists and dicts, or a single leaf in a dict next to plain tensors) and calls the
problem's function on the leaves, in order. So the derivatives of the pytree problem are
the flat problem's, nested as the pytrees are: what an operator over pytrees must return.

The function may return a pytree too (``OUTPUT_KINDS``): the flat problem's output ``y``
and elementwise functions of it (``y ** 2``, ``sin(y)``) packed into a dict, a tuple, a
random nest or a dict of one leaf. Each output leaf is then a function of its own
(``PytreeFunction.leaf``), whose derivatives the pytree's must contain.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch.utils._pytree import TreeSpec, tree_flatten, tree_structure, tree_unflatten

from ._basic import normalize_in_dims
from ._problems import BatchedProblem, Problem, batched_problems, problems

#: how the arguments are packed (``PytreeProblem.kind``).
PYTREE_KINDS = ("dict", "list", "namedtuple", "nested", "single_leaf")
#: what the function returns: its tensor, or a pytree of it and nonlinear functions of it
#: (``pytree``: ``{"y": y, "sq": [y ** 2]}``; ``tuple``: ``(y, sin(y))``; ``nested``: a
#: random nest of up to three; ``single_leaf``: ``{"y": y}``).
OUTPUT_KINDS = ("tensor", "pytree", "tuple", "nested", "single_leaf")

# NOTE: elementwise, so that a batch-polymorphic function stays batch-polymorphic (the sum
# trick), and nonlinear, so that each leaf's second derivatives differ from y's.
# Each output leaf: its name (shown by ``repr``) and its function of ``y``.
_OUTPUT_LEAVES: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
    ("y", lambda y: y),
    ("y ** 2", lambda y: y**2),
    ("sin(y)", torch.sin),
)

_NAMEDTUPLES: dict[int, type] = {}


def _namedtuple(n: int) -> type:
    """One namedtuple type per number of fields (``Params3(p0, p1, p2)``)."""
    if n not in _NAMEDTUPLES:
        _NAMEDTUPLES[n] = namedtuple(f"Params{n}", [f"p{k}" for k in range(n)])
    return _NAMEDTUPLES[n]


def _subset(name: str, value: Sequence[str] | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` (None: all of ``allowed``) as a non-empty tuple of names from ``allowed``."""
    if value is None:
        return allowed
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{name}={value!r} must be a collection of names from {allowed}")
    unknown = [v for v in value if v not in allowed]
    if unknown or not value:
        raise InvalidArgument(f"{name}={value!r}: unknown {unknown} or empty; known: {allowed}")
    return tuple(value)


def _names(n: int) -> list[str]:
    """Keys like a model's parameters: ``0.weight``, ``0.bias``, ``1.weight``, ..."""
    return [f"{k // 2}.{'weight' if k % 2 == 0 else 'bias'}" for k in range(n)]


class PytreeFunction:
    """``y = flat(*leaves of args)``, or, for a pytree output (``spec`` not None), ``y`` and
    functions of it (``_OUTPUT_LEAVES``, in order) packed in the structure ``spec``."""

    def __init__(
        self, flat: Callable[..., torch.Tensor], kind: str, spec: TreeSpec | None = None
    ) -> None:
        self.flat = flat
        self.kind = kind
        self.spec = spec

    def __call__(self, *args: Any) -> Any:
        y = self.flat(*tree_flatten(args)[0])
        if self.spec is None:
            return y
        return tree_unflatten([f(y) for _, f in _OUTPUT_LEAVES[: self.spec.num_leaves]], self.spec)

    def leaf(self, k: int) -> Callable[..., torch.Tensor]:
        """The function giving output leaf ``k`` alone, as a tensor."""

        def only(*args: Any) -> torch.Tensor:
            return _OUTPUT_LEAVES[k][1](self.flat(*tree_flatten(args)[0]))

        only.__name__ = f"leaf{k}"
        return only

    @property
    def n_outputs(self) -> int:
        """How many output leaves ``func`` returns (1 for a tensor)."""
        return 1 if self.spec is None else self.spec.num_leaves

    def __repr__(self) -> str:
        if self.spec is None:
            return f"pytree[{self.kind}]({self.flat!r})"
        names = [name for name, _ in _OUTPUT_LEAVES[: self.spec.num_leaves]]
        shown = tree_unflatten(names, self.spec)
        return f"pytree[{self.kind}]({self.flat!r}) -> {shown!r}".replace("'", "")


class PytreeProblem(NamedTuple):
    """``func(*args)``, ``args`` holding pytrees that pack ``flat.args``; differentiate by
    ``argnums`` (every argument). ``in_dims``: the batch dims packed like ``args`` (None for
    an unbatched problem)."""

    func: PytreeFunction
    args: tuple[Any, ...]
    argnums: int | tuple[int, ...]
    flat: Problem | BatchedProblem
    kind: str
    in_dims: tuple[Any, ...] | None = None

    def pack(self, leaves: Sequence[Any]) -> tuple[Any, ...]:
        """``leaves`` (one per flat argument: tangents, per-leaf results) packed like ``args``."""
        return tuple(tree_unflatten(list(leaves), tree_flatten(self.args)[1]))


def _nest(draw: st.DrawFn, leaves: list[Any]) -> Any:
    """A random nest of tuples, lists and dicts over ``leaves``, in order."""
    if len(leaves) == 1:
        return leaves[0]
    cut = draw(st.integers(1, len(leaves) - 1), label="nest split")
    left, right = _nest(draw, leaves[:cut]), _nest(draw, leaves[cut:])
    node = draw(st.sampled_from(["tuple", "list", "dict"]), label="nest node")
    return (
        (left, right)
        if node == "tuple"
        else [left, right]
        if node == "list"
        else {"a": left, "b": right}
    )


def _pack(draw: st.DrawFn, kind: str, leaves: list[Any]) -> tuple[tuple[Any, ...], Any]:
    """(args, argnums): ``leaves`` packed into pytree arguments of ``kind``."""
    n = len(leaves)
    if kind == "single_leaf":
        args = ({"w": leaves[0]}, *leaves[1:])
        return args, (tuple(range(n)) if n > 1 else 0)
    if kind == "dict":
        tree: Any = dict(zip(_names(n), leaves, strict=True))
    elif kind == "list":
        tree = list(leaves)
    elif kind == "namedtuple":
        tree = _namedtuple(n)(*leaves)
    else:
        tree = _nest(draw, leaves)
        if n == 1:
            tree = (tree,)
    as_tuple = draw(st.booleans(), label="argnums as a tuple")
    return (tree,), ((0,) if as_tuple else 0)


def _output_spec(draw: st.DrawFn, output: str) -> TreeSpec | None:
    """The structure of a pytree output of kind ``output`` (``None`` for a tensor)."""
    if output == "tensor":
        return None
    if output == "pytree":
        return tree_structure({"y": 0, "sq": [0]})
    if output == "tuple":
        return tree_structure((0, 0))
    if output == "single_leaf":
        return tree_structure({"y": 0})
    n = draw(st.integers(2, len(_OUTPUT_LEAVES)), label="output leaves")
    return tree_structure(_nest(draw, list(range(n))))


def pytree_problems(
    problem: st.SearchStrategy[Problem] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    outputs: Sequence[str] = ("tensor",),
) -> st.SearchStrategy[PytreeProblem]:
    """``PytreeProblem``: a ``Problem``'s arguments packed into pytrees of a drawn kind.

    ``problem`` defaults to ``problems()``; ``kinds`` to ``PYTREE_KINDS``; ``outputs`` (a
    subset of ``OUTPUT_KINDS``) says whether the function may return a pytree.
    """
    chosen_kinds = _subset("kinds", kinds, PYTREE_KINDS)
    chosen_outputs = _subset("outputs", outputs, OUTPUT_KINDS)
    return _pytree_problems(
        problems() if problem is None else problem, chosen_kinds, chosen_outputs
    )


@st.composite
def _pytree_problems(
    draw: st.DrawFn,
    problem: st.SearchStrategy[Problem],
    kinds: Sequence[str],
    outputs: Sequence[str],
) -> PytreeProblem:
    p = draw(problem)
    kind = draw(st.sampled_from(list(kinds)), label="pytree kind")
    output = draw(st.sampled_from(list(outputs)), label="output kind")
    args, argnums = _pack(draw, kind, list(p.args))
    spec = _output_spec(draw, output)
    return PytreeProblem(PytreeFunction(p.func, kind, spec), args, argnums, p, kind)


def batched_pytree_problems(
    problem: st.SearchStrategy[BatchedProblem] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    outputs: Sequence[str] = ("tensor",),
) -> st.SearchStrategy[PytreeProblem]:
    """``PytreeProblem`` of a ``BatchedProblem`` (default ``batched_problems()``), its
    ``in_dims`` packed like the arguments (``{"0.weight": 0, "0.bias": None}``); ``outputs``
    as for ``pytree_problems`` (a pytree output's leaves are elementwise in ``y``, so a
    batch-polymorphic function stays one)."""
    chosen = _subset("kinds", kinds, PYTREE_KINDS)
    chosen_outputs = _subset("outputs", outputs, OUTPUT_KINDS)
    return _batched_pytree_problems(
        batched_problems() if problem is None else problem, chosen, chosen_outputs
    )


@st.composite
def _batched_pytree_problems(
    draw: st.DrawFn,
    problem: st.SearchStrategy[BatchedProblem],
    kinds: Sequence[str],
    outputs: Sequence[str],
) -> PytreeProblem:
    p = draw(problem)
    kind = draw(st.sampled_from(list(kinds)), label="pytree kind")
    output = draw(st.sampled_from(list(outputs)), label="output kind")
    args, argnums = _pack(draw, kind, list(p.args))
    dims = normalize_in_dims(p.in_dims, p.func.in_shapes)
    in_dims = tuple(tree_unflatten(list(dims), tree_flatten(args)[1]))
    func = PytreeFunction(p.func, kind, _output_spec(draw, output))
    return PytreeProblem(func, args, argnums, p, kind, in_dims)
