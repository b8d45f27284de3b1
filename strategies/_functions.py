"""Random smooth functions (expression trees) and functions that couple the samples of a batch."""

from __future__ import annotations

import inspect
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._basic import Shape, numel, shapes
from ._caps import (
    EXP_INPUT_BOUND,
    INPUT_BOUND,
    MAX_ARGS,
    MAX_BATCH,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_INTERMEDIATE,
    MAX_INTERMEDIATE_DIMS,
    MAX_SEED,
    MAX_SIDE,
    VALUE_BOUND,
    check_int,
    check_optional_bool,
    check_order,
    check_type,
)
from ._coincident import coincident_signatures
from ._expr import (
    ELEMENTWISE,
    Expr,
    Names,
    Weight,
    arg,
    evaluate,
    format_expr,
)

#: Ops a generated function may draw on a single sub-expression, simplest first (a failing
#: example shrinks toward the first applicable one: a linear map, then tanh).
UNARY_OPS = (
    "linear",
    "tanh",
    "sin",
    "square",
    "exp",
    "softplus",
    "sum",
    "mean",
    "scale",
    "linear_left",
    "transpose",
    "movedim",
    "flatten",
    "unflatten",
    "unsqueeze",
    "cumsum",
    "roll",
    "logsumexp",
    "softmax",
    "sum_all",
    "mean_all",
    "flatten_all",
    "t",
)
#: Ops that join two sub-expressions (every argument is used), simplest first.
JOIN_OPS = ("add", "mul", "matmul", "dot", "vecmat")
#: Every op name ``functions(ops=...)`` accepts.
OPS = UNARY_OPS + JOIN_OPS
#: Ops that are not batch-polymorphic: they act on absolute dims (``x.sum()``, ``x.t()``).
#: Ways ``coupled_functions`` couple the samples of a batch (dim 0), simplest first.
COUPLINGS = ("center", "standardize", "batch_softmax", "batch_cumsum", "batch_roll")
#: Ops that are not batch-polymorphic: they act on absolute dims (``x.sum()``, ``x.t()``) or
#: across the batch (the couplings).
NON_POLYMORPHIC_OPS = frozenset({"sum_all", "mean_all", "flatten_all", "t", "dot", "vecmat"}) | set(
    COUPLINGS
)
#: Ops torch cannot evaluate on complex inputs (or not analytically: ``var`` takes ``|.|**2``).
NON_ANALYTIC_OPS = frozenset({"softplus", "softmax", "standardize", "batch_softmax"})


