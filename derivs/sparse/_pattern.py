"""The sparsity pattern: which entries of a Jacobian or Hessian may be nonzero.

A pattern is a set of ``(row, col)`` index pairs of the matrix ``(m, n)``: rows index the
flattened output (or, for a Hessian, the inputs), columns the differentiated inputs,
flattened and concatenated in ``argnums`` order. It comes from detection (``global`` or
``local``) or from the user (``given``: a boolean tensor or a torch sparse tensor, checked
here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from derivs import _validate

Shape = tuple[int, ...]

KINDS = {
    "global": "valid for every input value (detected by tracing the derivative)",
    "local": "valid at the point it was detected at only (detected at the actual values)",
    "given": "given by the user",
}


class SparsityPattern:
    """The structural nonzeros of a Jacobian ``(m, n)`` or of a Hessian ``(n, n)``.

    Attributes:
        rows, cols: int64 CPU tensors of length ``nnz``, unique pairs sorted by row, then
            column (row-major order).
        shape: ``(m, n)``.
        out_shape: the shape the rows unravel to (the output's; a Hessian's: the input's).
        in_shapes: the shapes the columns unravel to, one per differentiated argument.
        kind: ``"global"``, ``"local"`` or ``"given"`` (see ``KINDS``).
        symmetric: True for a Hessian pattern (it holds ``(j, i)`` wherever ``(i, j)``).

    >>> p = SparsityPattern(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), (2, 2))
    >>> p
    SparsityPattern(2 x 2, nnz=3 (75%), at most 2 per row and 2 per column, given)
    >>> p.to_dense()
    tensor([[ True,  True],
            [False,  True]])
    """

    def __init__(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        shape: tuple[int, int],
        *,
        out_shape: Shape | None = None,
        in_shapes: Sequence[Shape] | None = None,
        kind: str = "given",
        symmetric: bool = False,
    ) -> None:
        m, n = shape
        self.rows = rows
        self.cols = cols
        self.shape = (m, n)
        self.out_shape: Shape = (m,) if out_shape is None else tuple(out_shape)
        self.in_shapes: tuple[Shape, ...] = (
            ((n,),) if in_shapes is None else tuple(tuple(s) for s in in_shapes)
        )
        self.kind = kind
        self.symmetric = symmetric

    @property
    def nnz(self) -> int:
        return int(self.rows.numel())

    @property
    def density(self) -> float:
        m, n = self.shape
        return self.nnz / (m * n) if m * n else 0.0

    def row_counts(self) -> torch.Tensor:
        """Nonzeros per row, shape ``(m,)``."""
        return torch.bincount(self.rows, minlength=self.shape[0])

    def col_counts(self) -> torch.Tensor:
        """Nonzeros per column, shape ``(n,)``."""
        return torch.bincount(self.cols, minlength=self.shape[1])

    @property
    def max_per_row(self) -> int:
        """The most nonzeros in a row, a lower bound on the colours of a column colouring."""
        return int(self.row_counts().max()) if self.nnz else 0

    @property
    def max_per_col(self) -> int:
        """The most nonzeros in a column, a lower bound on the colours of a row colouring."""
        return int(self.col_counts().max()) if self.nnz else 0

    def transpose(self) -> SparsityPattern:
        """The pattern of the transposed matrix ``(n, m)`` (sorted again, row-major)."""
        m, n = self.shape
        rows, cols = sort_pairs(self.cols, self.rows, m)
        return SparsityPattern(rows, cols, (n, m), kind=self.kind, symmetric=self.symmetric)

    def to_dense(self) -> torch.Tensor:
        """The pattern as a boolean ``(m, n)`` tensor."""
        m, n = self.shape
        _validate.check_size(
            "derivs.SparsityPattern.to_dense", "the dense pattern", m * n, 1, "use rows/cols"
        )
        dense = torch.zeros(m * n, dtype=torch.bool)
        dense[self.rows * n + self.cols] = True
        return dense.reshape(m, n)

    def to_sparse(self) -> torch.Tensor:
        """The pattern as a coalesced boolean torch sparse COO tensor ``(m, n)``."""
        values = torch.ones(self.nnz, dtype=torch.bool)
        return torch.sparse_coo_tensor(
            torch.stack([self.rows, self.cols]), values, self.shape, is_coalesced=True
        )

    def __contains__(self, entry: object) -> bool:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            return False
        i, j = entry
        hit = (self.rows == i) & (self.cols == j)
        return bool(hit.any())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparsityPattern):
            return NotImplemented
        return (
            self.shape == other.shape
            and torch.equal(self.rows, other.rows)
            and torch.equal(self.cols, other.cols)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"SparsityPattern({m} x {n}, nnz={self.nnz} ({100 * self.density:.3g}%), at most "
            f"{self.max_per_row} per row and {self.max_per_col} per column, {self.kind})"
        )


def unique_sorted(keys: torch.Tensor) -> torch.Tensor:
    """The distinct values of a 1-D int64 tensor, ascending.

    ``torch.unique`` (sorted) took 0.5 s for 10^5 int64 values on a loaded 2-core CPU (torch
    2.13, 2 threads; 2 ms on one thread), a sort and a comparison of neighbours 1 ms.
    """
    ordered = torch.sort(keys).values
    if ordered.numel() < 2:
        return ordered
    keep = torch.ones(ordered.numel(), dtype=torch.bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def sort_pairs(rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique ``(row, col)`` pairs in row-major order (``n`` columns)."""
    width = max(n, 1)
    keys = unique_sorted(rows * width + cols)
    r = torch.div(keys, width, rounding_mode="floor")
    return r, keys - r * width


