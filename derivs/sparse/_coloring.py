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
several vertex orders, keeping the one with the fewest colours. Building the graphs, the
orders' keys, the recovery indices and the checks are vectorised; the greedy sweeps are
sequential by nature and run over Python lists, O(sum of squared degrees).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from derivs.sparse._pattern import SparsityPattern, unique_sorted

MODES = {
    "column": "forward mode: columns sharing a row get different colours; J @ S by jvp",
    "row": "reverse mode: rows sharing a column get different colours; S^T J by vjp",
    "star": "symmetric (Hessian) patterns: star colouring, H @ S by Hessian-vector products",
}

ORDERS = {
    "natural": "the vertices in index order",
    "largest_first": "by decreasing degree in the conflict graph (Welsh-Powell)",
    "smallest_last": "repeatedly set aside a vertex of smallest remaining degree; colour them "
    "in reverse (Matula-Beck)",
    "incidence_degree": "next, the vertex with the most neighbours already ordered",
}

ORDER_CHOICES = {
    "best": "every order, keeping the fewest colours (stops at a lower bound)",
    **ORDERS,
}

# NOTE: pairs of columns sharing a row are generated this many at a time, so a pattern with
# a few dense rows costs time, not a giant temporary.
_PAIR_CHUNK = 2**22
# NOTE: torch.repeat_interleave runs its CPU loop in parallel whatever the size: on a loaded
# machine with 2 threads one call took 17 ms for 1000 elements (8 us on one thread). Here
# the owner of each slot comes from searchsorted over the running counts instead.


class Graph(NamedTuple):
    """An undirected graph in CSR form, as Python lists (the greedy sweeps index them)."""

    ptr: list[int]
    adj: list[int]

    @property
    def n(self) -> int:
        return len(self.ptr) - 1

    def degrees(self) -> list[int]:
        p = self.ptr
        return [p[v + 1] - p[v] for v in range(self.n)]


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


# --- graphs ---------------------------------------------------------------------------


def _csr(src: torch.Tensor, dst: torch.Tensor, n: int) -> Graph:
    """The graph of the directed pairs ``src -> dst`` (sorted by src), in CSR lists."""
    counts = torch.bincount(src, minlength=n)
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(counts, 0)
    return Graph(ptr.tolist(), dst.tolist())


def _shared_pairs(group: torch.Tensor, member: torch.Tensor, n: int) -> torch.Tensor:
    """Keys ``u * n + v`` of the pairs of distinct members sharing a group, unique, sorted."""
    order = torch.argsort(group, stable=True)
    g, mem = group[order], member[order]
    counts = torch.bincount(g) if g.numel() else torch.zeros(0, dtype=torch.int64)
    starts = torch.cumsum(counts, 0) - counts
    per = counts[g]  # partners of each element, itself included
    start_of = starts[g]
    keys = [torch.zeros(0, dtype=torch.int64)]
    lo = 0
    total = g.numel()
    while lo < total:
        budget = torch.cumsum(per[lo:], 0)
        hi = lo + max(1, int(torch.searchsorted(budget, _PAIR_CHUNK, right=True)))
        reps = per[lo:hi]
        ends = torch.cumsum(reps, 0)
        slots = torch.arange(int(ends[-1]))
        owner = torch.searchsorted(ends, slots, right=True)  # repeat_interleave, see below
        left = owner + lo
        offsets = slots - (ends - reps)[owner]
        u, v = mem[left], mem[start_of[left] + offsets]
        keep = u != v
        keys.append(unique_sorted(u[keep] * n + v[keep]))
        lo = hi
    return unique_sorted(torch.cat(keys)) if len(keys) > 2 else keys[-1]


def intersection_graph(group: torch.Tensor, member: torch.Tensor, n: int) -> Graph:
    """Members ``0 .. n - 1`` adjacent when some group holds both (columns sharing a row)."""
    keys = _shared_pairs(group, member, n)
    u = torch.div(keys, max(n, 1), rounding_mode="floor")
    return _csr(u, keys - u * n, n)


def adjacency_graph(pattern: SparsityPattern) -> Graph:
    """The graph of a symmetric pattern without its diagonal (vertices = rows = columns)."""
    off = pattern.rows != pattern.cols
    return _csr(pattern.rows[off], pattern.cols[off], pattern.shape[0])


# --- vertex orders ----------------------------------------------------------------------


def _natural(graph: Graph) -> list[int]:
    return list(range(graph.n))


def _largest_first(graph: Graph) -> list[int]:
    deg = torch.tensor(graph.degrees(), dtype=torch.int64)
    return torch.argsort(-deg, stable=True).tolist()


