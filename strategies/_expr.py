"""Expression trees over differentiable primitives: evaluation, formatting and value bounds.

An ``Expr`` is a node of a generated function. It knows its per-sample ``shape``, a rigorous
bound on ``|value|`` (given ``|inputs| <= INPUT_BOUND``), whether it is real-analytic (torch
accepts complex inputs and computes the analytic continuation, so complex-step applies) and
whether it is batch-polymorphic (extra leading dims on the inputs give extra leading dims on
the value, sample by sample). Every op acts on trailing (per-sample) dims through negative dim
indices, ``x @ W``, ``flatten(-k)``, ``unflatten(-1, ...)`` and equal-rank broadcasting, which
is what makes batch polymorphism hold; the few ops that do not (``x.sum()``, ``x.flatten()``,
``x.t()``, ``dot``, vector @ matrix) mark their node ``poly=False``.

Evaluation and formatting are written side by side, op by op, and the formula is printed with
exactly the operations (and the parenthesisation) that evaluation performs, so evaluating the
printed formula (``eval_formula``) gives bit-identical values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

# operator precedences for printing
ADD, MUL, ATOM = 1, 2, 3

#: Elementwise primitives: name -> (function, real-analytic in torch, bound of |f(u)| given |u| <= b)
ELEMENTWISE: dict[
    str, tuple[Callable[[torch.Tensor], torch.Tensor], bool, Callable[[float], float]]
] = {
    "tanh": (torch.tanh, True, lambda b: min(1.0, b)),
    "sin": (torch.sin, True, lambda b: min(1.0, b)),
    "square": (torch.square, True, lambda b: b * b),
    "exp": (torch.exp, True, math.exp),
    # NOTE: torch has no complex softplus ("softplus_cpu" not implemented for 'ComplexDouble').
    "softplus": (F.softplus, False, lambda b: b + math.log(2.0)),
}


def randn(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Standard normal float64 values from a private, seeded generator (same on every call)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class Weight:
    """A fixed float64 tensor ``randn(shape, seed) / sqrt(fan)``, cast to the operand at call time."""

    prefix: str  # "W" for matrices and scales, "b" for biases
    shape: tuple[int, ...]
    seed: int
    fan: int = 1
    tensor: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        value = randn(self.shape, self.seed)
        if self.fan > 1:
            value = value / math.sqrt(self.fan)
        object.__setattr__(self, "tensor", value)

    def source(self) -> str:
        text = f"randn({self.shape}, seed={self.seed})"
        return text if self.fan <= 1 else f"{text} / sqrt({self.fan})"

    def col_norm(self) -> float:
        """max_j sum_i |W[i, j]|: the factor by which ``u @ W`` can grow ``max |u|``."""
        return float(self.tensor.abs().sum(0).max()) if self.tensor.numel() else 0.0

    def row_norm(self) -> float:
        """max_i sum_j |W[i, j]|: the factor by which ``W @ u`` can grow ``max |u|``."""
        return float(self.tensor.abs().sum(-1).max()) if self.tensor.numel() else 0.0

    def max_abs(self) -> float:
        return float(self.tensor.abs().max()) if self.tensor.numel() else 0.0


@dataclass(frozen=True, eq=False)
class Expr:
    """One node. ``op`` names the primitive; ``params`` its static arguments (dims, sizes)."""

    op: str
    children: tuple[Expr, ...]
    shape: tuple[int, ...]
    bound: float
    analytic: bool
    poly: bool
    optional: bool = True  # drawn by choice (counts toward max_depth) or needed to fit shapes
    params: tuple[Any, ...] = ()
    weights: tuple[Weight, ...] = ()
    # True when the value sums to a constant over some dims (a softmax, possibly moved or
    # reshaped): reducing it would give a constant, so reductions first scale it.
    conserved: bool = False
    height: int = field(init=False)
    drawn: int = field(init=False)

    def __post_init__(self) -> None:
        kids = self.children
        object.__setattr__(self, "height", 1 + max((c.height for c in kids), default=-1))
        extra = 1 if self.optional and kids else 0
        object.__setattr__(self, "drawn", extra + max((c.drawn for c in kids), default=0))

    def walk(self) -> list[Expr]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


def arg(index: int, shape: tuple[int, ...], bound: float) -> Expr:
    return Expr("arg", (), shape, bound, True, True, optional=False, params=(index,))


# --------------------------------------------------------------------------------------------
# evaluation


def evaluate(expr: Expr, args: Sequence[torch.Tensor]) -> torch.Tensor:
    """The value of ``expr`` with ``args`` bound to its inputs (pure torch, transform-safe)."""
    if expr.op == "arg":
        value: torch.Tensor = args[expr.params[0]]
        return value
    vals = [evaluate(c, args) for c in expr.children]
    ws = [w.tensor.to(vals[0]) for w in expr.weights]
    return _EVAL[expr.op](vals, ws, expr.params)


def _dims(d: tuple[int, ...]) -> int | tuple[int, ...]:
    return d[0] if len(d) == 1 else d


def _standardize(u: torch.Tensor) -> torch.Tensor:
    return (u - u.mean(0)) / (u.var(0, correction=0) + 1).sqrt()


_Eval = Callable[[list[torch.Tensor], list[torch.Tensor], tuple[Any, ...]], torch.Tensor]


def _elementwise(fn: Callable[[torch.Tensor], torch.Tensor]) -> _Eval:
    return lambda v, w, p: fn(v[0])


_EVAL: dict[str, _Eval] = {
    **{name: _elementwise(fn) for name, (fn, _, _) in ELEMENTWISE.items()},
    "linear": lambda v, w, p: v[0] @ w[0] + w[1] if len(w) == 2 else v[0] @ w[0],
    "linear_left": lambda v, w, p: w[0] @ v[0],
    "scale": lambda v, w, p: v[0] * w[0],
    "broadcast": lambda v, w, p: v[0][(Ellipsis,) + (None,) * p[0]] * w[0],
    "sum": lambda v, w, p: v[0].sum(_dims(p[0])),
    "mean": lambda v, w, p: v[0].mean(_dims(p[0])),
    "logsumexp": lambda v, w, p: v[0].logsumexp(p[0]),
    "softmax": lambda v, w, p: v[0].softmax(p[0]),
    "cumsum": lambda v, w, p: v[0].cumsum(p[0]),
    "roll": lambda v, w, p: v[0].roll(p[0], p[1]),
    "transpose": lambda v, w, p: v[0].transpose(p[0], p[1]),
    "movedim": lambda v, w, p: v[0].movedim(p[0], p[1]),
    "flatten": lambda v, w, p: v[0].flatten(p[0]),
    "unflatten": lambda v, w, p: v[0].unflatten(-1, p[0]),  # type: ignore[no-untyped-call]
    "unsqueeze": lambda v, w, p: v[0].unsqueeze(p[0]),
    "add": lambda v, w, p: v[0] + v[1],
    "mul": lambda v, w, p: v[0] * v[1],
    "matmul": lambda v, w, p: v[0] @ v[1],
    # not batch-polymorphic
    "sum_all": lambda v, w, p: v[0].sum(),
    "mean_all": lambda v, w, p: v[0].mean(),
    "flatten_all": lambda v, w, p: v[0].flatten(),
    "t": lambda v, w, p: v[0].t(),
    "dot": lambda v, w, p: torch.dot(v[0], v[1]),
    "vecmat": lambda v, w, p: v[0] @ v[1],
    # coupling across the batch dim 0 (whole-batch functions)
    "center": lambda v, w, p: v[0] - v[0].mean(0),
    "standardize": lambda v, w, p: _standardize(v[0]),
    "batch_softmax": lambda v, w, p: v[0].softmax(0),
    "batch_cumsum": lambda v, w, p: v[0].cumsum(0),
    "batch_roll": lambda v, w, p: v[0].roll(1, 0),
    # the tutorial's predict(weight, bias, x)
    "tutorial_linear": lambda v, w, p: F.linear(v[2], v[0], v[1]),
}


# --------------------------------------------------------------------------------------------
# formatting


class Names:
    """Assigns ``W1, W2, ...`` and ``b1, ...`` to weights in order of appearance."""

    def __init__(self, arg_names: Sequence[str]) -> None:
        self.arg_names = tuple(arg_names)
        self.weights: dict[int, tuple[str, Weight]] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, w: Weight) -> str:
        if id(w) not in self.weights:
            n = self.counts.get(w.prefix, 0) + 1
            self.counts[w.prefix] = n
            self.weights[id(w)] = (f"{w.prefix}{n}", w)
        return self.weights[id(w)][0]

    def where(self) -> list[tuple[str, Weight]]:
        return list(self.weights.values())


def _wrap(text: str, prec: int, need: int) -> str:
    return f"({text})" if prec < need else text


def _fmt_dims(d: tuple[int, ...]) -> str:
    return str(d[0]) if len(d) == 1 else str(tuple(d))


def _method(text: str, prec: int, call: str) -> tuple[str, int]:
    return f"{_wrap(text, prec, ATOM)}.{call}", ATOM


def format_expr(expr: Expr, names: Names) -> tuple[str, int]:
    """``(source, precedence)``: Python source that evaluates exactly as ``evaluate`` does."""
    op, p = expr.op, expr.params
    if op == "arg":
        return names.arg_names[p[0]], ATOM
    kids = [format_expr(c, names) for c in expr.children]
    ws = [names(w) for w in expr.weights]
    (a, pa) = kids[0]
    if op in ELEMENTWISE:
        return f"{op}({a})", ATOM
    if op == "linear":
        text = f"{_wrap(a, pa, MUL)} @ {ws[0]}"
        return (f"{text} + {ws[1]}", ADD) if len(ws) == 2 else (text, MUL)
    if op == "linear_left":
        return f"{ws[0]} @ {_wrap(a, pa, MUL + 1)}", MUL
    if op == "scale":
        return f"{_wrap(a, pa, MUL)} * {ws[0]}", MUL
    if op == "broadcast":
        index = ", ".join(["..."] + ["None"] * p[0])
        return f"{_wrap(a, pa, ATOM)}[{index}] * {ws[0]}", MUL
    if op in ("sum", "mean"):
        return _method(a, pa, f"{op}({_fmt_dims(p[0])})")
    if op in ("logsumexp", "softmax", "cumsum", "flatten", "unsqueeze"):
        return _method(a, pa, f"{op}({p[0]})")
    if op in ("roll", "transpose", "movedim"):
        return _method(a, pa, f"{op}({p[0]}, {p[1]})")
    if op == "unflatten":
        return _method(a, pa, f"unflatten(-1, {p[0]})")
    if op in ("add", "mul", "matmul", "vecmat"):
        (b, pb) = kids[1]
        sym, prec = {"add": ("+", ADD), "mul": ("*", MUL)}.get(op, ("@", MUL))
        return f"{_wrap(a, pa, prec)} {sym} {_wrap(b, pb, prec + 1)}", prec
    if op == "dot":
        return f"dot({a}, {kids[1][0]})", ATOM
    if op in ("sum_all", "mean_all", "flatten_all", "t"):
        return _method(a, pa, f"{op.removesuffix('_all')}()")
    if op == "center":
        return f"{a} - {_wrap(a, pa, ATOM)}.mean(0)", ADD
    if op == "standardize":
        u = _wrap(a, pa, ATOM)
        return f"({a} - {u}.mean(0)) / ({u}.var(0, correction=0) + 1).sqrt()", MUL
    if op == "batch_softmax":
        return _method(a, pa, "softmax(0)")
    if op == "batch_cumsum":
        return _method(a, pa, "cumsum(0)")
    if op == "batch_roll":
        return _method(a, pa, "roll(1, 0)")
    if op == "tutorial_linear":
        return f"linear({kids[2][0]}, {a}, {kids[1][0]})", ATOM
    raise AssertionError(f"no format for op {op!r}")


# --------------------------------------------------------------------------------------------
# evaluating a printed formula


#: Names a printed formula may use (besides its arguments and weights).
FORMULA_NAMESPACE: dict[str, Any] = {
    **{name: fn for name, (fn, _, _) in ELEMENTWISE.items()},
    "dot": torch.dot,
    "linear": F.linear,
    "randn": randn,
    "sqrt": math.sqrt,
}

_REPR = re.compile(
    r"^(?P<name>\w+)\((?P<args>.*?)\) -> (?P<out>.*?) = (?P<body>.*?)(?:  where (?P<where>.*))?$"
)


def eval_formula(text: str) -> Callable[..., torch.Tensor]:
    """A callable from a ``GeneratedFunction``'s ``repr``, computing bit-identical values.

    The repr reads ``f(x0: (3,), x1: ()) -> () = FORMULA  where W1 = randn(...) / sqrt(3); ...``;
    weights are rebuilt from their seeds and cast to the first argument's dtype and device.
    """
    match = _REPR.match(text.strip())
    if match is None:
        raise ValueError(f"not a generated function's repr: {text!r}")
    arg_names = re.findall(r"(\w+): ", match["args"])
    weights: dict[str, torch.Tensor] = {}
    if match["where"]:
        for item in match["where"].split("; "):
            name, _, source = item.partition(" = ")
            weights[name.strip()] = eval(source, dict(FORMULA_NAMESPACE))
    lines = [f"def {match['name']}({', '.join(arg_names)}):"]
    lines += [f"    {w} = _weights[{w!r}].to({arg_names[0]})" for w in weights]
    lines.append(f"    return {match['body']}")
    namespace = dict(FORMULA_NAMESPACE, _weights=weights)
    exec("\n".join(lines), namespace)
    fn: Callable[..., torch.Tensor] = namespace[match["name"]]
    return fn
