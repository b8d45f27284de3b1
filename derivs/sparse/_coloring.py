"""Colouring a sparsity pattern, so that one product per colour recovers every nonzero.

* *column* (forward mode, ``J @ S``): columns that share a row get different colours
  (partial distance-2 colouring of the bipartite graph, i.e. a distance-1 colouring of the
  column intersection graph). ``J[i, j]`` is then entry ``(i, color[j])`` of ``J @ S``.
* *row* (reverse mode, ``S^T @ J``): the same for rows.
* *star* (symmetric Hessians, ``H @ S``): a distance-1 colouring of the adjacency graph of
  ``H`` in which every path on four vertices uses at least three colours. Each
  ``H[i, j]`` is read directly, either at ``(i, color[j])`` or, by symmetry, at
  ``(j, color[i])`` (:func:`recovery_index`).

Every colouring is greedy (each vertex, in some order, takes the smallest colour allowed) over
several vertex orders (``derivs.sparse._greedy``), keeping the one with the fewest colours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from derivs.sparse._greedy import (
    ORDER_FUNCS,
    ORDERS,
    Graph,
    adjacency_graph,
    greedy_distance1,
    greedy_star,
    intersection_graph,
    star_lower_bound,
)
from derivs.sparse._pattern import SparsityPattern

MODES = {
    "column": "forward mode: columns sharing a row get different colours; J @ S by jvp",
    "row": "reverse mode: rows sharing a column get different colours; S^T J by vjp",
    "star": "symmetric (Hessian) patterns: star colouring, H @ S by Hessian-vector products",
}

ORDER_CHOICES = {
    "best": "every order, keeping the fewest colours (stops at a lower bound)",
    **ORDERS,
}


class Coloring:
    """A colouring of a pattern's columns (``"column"``, ``"star"``) or rows (``"row"``).

    Attributes:
        mode: ``"column"``, ``"row"`` or ``"star"`` (see ``MODES``).
        colors: int64 CPU tensor, one colour in ``0 .. num_colors - 1`` per column (per row
            for ``"row"``).
        num_colors: how many products evaluate the matrix.
        order: the vertex order that gave this colouring.
        tried: colours per order tried (None: abandoned once it could not win).
        pattern: the pattern coloured.

    >>> p = SparsityPattern(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), (3, 2))
    >>> c = coloring_of(p, "column", "best")
    >>> c.num_colors, c.colors.tolist()
    (2, [0, 1])
    """

    def __init__(
        self,
        mode: str,
        colors: torch.Tensor,
        order: str,
        pattern: SparsityPattern,
        tried: dict[str, int | None] | None = None,
    ) -> None:
        self.mode = mode
        self.colors = colors
        self.num_colors = int(colors.max()) + 1 if colors.numel() else 0
        self.order = order
        self.pattern = pattern
        self.tried = dict(tried or {order: self.num_colors})

    def seed(
        self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """The seed matrix transposed, ``(num_colors, len(colors))``: row ``k`` is the 0/1
        indicator of colour ``k`` (the compressed matrix is ``J @ seed().T``)."""
        size = self.colors.numel()
        seed = torch.zeros((self.num_colors, size), dtype=dtype)
        seed[self.colors, torch.arange(size)] = 1
        return seed.to(device)

    def __repr__(self) -> str:
        m, n = self.pattern.shape
        return (
            f"Coloring({self.mode}, {self.num_colors} colours for a {m} x {n} pattern with "
            f"nnz={self.pattern.nnz}, order={self.order!r})"
        )


# --- colourings ---------------------------------------------------------------------------


def _best(
    graph: Graph,
    sweep: Callable[[Graph, list[int], int], list[int] | None],
    orders: list[str],
    lower_bound: int,
) -> tuple[list[int], str, dict[str, int | None]]:
    """The greedy colouring with the fewest colours over ``orders``; ties keep the earlier."""
    best: list[int] | None = None
    best_order = orders[0]
    limit = graph.n + 1
    tried: dict[str, int | None] = {}
    for name in orders:
        color = sweep(graph, ORDER_FUNCS[name](graph), limit)
        tried[name] = None if color is None else max(color, default=-1) + 1
        if color is not None:
            best, best_order, limit = color, name, max(color, default=-1) + 1
        if limit <= lower_bound:
            break
    assert best is not None  # the first order runs without a limit
    return best, best_order, tried


def _orders(order: str) -> list[str]:
    return list(ORDERS) if order == "best" else [order]


def color_columns(pattern: SparsityPattern, order: str = "best") -> Coloring:
    """Column colouring: ``J @ S`` recovers ``J`` (forward mode)."""
    graph = intersection_graph(pattern.rows, pattern.cols, pattern.shape[1])
    colors, name, tried = _best(graph, greedy_distance1, _orders(order), pattern.max_per_row)
    return Coloring("column", torch.tensor(colors, dtype=torch.int64), name, pattern, tried)


def color_rows(pattern: SparsityPattern, order: str = "best") -> Coloring:
    """Row colouring: ``S^T @ J`` recovers ``J`` (reverse mode)."""
    graph = intersection_graph(pattern.cols, pattern.rows, pattern.shape[0])
    colors, name, tried = _best(graph, greedy_distance1, _orders(order), pattern.max_per_col)
    return Coloring("row", torch.tensor(colors, dtype=torch.int64), name, pattern, tried)


def color_star(pattern: SparsityPattern, order: str = "best") -> Coloring:
    """Star colouring of a symmetric pattern: ``H @ S`` recovers ``H`` directly."""
    graph = adjacency_graph(pattern)
    colors, name, tried = _best(graph, greedy_star, _orders(order), star_lower_bound(graph))
    return Coloring("star", torch.tensor(colors, dtype=torch.int64), name, pattern, tried)


def color_auto(pattern: SparsityPattern, order: str = "best") -> Coloring:
    """The column or row colouring with fewer colours (columns on a tie).

    The mode with the smaller lower bound (most nonzeros per row or per column) is coloured
    first; the other only when its lower bound leaves it a chance to win. A structurally
    symmetric pattern has the same graph for both: its columns are coloured once.
    """
    if pattern.shape[0] == pattern.shape[1] and pattern == pattern.transpose():
        return color_columns(pattern, order)
    columns_first = pattern.max_per_row <= pattern.max_per_col
    first, second = (color_columns, color_rows) if columns_first else (color_rows, color_columns)
    other_bound = pattern.max_per_col if columns_first else pattern.max_per_row
    a = first(pattern, order)
    if other_bound >= a.num_colors:
        return a
    b = second(pattern, order)
    if b.num_colors < a.num_colors or (b.num_colors == a.num_colors and b.mode == "column"):
        return b
    return a


_COLORERS: dict[str, Callable[[SparsityPattern, str], Coloring]] = {
    "column": color_columns,
    "row": color_rows,
    "star": color_star,
    "auto": color_auto,
}


def coloring_of(pattern: SparsityPattern, mode: str, order: str) -> Coloring:
    """The colouring for ``mode`` (``"column"``, ``"row"``, ``"star"`` or ``"auto"``)."""
    return _COLORERS[mode](pattern, order)


# --- recovery --------------------------------------------------------------------------------


def recovery_index(col: Coloring) -> torch.Tensor:
    """Where each nonzero of the pattern sits in the compressed matrix, flattened.

    The compressed matrix is stored colours first: ``(num_colors, m)`` for ``"column"``
    (row ``k`` is ``J @ s_k``), ``(num_colors, n)`` for ``"row"`` (``s_k^T J``) and
    ``"star"`` (``H @ s_k``). Entry ``e`` of the pattern is element ``index[e]`` of it.

    Raises:
        RuntimeError: a ``"star"`` colouring that is not one (neither ``(i, color[j])`` nor
            ``(j, color[i])`` holds ``H[i, j]`` alone).
    """
    p = col.pattern
    m, n = p.shape
    rows, cols, colors = p.rows, p.cols, col.colors
    if col.mode == "column":
        return colors[cols] * m + rows
    if col.mode == "row":
        return colors[rows] * n + cols
    c = max(col.num_colors, 1)
    # NOTE: entry (i, color k) of H @ S is the sum of H[i, j] over the j of colour k in row
    # i; it is H[i, j] alone when row i has one entry of colour color[j].
    alone = torch.bincount(rows * c + colors[cols], minlength=n * c)
    direct = alone[rows * c + colors[cols]] == 1
    mirrored = alone[cols * c + colors[rows]] == 1
    if not bool((direct | mirrored).all()):
        bad = int((~(direct | mirrored)).nonzero()[0, 0])
        raise RuntimeError(
            f"derivs.sparse: not a star colouring: H[{int(rows[bad])}, {int(cols[bad])}] shares "
            f"its colour with another entry of both its row and its column"
        )
    return torch.where(direct, colors[cols] * n + rows, colors[rows] * n + cols)
