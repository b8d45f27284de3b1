"""Jacobian blocks: the basis of unit vectors, its chunks, and blocks assembled from products.

Every Jacobian method computes products with a standard basis (rows ``J^T e_r`` in reverse
mode, columns ``J e_c`` in forward mode) and reshapes them into ``blocks[k][i]``: the
derivative of output leaf ``k`` with respect to differentiated argument ``i``, of shape
``(*out_k, *in_i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from derivs import _validate
from derivs._compiled import identity
from derivs._pytree import chunked

Blocks = list[list[torch.Tensor]]  # blocks[k][i]: d out_leaf[k] / d args[argnums[i]]

_LEAF = tree_flatten(0)[1]


def flatten(tree: Any) -> tuple[list[Any], TreeSpec]:
    """``tree_flatten``, without its cost for the common case of a single tensor."""
    return ([tree], _LEAF) if isinstance(tree, torch.Tensor) else tree_flatten(tree)


def unflatten(leaves: list[Any], spec: TreeSpec) -> Any:
    return leaves[0] if spec.is_leaf() else tree_unflatten(leaves, spec)


def standard_basis(start: int, stop: int, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Rows ``start:stop`` of the identity over the concatenated, flattened ``like`` tensors.

    Returns one tensor per entry of ``like``, shaped ``(stop - start, *like[k].shape)``, with
    ``like[k]``'s dtype and device. Only the requested rows are allocated.
    """
    rows = stop - start
    if len(like) == 1 and start == 0 and stop == like[0].numel():
        t = like[0]
        return [identity(rows, t.dtype, t.device).reshape((rows, *t.shape))]
    pieces = []
    offset = 0
    for t in like:
        n = t.numel()
        piece = torch.zeros((rows, n), dtype=t.dtype, device=t.device)
        # NOTE: entry (r, c) is 1 where start + r == offset + c: one diagonal of the block.
        # (fill_ on a diagonal view, unlike index assignment, also traces under torch.compile.)
        piece.diagonal(start - offset).fill_(1)
        pieces.append(piece.reshape((rows, *t.shape)))
        offset += n
    return pieces


def chunks(total: int, chunk_size: int | None) -> list[tuple[int, int]]:
    step = total if chunk_size is None else chunk_size
    return [(s, min(s + step, total)) for s in range(0, total, max(step, 1))]


def concat(pieces: list[torch.Tensor]) -> torch.Tensor:
    # NOTE: without chunking there is one piece; torch.cat would copy it for nothing.
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def check_basis(api: str, rows: int, total: int, itemsize: int, chunk_size: int | None) -> None:
    if chunk_size is None:
        _validate.check_size(
            api,
            "the basis of unit vectors",
            rows * total,
            itemsize,
            "pass chunk_size to push the basis through in pieces",
        )


def with_diff(
    func: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...]
) -> Callable[..., Any]:
    """``func`` as a function of the differentiated arguments only."""

    def g(*diff: torch.Tensor) -> Any:
        full = list(args)
        for a, x in zip(argnums, diff, strict=True):
            full[a] = x
        return func(*full)

    return g


def split_aux(result: Any, has_aux: bool) -> tuple[Any, Any]:
    return (result[0], result[1]) if has_aux else (result, None)


def assemble(blocks: Blocks, spec: TreeSpec) -> Any:
    return tree_unflatten([tuple(row) for row in blocks], spec)


def blocks_of(result: Any, n: int) -> Blocks:
    return chunked(flatten(result)[0], n)


class Puller(Protocol):
    """Reverse mode's forward half: the output leaves and batched vector-Jacobian products."""

    leaves: list[torch.Tensor]

    def pull(self, cotangents: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        """One cotangent per output leaf, batch dim first; one result per differentiated input."""
        ...


def rows_to_blocks(
    start: Puller, diff: list[torch.Tensor], chunk_size: int | None, api: str
) -> Blocks:
    """The Jacobian by rows: ``start.pull`` over the standard basis of the outputs, in chunks."""
    leaves = start.leaves
    total = sum(o.numel() for o in leaves)
    check_basis(api, total, total, _validate.itemsize_of(leaves), chunk_size)
    rows: list[list[torch.Tensor]] = [[] for _ in diff]
    for s, e in chunks(total, chunk_size):
        for i, r in enumerate(start.pull(standard_basis(s, e, leaves))):
            rows[i].append(r)
    blocks: Blocks = [[] for _ in leaves]
    for i, x in enumerate(diff):
        full = concat(rows[i]) if rows[i] else x.new_zeros((0, *x.shape))
        # NOTE: Tensor.split is unannotated in torch/_tensor.py.
        pieces = [full] if len(leaves) == 1 else full.split([o.numel() for o in leaves])  # type: ignore[no-untyped-call]
        for k, piece in enumerate(pieces):
            blocks[k].append(piece.reshape((*leaves[k].shape, *x.shape)))
    return blocks


def columns_to_blocks(
    leaves: list[torch.Tensor], pieces: list[list[torch.Tensor]], diff: list[torch.Tensor]
) -> Blocks:
    """The Jacobian by columns, from forward mode's ``pieces[chunk][k]``: ``(chunk rows, *out_k)``."""
    # NOTE: eager calls return the transposed view of the columns (no copy). Under
    # torch.compile the layout decides how Inductor loops over the fused kernel that
    # computes the columns: in row-major order along the outputs it reads operands laid out
    # by the outputs contiguously (the tall Jacobian 50 -> 40 us, the tall 32->2048 Hessian
    # 1.74 -> 0.21 ms), but where the inputs dominate it loses (the tutorial's 512->32
    # Hessian 21 -> 58 ms). Measured rule (docs/performance.md): row-major when the output
    # has more elements than the square of the input count.
    compiling = torch.compiler.is_compiling()
    blocks: Blocks = []
    for k, o in enumerate(leaves):
        cols = concat([p[k] for p in pieces]) if pieces else o.new_zeros((0, *o.shape))
        row = []
        # NOTE: Tensor.split is unannotated in torch/_tensor.py.
        for c, x in zip(cols.split([x.numel() for x in diff]), diff, strict=True):  # type: ignore[no-untyped-call]
            block = c.movedim(0, -1).reshape((*o.shape, *x.shape))
            row.append(block.contiguous() if compiling and o.numel() > x.numel() ** 2 else block)
        blocks.append(row)
    return blocks
