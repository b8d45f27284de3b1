"""Sparse functions: stencils, banded maps, blocks, gathers, convolutions, custom Functions.

A ``SparseFunction`` is built from Python source: its ``repr`` is that source (the formula and
its constants), the callable is compiled from the same text, so evaluating the repr
(``eval_sparse_formula``) gives bit-identical values. Each carries the structure of its
Jacobian (or, for scalar functions, its Hessian), derived from the drawn parameters alone
(offsets, bandwidths, index lists, kernel geometry) by plain loops: the reference that
sparsity detection is checked against, and independent of it.

Kinds (``SPARSE_KINDS``; ``HESSIAN_KINDS`` are the scalar ones):

- ``stencil1d``, ``stencil2d``: shifted terms, periodic (``roll``) or not (slices);
- ``brusselator``: two species on a periodic grid, 5-point Laplacian and reaction terms;
- ``banded``: ``(pad(x).unfold(...) * W).sum(-1)``, lower and upper bandwidths drawn;
- ``block_diagonal``: a per-sample dense map of a batch ``(B, k)``;
- ``gather``, ``scatter``: drawn index tensors;
- ``conv``: 1-D and 2-D (transposed) convolutions with drawn stride, padding, dilation, groups;
- ``coupled``: an elementwise chain plus a few dense couplings (rows ``R`` read columns ``S``);
- ``custom``: custom ``autograd.Function``s (straight-through ``round``, a hand-written
  neighbour sum);
- ``where``: a value-dependent ``where`` (globally both branches; ``local_structure`` gives
  the branch taken at a point);
- scalar: ``rosenbrock`` (chained, lag drawn), ``energy`` (stencil energies in 1-D and
  2-D), ``block_energy`` (a sum of per-sample energies).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._basic import Shape
from ._problems import Problem, problems
from ._sparse_kinds import BUILDERS
from ._sparse_spec import NAMESPACE, Spec

#: Every kind ``sparse_functions(kinds=...)`` accepts, vector-valued ones first.
SPARSE_KINDS = tuple(BUILDERS)
#: The scalar-valued kinds (their ``structure`` is the Hessian's).
HESSIAN_KINDS = ("rosenbrock", "energy", "block_energy")
#: Kinds whose dense Jacobian may vanish where the structure does not, at some points (a
#: ``round`` that is 0, the branch a ``where`` did not take): the structure is then a bound.
VALUE_DEPENDENT_KINDS = frozenset({"custom", "where"})


class SparseFunction:
    """A sparse function: call it like the Python function its ``repr`` prints.

    Attributes:
        kind: the family (one of ``SPARSE_KINDS``).
        in_shapes, out_shape, n_args, arg_names: as for ``GeneratedFunction``.
        scalar: ``out_shape == ()`` (a Hessian kind).
        formula: the right-hand side of the repr; ``constants``: name -> source.
        params: the drawn parameters, by name (offsets, bandwidths, kernel geometry ...).
    """

    def __init__(self, spec: Spec) -> None:
        self._spec = spec
        self.kind = spec.kind
        self.arg_names = spec.arg_names
        self.in_shapes: tuple[Shape, ...] = spec.in_shapes
        self.out_shape: Shape = spec.out_shape
        self.n_args = len(spec.in_shapes)
        self.scalar = spec.out_shape == ()
        self.formula = spec.body
        self.constants = dict(spec.consts)
        self.params = dict(spec.params)
        self.__name__ = self.__qualname__ = spec.name
        self._fn = _compile(spec.name, spec.arg_names, spec.body, spec.consts)
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a in self.arg_names]
        )

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if len(args) != self.n_args:
            raise TypeError(f"{self.__name__} takes {self.n_args} tensors, got {len(args)}")
        return self._fn(*args)

    def structure(self, argnums: Sequence[int] | None = None) -> torch.Tensor:
        """The structural nonzeros, a bool tensor: ``(m, n)`` for the Jacobian, ``(n, n)`` for
        the Hessian of a scalar kind; columns (and Hessian rows) for ``argnums`` (default all)
        flattened and concatenated in that order."""
        return self._select(self._spec.structure, argnums)

    def local_structure(
        self, *args: torch.Tensor, argnums: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The structure at the point ``args`` (equals ``structure`` unless value-dependent)."""
        full = self._spec.structure if self._spec.local is None else self._spec.local(args)
        return self._select(full, argnums)

    def _select(self, full: torch.Tensor, argnums: Sequence[int] | None) -> torch.Tensor:
        picks = list(range(self.n_args)) if argnums is None else list(argnums)
        sizes = [math.prod(s) for s in self.in_shapes]
        starts = [sum(sizes[:k]) for k in range(self.n_args)]
        cols = torch.cat([torch.arange(starts[k], starts[k] + sizes[k]) for k in picks])
        return full[cols][:, cols] if self.scalar else full[:, cols]

    def signature(self) -> str:
        params = ", ".join(
            f"{a}: {_show(s)}" for a, s in zip(self.arg_names, self.in_shapes, strict=True)
        )
        return f"{self.__name__}({params}) -> {_show(self.out_shape)}"

    def __repr__(self) -> str:
        text = f"{self.signature()} = {self.formula}"
        where = "; ".join(f"{k} = {v}" for k, v in self.constants.items())
        return f"{text}  where {where}" if where else text


