"""``derivs.check``'s projected mode: derivatives compared along seeded random directions.

A dense check materialises every Jacobian and Hessian, and its finite differences cost a dozen
evaluations of ``func`` per input element: out of reach at 10^5 to 10^6 inputs. The projected
mode compares what each derivative rule computes along a few random directions instead, each
against an oracle that does not use that rule:

* ``jvp``: ``J u`` by forward mode (the jvp rule) against ``fd(dir)``, the finite differences
  of ``t -> func(x + t u)`` at ``t = 0`` (``derivs.oracles.fd_jacobian`` of a ``k``-input
  function, with its error estimate);
* ``vjp``: ``<J^T w, u>`` by reverse mode (the backward) against ``<w, J u>`` by forward mode
  (the identity between the two rules) and ``<w, fd(dir)>``;
* ``hvp`` (order 2, on ``s(x) = <w, func(x)>``): ``H u`` by forward over reverse, reverse over
  reverse (the double backward) and reverse over forward, against ``fd(grad)``, the finite
  differences of ``t -> grad s(x + t u)`` (it rests on the backward, checked above);
* ``uHv``: ``<u1, H u2>`` and ``<u2, H u1>`` from each ``H u`` and by nested forward mode
  (forward over forward), against ``fd(grad)``; the two entries are equal for a symmetric
  ``H``, so a rule whose ``H`` is not symmetric disagrees with itself.

These are ordinary operators and sources of the report: the same comparisons, the same
verdict (the rule the outliers share), only the rows hold projections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD

from derivs import oracles, testing
from derivs._check._methods import restricted_func, second
from derivs._check._setup import Case, Options
from derivs._check._sources import Operator, Source, run

Tensor = torch.Tensor
Transform = Callable[..., Any]

#: The seed of the random directions (read at each call, so a test can vary it).
# NOTE: not 0: data drawn after torch.manual_seed(0) (or by the CLI's --seed 0) would equal
# the directions entry for entry, and u1 would be x itself or a row of a weight matrix.
SEED = 20261207
#: How many random directions u (and H u) each check draws.
DIRECTIONS = 2
# NOTE: central differences along t (4 evaluations per direction, Richardson's 12): its
# step eps**(1/3) in t is small enough for a direction along which func varies fast
# (Richardson's largest, 8 eps**(1/7) ~ 0.05, moved tanh(W x) by 46 along a direction
# parallel to a row of W of 10^6 elements, and its estimate missed the error), and its
# accuracy (~1e-10 relative) is far below what the projected rows must resolve.
SCHEME = "central"
# NOTE: dense order 1 costs 17 evaluations of func per input element (fd) plus one backward
# per output element (the loop oracle); order 2 one gradient per input element and 17 per
# Hessian column. At 512 inputs a dense check of a small MLP takes seconds; past it the
# projected mode's fixed ~30 evaluations win by far (docs/bench/check.md measures both).
DENSE_MAX_INPUTS = 512


def resolve(mode: str, case: Case, budget: int) -> str:
    """``"dense"`` or ``"projected"``: what ``mode`` means for this case."""
    if mode != "auto":
        return mode
    n_in = sum(x.numel() for x in case.diff)
    dense = case.out.numel() * n_in * (n_in if case.opts.order == 2 else 1)
    itemsize = case.diff[0].element_size()
    return "projected" if n_in > DENSE_MAX_INPUTS or dense * itemsize > budget else "dense"


class Directions(NamedTuple):
    """The random vectors of one projected check."""

    us: list[list[Tensor]]  # DIRECTIONS tangents, one tensor per differentiated argument
    w: Tensor  # the cotangent, shaped like func's output
    note: str  # how they were drawn, for the report


def draw(case: Case, seed: int) -> Directions:
    """Standard normal entries (drawn in float64 on the cpu, then cast), seeded."""
    gen = torch.Generator().manual_seed(seed)

    def normal(like: Tensor) -> Tensor:
        g = torch.randn(like.shape, generator=gen, dtype=torch.float64)
        return g.to(like.dtype).to(like.device)

    us = [[normal(x) for x in case.diff] for _ in range(DIRECTIONS)]
    w = normal(case.out)
    note = (
        f"projected mode: {DIRECTIONS} directions u1..u{DIRECTIONS} (one tensor per "
        f"differentiated argument) and a cotangent w, standard normal entries drawn in that "
        f"order from torch.Generator().manual_seed({seed}) in float64 on the cpu, then cast to "
        "each argument's dtype and device; second order checks s(x) = <w, func(x)>"
    )
    return Directions(us, w, note)


def projected_sources(case: Case, hvp: Transform) -> tuple[dict[str, Operator], dict[str, str]]:
    """Every projected operator of ``case`` (jvp, vjp; at order 2 also hvp and uHv), and the
    report's notes (how the directions were drawn; what is not checked)."""
    d = draw(case, SEED)
    opts = case.opts
    func = restricted_func(case)
    x = tuple(case.diff)
    found: dict[str, Operator] = {}
    jvp_src = _jvp_method(func, x, d) if _selected(opts, "fwd", first=True) else None
    fd_src = _fd_dir(case, d) if "fd" in opts.oracles else None
    found["jvp"] = Operator([s for s in (jvp_src, fd_src) if s is not None], [""])
    vjp_srcs = [_vjp_method(case, d)] if _selected(opts, "rev", first=True) else []
    vjp_srcs += [_paired(s, d.w) for s in (jvp_src, fd_src) if s is not None]
    found["vjp"] = Operator(vjp_srcs, [""])
    if opts.order == 2:
        found.update(_second_order(case, func, x, d, hvp))
    notes = {"mode": d.note}
    if opts.dims is not None:
        notes["batched"] = (
            "projected mode checks func at the first sample only; the batch forms are not "
            "checked (mode='dense' checks them)"
        )
    return {op: o for op, o in found.items() if o.sources}, notes


