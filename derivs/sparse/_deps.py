"""Dependency sets: for each element of a tensor, the sorted set of seeds it depends on.

A ``Deps`` is a boolean matrix of shape ``(size, n_seeds)`` stored row-compressed (CSR): row
``e`` lists the seeds (cotangent elements of the traced vector-Jacobian product) that element
``e`` depends on. Every rule of the tracer is built from the few vectorised operations here:
``take`` (row gathers: views, indexing, broadcasting), ``union`` (rows merged along edges:
reductions, unions of several inputs, windows), ``assign`` (rows overwritten: in-place ops).
No operation loops over elements in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_I64 = torch.int64


class Deps:
    """Row ``e`` holds ``seeds[ptr[e]:ptr[e + 1]]``, sorted and unique.

    Attributes:
        ptr: ``(size + 1,)`` int64 row offsets.
        seeds: ``(nnz,)`` int64 seed indices in ``[0, n_seeds)``.
        n_seeds: the number of seeds (columns).
    """

    __slots__ = ("n_seeds", "ptr", "seeds")

    def __init__(self, ptr: torch.Tensor, seeds: torch.Tensor, n_seeds: int) -> None:
        self.ptr = ptr
        self.seeds = seeds
        self.n_seeds = n_seeds

    @property
    def size(self) -> int:
        return self.ptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.seeds.numel()

    def counts(self) -> torch.Tensor:
        """``(size,)`` the number of seeds of each element."""
        return self.ptr[1:] - self.ptr[:-1]

    def elements(self) -> torch.Tensor:
        """``(nnz,)`` the element (row) of each stored seed."""
        return runs(self.counts(), self.nnz)

    def seed_set(self) -> torch.Tensor:
        """The sorted seeds any element depends on."""
        return unique(self.seeds)

    def __repr__(self) -> str:
        return f"Deps(size={self.size}, n_seeds={self.n_seeds}, nnz={self.nnz})"


def unique(keys: torch.Tensor) -> torch.Tensor:
    """The sorted distinct values of ``keys``.

    ``torch.unique``, but through a stable sort: the keys here are a few sorted runs laid end
    to end, which a stable (merge-like) sort orders several times faster.
    """
    ordered: torch.Tensor = torch.unique_consecutive(torch.sort(keys, stable=True).values)
    return ordered


def runs(counts: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``(total,)``: for each position of the runs laid end to end, the run it belongs to.

    ``repeat_interleave(arange(len(counts)), counts)``, without its one-element parallel grain
    (each call wakes the thread pool, milliseconds on a busy machine).
    """
    if total is None:
        total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    marks = torch.bincount(starts, minlength=total + 1)
    return torch.cumsum(marks, 0)[:total] - 1