def symmetrized(pattern: SparsityPattern) -> SparsityPattern:
    """``pattern`` with ``(j, i)`` added for every ``(i, j)`` (a square pattern)."""
    n = pattern.shape[1]
    rows, cols = sort_pairs(
        torch.cat([pattern.rows, pattern.cols]), torch.cat([pattern.cols, pattern.rows]), n
    )
    return SparsityPattern(
        rows,
        cols,
        pattern.shape,
        out_shape=pattern.out_shape,
        in_shapes=pattern.in_shapes,
        kind=pattern.kind,
        symmetric=True,
    )


def _fmt(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def _index_pairs(
    api: str, name: str, value: torch.Tensor, full: Shape, m: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened ``(row, col)`` pairs of a given tensor, dense or sparse."""
    if value.layout == torch.strided:
        if value.dtype != torch.bool:
            raise TypeError(
                f"{api}: {name} is a {str(value.dtype).removeprefix('torch.')} tensor; a pattern "
                f"is a bool tensor (e.g. J != 0) or a torch sparse tensor"
            )
        flat = value.detach().to("cpu").reshape(m, n).nonzero()
        return flat[:, 0], flat[:, 1]
    coo = value.detach().to("cpu")
    if coo.layout != torch.sparse_coo:
        coo = coo.to_sparse_coo()  # type: ignore[no-untyped-call]
    if coo.dense_dim() != 0:
        raise ValueError(
            f"{api}: {name} is a hybrid sparse tensor with {coo.dense_dim()} dense dim(s); give "
            f"one sparse in every dim"
        )
    idx = coo.coalesce().indices()
    strides = torch.tensor([math.prod(full[k + 1 :]) for k in range(len(full))])
    flat_index = (idx * strides[:, None]).sum(0) if len(full) else torch.zeros(1, dtype=torch.int64)
    return torch.div(flat_index, max(n, 1), rounding_mode="floor"), flat_index % max(n, 1)


def given_pattern(
    api: str,
    value: object,
    out_shape: Shape,
    in_shapes: Sequence[Shape],
    *,
    symmetric: bool = False,
    name: str = "pattern",
) -> SparsityPattern:
    """Check a user's pattern against the matrix it describes and wrap it.

    Accepted: a ``SparsityPattern`` of shape ``(m, n)``; a bool tensor or a torch sparse
    tensor (COO, CSR, CSC, BSR, BSC; its stored entries are the pattern, whatever their
    values) of shape ``(m, n)`` or, for one differentiated argument, ``(*out_shape, *in_shape)``.
    With ``symmetric`` (a Hessian) the pattern is completed by its transpose.

    Raises:
        TypeError: not a tensor or pattern; a dense tensor that is not bool.
        ValueError: the wrong shape (the message gives the shapes accepted).
    """
    m = _validate.numel_of(out_shape)
    n = sum(_validate.numel_of(s) for s in in_shapes)
    accepted: list[Shape] = [(m, n)]
    if len(in_shapes) == 1:
        accepted.insert(0, (*out_shape, *in_shapes[0]))
    if isinstance(value, SparsityPattern):
        if value.shape != (m, n):
            raise ValueError(
                f"{api}: {name} has shape {_fmt(value.shape)}, expected {_fmt((m, n))}"
            )
        pattern = SparsityPattern(
            value.rows,
            value.cols,
            (m, n),
            out_shape=out_shape,
            in_shapes=in_shapes,
            kind=value.kind,
        )
        return symmetrized(pattern) if symmetric else pattern
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{api}: {name} must be 'global', 'local', a bool tensor, a torch sparse tensor or "
            f"a derivs.SparsityPattern, got {_validate.describe(value)}"
        )
    shape = tuple(value.shape)
    if shape not in accepted:
        listing = " or ".join(_fmt(s) for s in dict.fromkeys(accepted))
        raise ValueError(f"{api}: {name} has shape {_fmt(shape)}, expected {listing}")
    rows, cols = _index_pairs(api, name, value, shape, m, n)
    rows, cols = sort_pairs(rows, cols, n)
    pattern = SparsityPattern(
        rows, cols, (m, n), out_shape=out_shape, in_shapes=in_shapes, kind="given"
    )
    return symmetrized(pattern) if symmetric else pattern
