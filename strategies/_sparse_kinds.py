"""The vector-valued families of sparse functions: each draws its parameters, writes its
formula as Python source and derives its Jacobian's structure from the parameters by plain
loops (independent of any detection code)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import strategies as st

from ._caps import MAX_ELEMENTS, MAX_INTERMEDIATE, MAX_SIDE
from ._sparse_hessian_kinds import block_energy, energy, rosenbrock
from ._sparse_spec import Spec, coef, pairs_to_bool, seed, wrap

# --------------------------------------------------------------------------------------------
# stencils


def stencil1d(draw: st.DrawFn) -> Spec:
    """``out[i] = sum_k c_k phi(x[i + o_k])`` (+ a product of two shifts)."""
    offsets = sorted(draw(st.sets(st.integers(-2, 2), min_size=1, max_size=3)))
    periodic = draw(st.booleans())
    lo, hi = min(0, offsets[0]), max(0, offsets[-1])
    n = draw(st.integers(1 if periodic else hi - lo + 1, MAX_ELEMENTS))
    m = n if periodic else n - (hi - lo)

    def term(o: int) -> str:
        if periodic:
            return "x" if o == 0 else f"x.roll({-o})"
        return f"x[{o - lo}:{n - hi + o}]"

    parts = [f"{coef(draw)} * {wrap(draw, term(o))}" for o in offsets]
    if draw(st.booleans()):
        a, b = draw(st.sampled_from(offsets)), draw(st.sampled_from(offsets))
        parts.append(f"{term(a)} * {term(b)}")
    pairs = [(i, (i + o) % n if periodic else i + o - lo) for i in range(m) for o in offsets]
    return Spec(
        "stencil1d", "stencil1d", ("x",), ((n,),), (m,), " + ".join(parts), pairs_to_bool(m, n, pairs),
        params={"offsets": offsets, "periodic": periodic},
    )  # fmt: skip


_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
_CROSS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]


def stencil2d(draw: st.DrawFn) -> Spec:
    """``out[i, j] = sum_k c_k phi(x[i + r_k, j + s_k])``: cross, box or drawn offsets."""
    shape_kind = draw(st.sampled_from(["cross", "box", "drawn"]))
    if shape_kind == "drawn":
        offsets = sorted(draw(st.sets(st.sampled_from(_NEIGHBOURS), min_size=1, max_size=4)))
    else:
        offsets = sorted(_CROSS if shape_kind == "cross" else _NEIGHBOURS)
    periodic = draw(st.booleans())
    lr, hr = min(0, *(o[0] for o in offsets)), max(0, *(o[0] for o in offsets))
    lc, hc = min(0, *(o[1] for o in offsets)), max(0, *(o[1] for o in offsets))
    h_min, w_min = (1, 1) if periodic else (hr - lr + 1, hc - lc + 1)
    h = draw(st.integers(h_min, MAX_SIDE))
    w = draw(st.integers(w_min, max(w_min, MAX_ELEMENTS // h)))
    mh, mw = (h, w) if periodic else (h - (hr - lr), w - (hc - lc))

    def term(dr: int, dc: int) -> str:
        if not periodic:
            return f"x[{dr - lr}:{h - hr + dr}, {dc - lc}:{w - hc + dc}]"
        return "x" if (dr, dc) == (0, 0) else f"x.roll(({-dr}, {-dc}), (0, 1))"

    parts = [f"{coef(draw)} * {wrap(draw, term(*o))}" for o in offsets]
    pairs = []
    for i, j, (dr, dc) in itertools.product(range(mh), range(mw), offsets):
        r, c = ((i + dr) % h, (j + dc) % w) if periodic else (i + dr - lr, j + dc - lc)
        pairs.append((i * mw + j, r * w + c))
    return Spec(
        "stencil2d", "stencil2d", ("x",), ((h, w),), (mh, mw), " + ".join(parts),
        pairs_to_bool(mh * mw, h * w, pairs), params={"offsets": offsets, "periodic": periodic},
    )  # fmt: skip


def brusselator(draw: st.DrawFn) -> Spec:
    """The 2-D Brusselator on a periodic ``h x w`` grid: species ``u``, ``v``; ``(2, h, w)``."""
    h = draw(st.integers(1, 4))
    w = draw(st.integers(1, MAX_ELEMENTS // (2 * h)))
    alpha = coef(draw)

    def lap(s: str) -> str:
        return f"({s}.roll(1, 0) + {s}.roll(-1, 0) + {s}.roll(1, 1) + {s}.roll(-1, 1) - 4.0 * {s})"

    body = (
        f"stack([1.0 + u * u * v - 4.4 * u + {alpha} * {lap('u')}, "
        f"3.4 * u - u * u * v + {alpha} * {lap('v')}])"
    )
    hw = h * w
    pairs = []
    for s, i, j in itertools.product(range(2), range(h), range(w)):
        row = s * hw + i * w + j
        for di, dj in _CROSS:
            pairs.append((row, s * hw + ((i + di) % h) * w + (j + dj) % w))
        pairs.append((row, (1 - s) * hw + i * w + j))
    return Spec(
        "brusselator", "brusselator", ("u", "v"), ((h, w), (h, w)), (2, h, w), body,
        pairs_to_bool(2 * hw, 2 * hw, pairs), params={"alpha": alpha},
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# banded, block-diagonal, gathers


def banded(draw: st.DrawFn) -> Spec:
    """``out[i] = sum_k W[i, k] phi(x[i - lower + k])``: bandwidths ``lower``, ``upper``."""
    lower, upper = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    n = draw(st.integers(1, MAX_ELEMENTS))
    width = lower + upper + 1
    body = f"(pad({wrap(draw, 'x')}, ({lower}, {upper})).unfold(0, {width}, 1) * W1).sum(-1)"
    pairs = [(i, j) for i in range(n) for j in range(i - lower, i + upper + 1) if 0 <= j < n]
    return Spec(
        "banded", "banded", ("x",), ((n,),), (n,), body, pairs_to_bool(n, n, pairs),
        consts={"W1": f"randn(({n}, {width}), seed={seed(draw, 1)})"},
        params={"lower": lower, "upper": upper},
    )  # fmt: skip


def block_diagonal(draw: st.DrawFn) -> Spec:
    """A per-sample dense map of a batch ``(B, k) -> (B, p)``: one block per sample."""
    b = draw(st.integers(1, 4))
    k = draw(st.integers(1, MAX_ELEMENTS // b))
    p = draw(st.integers(1, MAX_SIDE))
    consts = {"W1": f"randn(({k}, {p}), seed={seed(draw, 1)})"}
    if draw(st.booleans()):
        consts["b1"] = f"randn(({p},), seed={seed(draw, 2)})"
        consts["W2"] = f"randn(({p}, {p}), seed={seed(draw, 3)})"
        body = "tanh(x @ W1 + b1) @ W2"
    else:
        body = "softmax(x @ W1, -1) * x.sum(-1, keepdim=True)"
    pairs = [(s * p + q, s * k + j) for s in range(b) for q in range(p) for j in range(k)]
    return Spec(
        "block_diagonal", "block_diagonal", ("x",), ((b, k),), (b, p), body,
        pairs_to_bool(b * p, b * k, pairs), consts=consts, params={"batch": b},
    )  # fmt: skip


def gather(draw: st.DrawFn) -> Spec:
    """``x[I1] * tanh(x[I2]) + sin(x[I3])`` with drawn index lists (the first one or more)."""
    n = draw(st.integers(1, MAX_ELEMENTS))
    m = draw(st.integers(1, MAX_ELEMENTS))
    k = draw(st.integers(1, 3))
    lists = [draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)) for _ in range(k)]
    body = "x[I1]" + (" * tanh(x[I2])" if k > 1 else "") + (" + sin(x[I3])" if k > 2 else "")
    pairs = [(i, idx[i]) for idx in lists for i in range(m)]
    return Spec(
        "gather", "gather", ("x",), ((n,),), (m,), body, pairs_to_bool(m, n, pairs),
        consts={f"I{t + 1}": f"tensor({idx})" for t, idx in enumerate(lists)},
    )  # fmt: skip


def scatter(draw: st.DrawFn) -> Spec:
    """``zeros(m).index_add(0, I1, tanh(x))`` (or ``scatter_add``): element ``i`` to ``I1[i]``."""
    n = draw(st.integers(1, MAX_ELEMENTS))
    m = draw(st.integers(1, MAX_ELEMENTS))
    idx = draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n))
    op = draw(st.sampled_from(["index_add", "scatter_add"]))
    body = f"x.new_zeros({m}).{op}(0, I1, {wrap(draw, 'x')})"
    return Spec(
        "scatter", "scatter", ("x",), ((n,),), (m,), body,
        pairs_to_bool(m, n, [(idx[i], i) for i in range(n)]), consts={"I1": f"tensor({idx})"},
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# convolutions


def _conv_out(size: int, k: int, s: int, p: int, d: int, transposed: bool) -> int:
    if transposed:
        return (size - 1) * s - 2 * p + d * (k - 1) + 1
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_min_in(k: int, s: int, p: int, d: int, transposed: bool) -> int:
    """The smallest input size with at least one output element."""
    size = 1
    while _conv_out(size, k, s, p, d, transposed) < 1:
        size += 1
    return size


def _conv_pairs(g: dict[str, Any]) -> list[tuple[int, int]]:
    """``(out, in)`` flat indices a convolution connects, by loops over every tap."""
    nd, groups = len(g["in_sp"]), g["groups"]
    c_in, c_out = g["c_in"], g["c_out"]
    pairs = []
    for n, c, o in itertools.product(range(g["batch"]), range(c_in), range(c_out)):
        if c // (c_in // groups) != o // (c_out // groups):
            continue
        for q, t in itertools.product(
            itertools.product(*(range(x) for x in g["in_sp"])),
            itertools.product(*(range(x) for x in g["kernel"])),
        ):
            if g["transposed"]:  # out = in * s - p + t * d
                p_ = [
                    q[i] * g["stride"][i] - g["padding"][i] + t[i] * g["dilation"][i]
                    for i in range(nd)
                ]
            else:  # in = out * s - p + t * d: solve for out
                p_ = []
                for i in range(nd):
                    num = q[i] + g["padding"][i] - t[i] * g["dilation"][i]
                    p_.append(num // g["stride"][i] if num % g["stride"][i] == 0 else -1)
            if all(0 <= p_[i] < g["out_sp"][i] for i in range(nd)):
                pairs.append((_flat((n, o, *p_), (g["batch"], c_out, *g["out_sp"])),
                              _flat((n, c, *q), (g["batch"], c_in, *g["in_sp"]))))  # fmt: skip
    return pairs


def _flat(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, s in zip(index, shape, strict=True):
        flat = flat * s + i
    return flat


def conv(draw: st.DrawFn) -> Spec:
    """A 1-D or 2-D convolution (or transposed convolution) of ``phi(x)`` with a drawn geometry."""
    nd = draw(st.integers(1, 2))
    transposed = draw(st.booleans())
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 2)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
    padding = [draw(st.integers(0, dilation[i] * (kernel[i] - 1))) for i in range(nd)]
    mins = [
        _conv_min_in(kernel[i], stride[i], padding[i], dilation[i], transposed) for i in range(nd)
    ]
    batch = 1 if c_in * math.prod(mins) * 2 > MAX_INTERMEDIATE else draw(st.integers(1, 2))
    in_sp = []
    budget = max(1, MAX_INTERMEDIATE // (batch * c_in))
    for i in range(nd):
        rest = math.prod(mins[i + 1 :])
        cap = max(mins[i], budget // (rest * max(1, math.prod(in_sp))))
        in_sp.append(draw(st.integers(mins[i], cap)))
    out_sp = [
        _conv_out(in_sp[i], kernel[i], stride[i], padding[i], dilation[i], transposed)
        for i in range(nd)
    ]
    w_shape = (c_in, c_out // groups, *kernel) if transposed else (c_out, c_in // groups, *kernel)
    consts = {"W1": f"randn({w_shape}, seed={seed(draw, 1)})"}
    bias = ""
    if draw(st.booleans()):
        consts["b1"] = f"randn(({c_out},), seed={seed(draw, 2)})"
        bias = ", b1"
    name = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    body = (
        f"{name}({wrap(draw, 'x')}, W1{bias}, stride={tuple(stride)}, padding={tuple(padding)}, "
        f"dilation={tuple(dilation)}, groups={groups})"
    )
    geometry = {
        "batch": batch, "c_in": c_in, "c_out": c_out, "in_sp": in_sp, "out_sp": out_sp,
        "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
        "groups": groups, "transposed": transposed,
    }  # fmt: skip
    in_shape = (batch, c_in, *in_sp)
    out_shape = (batch, c_out, *out_sp)
    structure = pairs_to_bool(math.prod(out_shape), math.prod(in_shape), _conv_pairs(geometry))
    return Spec(
        "conv", "conv", ("x",), (in_shape,), out_shape, body, structure, consts=consts,
        params=geometry,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# couplings, custom Functions, where


def coupled(draw: st.DrawFn) -> Spec:
    """An elementwise chain; rows ``R`` also read ``softplus(x[S]).sum()`` (dense couplings)."""
    n = draw(st.integers(1, MAX_ELEMENTS))
    chain = "x"
    for _ in range(draw(st.integers(1, 3))):
        chain = f"{draw(st.sampled_from(['tanh', 'sin', 'softplus']))}({chain})"
    rows = sorted(draw(st.sets(st.integers(0, n - 1), max_size=3)))
    cols = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=4)))
    consts: dict[str, str] = {}
    body = chain
    if rows:
        consts = {"I1": f"tensor({rows})", "I2": f"tensor({cols})"}
        body = f"{chain}.index_add(0, I1, softplus(x[I2]).sum().expand({len(rows)}))"
    pairs = [(i, i) for i in range(n)] + [(r, c) for r in rows for c in cols]
    return Spec(
        "coupled", "coupled", ("x",), ((n,),), (n,), body, pairs_to_bool(n, n, pairs), consts=consts,
        params={"rows": rows, "cols": cols},
    )  # fmt: skip


def custom(draw: st.DrawFn) -> Spec:
    """Custom ``autograd.Function``s: ``ste_round(c * x) * tanh(x.roll(s))``, ``neighbour_sum``."""
    n = draw(st.integers(1, MAX_ELEMENTS))
    use = draw(st.sets(st.sampled_from(["ste", "neighbour"]), min_size=1))
    parts, pairs = [], [(i, i) for i in range(n)]
    shift = draw(st.integers(0, n - 1))
    if "ste" in use:
        parts.append(f"ste_round({coef(draw)} * x) * tanh(x.roll({shift}))")
        pairs += [(i, (i - shift) % n) for i in range(n)]
    if "neighbour" in use:
        parts.append(f"neighbour_sum({wrap(draw, 'x')})")
        pairs += [(i, (i - 1) % n) for i in range(n)]
    return Spec(
        "custom", "custom", ("x",), ((n,),), (n,), " + ".join(sorted(parts)), pairs_to_bool(n, n, pairs),
        params={"use": sorted(use), "shift": shift},
    )  # fmt: skip


def where(draw: st.DrawFn) -> Spec:
    """``where(x > t, phi(x), c * psi(x.roll(s)))``: both branches globally, one at a point."""
    n = draw(st.integers(2, MAX_ELEMENTS))
    shift = draw(st.integers(1, n - 1))
    threshold = draw(st.sampled_from([0.0, -0.5, 0.5]))
    body = (
        f"where(x > {threshold}, {wrap(draw, 'x')}, "
        f"{coef(draw)} * {wrap(draw, f'x.roll({shift})')})"
    )
    pairs = [(i, i) for i in range(n)] + [(i, (i - shift) % n) for i in range(n)]

    def local(args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        taken = (args[0] > threshold).reshape(-1).tolist()
        return pairs_to_bool(n, n, [(i, i if taken[i] else (i - shift) % n) for i in range(n)])

    return Spec(
        "branch", "where", ("x",), ((n,),), (n,), body, pairs_to_bool(n, n, pairs), local=local,
        params={"shift": shift, "threshold": threshold},
    )  # fmt: skip


#: kind -> builder (``draw -> Spec``), simplest first.
BUILDERS: dict[str, Callable[[st.DrawFn], Spec]] = {
    "stencil1d": stencil1d,
    "stencil2d": stencil2d,
    "brusselator": brusselator,
    "banded": banded,
    "block_diagonal": block_diagonal,
    "gather": gather,
    "scatter": scatter,
    "conv": conv,
    "coupled": coupled,
    "custom": custom,
    "where": where,
    "rosenbrock": rosenbrock,
    "energy": energy,
    "block_energy": block_energy,
}
