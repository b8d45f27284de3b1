"""Dependency rules of structured ops: reductions, scans, sorts, contractions.

Each rule is a union over index structure that depends only on shapes and static arguments
(dims), never on values: a reduction's output element depends on its group, ``cumsum``'s on
the prefix, ``mm``'s on its row of the first factor and its column of the second (or, for a
torch sparse factor of fixed structure, on its nonzeros).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import pointwise, rule, union_rows
from derivs.sparse._trace import Call, fallback_rows


def _norm_dims(dim: Any, ndim: int) -> tuple[int, ...]:
    """``dim`` (int, list, None or ``[]`` for all) as sorted non-negative dims."""
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0):
        return tuple(range(ndim))
    dims = dim if isinstance(dim, list | tuple) else [dim]
    return tuple(sorted({d % ndim for d in dims})) if ndim else ()


def _reduced_over(
    call: Call, t: torch.Tensor, dims: Sequence[int], view: Sequence[int]
) -> Deps | None:
    """``t``'s rows united over ``dims``, as a tensor of shape ``view`` broadcast to the output."""
    d = call.deps(t)
    if d is None:
        return None
    r = _deps.reduce(d, t.shape, dims)
    return _deps.broadcast(r, view, call.outs[0].shape)


# --------------------------------------------------------------------------------------------
# reductions


_REDUCTIONS = (
    "sum", "mean", "nansum", "nanmean", "amax", "amin", "prod", "var", "std", "var_mean",
    "std_mean", "logsumexp", "linalg_vector_norm", "norm", "max", "min", "median",
    "nanmedian", "mode", "kthvalue", "aminmax", "trace",
)  # fmt: skip


@rule(*_REDUCTIONS)
def reduction(call: Call) -> list[Deps | None]:
    """Each output element depends on its group: the input with the reduced dims removed."""
    if call.func._overloadname in ("other", "binary_out", "other_out"):
        return pointwise(call)
    b = call.bound()
    self_ = b.get("self", b.get("input"))
    d = call.deps(self_)
    if d is None or not isinstance(self_, torch.Tensor):
        return [None for _ in call.outs]
    dims = _norm_dims(b.get("dim"), self_.dim())
    r = _deps.reduce(d, self_.shape, dims)
    return [r if o.numel() == r.size else fallback_rows(call, o) for o in call.outs]


@rule("_softmax", "_log_softmax", "_softmax_backward_data", "_log_softmax_backward_data")
def softmax(call: Call) -> list[Deps | None]:
    """Each output element depends on its whole slice along ``dim``."""
    b = call.bound()
    out = call.outs[0]
    dims = _norm_dims(b["dim"], out.dim())
    kept = tuple(1 if k in dims else s for k, s in enumerate(out.shape))
    inputs = [t for t in call.tensors() if call.deps(t) is not None]
    if any(tuple(t.shape) != tuple(out.shape) for t in inputs):
        return [fallback_rows(call, out)]
    parts = [_reduced_over(call, t, dims, kept) for t in inputs]
    return [union_rows(call, out.shape, parts)]


@rule("sort", "topk", "msort")
def sort(call: Call) -> list[Deps | None]:
    """Values are input elements of the same slice, in a value-dependent order."""
    b = call.bound()
    self_ = b["self"]
    dim = _norm_dims(b.get("dim", 0), self_.dim())
    view = tuple(1 if k in dim else s for k, s in enumerate(self_.shape))
    return [_reduced_over_shape(call, self_, dim, view, tuple(o.shape)) for o in call.outs]


def _reduced_over_shape(
    call: Call, t: torch.Tensor, dims: Sequence[int], view: Sequence[int], shape: tuple[int, ...]
) -> Deps | None:
    d = call.deps(t)
    if d is None:
        return None
    return _deps.broadcast(_deps.reduce(d, t.shape, dims), view, shape)


# --------------------------------------------------------------------------------------------
# scans


@rule("cumsum", "cumprod", "logcumsumexp", "cummax", "cummin", "_cummax_helper")
def scan(call: Call) -> list[Deps | None]:
    """Element ``i`` along ``dim`` depends on elements ``0..i`` of its line."""
    b = call.bound()
    self_ = b["self"]
    d = call.deps(self_)
    if d is None:
        return [None for _ in call.outs]
    dim = _norm_dims(b["dim"], self_.dim())
    rows = prefix(d, tuple(self_.shape), dim[0] if dim else 0)
    return [rows for _ in call.outs]


def prefix(deps: Deps, shape: tuple[int, ...], dim: int) -> Deps:
    """Prefix unions along ``dim``, in time and memory linear in the result's size.

    Each (line, seed) pair first appears at some position ``p`` of its line; it then belongs
    to the rows of positions ``p .. L - 1`` and to no others.
    """
    if not shape:
        return deps
    n = deps.n_seeds
    length = shape[dim]
    lines = torch.arange(math.prod(shape)).view(shape).movedim(dim, -1).reshape(-1, length)
    line_of = torch.empty(lines.numel(), dtype=torch.int64)
    pos_of = torch.empty(lines.numel(), dtype=torch.int64)
    line_of[lines.reshape(-1)] = (
        torch.arange(lines.shape[0]).unsqueeze(1).expand(-1, length).reshape(-1)
    )
    pos_of[lines.reshape(-1)] = torch.arange(length).repeat(lines.shape[0])
    elems = deps.elements()
    keys, inverse = torch.unique(line_of[elems] * max(n, 1) + deps.seeds, return_inverse=True)
    first = torch.full((keys.numel(),), length, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, pos_of[elems], "amin")
    counts = length - first
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    run = _deps.runs(counts, total)
    pos = torch.arange(total) - (starts - first)[run]
    line = torch.div(keys, max(n, 1), rounding_mode="floor")[run]
    seed = (keys % max(n, 1))[run]
    out_elem = lines[line, pos]
    return _deps.from_keys(_deps.unique(out_elem * max(n, 1) + seed), deps.size, n)


