"""The sparse transforms: ``sparse_jacobian`` and ``sparse_hessian``, and the callable they
return. Arguments are validated eagerly where they can be, the rest once per call, before
anything is differentiated; every message names the API and the argument."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from derivs import _validate
from derivs._validate import Argnums
from derivs.sparse import _coloring, _detect
from derivs.sparse._coloring import Coloring
from derivs.sparse._pattern import Shape, SparsityPattern, given_pattern
from derivs.sparse._plan import SparsePlan, signature
from derivs.sparse._recover import LAYOUTS

JACOBIAN_MODES = {
    "auto": "the colouring of columns or of rows with fewer colours (columns on a tie)",
    "fwd": "colour the columns; J @ S by vmap over jvp (one product per colour)",
    "rev": "colour the rows; S^T J by vmap over vjp",
}
HESSIAN_MODES = {
    "star": "star colouring: H @ S by Hessian-vector products, each entry read directly "
    "from its row or, by symmetry, its column",
    "column": "colour the columns as for a Jacobian (distance 2); never fewer colours than star",
}
PATTERNS = {
    "global": "detect by tracing the derivative: valid for every input value (the default)",
    "local": "detect at the point of each call: valid there only (for code with Python "
    "branches on values); detected again on every call",
}

# NOTE: plans kept per transform; the oldest goes first (like derivs.jacobian's auto memory).
_MAX_PLANS = 64


def _check_pattern_spec(api: str, pattern: object) -> None:
    if isinstance(pattern, str):
        _validate.check_choice(api, "pattern", pattern, PATTERNS)
    elif not isinstance(pattern, torch.Tensor | SparsityPattern):
        raise TypeError(
            f"{api}: pattern must be 'global', 'local', a bool tensor, a torch sparse tensor "
            f"or a derivs.SparsityPattern, got {_validate.describe(pattern)}"
        )


def pytree_hint(api: str, hessian: bool) -> str:
    """What ``api`` (a sparse transform, or its sparsity pattern) says when ``func`` returns a
    pytree: it takes one tensor."""
    if hessian:
        return (
            f"{api} takes one scalar output, not a pytree: reduce the outputs to a "
            f"scalar, or use derivs.hessian, which takes pytree outputs (dense)"
        )
    return (
        f"{api} takes one tensor output, not a pytree: concatenate the leaves "
        f"(torch.cat of their .flatten()), or use derivs.jacobian, which takes pytree outputs "
        f"(dense)"
    )


class SparseTransform:
    """The callable ``sparse_jacobian``/``sparse_hessian`` return.

    ``transform(*args)`` evaluates the sparse matrix at ``args``; ``transform.prepare(*args)``
    gives the :class:`~derivs.SparsePlan` for their signature (the pattern, colouring and colour
    count to inspect, or a plan to call directly). Plans are kept per input signature
    (shapes, dtypes, devices, the other arguments' values), except with ``pattern="local"``.
    """

    def __init__(
        self,
        api: str,
        func: Callable[..., Any],
        argnums: Argnums,
        *,
        hessian: bool,
        pattern: object,
        mode: str,
        order: str,
        layout: str,
        chunk_size: int | None,
        guard: bool,
    ) -> None:
        self.api = api
        self.func = func
        self.argnums = argnums
        self.hessian = hessian
        self.pattern = pattern
        self.mode = mode
        self.order = order
        self.layout = layout
        self.chunk_size = chunk_size
        self.guard = guard
        self._plans: dict[Any, SparsePlan] = {}
        what = "hessian" if hessian else "jacobian"
        self.__name__ = _validate.transform_name(f"sparse_{what}", func, argnums)
        self.__doc__ = (
            f"Sparse {what.capitalize()} of {_validate.func_name(func)} "
            f"with respect to argnums={argnums!r} "
            f"(pattern={pattern if isinstance(pattern, str) else 'given'!r}, mode={mode!r})."
        )

    def __call__(self, *args: Any) -> Any:
        plan = self.prepare(*args)
        return plan.assemble(plan.values(args))

    def prepare(self, *args: Any) -> SparsePlan:
        """The plan for ``args``' signature: made (detection, colouring) or reused.

        Under ``torch.compile`` a plan already made is found without leaving the graph; a new
        one is made eagerly (detection cannot be traced), at the cost of a graph break.
        """
        nums = _validate.normalize_argnums(self.api, self.argnums, len(args))
        diff = _validate.check_diff_args(self.api, args, nums)
        for a, x in zip(nums[1:], diff[1:], strict=True):
            if x.device != diff[0].device:
                raise ValueError(
                    f"{self.api}: args[{a}] is on {x.device}, expected {diff[0].device} like "
                    f"args[{nums[0]}]"
                )
        key = None if self.pattern == "local" else signature(args, nums)
        plan = self._plans.get(key) if key is not None else None
        return self._new_plan(args, nums, key) if plan is None else plan

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def _new_plan(self, args: tuple[Any, ...], nums: tuple[int, ...], key: Any) -> SparsePlan:
        plan = self._make(args, nums)
        if key is not None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _make(self, args: tuple[Any, ...], nums: tuple[int, ...]) -> SparsePlan:
        checked = _validate.CheckedFunc(
            self.func,
            self.api,
            allow_pytree=False,
            scalar=self.hessian,
            pytree_hint=pytree_hint(self.api, self.hessian),
        )
        out = checked(*args)
        out_shape: Shape = tuple(out.shape)
        in_shapes = [tuple(args[a].shape) for a in nums]
        row_shape: Shape = out_shape
        if self.hessian:
            row_shape = (
                in_shapes[0] if len(nums) == 1 else (sum(map(_validate.numel_of, in_shapes)),)
            )
        pattern = self._pattern(checked, args, nums, row_shape, in_shapes)
        mode = {"auto": "auto", "fwd": "column", "rev": "row"}.get(self.mode, self.mode)
        col = _coloring.coloring_of(pattern, mode, self.order)
        twin = None
        if self.mode == "auto" and col.mode == "column" and pattern == pattern.transpose():
            # NOTE: the same graph colours the rows: reverse mode for free (see SparsePlan).
            twin = Coloring("row", col.colors, col.order, pattern, col.tried)
        single = not isinstance(self.argnums, tuple)
        return SparsePlan(
            self.api,
            checked,
            args,
            nums,
            pattern,
            col,
            hessian=self.hessian,
            out_shape=out_shape,
            out_dtype=out.dtype,
            layout=self.layout,
            nested="single" if single else ("nested" if self.hessian else "tuple"),
            chunk_size=self.chunk_size,
            guard=self.guard,
            twin=twin,
        )

    def _pattern(
        self,
        checked: Callable[..., Any],
        args: tuple[Any, ...],
        nums: tuple[int, ...],
        row_shape: Shape,
        in_shapes: list[Shape],
    ) -> SparsityPattern:
        if not isinstance(self.pattern, str):
            return given_pattern(
                self.api, self.pattern, row_shape, in_shapes, symmetric=self.hessian
            )
        local = self.pattern == "local"
        detect = _detect.hessian_pattern if self.hessian else _detect.jacobian_pattern
        rows, cols, shape = detect(checked, args, nums, local=local, api=self.api)
        return SparsityPattern(
            rows,
            cols,
            shape,
            out_shape=row_shape,
            in_shapes=in_shapes,
            kind=self.pattern,
            symmetric=self.hessian,
        )

    def __repr__(self) -> str:
        return f"<{self.__name__}: {len(self._plans)} plan(s)>"


# NOTE: documented (and named in tracebacks) where users import it from.
SparseTransform.__module__ = "derivs.sparse"


def _check_common(
    api: str,
    func: object,
    argnums: object,
    pattern: object,
    mode: object,
    modes: Mapping[str, str],
    order: object,
    layout: object,
    chunk_size: object,
    guard: object,
) -> None:
    _validate.check_callable(api, func)
    _validate.check_argnums_spec(api, argnums)
    _check_pattern_spec(api, pattern)
    _validate.check_choice(api, "mode", mode, modes)
    _validate.check_choice(api, "order", order, _coloring.ORDER_CHOICES)
    _validate.check_choice(api, "layout", layout, LAYOUTS)
    _validate.check_chunk_size(api, chunk_size)
    _validate.check_bool(api, "guard", guard)


def sparse_jacobian(
    func: Callable[..., torch.Tensor],
    argnums: Argnums = 0,
    *,
    pattern: str | torch.Tensor | SparsityPattern = "global",
    mode: str = "auto",
    order: str = "best",
    layout: str = "coo",
    chunk_size: int | None = None,
    guard: bool = False,
) -> SparseTransform:
    """Return a function computing the sparse Jacobian of ``func`` by compressed evaluation.

    The pattern (detected, or given) is coloured so that columns (or rows) sharing no row
    (column) share a colour; one Jacobian-vector (vector-Jacobian) product per colour then
    gives every nonzero, read out by one gather. Detection and colouring happen once per
    input signature and are reused (``.prepare(*args)`` shows them).

    Args:
        func: a function of tensors returning one floating-point tensor.
        argnums: the positional argument(s) to differentiate; an int or a tuple of ints.
        pattern: ``"global"`` (traced, valid everywhere), ``"local"`` (at each call's point
            only), or the pattern itself: a bool tensor or torch sparse tensor of shape
            ``(*out, *in)`` (one argnum) or ``(out numel, in numel)``, or a
            :class:`SparsityPattern`.
        mode: ``"auto"``, ``"fwd"`` (colour columns, forward mode) or ``"rev"`` (rows).
        order: the greedy colouring's vertex order: ``"best"`` (all, fewest colours kept),
            ``"natural"``, ``"largest_first"``, ``"smallest_last"`` or ``"incidence_degree"``.
        layout: ``"coo"`` (``(*out, *in)``), ``"csr"`` (2-D ``(out numel, in numel)``) or
            ``"dense"``.
        chunk_size: products evaluated at once (memory, not values); None: all at once.
        guard: check every result against one extra random product; a nonzero outside the
            pattern raises :class:`SparsityError` naming the entries.

    Returns:
        A :class:`~derivs.sparse.SparseTransform`: called with ``func``'s arguments it returns the Jacobian in
        ``layout``, in the input's dtype and on its device, of shape ``(*out_shape,
        *in_shape)`` (``"csr"``: ``(out numel, in numel)``); a tuple ``argnums`` gives a tuple
        of blocks, one per argnum.

    Raises:
        TypeError, ValueError: bad arguments, naming the argument (a pattern of the wrong
            shape or type, an unknown mode, order or layout, ...); global detection of a
            ``func`` that branches on values (use ``pattern="local"`` or give it).
        SparsityError: with ``guard=True``, when the pattern misses a nonzero.

    >>> import torch, derivs
    >>> f = lambda x: x[1:] * x[:-1]
    >>> derivs.sparse_jacobian(f, layout="dense")(torch.tensor([1.0, 2.0, 3.0]))
    tensor([[2., 1., 0.],
            [0., 3., 2.]])
    """
    api = "derivs.sparse_jacobian"
    _check_common(
        api, func, argnums, pattern, mode, JACOBIAN_MODES, order, layout, chunk_size, guard
    )
    return SparseTransform(
        api,
        func,
        argnums,
        hessian=False,
        pattern=pattern,
        mode=mode,
        order=order,
        layout=layout,
        chunk_size=chunk_size,
        guard=guard,
    )


def sparse_hessian(
    func: Callable[..., torch.Tensor],
    argnums: Argnums = 0,
    *,
    pattern: str | torch.Tensor | SparsityPattern = "global",
    mode: str = "star",
    order: str = "best",
    layout: str = "coo",
    chunk_size: int | None = None,
    guard: bool = False,
) -> SparseTransform:
    """Return a function computing the sparse Hessian of a scalar ``func`` by Hessian-vector
    products, one per colour of a star colouring, each entry read directly.

    Args:
        func: a function of tensors returning a 0-d floating-point tensor.
        argnums, pattern, order, layout, chunk_size, guard: as for :func:`sparse_jacobian`;
            a given pattern has shape ``(*in, *in)`` (one argnum) or ``(n, n)`` and is made
            symmetric (``(j, i)`` added for every ``(i, j)``).
        mode: ``"star"`` (the default) or ``"column"`` (see ``HESSIAN_MODES``).

    Returns:
        A :class:`~derivs.sparse.SparseTransform` giving the Hessian of shape ``(*in_shape, *in_shape)``
        (``"csr"``: ``(n, n)``); a tuple ``argnums`` gives nested tuples ``H[i][j]`` of shape
        ``(*in_i, *in_j)``.

    Raises:
        TypeError, ValueError: as for :func:`sparse_jacobian`; a ``func`` that does not
            return a 0-d tensor.
        SparsityError: with ``guard=True``, when the pattern misses a nonzero.

    >>> import torch, derivs
    >>> f = lambda x: (x[1:] * x[:-1]).sum()
    >>> derivs.sparse_hessian(f, layout="dense")(torch.tensor([1.0, 2.0, 3.0]))
    tensor([[0., 1., 0.],
            [1., 0., 1.],
            [0., 1., 0.]])
    """
    api = "derivs.sparse_hessian"
    _check_common(
        api, func, argnums, pattern, mode, HESSIAN_MODES, order, layout, chunk_size, guard
    )
    return SparseTransform(
        api,
        func,
        argnums,
        hessian=True,
        pattern=pattern,
        mode=mode,
        order=order,
        layout=layout,
        chunk_size=chunk_size,
        guard=guard,
    )