def _selected(opts: Options, method: str, *, first: bool) -> bool:
    """Whether ``methods=`` selected ``method`` for a first (jacobian) or second order operator."""
    ops = ("jacobian",) if first else ("hessian", "hvp")
    return any(method in opts.selected[op] for op in ops)


# ----------------------------------------------------------------------- first order


def _stacked(results: Sequence[Tensor]) -> Tensor:
    return torch.stack([r.detach() for r in results])


def _jvp_method(func: Callable[..., Any], x: tuple[Tensor, ...], d: Directions) -> Source:
    """``J u`` for every direction by forward mode (the jvp rule)."""

    def compute() -> list[Tensor]:
        return [_stacked([_forward(func, x, u) for u in d.us])]

    return run("fwd", False, {"jvp"}, compute)


def _forward(func: Callable[..., Any], x: Sequence[Tensor], u: Sequence[Tensor]) -> Tensor:
    """``J u`` by ``torch.autograd.forward_ad`` (dual tensors, not ``torch.func``: old-style
    Functions with a jvp rule run under it too)."""
    with fwAD.dual_level():
        pairs = zip(x, u, strict=True)
        duals = [fwAD.make_dual(p.detach(), t) for p, t in pairs]  # type: ignore[no-untyped-call]
        primal, tangent = fwAD.unpack_dual(func(*duals))  # type: ignore[no-untyped-call]
    return torch.zeros_like(primal.detach()) if tangent is None else tangent.detach()


def _fd_dir(case: Case, d: Directions) -> Source:
    """``J u`` for every direction by finite differences of ``t -> func(x + sum t_k u_k)``."""
    line = _Line(case, d)

    def compute() -> tuple[list[Tensor], list[Tensor]]:
        est = oracles.fd_jacobian(line.value, line.args(), line.t_index, scheme=SCHEME)
        return [est.value.movedim(-1, 0)], [est.error.movedim(-1, 0)]

    return run("fd(dir)", True, {"eval", "o:fd"}, compute, estimate=True)


class _Line:
    """func along the directions, as a function of ``(*args, *U, w, t)``.

    ``U`` holds one matrix per differentiated argument, its directions as columns (``n x
    k``). Everything the line depends on is an argument, so that ``fd_jacobian`` casts all
    of it to its compute dtype; ``t`` (``k`` elements, 0 at the point) is the one
    differentiated.

    NOTE: ``x + U t`` is one ``addmv`` per argument: one pass over ``U``, and the only value
    of the size of ``x`` that depends on ``t`` (the oracle's noise measurement moves only
    those, ``measured_noise(varying_only=True)``).
    """

    def __init__(self, case: Case, d: Directions) -> None:
        self.func, self.nums, self.point = case.func, case.opts.nums, case.point
        self.columns = [
            torch.stack([us[j].reshape(-1) for us in d.us], dim=1) for j in range(len(self.nums))
        ]
        self.w = d.w
        self.t_index = len(self.point) + len(self.columns) + 1

    def args(self) -> tuple[Any, ...]:
        t = torch.zeros(DIRECTIONS, dtype=torch.float64, device=self.w.device)
        return (*self.point, *self.columns, self.w, t)

    def _moved(self, a: tuple[Any, ...]) -> tuple[list[Any], Tensor]:
        """(func's arguments at ``x + U t``, w)."""
        nargs = len(self.point)
        point, columns, w, t = list(a[:nargs]), a[nargs:-2], a[-2], a[-1]
        for num, u in zip(self.nums, columns, strict=True):
            x = point[num]
            point[num] = torch.addmv(x.reshape(-1), u, t.to(u.dtype)).reshape(x.shape)
        return point, w

    def value(self, *a: Any) -> Any:
        point, _ = self._moved(a)
        return self.func(*point)

    def gradient(self, *a: Any) -> tuple[Tensor, ...]:
        point, w = self._moved(a)
        return tuple(_gradient(self.func, point, self.nums, w))


