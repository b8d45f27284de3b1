"""Sparsity detection: the structural nonzeros of a Jacobian or a Hessian, by tracing its derivative.

The derivative itself is traced, not the function: ``jacobian_pattern`` runs the
vector-Jacobian product ``v -> v^T J`` (``torch.autograd.grad`` with ``v`` as the
cotangent) under the tracer of ``derivs.sparse._trace``, which follows every ATen op autograd
runs and propagates, per element, the set of cotangent elements it depends on. ``v^T J`` is
linear in ``v``, so element ``j`` of the result depends on ``v[i]`` exactly where ``J[i, j]``
may be nonzero. Tracing the derivative is what makes custom ``autograd.Function``s right (a
straight-through ``round`` has Jacobian I by its backward, though ``round`` has derivative 0),
and ``detach``, in-place updates and views come out as autograd computes them.
``hessian_pattern`` does the same for the Hessian-vector product (reverse over reverse) of a
scalar function and symmetrises.

*Global* (the default) patterns hold at every point: values that change with the input never
steer the trace (a value-dependent ``where`` counts both branches; Python control flow on
input values is refused with a ``ValueError``). *Local* patterns (``local=True``) hold at the
given point only: the trace follows the branches taken there (``where``, masks, index
tensors computed from the input, Python control flow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs._validate import check_diff_args, describe
from derivs.sparse import _deps, _rules
from derivs.sparse._deps import Deps
from derivs.sparse._trace import Tracker, Untraceable

Pattern = tuple[torch.Tensor, torch.Tensor, tuple[int, int]]

_HINT = (
    "use local detection (valid at this point only) or give the pattern "
    "(a boolean tensor or a torch sparse tensor)"
)


def jacobian_pattern(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    *,
    local: bool = False,
    api: str = "derivs.jacobian_sparsity",
) -> Pattern:
    """Structural nonzeros of ``d func(*args) / d args[argnums]``.

    ``func`` returns one tensor (any shape); ``m`` is its numel. The differentiated inputs are
    flattened and concatenated in ``argnums`` order; ``n`` is their total numel.

    Args:
        func: the function; called once (plus its backward) under the tracer.
        args: the positional arguments; ``args[k]`` for ``k`` in ``argnums`` are real
            floating-point tensors. The other arguments are treated as changing too (a global
            pattern holds for all their values).
        argnums: the positions differentiated, non-negative and distinct.
        local: False for a pattern valid at every input value (global); True for one valid
            at this point only.
        api: the name error messages start with.

    Returns:
        ``(rows, cols, (m, n))``: int64 CPU tensors of equal length ``nnz``, unique pairs
        sorted by row then column.

    Raises:
        TypeError: an ``args[k]`` differentiated is not a floating-point tensor.
        ValueError: ``func`` does not return a single floating-point tensor; global tracing
            is impossible (``func`` branches on input values or reads them into Python),
            with a hint to use local detection or give the pattern; the derivative leaves
            torch (``.numpy()`` of a gradient, in either mode).
        Exception: whatever ``func`` raises, unchanged.

    Example:
        >>> x = torch.arange(4.0, dtype=torch.float64)
        >>> rows, cols, shape = jacobian_pattern(lambda x: x[1:] * x[:-1], (x,), (0,))
        >>> shape, rows.tolist(), cols.tolist()
        ((3, 4), [0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 3])
    """
    diff = check_diff_args(api, args, argnums)
    _check_real(api, diff, argnums)
    n = sum(t.numel() for t in diff)
    tracker = Tracker(0, local=local, rules=_rules.apply)
    rows: list[Deps | None] = []
    m = 0
    with _converted(api, tracker), tracker.active(), torch.enable_grad():
        leaves, call_args = _leaves(tracker, args, argnums)
        out = _single_output(api, func(*call_args))
        m = out.numel()
        tracker.n_seeds = m
        if out.requires_grad and m and n:
            v = torch.ones_like(out)
            tracker.seed(v, 0)
            grads = tracker.grad([out], leaves, [v])
            rows = [None if g is None else tracker.deps(g) for g in grads]
    col, row = _pairs(rows, [t.numel() for t in diff])
    return _sorted(row, col, m, n)


def hessian_pattern(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    *,
    local: bool = False,
    api: str = "derivs.hessian_sparsity",
) -> Pattern:
    """Structural nonzeros of the Hessian of a scalar ``func``: ``(n, n)``, symmetric.

    Args, Raises: as for ``jacobian_pattern``; ``func`` must return a single element
    (``ValueError`` otherwise).

    Returns:
        ``(rows, cols, (n, n))``: both ``(i, j)`` and ``(j, i)`` for every nonzero, sorted
        by row then column.

    Example:
        >>> x = torch.ones(3, dtype=torch.float64)
        >>> rows, cols, shape = hessian_pattern(lambda x: (x[1:] * x[:-1]).sum(), (x,), (0,))
        >>> shape, rows.tolist(), cols.tolist()
        ((3, 3), [0, 1, 1, 2], [1, 0, 2, 1])
    """
    diff = check_diff_args(api, args, argnums)
    _check_real(api, diff, argnums)
    sizes = [t.numel() for t in diff]
    n = sum(sizes)
    tracker = Tracker(n, local=local, rules=_rules.apply)
    rows: list[Deps | None] = []
    with _converted(api, tracker), tracker.active(), torch.enable_grad():
        leaves, call_args = _leaves(tracker, args, argnums)
        out = _single_output(api, func(*call_args))
        if out.numel() != 1:
            raise ValueError(
                f"{api}: func must return a single element for a Hessian, got {describe(out)}"
            )
        rows = _hvp_rows(tracker, out, leaves, sizes)
    row, col = _pairs(rows, sizes)
    both_r = torch.cat([row, col])
    both_c = torch.cat([col, row])
    return _sorted(both_r, both_c, n, n)


def _hvp_rows(
    tracker: Tracker, out: torch.Tensor, leaves: list[torch.Tensor], sizes: list[int]
) -> list[Deps | None]:
    """Trace ``H v`` (the gradient of ``grad(out) . v``); the rows of each block of ``H v``."""
    if not out.requires_grad:
        return []
    grads = tracker.grad([out], leaves, create_graph=True)
    used, cotangents = [], []
    offset = 0
    for g, size in zip(grads, sizes, strict=True):
        if g is not None and g.requires_grad and size:
            v = torch.ones_like(g)
            tracker.seed(v, offset)
            used.append(g)
            cotangents.append(v)
        offset += size
    if not used:
        return []
    hv = tracker.grad(used, leaves, cotangents)
    return [None if h is None else tracker.deps(h) for h in hv]


def _leaves(
    tracker: Tracker, args: Sequence[Any], argnums: tuple[int, ...]
) -> tuple[list[torch.Tensor], list[Any]]:
    """Fresh leaves for the differentiated arguments; every tensor argument marked varying."""
    for a in args:
        if isinstance(a, torch.Tensor):
            tracker.mark_varying(a)
    call_args = list(args)
    leaves = []
    for k in argnums:
        leaf = args[k].detach().requires_grad_(True)
        leaves.append(leaf)
        # NOTE: a copy, so func may update its argument in place without touching the caller's.
        call_args[k] = leaf.clone()
    return leaves, call_args


def _single_output(api: str, out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point:
        raise ValueError(
            f"{api}: func must return a single floating-point tensor, got {describe(out)}"
        )
    if out.layout != torch.strided:
        raise ValueError(f"{api}: func must return a dense (strided) tensor, got {out.layout}")
    return out


def _check_real(api: str, diff: Sequence[torch.Tensor], argnums: tuple[int, ...]) -> None:
    for k, t in zip(argnums, diff, strict=True):
        if t.device.type == "meta":
            raise ValueError(
                f"{api}: args[{k}] is on the meta device; sparsity detection runs the "
                "derivative and needs real values"
            )


def _pairs(rows: list[Deps | None], sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(element, seed)`` pairs of the blocks, elements offset into the concatenated inputs."""
    elems, seeds = [torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, dtype=torch.int64)]
    offset = 0
    for d, size in zip(rows, sizes, strict=False):
        if d is not None:
            elems.append(d.elements() + offset)
            seeds.append(d.seeds)
        offset += size
    return torch.cat(elems), torch.cat(seeds)


def _sorted(rows: torch.Tensor, cols: torch.Tensor, m: int, n: int) -> Pattern:
    keys = _deps.unique(rows * max(n, 1) + cols)
    r = torch.div(keys, max(n, 1), rounding_mode="floor")
    return r, keys - r * max(n, 1), (m, n)


class _converted:
    """Turns the tracer's ``Untraceable`` into the API's ``ValueError``; the rest propagates.

    A refusal func caught and carried on from still counts: the trace went where func would
    not have gone.
    """

    def __init__(self, api: str, tracker: Tracker) -> None:
        self.api = api
        self.tracker = tracker

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        refused = exc if isinstance(exc, Untraceable) else self.tracker.refused
        if refused is not None:
            mode = "local" if self.tracker.local else "global"
            hint = "give the pattern" if self.tracker.local else _HINT
            raise ValueError(
                f"{self.api}: {mode} sparsity detection cannot trace func: {refused.args[0]}; "
                f"{hint}"
            ) from refused
