"""Recovery: the nonzeros read out of the compressed matrix by one gather, then laid out.

Everything that does not depend on the point (the gather index, the blocks of a tuple
``argnums``, the COO indices or CSR row pointers) is computed once, on the device, when the
plan is made; a call only gathers and wraps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from derivs import _validate
from derivs.sparse._pattern import Shape, SparsityPattern

LAYOUTS = {
    "coo": "torch.sparse_coo_tensor of shape (*out, *in), coalesced (the default)",
    "csr": "torch.sparse_csr_tensor of shape (out numel, in numel), for solvers",
    "dense": "a strided tensor of shape (*out, *in), like derivs.jacobian's",
}


class _Block(NamedTuple):
    select: torch.Tensor | None  # the block's entries among the pattern's (None: all of them)
    shape: Shape  # (*out, *in) of the block
    rows_cols: tuple[int, int]  # the block as a matrix
    dtype: torch.dtype
    coo: torch.Tensor | None  # (len(shape), nnz) indices
    crow: torch.Tensor | None
    col: torch.Tensor | None
    flat: torch.Tensor | None  # row * cols + col, for a dense block


def _unravel(index: torch.Tensor, shape: Shape) -> torch.Tensor:
    """``(len(shape), numel)`` multi-indices of flat row-major ``index``."""
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index = torch.div(index, size, rounding_mode="floor")
    return torch.stack(out[::-1]) if out else index.new_zeros((0, index.numel()))


def _offsets(shapes: Sequence[Shape]) -> list[int]:
    sizes = [math.prod(s) for s in shapes]
    return [sum(sizes[:k]) for k in range(len(sizes) + 1)]


def _part(block: _Block, values: torch.Tensor) -> torch.Tensor:
    part = values if block.select is None else values[block.select]
    return part if part.dtype == block.dtype else part.to(block.dtype)


def _dense(block: _Block, values: torch.Tensor) -> torch.Tensor:
    assert block.flat is not None
    m, n = block.rows_cols
    return values.new_zeros(m * n).index_put((block.flat,), values).reshape(block.shape)


@torch.compiler.disable  # type: ignore[untyped-decorator]
def _assemble_sparse(recovery: Recovery, values: torch.Tensor) -> Any:
    # NOTE: dynamo cannot trace the sparse constructors: under torch.compile the values come
    # from the graph and the tensors are built eagerly, without a warning per call.
    return recovery._nest([_sparse(b, _part(b, values)) for b in recovery.blocks])


def _sparse(block: _Block, values: torch.Tensor) -> torch.Tensor:
    if block.coo is not None:
        return torch.sparse_coo_tensor(
            block.coo, values, block.shape, is_coalesced=True, check_invariants=False
        )
    assert block.crow is not None and block.col is not None
    return torch.sparse_csr_tensor(
        block.crow, block.col, values, block.rows_cols, check_invariants=False
    )


class Recovery:
    """From the pattern's values (one per nonzero, pattern order) to the result's layout.

    Args:
        pattern: the pattern, of the whole matrix (all argnums).
        row_shapes: the shapes the rows split into: ``(out_shape,)`` for a Jacobian, the
            input shapes for a Hessian (whose rows are the inputs, like its columns).
        col_shapes: the input shapes, one per argnum.
        dtypes: the dtype of each column block (the argnum's).
        layout: ``"coo"``, ``"csr"`` or ``"dense"`` (see ``LAYOUTS``).
        nested: the result's structure: ``"single"`` (one block), ``"tuple"`` (one per column
            block) or ``"nested"`` (``H[i][j]``).
        device: where the result lives.
    """

    def __init__(
        self,
        api: str,
        pattern: SparsityPattern,
        row_shapes: Sequence[Shape],
        col_shapes: Sequence[Shape],
        dtypes: Sequence[torch.dtype],
        layout: str,
        nested: str,
        device: torch.device,
    ) -> None:
        self.layout = layout
        self.nested = nested
        self.n_cols = len(col_shapes)
        r_off, c_off = _offsets(row_shapes), _offsets(col_shapes)
        self.blocks: list[_Block] = []
        whole = len(row_shapes) == 1 and len(col_shapes) == 1
        for i, rs in enumerate(row_shapes):
            for j, cs in enumerate(col_shapes):
                if whole:
                    sel = None
                    rows, cols = pattern.rows, pattern.cols
                else:
                    mask = (pattern.rows >= r_off[i]) & (pattern.rows < r_off[i + 1])
                    mask &= (pattern.cols >= c_off[j]) & (pattern.cols < c_off[j + 1])
                    sel = mask.nonzero().reshape(-1)
                    rows, cols = pattern.rows[sel] - r_off[i], pattern.cols[sel] - c_off[j]
                block = self._block(api, sel, rows, cols, rs, cs, dtypes[j], device)
                self.blocks.append(block)

    def _block(
        self,
        api: str,
        sel: torch.Tensor | None,
        rows: torch.Tensor,
        cols: torch.Tensor,
        row_shape: Shape,
        col_shape: Shape,
        dtype: torch.dtype,
        device: torch.device,
    ) -> _Block:
        m, n = math.prod(row_shape), math.prod(col_shape)
        shape = (*row_shape, *col_shape)
        coo = crow = col = flat = None
        if self.layout == "coo":
            coo = torch.cat([_unravel(rows, row_shape), _unravel(cols, col_shape)]).to(device)
        elif self.layout == "csr":
            counts = torch.bincount(rows, minlength=m)
            crow = torch.zeros(m + 1, dtype=torch.int64)
            crow[1:] = torch.cumsum(counts, 0)
            crow, col = crow.to(device), cols.to(device)
        else:
            _validate.check_size(
                api,
                "the dense result",
                m * n,
                torch.empty((), dtype=dtype).element_size(),
                "use layout='coo' or layout='csr'",
            )
            flat = (rows * n + cols).to(device)
        select = None if sel is None else sel.to(device)
        return _Block(select, shape, (m, n), dtype, coo, crow, col, flat)

    def assemble(self, values: torch.Tensor) -> Any:
        """The result from the values of the whole pattern, in pattern order."""
        if self.layout == "dense":
            return self._nest([_dense(b, _part(b, values)) for b in self.blocks])
        return _assemble_sparse(self, values)

    def _nest(self, parts: list[torch.Tensor]) -> Any:
        if self.nested == "single":
            return parts[0]
        if self.nested == "tuple":
            return tuple(parts)
        k = self.n_cols
        return tuple(tuple(parts[i * k : (i + 1) * k]) for i in range(len(parts) // k))