# --------------------------------------------------------------------------------------------
# contractions


def _contract(
    call: Call,
    factors: Sequence[tuple[Any, Sequence[int], Sequence[int]]],
    added: Any = None,
) -> list[Deps | None]:
    """``sum_j a[.., j] b[j, ..]``: the union of each factor reduced over the summed dims.

    ``factors``: ``(tensor, summed dims, shape of the reduced factor broadcast to the output)``.
    ``added``: a tensor broadcast onto the output (``addmm``'s ``self``).
    """
    out = call.outs[0]
    parts = [
        _reduced_over(call, t, dims, view)
        for t, dims, view in factors
        if isinstance(t, torch.Tensor)
    ]
    if isinstance(added, torch.Tensor) and call.deps(added) is not None:
        parts.append(_deps.broadcast(call.deps(added), added.shape, out.shape))  # type: ignore[arg-type]
    return [union_rows(call, out.shape, parts)]


def _sparse_pairs(call: Call, t: Any) -> torch.Tensor | None:
    """``(2, nnz)`` indices of a sparse matrix whose structure is fixed (or local), else None."""
    if not isinstance(t, torch.Tensor) or t.layout == torch.strided or t.dim() != 2:
        return None
    if call.is_varying(t) and not call.local:
        return None
    coo = t.detach().to_sparse().coalesce() if t.layout != torch.sparse_coo else t.coalesce()
    return coo.indices().cpu()


def _sparse_product(call: Call, a: Any, b: Any, added: Any = None) -> list[Deps | None] | None:
    """``a @ b`` where one factor is a sparse matrix of fixed structure: its nonzeros only.

    ``out[i, k]`` reads ``b[j, k]`` for each nonzero ``a[i, j]`` (or ``a[i, j]`` for each
    nonzero ``b[j, k]``); a 1-D ``b`` is a column.
    """
    left, right = _sparse_pairs(call, a), _sparse_pairs(call, b)
    if left is None and right is None:
        return None
    out = call.outs[0]
    rows, cols = out.shape[0], out.numel() // max(out.shape[0], 1)
    parts: list[tuple[Deps, torch.Tensor | None, torch.Tensor | None]] = []
    for pairs, dense, is_left in ((left, b, True), (right, a, False)):
        d = call.deps(dense)
        if pairs is None or d is None:
            continue
        i, j = pairs[0].unsqueeze(1), pairs[1].unsqueeze(1)
        if is_left:  # out[i, k] <- b[j, k]
            k = torch.arange(cols).unsqueeze(0)
            parts.append((d, (i * cols + k).reshape(-1), (j * cols + k).reshape(-1)))
        else:  # out[k, j] <- a[k, i] for nonzero b[i, j]
            k = torch.arange(rows).unsqueeze(0)
            inner = dense.shape[-1]
            parts.append((d, (k * cols + j).reshape(-1), (k * inner + i).reshape(-1)))
    for t, pairs in ((a, left), (b, right)):
        sparse = isinstance(t, torch.Tensor) and t.layout != torch.strided
        if sparse and pairs is None and call.deps(t) is not None:
            return None  # a sparse factor that carries dependence: the dense rule
    if isinstance(added, torch.Tensor) and call.deps(added) is not None:
        parts.append((call.deps(added), None, _deps.broadcast_index(added.shape, out.shape)))  # type: ignore[arg-type]
    if not parts:
        return [None]
    return [_deps.gather_union(out.numel(), call.n_seeds, parts)]


@rule("mm")
def mm(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    sparse = _sparse_product(call, a, b)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0], 1)), (b, (0,), (1, b.shape[1]))])


@rule("addmm", "_addmm_activation", "_sparse_addmm")
def addmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    sparse = _sparse_product(call, a, b, self_)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0], 1)), (b, (0,), (1, b.shape[1]))], self_)


@rule("bmm")
def bmm(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    return _contract(
        call, [(a, (2,), (a.shape[0], a.shape[1], 1)), (b, (1,), (b.shape[0], 1, b.shape[2]))]
    )


@rule("baddbmm")
def baddbmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(
        call,
        [(a, (2,), (a.shape[0], a.shape[1], 1)), (b, (1,), (b.shape[0], 1, b.shape[2]))],
        self_,
    )


@rule("addbmm")
def addbmm(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(call, [(a, (0, 2), (a.shape[1], 1)), (b, (0, 1), (1, b.shape[2]))], self_)


@rule("mv")
def mv(call: Call) -> list[Deps | None]:
    a, v = call.args[:2]
    sparse = _sparse_product(call, a, v)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0],)), (v, (0,), ())])


@rule("addmv")
def addmv(call: Call) -> list[Deps | None]:
    self_, a, v = call.args[:3]
    sparse = _sparse_product(call, a, v, self_)
    if sparse is not None:
        return sparse
    return _contract(call, [(a, (1,), (a.shape[0],)), (v, (0,), ())], self_)


@rule("dot", "vdot")
def dot(call: Call) -> list[Deps | None]:
    a, b = call.args[:2]
    return _contract(call, [(a, (0,), ()), (b, (0,), ())])


@rule("addr")
def addr(call: Call) -> list[Deps | None]:
    self_, a, b = call.args[:3]
    return _contract(call, [(a, (), (a.shape[0], 1)), (b, (), (1, b.shape[0]))], self_)
