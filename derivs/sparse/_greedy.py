"""Greedy graph colouring: the graphs of a pattern, the vertex orders, the sweeps.

The graphs and the orders' keys are built with vectorised tensor ops; the sweeps (each vertex
in turn takes the smallest colour allowed) are sequential by nature and run over Python lists,
O(sum of squared degrees).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from derivs.sparse._pattern import SparsityPattern, unique_sorted

ORDERS = {
    "natural": "the vertices in index order",
    "largest_first": "by decreasing degree in the conflict graph (Welsh-Powell)",
    "smallest_last": "repeatedly set aside a vertex of smallest remaining degree; colour them "
    "in reverse (Matula-Beck)",
    "incidence_degree": "next, the vertex with the most neighbours already ordered",
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
    width = int(counts.max()) if counts.numel() else 0
    if counts.numel() * width * width <= min(4 * int((counts * counts).sum()), _PAIR_CHUNK):
        return _padded_pairs(g, mem, counts, starts, width, n)
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


def _padded_pairs(
    g: torch.Tensor,
    mem: torch.Tensor,
    counts: torch.Tensor,
    starts: torch.Tensor,
    width: int,
    n: int,
) -> torch.Tensor:
    """``_shared_pairs`` for groups of similar size: each group's members in a row of a
    ``(groups, width)`` table, every pair by broadcasting (no gather per pair)."""
    table = torch.full((counts.numel(), width), -1, dtype=torch.int64)
    table[g, torch.arange(g.numel()) - starts[g]] = mem
    u, v = table[:, :, None], table[:, None, :]
    keep = (u >= 0) & (v >= 0) & (u != v)
    return unique_sorted((u * n + v)[keep])


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


ORDER_FUNCS: dict[str, Callable[[Graph], list[int]]] = {
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


def star_lower_bound(graph: Graph) -> int:
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