def _gradient(
    func: Callable[..., Any], point: Sequence[Any], nums: tuple[int, ...], w: Tensor
) -> list[Tensor]:
    """``grad <w, func(point)>`` with respect to ``point[nums]``, by one backward."""
    with torch.enable_grad():
        full = list(point)
        xs = [full[a].detach().requires_grad_() for a in nums]
        for a, x in zip(nums, xs, strict=True):
            full[a] = x
        out = func(*full)
        gs = torch.autograd.grad(out, xs, grad_outputs=w.to(out.dtype), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g.detach() for g, x in zip(gs, xs, strict=True)]


def _vjp_method(case: Case, d: Directions) -> Source:
    """``<J^T w, u>`` for every direction, ``J^T w`` by one backward (the vjp rule)."""
    nums = case.opts.nums

    def compute() -> tuple[list[Tensor], list[Tensor]]:
        g = _gradient(case.func, case.point, nums, d.w)
        errs = [_ad_error(t) for t in g]
        dots = [_inner(g, u, errs) for u in d.us]
        return [torch.stack([v for v, _ in dots])], [torch.stack([e for _, e in dots])]

    return run("rev", False, {"vjp"}, compute, estimate=True)


def _ad_error(g: Tensor) -> Tensor:
    """The dense check's elementwise tolerance for an AD result ``g`` (``testing.tolerance`` of
    its dtype, size and magnitude), the error a projection of it carries.

    NOTE: the projections of AD results are compared at the dense tolerance pushed through
    the projection, so projected mode allows what dense mode allows, no more.
    """
    g64 = g.detach().to("cpu", torch.float64)
    finite = g64[torch.isfinite(g64)]
    tol = testing.tolerance(
        g.dtype, g.numel(), float(finite.abs().max()) if finite.numel() else 0.0
    )
    return tol.atol + tol.rtol * g64.abs()