def _smallest_last(graph: Graph) -> list[int]:
    ptr, adj = graph.ptr, graph.adj
    deg = graph.degrees()
    buckets: list[set[int]] = [set() for _ in range(max(deg, default=0) + 1)]
    for v, d in enumerate(deg):
        buckets[d].add(v)
    gone = [False] * graph.n
    removed = []
    low = 0
    for _ in range(graph.n):
        while not buckets[low]:
            low += 1
        v = buckets[low].pop()
        gone[v] = True
        removed.append(v)
        for w in adj[ptr[v] : ptr[v + 1]]:
            if not gone[w]:
                d = deg[w]
                buckets[d].discard(w)
                buckets[d - 1].add(w)
                deg[w] = d - 1
        low = max(low - 1, 0)
    removed.reverse()
    return removed


def _incidence_degree(graph: Graph) -> list[int]:
    ptr, adj = graph.ptr, graph.adj
    size = max(graph.degrees(), default=0) + 1
    buckets: list[set[int]] = [set() for _ in range(size)]
    buckets[0].update(range(graph.n))
    inc = [0] * graph.n
    placed = [False] * graph.n
    order = []
    top = 0
    for _ in range(graph.n):
        while not buckets[top]:
            top -= 1
        v = buckets[top].pop()
        placed[v] = True
        order.append(v)
        for w in adj[ptr[v] : ptr[v + 1]]:
            if not placed[w]:
                d = inc[w]
                buckets[d].discard(w)
                buckets[d + 1].add(w)
                inc[w] = d + 1
                top = max(top, d + 1)
    return order


_ORDER_FUNCS: dict[str, Callable[[Graph], list[int]]] = {
    "natural": _natural,
    "largest_first": _largest_first,
    "smallest_last": _smallest_last,
    "incidence_degree": _incidence_degree,
}


# --- greedy sweeps ------------------------------------------------------------------------


def greedy_distance1(graph: Graph, order: list[int], limit: int) -> list[int] | None:
    """Each vertex in ``order`` takes the smallest colour none of its neighbours has.

    Returns None as soon as a colour ``>= limit`` would be needed (it cannot win).
    """
    ptr, adj = graph.ptr, graph.adj
    color = [-1] * graph.n
    for v in order:
        used = {color[w] for w in adj[ptr[v] : ptr[v + 1]]}
        c = 0
        while c in used:
            c += 1
        if c >= limit:
            return None
        color[v] = c
    return color


def greedy_star(graph: Graph, order: list[int], limit: int) -> list[int] | None:
    """Greedy star colouring: each vertex takes the smallest colour that keeps the coloured
    part a star colouring (adjacent vertices differ; no path on four vertices has two colours).

    Colouring ``v`` may close a two-coloured path ``p1 - p2 - p3 - p4`` only with ``v`` at an
    end or inside (up to reversal), so a colour is forbidden when

    * a neighbour ``w`` has it (distance 1);
    * ``v - w - x - y`` with ``color[y] == color[w]``: then ``color[x]`` is forbidden;
    * ``w - v - x - y`` with ``color[w] == color[x]``: then ``color[y]`` is forbidden.

    ``seen[x][k]`` counts the coloured neighbours of ``x`` with colour ``k``.
    """
    ptr, adj = graph.ptr, graph.adj
    color = [-1] * graph.n
    seen: list[dict[int, int]] = [{} for _ in range(graph.n)]
    for v in order:
        nbrs = adj[ptr[v] : ptr[v + 1]]
        mine = seen[v]
        forbidden = set(mine)
        for w in nbrs:
            cw = color[w]
            if cw < 0:
                continue
            twice = mine[cw] >= 2  # another neighbour of v shares w's colour
            for x in adj[ptr[w] : ptr[w + 1]]:
                cx = color[x]
                if cx >= 0 and (twice or seen[x].get(cw, 0) >= 2):
                    forbidden.add(cx)
        c = 0
        while c in forbidden:
            c += 1
        if c >= limit:
            return None
        color[v] = c
        for w in nbrs:
            seen[w][c] = seen[w].get(c, 0) + 1
    return color


# --- colourings -----------------------------------------------------------------------------


def _star_lower_bound(graph: Graph) -> int:
    """1 without edges, 2 for a star forest, else 3 (a path on four vertices, or a triangle)."""
    if graph.n == 0:
        return 0
    deg = graph.degrees()
    if not any(deg):
        return 1
    ptr, adj = graph.ptr, graph.adj
    for v in range(graph.n):
        if deg[v] >= 2 and any(deg[w] >= 2 for w in adj[ptr[v] : ptr[v + 1]]):
            return 3
    return 2


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
        color = sweep(graph, _ORDER_FUNCS[name](graph), limit)
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
    colors, name, tried = _best(graph, greedy_star, _orders(order), _star_lower_bound(graph))
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