def _show(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _compile(
    name: str, arg_names: Sequence[str], body: str, consts: dict[str, str]
) -> Callable[..., torch.Tensor]:
    """The function ``def name(args): return body``, constants cast to the first argument."""
    if name in NAMESPACE:
        raise ValueError(f"function name {name!r} would shadow a name of its formula")
    values = {k: eval(src, dict(NAMESPACE)) for k, src in consts.items()}
    first = arg_names[0]
    lines = [f"def {name}({', '.join(arg_names)}):"]
    for k, v in values.items():
        target = first if v.is_floating_point() else f"{first}.device"
        lines.append(f"    {k} = _consts[{k!r}].to({target})")
    lines.append(f"    return {body}")
    namespace = dict(NAMESPACE, _consts=values)
    exec("\n".join(lines), namespace)
    fn: Callable[..., torch.Tensor] = namespace[name]
    return fn


_REPR = re.compile(
    r"^(?P<name>\w+)\((?P<args>.*?)\) -> (?P<out>.*?) = (?P<body>.*?)(?:  where (?P<where>.*))?$"
)


def eval_sparse_formula(text: str) -> Callable[..., torch.Tensor]:
    """The callable a ``SparseFunction``'s repr describes (bit-identical values)."""
    match = _REPR.match(text.strip())
    if match is None:
        raise ValueError(f"not a sparse function's repr: {text!r}")
    arg_names = re.findall(r"(\w+): ", match["args"])
    consts: dict[str, str] = {}
    if match["where"]:
        for item in match["where"].split("; "):
            name, _, source = item.partition(" = ")
            consts[name.strip()] = source
    return _compile(match["name"], arg_names, match["body"], consts)


# --------------------------------------------------------------------------------------------
# strategies


def _check_kinds(kinds: Any, scalar: Any) -> tuple[str, ...]:
    if scalar is not None and not isinstance(scalar, bool):
        raise InvalidArgument(f"scalar={scalar!r} must be True, False or None")
    chosen = SPARSE_KINDS if kinds is None else kinds
    if isinstance(chosen, str) or not all(isinstance(k, str) for k in chosen):
        raise InvalidArgument(f"kinds={kinds!r} must be a collection of kind names")
    unknown = [k for k in chosen if k not in BUILDERS]
    if unknown:
        raise InvalidArgument(f"kinds={kinds!r}: unknown {unknown}; known: {SPARSE_KINDS}")
    if scalar is not None:
        chosen = [k for k in chosen if (k in HESSIAN_KINDS) == scalar]
    ordered = tuple(k for k in SPARSE_KINDS if k in chosen)
    if not ordered:
        raise InvalidArgument(f"kinds={kinds!r} with scalar={scalar!r} leaves no kind")
    return ordered


def sparse_functions(
    *, kinds: Sequence[str] | None = None, scalar: bool | None = None
) -> st.SearchStrategy[SparseFunction]:
    """``SparseFunction`` objects of the given ``kinds`` (default all; ``scalar`` filters them).

    Inputs have at most ``MAX_ELEMENTS`` elements in all, so dense Jacobians and Hessians
    stay cheap oracles. Shrinks toward the first kind of ``SPARSE_KINDS`` allowed, small.
    """
    chosen = _check_kinds(kinds, scalar)
    return st.sampled_from(chosen).flatmap(
        lambda k: st.composite(BUILDERS[k])().map(SparseFunction)
    )


def sparse_problems(
    func: SparseFunction | st.SearchStrategy[SparseFunction] | None = None,
    *,
    kinds: Sequence[str] | None = None,
    scalar: bool | None = None,
    device: str | st.SearchStrategy[str] | None = None,
    dtype: torch.dtype | st.SearchStrategy[torch.dtype] | None = None,
    layout: str | None = None,
) -> st.SearchStrategy[Problem]:
    """``Problem(func, device, dtype, args)`` with a sparse ``func`` (``derivs.strategies.problems``).

    Arguments come from ``tensors`` in ``[-1, 1]``, any layout unless ``layout`` is named.
    """
    if func is None:
        func = sparse_functions(kinds=kinds, scalar=scalar)
    elif kinds is not None or scalar is not None:
        raise InvalidArgument("give func or kinds/scalar, not both")
    elif isinstance(func, SparseFunction):
        func = st.just(func)
    return problems(func, device=device, dtype=dtype, layout=layout)  # type: ignore[arg-type]