def _inner(
    a: Sequence[Tensor], b: Sequence[Tensor], a_err: Sequence[Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``<a, b>`` summed over the blocks in float64, and a bound on its error.

    The bound: ``a``'s own error (``a_err``, elementwise) times ``|b|``, plus the rounding of
    the float64 products and sum, ``n eps sum |a b|`` (the first-order bound for any order of
    summation).
    """
    value = torch.zeros((), dtype=torch.float64)
    bound = torch.zeros((), dtype=torch.float64)
    n = sum(t.numel() for t in a)
    eps = torch.finfo(torch.float64).eps
    for k, (p, q) in enumerate(zip(a, b, strict=True)):
        p64, q64 = p.detach().to("cpu", torch.float64), q.detach().to("cpu", torch.float64)
        terms = p64 * q64
        value = value + terms.sum()
        bound = bound + (n + 1) * eps * terms.abs().sum()
        if a_err is not None:
            bound = bound + (a_err[k].detach().to("cpu", torch.float64) * q64.abs()).sum()
    return value, bound


def _paired(src: Source | None, w: Tensor) -> Source:
    """A ``J u`` source turned into ``<w, J u>`` (the error: ``<|w|, error of J u>`` plus the
    rounding of the sum): the vjp operator's view of it."""
    assert src is not None
    out = Source(src.name, src.oracle, src.tags, status=src.status, note=src.note)
    if src.leaves is None:
        return out
    ju = src.leaves[0]
    errs = src.errors[0] if src.errors is not None else None
    dots = [_inner([ju[k]], [w], None if errs is None else [errs[k]]) for k in range(len(ju))]
    out.leaves = [torch.stack([v for v, _ in dots])]
    out.errors = [torch.stack([e for _, e in dots])]
    return out


# ----------------------------------------------------------------------- second order

# NOTE: differentiating a derivative rule again also differentiates the primal path of func
# (the gradient depends on x through func's intermediate values), by the outer mode: forward
# over reverse rests on the jvp rules as well, reverse over forward on the backwards.
_HVP_RULES = {
    "fwd_rev": second(frozenset({"vjp"}), "fwd") | {"jvp"},
    "rev_rev": second(frozenset({"vjp"}), "rev"),
    "rev_fwd": second(frozenset({"jvp"}), "rev") | {"vjp"},
}
_FWD_FWD = second(frozenset({"jvp"}), "fwd")


def _second_order(
    case: Case, func: Callable[..., Any], x: tuple[Tensor, ...], d: Directions, hvp: Transform
) -> dict[str, Operator]:
    """``H u`` by every selected method and ``fd(grad)``; ``<u_i, H u_j>`` from each, and by
    nested forward mode."""
    opts = case.opts

    def s(*p: Tensor) -> Tensor:
        out: Tensor = (d.w * func(*p)).sum()
        return out

    products: list[Source] = []
    for m, tags in _HVP_RULES.items():
        if not _selected(opts, m, first=False):
            continue
        if m == "rev_fwd":
            compute = partial(_rev_fwd, s, x, d.us)
        else:
            compute = partial(_derivs_hvp, hvp, s, x, d.us, m)
            tags = tags | {f"m:{m}"}
        products.append(run(m, False, tags, compute))
    if "fd" in opts.oracles:
        products.append(_fd_grad(case, d))
    labels = [""] if opts.single else [f"[{i}]" for i in range(len(x))]
    bilinear = [_bilinear(p, d.us) for p in products]
    if _selected(opts, "fwd_fwd", first=False):
        compute = partial(_fwd_fwd, s, x, d.us)
        bilinear.insert(len(bilinear) - ("fd" in opts.oracles), _nested(compute))
    return {"hvp": Operator(products, labels), "uHv": Operator(bilinear, [""])}


def _pairs() -> list[tuple[int, int]]:
    """The ordered pairs ``(i, j)``, ``i != j``, of ``<u_i, H u_j>``."""
    return [(i, j) for i in range(DIRECTIONS) for j in range(DIRECTIONS) if i != j]


def _derivs_hvp(
    hvp: Transform, s: Callable[..., Tensor], x: tuple[Tensor, ...], us: list[list[Tensor]], m: str
) -> list[Tensor]:
    """``H u`` for every direction by ``derivs.hvp(method=m)``, stacked per argument."""
    per_u = [hvp(s, x, tuple(u), method=m) for u in us]
    return [_stacked([r[a] for r in per_u]) for a in range(len(x))]


def _rev_fwd(
    s: Callable[..., Tensor], x: tuple[Tensor, ...], us: list[list[Tensor]]
) -> list[Tensor]:
    """``H u = grad_x <grad s, u>``, the inner derivative by forward mode (reverse over the
    jvp rule)."""
    argnums = tuple(range(len(x)))
    per_u = []
    for u in us:
        inner = partial(_directional, s, tuple(u))
        per_u.append(torch.func.grad(inner, argnums=argnums)(*x))
    return [_stacked([r[a] for r in per_u]) for a in range(len(x))]


def _directional(s: Callable[..., Tensor], u: tuple[Tensor, ...], *p: Tensor) -> Tensor:
    """``<grad s(p), u>`` by forward mode."""
    tangent: Tensor = torch.func.jvp(s, p, u)[1]
    return tangent


def _fwd_fwd(
    s: Callable[..., Tensor], x: tuple[Tensor, ...], us: list[list[Tensor]]
) -> list[Tensor]:
    """``<u_i, H u_j>`` for every pair by nested forward mode (forward over the jvp rule)."""
    values = []
    for i, j in _pairs():
        inner = partial(_directional, s, tuple(us[j]))
        values.append(torch.func.jvp(inner, x, tuple(us[i]))[1].detach())
    return [torch.stack(values)]


def _nested(compute: Callable[[], list[Tensor]]) -> Source:
    return run("fwd_fwd", False, _FWD_FWD, compute)


def _fd_grad(case: Case, d: Directions) -> Source:
    """``H u`` for every direction by finite differences of the autograd gradient along it."""
    line = _Line(case, d)

    def compute() -> tuple[list[Tensor], list[Tensor]]:
        est = oracles.fd_jacobian(line.gradient, line.args(), line.t_index, scheme=SCHEME)
        return [v.movedim(-1, 0) for v in est.value], [e.movedim(-1, 0) for e in est.error]

    return run("fd(grad)", True, {"vjp", "o:fd"}, compute, estimate=True)


def _bilinear(src: Source, us: list[list[Tensor]]) -> Source:
    """An ``H u`` source turned into ``<u_i, H u_j>`` for every pair."""
    out = Source(src.name, src.oracle, src.tags, status=src.status, note=src.note)
    if src.leaves is None:
        return out
    errs = src.errors
    dots = [
        _inner([h[j] for h in src.leaves], us[i], None if errs is None else [e[j] for e in errs])
        for i, j in _pairs()
    ]
    out.leaves = [torch.stack([v for v, _ in dots])]
    out.errors = [torch.stack([e for _, e in dots])]
    return out