def repeat(values: torch.Tensor, counts: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``values[k]`` repeated ``counts[k]`` times, in order."""
    return values[runs(counts, total)]


def empty(size: int, n_seeds: int) -> Deps:
    """No element depends on any seed."""
    return Deps(torch.zeros(size + 1, dtype=_I64), torch.zeros(0, dtype=_I64), n_seeds)


def identity(size: int, offset: int, n_seeds: int) -> Deps:
    """Element ``e`` depends on seed ``offset + e`` only."""
    return Deps(torch.arange(size + 1), torch.arange(offset, offset + size), n_seeds)


def uniform(size: int, seeds: torch.Tensor, n_seeds: int) -> Deps:
    """Every element depends on the same sorted unique ``seeds``."""
    k = seeds.numel()
    return Deps(torch.arange(size + 1) * k, seeds.repeat(size), n_seeds)


def from_keys(keys: torch.Tensor, size: int, n_seeds: int) -> Deps:
    """The ``Deps`` of sorted unique keys ``element * n_seeds + seed``."""
    stride = max(n_seeds, 1)
    elems = torch.div(keys, stride, rounding_mode="floor")
    ptr = torch.zeros(size + 1, dtype=_I64)
    torch.cumsum(torch.bincount(elems, minlength=size), 0, out=ptr[1:])
    return Deps(ptr, keys - elems * stride, n_seeds)


def _keys(elems: torch.Tensor, seeds: torch.Tensor, n_seeds: int) -> torch.Tensor:
    return elems * max(n_seeds, 1) + seeds


def take(deps: Deps, index: torch.Tensor) -> Deps:
    """Row ``index[k]`` of ``deps`` as row ``k`` (``index[k] == -1``: an empty row).

    Args:
        deps: the rows to gather from.
        index: ``(k,)`` int64 in ``[-1, deps.size)``.

    Returns:
        ``Deps`` with ``k`` rows.
    """
    valid = index >= 0
    at = torch.where(valid, index, 0)
    start = deps.ptr[at]
    counts = torch.where(valid, deps.ptr[at + 1] - start, 0)
    ptr = torch.zeros(index.numel() + 1, dtype=_I64)
    torch.cumsum(counts, 0, out=ptr[1:])
    total = int(ptr[-1])
    shift = repeat(start - ptr[:-1], counts, total)
    return Deps(ptr, deps.seeds[torch.arange(total) + shift], deps.n_seeds)


def union(size: int, n_seeds: int, parts: Sequence[tuple[Deps, torch.Tensor | None]]) -> Deps:
    """Rows merged along edges: row ``out[k]`` of the result gains every seed of row ``k``.

    Args:
        size: rows of the result.
        n_seeds: seeds of the result.
        parts: ``(rows, out)`` pairs; ``out`` is ``(rows.size,)`` int64 in ``[0, size)``, or
            None for ``arange(size)`` (row ``k`` goes to row ``k``).

    Returns:
        ``Deps`` with ``size`` rows, each the union of the rows sent to it.
    """
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    keys = []
    for rows, out in parts:
        elems = rows.elements() if out is None else repeat(out, rows.counts(), rows.nnz)
        keys.append(_keys(elems, rows.seeds, n_seeds))
    return from_keys(unique(torch.cat(keys)), size, n_seeds)


def gather_union(
    size: int, n_seeds: int, parts: Sequence[tuple[Deps, torch.Tensor | None, torch.Tensor | None]]
) -> Deps:
    """Edges ``(out, src)``: row ``out[k]`` of the result gains row ``src[k]`` of ``deps``.

    ``None`` for ``out`` or ``src`` stands for ``arange``; ``src`` may hold ``-1`` (no row).
    """
    taken = [(d if src is None else take(d, src), out) for d, out, src in parts]
    if len(taken) == 1 and taken[0][1] is None:
        return taken[0][0]
    return union(size, n_seeds, taken)


def concat(parts: Sequence[Deps]) -> Deps:
    """The rows of ``parts`` one after another."""
    if len(parts) == 1:
        return parts[0]
    offsets = [0]
    for d in parts[:-1]:
        offsets.append(offsets[-1] + d.nnz)
    ptrs = [parts[0].ptr[:1]] + [d.ptr[1:] + off for d, off in zip(parts, offsets, strict=True)]
    return Deps(torch.cat(ptrs), torch.cat([d.seeds for d in parts]), parts[0].n_seeds)


def assign(store: Deps, positions: torch.Tensor, rows: Deps) -> Deps:
    """``store`` with rows ``positions`` replaced by the rows of ``rows`` (an in-place write).

    Args:
        store: the rows before the write.
        positions: ``(rows.size,)`` int64 rows of ``store`` written to.
        rows: the new rows.

    Returns:
        ``Deps`` with ``store.size`` rows.
    """
    n = store.n_seeds
    new = _keys(repeat(positions, rows.counts(), rows.nnz), rows.seeds, n)
    if store.nnz:
        kept = torch.ones(store.size, dtype=torch.bool)
        kept[positions] = False
        elems = store.elements()
        mask = kept[elems]
        new = torch.cat([_keys(elems[mask], store.seeds[mask], n), new])
    return from_keys(unique(new), store.size, n)


def broadcast_index(shape: Sequence[int], out_shape: Sequence[int]) -> torch.Tensor | None:
    """For each element of ``out_shape``, the element of ``shape`` broadcast to it (None: same)."""
    if tuple(shape) == tuple(out_shape):
        return None
    ids = torch.arange(math.prod(shape)).view(tuple(shape))
    return ids.expand(tuple(out_shape)).reshape(-1)


def broadcast(deps: Deps, shape: Sequence[int], out_shape: Sequence[int]) -> Deps:
    """``deps`` of a tensor of ``shape`` broadcast to ``out_shape``."""
    index = broadcast_index(shape, out_shape)
    return deps if index is None else take(deps, index)


def reduce(deps: Deps, shape: Sequence[int], dims: Sequence[int]) -> Deps:
    """The union over ``dims`` (non-negative): rows of the keepdim-reduced shape."""
    kept = tuple(1 if k in dims else s for k, s in enumerate(shape))
    size = math.prod(kept)
    if size == math.prod(shape):
        return deps
    group = broadcast_index(kept, shape)
    return union(size, deps.n_seeds, [(deps, group)])