class GeneratedFunction:
    """A generated function: call it like the Python function its ``repr`` prints.

    Attributes:
        in_shapes: per-argument (per-sample) shapes, a tuple of tuples.
        out_shape: the (per-sample) output shape; ``()`` for scalar-valued functions.
        n_args: number of tensor arguments.
        arg_names: the argument names in the formula (``x0, x1, ...``).
        batch_polymorphic: any subset of the arguments may carry the same extra leading
            (batch) dims, and the result is the per-sample results stacked along them.
        sample_independent: called on a batch, output sample ``b`` depends only on input
            sample ``b`` (equals ``batch_polymorphic``; False for coupled functions).
        coupled: a whole-batch function ``(B, *in) -> (B, *out)`` whose outputs depend on
            other samples (``B >= min_batch``); ``in_shapes``/``out_shape`` are per sample.
        min_batch: the smallest batch the function is meant for (2 when coupled).
        real_analytic: torch evaluates it on complex inputs as its analytic continuation
            (complex-step differentiation applies).
        depth: height of the expression tree (longest chain of ops from an input to the output).
        drawn_depth: ops on the longest chain that were drawn by choice (<= ``max_depth``);
            the others join arguments and fit shapes.
        n_ops: number of ops in the tree. ``ops``: the set of op names used (names from
            ``OPS``, plus ``broadcast`` for the scalar-to-tensor fitting op).
        value_bound: rigorous bound on ``|f(x)|`` when every ``|x| <= input_bound``.
        input_bound: the input domain the bound and the conditioning hold on (``INPUT_BOUND``).
        weights: the fixed float64 weights, by name (cast to the arguments at call time).
        formula: the right-hand side of the repr.
    """

    def __init__(
        self,
        root: Expr,
        in_shapes: Sequence[Shape],
        out_shape: Shape,
        *,
        arg_names: Sequence[str] | None = None,
        coupled: bool = False,
        name: str = "f",
    ) -> None:
        self._root = root
        self.in_shapes: tuple[Shape, ...] = tuple(tuple(s) for s in in_shapes)
        self.out_shape: Shape = tuple(out_shape)
        self.n_args = len(self.in_shapes)
        self.arg_names = tuple(arg_names or [f"x{i}" for i in range(self.n_args)])
        self.coupled = coupled
        self.batch_polymorphic = root.poly and not coupled
        self.sample_independent = self.batch_polymorphic
        self.min_batch = 2 if coupled else 1
        self.real_analytic = root.analytic
        nodes = [e for e in root.walk() if e.op != "arg"]
        self.depth = root.height
        self.drawn_depth = root.drawn
        self.n_ops = len(nodes)
        self.ops = frozenset(e.op for e in nodes)
        self.value_bound = root.bound
        self.input_bound = INPUT_BOUND
        names = Names(self.arg_names)
        self.formula = format_expr(root, names)[0]
        where = names.where()
        self.weights = {n: w.tensor for n, w in where}
        self._where = "; ".join(f"{n} = {w.source()}" for n, w in where)
        self.__name__ = self.__qualname__ = name
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a in self.arg_names]
        )

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if len(args) != self.n_args:
            raise TypeError(f"{self.__name__} takes {self.n_args} tensors, got {len(args)}")
        return evaluate(self._root, args)

    def signature(self) -> str:
        batch = ("B",) if self.coupled else ()

        def show(shape: Shape) -> str:
            dims = batch + shape
            return "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"

        params = ", ".join(
            f"{a}: {show(s)}" for a, s in zip(self.arg_names, self.in_shapes, strict=True)
        )
        return f"{self.__name__}({params}) -> {show(self.out_shape)}"

    def __repr__(self) -> str:
        text = f"{self.signature()} = {self.formula}"
        return f"{text}  where {self._where}" if self._where else text


# --------------------------------------------------------------------------------------------
# the builder: draws an expression tree, op by op


@dataclass(frozen=True)
class _Config:
    min_depth: int
    max_depth: int
    poly_only: bool
    analytic_only: bool
    force_non_poly: bool
    force_non_analytic: bool
    ops: frozenset[str]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _distinct_pair(draw: st.DrawFn, ndim: int) -> tuple[int, int]:
    # NOTE: constructive: the second index skips the first; shrinks to (-1, -2).
    i = draw(st.integers(1, ndim))
    j = draw(st.integers(1, ndim - 1))
    return -i, -(j + 1 if j >= i else j)


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    """The broadcast shape of two equal-rank shapes, or None (rank changes are not polymorphic)."""
    if len(a) != len(b):
        return None
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


#: Ops that only move values around: a softmax stays a softmax (sums to a constant) through them.
_REARRANGING = frozenset(
    {"transpose", "movedim", "flatten", "unflatten", "unsqueeze", "roll", "flatten_all", "t"}
)
_REDUCTIONS = frozenset({"sum", "mean", "sum_all", "mean_all"})


class _Builder:
    def __init__(self, draw: st.DrawFn, cfg: _Config) -> None:
        self.draw = draw
        self.cfg = cfg
        self.n_weights = 0

    # -- pieces ----------------------------------------------------------------------------

    def weight(self, prefix: str, shape: Shape, fan: int = 1) -> Weight:
        # NOTE: the weight's position is folded into its seed, so two weights differ even when
        # Hypothesis draws the same seed for both (it draws 0 for all in its first example).
        self.n_weights += 1
        seed = self.draw(st.integers(0, MAX_SEED)) * 100 + self.n_weights % 100
        return Weight(prefix, tuple(shape), seed, fan)

    def node(
        self,
        op: str,
        children: tuple[Expr, ...],
        shape: Shape,
        bound: float,
        *,
        optional: bool,
        params: tuple[Any, ...] = (),
        weights: tuple[Weight, ...] = (),
    ) -> Expr:
        return Expr(
            op,
            children,
            tuple(shape),
            bound,
            analytic=op not in NON_ANALYTIC_OPS and all(c.analytic for c in children),
            poly=op not in NON_POLYMORPHIC_OPS and all(c.poly for c in children),
            optional=optional,
            params=params,
            weights=weights,
            conserved=op == "softmax" or (op in _REARRANGING and children[0].conserved),
        )

    def new_side(self, rest: int) -> int:
        """A new dim size keeping ``rest * size <= MAX_INTERMEDIATE``."""
        return self.draw(st.integers(1, max(1, min(MAX_SIDE, MAX_INTERMEDIATE // max(rest, 1)))))

    # -- unary ops -------------------------------------------------------------------------

    def candidates(self, t: Expr) -> list[str]:
        s, b, nd, n = t.shape, t.bound, len(t.shape), numel(t.shape)
        ok = {"tanh", "sin", "softplus", "scale"}
        if b * b <= VALUE_BOUND:
            ok.add("square")
        if b <= EXP_INPUT_BOUND:
            ok.add("exp")
        if nd >= 1:
            ok |= {"linear", "mean", "logsumexp", "mean_all"}
            if any(x > 1 for x in s):
                ok.add("softmax")  # NOTE: over a size-1 dim it is the constant 1
            if b * n <= VALUE_BOUND:
                ok |= {"sum", "sum_all"}
            if b * max(s) <= VALUE_BOUND:
                ok.add("cumsum")
            if s[-1] >= 1 and nd < MAX_INTERMEDIATE_DIMS:
                ok.add("unflatten")
        if nd < MAX_INTERMEDIATE_DIMS:
            ok.add("unsqueeze")
        if any(x > 1 for x in s):
            ok.add("roll")
        if nd >= 2:
            ok |= {"linear_left", "transpose", "flatten", "flatten_all"}
        if nd >= 3:
            ok.add("movedim")
        if nd == 2:
            ok.add("t")
        if t.conserved:
            # NOTE: softmax(x).sum() == 1 whatever x: the reduction would hide x (and any
            # batch mixing before it). Scale it first.
            ok -= _REDUCTIONS
        if self.cfg.poly_only:
            ok -= NON_POLYMORPHIC_OPS
        if self.cfg.analytic_only:
            ok -= NON_ANALYTIC_OPS
        ok &= self.cfg.ops
        return [op for op in UNARY_OPS if op in ok]

    def unary(self, op: str, t: Expr, *, optional: bool = True) -> Expr:
        draw, s, b = self.draw, t.shape, t.bound
        nd = len(s)
        if op in ELEMENTWISE:
            return self.node(op, (t,), s, ELEMENTWISE[op][2](b), optional=optional)
        if op == "linear":
            n, rest = s[-1], numel(s[:-1])
            m = self.new_side(rest)
            w = self.weight("W", (n, m), fan=n)
            ws = (w, self.weight("b", (m,))) if draw(st.booleans()) else (w,)
            bound = b * w.col_norm() + (ws[1].max_abs() if len(ws) == 2 else 0.0)
            return self.node(op, (t,), (*s[:-1], m), bound, weights=ws, optional=optional)
        if op == "linear_left":
            k = s[-2]
            m = self.new_side(numel(s) // max(k, 1))
            w = self.weight("W", (m, k), fan=k)
            return self.node(
                op, (t,), (*s[:-2], m, s[-1]), b * w.row_norm(), weights=(w,), optional=optional
            )
        if op == "scale":
            # NOTE: dims where the weight has size 1 are broadcast.
            wshape = tuple(1 if draw(st.booleans()) else x for x in s)
            w = self.weight("W", wshape)
            return self.node(op, (t,), s, b * w.max_abs(), weights=(w,), optional=optional)
        if op in ("sum", "mean"):
            picked = draw(st.lists(st.integers(1, nd), min_size=1, max_size=nd, unique=True))
            dims = tuple(sorted(-k for k in picked))
            shape = tuple(x for d, x in enumerate(s) if d - nd not in dims)
            grow = numel([s[d] for d in dims]) if op == "sum" else 1
            return self.node(op, (t,), shape, b * grow, params=(dims,), optional=optional)
        if op in ("logsumexp", "softmax", "cumsum"):
            if op == "softmax":  # a dim of size > 1: softmax over size 1 erases its input
                d = draw(st.sampled_from([i - nd for i, x in enumerate(s) if x > 1]))
            else:
                d = -draw(st.integers(1, nd))
            size = s[d]
            if op == "logsumexp":
                shape = tuple(x for i, x in enumerate(s) if i - nd != d)
                return self.node(
                    op, (t,), shape, b + math.log(max(size, 1)), params=(d,), optional=optional
                )
            bound = 1.0 if op == "softmax" else b * size
            return self.node(op, (t,), s, bound, params=(d,), optional=optional)
        if op == "roll":
            big = [i - nd for i, x in enumerate(s) if x > 1]
            d = draw(st.sampled_from(big[::-1]))
            shift = draw(st.integers(1, s[d] - 1)) * (-1 if draw(st.booleans()) else 1)
            return self.node(op, (t,), s, b, params=(shift, d), optional=optional)
        if op in ("transpose", "movedim"):
            i, j = _distinct_pair(draw, nd)
            order = list(range(nd))
            if op == "transpose":
                order[i], order[j] = order[j], order[i]
            else:
                order.insert(j % nd, order.pop(i % nd))
            return self.node(
                op, (t,), tuple(s[k] for k in order), b, params=(i, j), optional=optional
            )
        if op == "flatten":
            k = draw(st.integers(2, nd))
            return self.node(op, (t,), (*s[:-k], numel(s[-k:])), b, params=(-k,), optional=optional)
        if op == "unflatten":
            d = draw(st.sampled_from(_divisors(s[-1])))
            sizes = (d, s[-1] // d)
            return self.node(op, (t,), (*s[:-1], *sizes), b, params=(sizes,), optional=optional)
        if op == "unsqueeze":
            k = draw(st.integers(1, nd + 1))
            at = nd + 1 - k
            return self.node(op, (t,), (*s[:at], 1, *s[at:]), b, params=(-k,), optional=optional)
        if op == "sum_all":
            return self.node(op, (t,), (), b * numel(s), optional=optional)
        if op == "mean_all":
            return self.node(op, (t,), (), b, optional=optional)
        if op == "flatten_all":
            return self.node(op, (t,), (numel(s),), b, optional=optional)
        if op == "t":
            return self.node(op, (t,), (s[1], s[0]), b, optional=optional)
        raise AssertionError(op)

    def chain(self, t: Expr, lo: int, hi: int) -> Expr:
        """``lo..hi`` drawn unary ops on top of ``t`` (fewer if none applies)."""
        k = self.draw(st.integers(lo, hi)) if hi > lo else lo
        for _ in range(k):
            options = self.candidates(t)
            if not options:
                break
            t = self.unary(self.draw(st.sampled_from(options)), t)
        return t

    # -- fitting shapes (mandatory, batch-polymorphic) -------------------------------------

    def adapt(self, t: Expr, target: Shape) -> Expr:
        """``t`` mapped to ``target`` by the simplest fitting ops (reduction, linear map, reshape)."""
        if t.shape == target:
            return t
        if t.conserved:
            w = self.weight("W", t.shape)
            t = self.node(
                "scale", (t,), t.shape, t.bound * w.max_abs(), weights=(w,), optional=False
            )
        s = t.shape
        if target == ():
            dims = tuple(range(-len(s), 0))
            op = "sum" if t.bound * numel(s) <= VALUE_BOUND else "mean"
            grow = numel(s) if op == "sum" else 1
            return self.node(op, (t,), (), t.bound * grow, params=(dims,), optional=False)
        if s == ():
            w = self.weight("W", target)
            return self.node(
                "broadcast", (t,), target, t.bound * w.max_abs(),
                params=(len(target),), weights=(w,), optional=False,
            )  # fmt: skip
        if len(s) == len(target) and s[:-1] == target[:-1]:
            w = self.weight("W", (s[-1], target[-1]), fan=s[-1])
            return self.node(
                "linear", (t,), target, t.bound * w.col_norm(), weights=(w,), optional=False
            )
        if len(s) == len(target) >= 2 and s[:-2] == target[:-2] and s[-1] == target[-1]:
            w = self.weight("W", (target[-2], s[-2]), fan=s[-2])
            return self.node(
                "linear_left", (t,), target, t.bound * w.row_norm(), weights=(w,), optional=False
            )
        if len(s) >= 2:
            t = self.node("flatten", (t,), (numel(s),), t.bound, params=(-len(s),), optional=False)
        n = t.shape[-1]
        if n != numel(target):
            w = self.weight("W", (n, numel(target)), fan=n)
            t = self.node(
                "linear",
                (t,),
                (numel(target),),
                t.bound * w.col_norm(),
                weights=(w,),
                optional=False,
            )
        if len(target) >= 2:
            t = self.node(
                "unflatten", (t,), target, t.bound, params=(tuple(target),), optional=False
            )
        return t

    def adapt_non_poly(self, t: Expr, target: Shape) -> Expr:
        """Like ``adapt``, through an op on absolute dims (``sum()`` or ``flatten()``)."""
        if t.conserved:
            w = self.weight("W", t.shape)
            t = self.node(
                "scale", (t,), t.shape, t.bound * w.max_abs(), weights=(w,), optional=False
            )
        if target == ():
            if t.bound * numel(t.shape) <= VALUE_BOUND:
                return self.node("sum_all", (t,), (), t.bound * numel(t.shape), optional=False)
            return self.node("mean_all", (t,), (), t.bound, optional=False)
        flat = self.node("flatten_all", (t,), (numel(t.shape),), t.bound, optional=False)
        return self.adapt(flat, target)

    # -- joining two sub-expressions -------------------------------------------------------

    def join(self, a: Expr, b: Expr) -> Expr:
        cfg, draw = self.cfg, self.draw
        nd = len(a.shape)
        ok = {"add", "mul"}
        if nd >= 2:
            ok.add("matmul")
        if nd == 1 and not cfg.poly_only:
            ok |= {"dot", "vecmat"}
        options = [op for op in JOIN_OPS if op in ok and (op == "add" or op in cfg.ops)]
        op = draw(st.sampled_from(options))
        if op in ("add", "mul"):
            joint = _broadcast(a.shape, b.shape)
            if joint is None or numel(joint) > MAX_INTERMEDIATE:
                b, joint = self.adapt(b, a.shape), a.shape
            if op == "mul" and a.bound * b.bound > VALUE_BOUND:
                op = "add"
            bound = a.bound * b.bound if op == "mul" else a.bound + b.bound
            return self.node(op, (a, b), joint, bound, optional=False)
        k = a.shape[-1]
        if op == "dot":
            b = self.adapt(b, a.shape)
            shape: Shape = ()
        else:
            n = self.new_side(max(numel(a.shape[:-1]), numel(a.shape[:-2]) * k))
            b = self.adapt(b, (*a.shape[:-2], k, n) if op == "matmul" else (k, n))
            shape = (*a.shape[:-1], n)
        bound = k * a.bound * b.bound
        if bound > VALUE_BOUND:
            # NOTE: constructive fix-up: a product that could grow too large becomes a sum.
            b = self.adapt(b, a.shape)
            return self.node("add", (a, b), a.shape, a.bound + b.bound, optional=False)
        return self.node(op, (a, b), shape, bound, optional=False)

    # -- whole trees -----------------------------------------------------------------------

    def tree(self, args: list[Expr], target: Shape) -> Expr:
        cfg = self.cfg
        top = cfg.max_depth
        if len(args) == 1:
            t = self.chain(args[0], cfg.min_depth, top)
        else:
            terms = [self.chain(a, 0, top) for a in args]
            t = terms[0]
            for i, b in enumerate(terms[1:]):
                t = self.join(t, b)
                last = i == len(terms) - 2
                lo = max(0, cfg.min_depth - t.drawn) if last else 0
                t = self.chain(t, lo, max(lo, top - t.drawn))
        if cfg.force_non_analytic and t.analytic:
            t = self.unary("softplus", t, optional=False)
        if cfg.force_non_poly and t.poly:
            return self.adapt_non_poly(t, target)
        return self.adapt(t, target)


# --------------------------------------------------------------------------------------------
# public strategies


def _check_shape_arg(name: str, value: Any) -> None:
    if isinstance(value, st.SearchStrategy) or value is None:
        return
    check_type(name, value, (tuple, list, torch.Size), "a shape (tuple of ints)")
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in value):
        raise InvalidArgument(f"{name}={tuple(value)!r} must hold positive ints")


def _check_common(
    n_args: Any,
    in_shapes: Any,
    out_shape: Any,
    scalar_output: Any,
    min_depth: int,
    max_depth: int,
    real_analytic: Any,
) -> None:
    if n_args is not None and not isinstance(n_args, st.SearchStrategy):
        check_int("n_args", n_args, min_value=1)
    if in_shapes is not None and not isinstance(in_shapes, st.SearchStrategy):
        check_type("in_shapes", in_shapes, (tuple, list), "a sequence of shapes")
        if not in_shapes:
            raise InvalidArgument("in_shapes=() gives no arguments")
        for i, s in enumerate(in_shapes):
            _check_shape_arg(f"in_shapes[{i}]", s)
        if isinstance(n_args, int) and n_args != len(in_shapes):
            raise InvalidArgument(f"n_args={n_args} but in_shapes has {len(in_shapes)} shapes")
    _check_shape_arg("out_shape", out_shape)
    check_optional_bool("scalar_output", scalar_output)
    check_optional_bool("real_analytic", real_analytic)
    fixed_out = isinstance(out_shape, (tuple, list)) and scalar_output is not None
    if fixed_out and (tuple(out_shape) == ()) != scalar_output:
        raise InvalidArgument(
            f"out_shape={tuple(out_shape)!r} contradicts scalar_output={scalar_output}"
        )
    check_int("min_depth", min_depth, min_value=0)
    check_int("max_depth", max_depth, min_value=0)
    check_order("min_depth", min_depth, "max_depth", max_depth)


def functions(
    *,
    n_args: int | st.SearchStrategy[int] | None = None,
    in_shapes: Sequence[Shape] | st.SearchStrategy[tuple[Shape, ...]] | None = None,
    out_shape: Shape | st.SearchStrategy[Shape] | None = None,
    scalar_output: bool | None = None,
    min_depth: int = 0,
    max_depth: int = 3,
    batch_polymorphic: bool | None = None,
    real_analytic: bool | None = None,
    ops: Collection[str] | None = None,
    max_dims: int = MAX_DIMS,
    max_elements: int = MAX_ELEMENTS,
    coincide: bool | None = False,
) -> st.SearchStrategy[GeneratedFunction]:
    """Random smooth functions of ``n_args`` tensors (``GeneratedFunction``).

    Args:
        n_args: number of tensor arguments (default: 1 to ``MAX_ARGS``; from ``in_shapes``).
        in_shapes: per-argument shapes (default: drawn, each up to ``max_dims`` dims and
            ``max_elements`` elements).
        out_shape: the output shape (default: the first input's shape, ``()`` or a fresh one).
        scalar_output: True for ``out_shape == ()`` (hvp, vhp, grad), False for tensor outputs.
        min_depth, max_depth: bounds on the ops drawn by choice along any input-to-output
            chain; the ops that join arguments and fit shapes come on top (see ``depth``).
        batch_polymorphic: True: only batch-polymorphic ops (needed for the sum trick);
            False: the function surely is not; None: either (and ``batch_polymorphic`` says).
        real_analytic: True: only ops torch evaluates analytically on complex inputs;
            False: surely not; None: either.
        ops: restrict the ops drawn by choice to these names (see ``OPS``); ``add`` and the
            shape-fitting ops stay available. If none applies, a chain stops early.
        coincide: True: sizes coincide on purpose where not given (equal argument shapes, an
            output with as many elements as an input: see ``derivs.strategies._coincident``);
            None: drawn per function; False: sizes drawn independently.

    Shrinks toward the identity ``f(x0: ()) -> () = x0``, a single linear map, one primitive.
    """
    _check_common(n_args, in_shapes, out_shape, scalar_output, min_depth, max_depth, real_analytic)
    check_optional_bool("batch_polymorphic", batch_polymorphic)
    check_optional_bool("coincide", coincide)
    check_int("max_dims", max_dims, min_value=0)
    check_int("max_elements", max_elements, min_value=1)
    chosen = frozenset(OPS) if ops is None else frozenset(ops)
    unknown = sorted(chosen - set(OPS))
    if unknown:
        raise InvalidArgument(f"ops={sorted(chosen)!r}: unknown {unknown}; valid ops: {OPS}")
    cfg = _Config(
        min_depth=min_depth,
        max_depth=max_depth,
        poly_only=batch_polymorphic is True,
        analytic_only=real_analytic is True,
        force_non_poly=batch_polymorphic is False,
        force_non_analytic=real_analytic is False,
        ops=chosen,
    )
    return _functions(
        n_args, in_shapes, out_shape, scalar_output, cfg, max_dims, max_elements, coincide
    )


def _draw_signature(
    draw: st.DrawFn,
    n_args: Any,
    in_shapes: Any,
    out_shape: Any,
    scalar_output: bool | None,
    max_dims: int,
    max_elements: int,
) -> tuple[tuple[Shape, ...], Shape]:
    if in_shapes is not None:
        ins = draw(in_shapes) if isinstance(in_shapes, st.SearchStrategy) else in_shapes
        ins = tuple(tuple(s) for s in ins)
    else:
        if n_args is None:
            n_args = st.integers(1, MAX_ARGS)
        n = draw(n_args) if isinstance(n_args, st.SearchStrategy) else n_args
        each = shapes(max_dims=max_dims, max_elements=max_elements)
        ins = tuple(draw(each) for _ in range(n))
    if out_shape is not None:
        out = draw(out_shape) if isinstance(out_shape, st.SearchStrategy) else tuple(out_shape)
        return ins, tuple(out)
    if scalar_output:
        return ins, ()
    modes = ["input", "scalar", "fresh"]
    if scalar_output is False:
        modes.remove("scalar")
        if ins[0] == ():
            modes.remove("input")
    mode = draw(st.sampled_from(modes))
    if mode == "input":
        return ins, ins[0]
    if mode == "scalar":
        return ins, ()
    fresh = shapes(
        min_dims=1 if scalar_output is False else 0,
        max_dims=max(max_dims, 1),
        max_elements=max_elements,
    )
    return ins, draw(fresh)


def _start(
    draw: st.DrawFn,
    n_args: Any,
    in_shapes: Any,
    out_shape: Any,
    scalar_output: bool | None,
    cfg: _Config,
    max_dims: int,
    max_elements: int,
) -> tuple[tuple[Shape, ...], Shape, _Builder, list[Any]]:
    """What every generated function starts from: its signature, a builder, the argument nodes."""
    ins, out = _draw_signature(
        draw, n_args, in_shapes, out_shape, scalar_output, max_dims, max_elements
    )
    builder = _Builder(draw, cfg)
    return ins, out, builder, [arg(i, s, INPUT_BOUND) for i, s in enumerate(ins)]


@st.composite
def _functions(
    draw: st.DrawFn,
    n_args: Any,
    in_shapes: Any,
    out_shape: Any,
    scalar_output: bool | None,
    cfg: _Config,
    max_dims: int,
    max_elements: int,
    coincide: bool | None = False,
) -> GeneratedFunction:
    if coincide or (coincide is None and draw(st.booleans(), label="coincident sizes")):
        in_shapes, out_shape = draw(
            coincident_signatures(
                n_args=n_args,
                in_shapes=in_shapes,
                out_shape=out_shape,
                scalar_output=scalar_output,
                max_dims=max_dims,
                max_elements=max_elements,
            )
        )
    ins, out, builder, args = _start(
        draw, n_args, in_shapes, out_shape, scalar_output, cfg, max_dims, max_elements
    )
    return GeneratedFunction(builder.tree(args, out), ins, out)


def coupled_functions(
    *,
    n_args: int | st.SearchStrategy[int] = 1,
    in_shapes: Sequence[Shape] | st.SearchStrategy[tuple[Shape, ...]] | None = None,
    out_shape: Shape | st.SearchStrategy[Shape] | None = None,
    scalar_output: bool | None = None,
    max_depth: int = 2,
    couplings: Collection[str] | None = None,
    real_analytic: bool | None = None,
    max_dims: int = MAX_DIMS,
    max_elements: int = MAX_ELEMENTS,
) -> st.SearchStrategy[GeneratedFunction]:
    """Whole-batch functions ``(B, *in) -> (B, *out)`` that couple the samples (``coupled=True``).

    ``f = couple(x_k) [fitted to out_shape] (+ g(x0, ...))`` where ``couple`` is one of
    ``COUPLINGS`` acting along the batch dim 0 (``x - x.mean(0)``, standardisation, softmax,
    cumsum or roll across the batch) and ``g`` a batch-polymorphic generated function. Every
    argument is batched (``in_dims=0``) with ``B >= 2``. The coupling reaches the output
    through ops with nonzero derivatives, so the Jacobian of the whole batch has nonzero
    off-diagonal (sample ``b`` w.r.t. sample ``b' != b``) blocks at every input.
    Shrinks toward ``f(x0: (B, 1)) -> (B, 1) = x0 - x0.mean(0)``.
    """
    _check_common(n_args, in_shapes, out_shape, scalar_output, 0, max_depth, real_analytic)
    if real_analytic is False:
        raise InvalidArgument("real_analytic=False is not supported here; use None")
    chosen = frozenset(COUPLINGS) if couplings is None else frozenset(couplings)
    unknown = sorted(chosen - set(COUPLINGS))
    if unknown or not chosen:
        raise InvalidArgument(f"couplings={sorted(chosen)!r}: valid couplings are {COUPLINGS}")
    if real_analytic:
        chosen -= NON_ANALYTIC_OPS
        if not chosen:
            raise InvalidArgument(f"couplings={sorted(chosen)!r} has no real-analytic coupling")
    cfg = _Config(
        min_depth=0,
        max_depth=max_depth,
        poly_only=True,
        analytic_only=real_analytic is True,
        force_non_poly=False,
        force_non_analytic=False,
        ops=frozenset(OPS),
    )
    kinds = tuple(c for c in COUPLINGS if c in chosen)
    return _coupled(n_args, in_shapes, out_shape, scalar_output, cfg, kinds, max_dims, max_elements)


def _coupling_bound(kind: str, b: float) -> float:
    return {
        "center": 2 * b,
        "standardize": 2 * b,
        "batch_softmax": 1.0,
        # NOTE: valid for batches up to MAX_BATCH samples.
        "batch_cumsum": MAX_BATCH * b,
        "batch_roll": b,
    }[kind]


@st.composite
def _coupled(
    draw: st.DrawFn,
    n_args: Any,
    in_shapes: Any,
    out_shape: Any,
    scalar_output: bool | None,
    cfg: _Config,
    kinds: tuple[str, ...],
    max_dims: int,
    max_elements: int,
) -> GeneratedFunction:
    ins, out, builder, args = _start(
        draw, n_args, in_shapes, out_shape, scalar_output, cfg, max_dims, max_elements
    )
    k = draw(st.integers(0, len(ins) - 1))
    kind = draw(st.sampled_from(kinds))
    coupling = builder.node(
        kind, (args[k],), ins[k], _coupling_bound(kind, INPUT_BOUND), optional=False
    )
    root = builder.adapt(coupling, out)
    if len(ins) > 1 or draw(st.booleans()):
        g = builder.tree(args, out)
        root = builder.node("add", (g, root), out, g.bound + root.bound, optional=False)
    return GeneratedFunction(root, ins, out, coupled=True)
