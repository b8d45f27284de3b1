"""``derivs.check``: verify a user's own function with every operator, method and oracle.

``torch.autograd.gradcheck`` checks first derivatives of one function against fixed finite
differences. ``check`` computes every applicable operator (full Jacobian; with ``order=2``
also the Hessian, ``hvp``/``vhp`` for scalar functions, and the batch forms) by every
method of ``derivs``, compares each with independent oracles, and explains a mismatch.

How the verdict is reached. Every result (a method's or an oracle's) rests on some of the
function's derivative rules: rev-mode methods and the loop oracle on its backward (vjp),
forward-mode methods on its jvp, vmapped ones on its batching rule, second-order ones on
differentiating those rules again; finite differences of values (``fd``) and the complex
step (``cs``) on nothing but evaluations of the function. The value-based oracle is the
arbiter: the results that disagree with it are the outliers, and the derivative rule that
every outlier uses and no agreeing result uses is named as the culprit. Second-order
finite differences difference the autograd gradient (``fd(grad)``), so once the backward is
found wrong they stop arbitrating; the report marks every comparison against such a
reference with ``*``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from derivs import _validate, testing
from derivs import oracles as _oracles
from derivs._config import get_memory_budget
from derivs.batch import METHODS as BATCH_METHODS
from derivs.batch import batch_hessian, batch_jacobian
from derivs.hessian import METHODS as HESSIAN_METHODS
from derivs.hessian import hessian
from derivs.jacobian import METHODS as JACOBIAN_METHODS
from derivs.jacobian import jacobian, prefers_forward
from derivs.products import HVP_METHODS, VHP_METHODS, hvp, vhp

__all__ = ["OPERATORS", "ORACLES", "CheckFailure", "CheckReport", "CheckRow", "check"]

API = "derivs.check"
Tensor = torch.Tensor

#: operator -> its methods (name -> hint), in the order the report lists them.
OPERATORS: dict[str, dict[str, str]] = {
    "jacobian": JACOBIAN_METHODS,
    "hessian": HESSIAN_METHODS,
    "hvp": HVP_METHODS,
    "vhp": VHP_METHODS,
    "batch_jacobian": BATCH_METHODS,
    "batch_hessian": BATCH_METHODS,
}
ORACLES = {
    "loop": "naive loops of torch.autograd.grad (exact, but share the function's backward "
    "with the rev-mode methods)",
    "fd": "finite differences with error estimates (Richardson), plus the complex step when "
    "func accepts complex input; first order uses only evaluations of func",
}
_TANGENT_SEED = 0

# NOTE: tags name the derivative rules a result rests on; the verdict looks for the tag that
# every outlier carries and no agreeing result does. Order = preference when several explain
# the outliers equally (the most basic rule first).
_CAUSES: dict[str, tuple[str, str]] = {
    "vjp": ("rev-mode methods", "the backward (vjp) of this function is wrong"),
    "jvp": ("forward-mode methods", "the jvp (forward-mode derivative) of this function is wrong"),
    "d_vjp": (
        "methods that differentiate the backward",
        "the backward gives the right gradient but is not differentiable as written "
        "(a .detach(), torch.no_grad() or once_differentiable inside it?)",
    ),
    "d_jvp": (
        "methods that differentiate the jvp",
        "the jvp rule gives the right first derivative but is not differentiable as written",
    ),
    "d_vjp_fwd": (
        "forward-over-reverse methods",
        "forward mode through the backward gives a wrong second derivative",
    ),
    "d_vjp_rev": (
        "reverse-over-reverse methods",
        "double backward (reverse mode through the backward) gives a wrong second derivative",
    ),
    "d_jvp_fwd": (
        "forward-over-forward methods",
        "nested forward mode through the jvp rule gives a wrong second derivative "
        "(torch 2.x returns zeros there for a custom autograd.Function's jvp rule)",
    ),
    "d_jvp_rev": (
        "reverse-over-forward methods",
        "reverse mode through the jvp rule gives a wrong second derivative",
    ),
    "vmap": ("vmapped methods", "the function misbehaves under torch.vmap (its batching rule?)"),
    "sum": (
        "the sum trick",
        "func couples samples in a way derivs' probe missed: the sum trick is not valid for it",
    ),
    "complex": (
        "the complex step",
        "func is not holomorphic on complex input, so the complex step does not apply",
    ),
    "eval": (
        "finite differences",
        "func may not be differentiable here (a kink such as relu or abs at 0); try another point",
    ),
}
_PAIR_CAUSES: dict[frozenset[str], tuple[str, str]] = {
    frozenset({"vjp", "vmap"}): (
        "vmapped rev-mode methods",
        "the backward is right in a plain loop but wrong under torch.vmap: its batching rule is wrong",
    ),
    frozenset({"jvp", "vmap"}): (
        "vmapped forward-mode methods",
        "the jvp is wrong under torch.vmap: its batching rule is wrong",
    ),
}
_ERROR_CAUSES = {
    "vjp": "reverse-mode AD is not available for this function",
    "jvp": "forward-mode AD is not available for this function (a custom autograd.Function "
    "needs setup_context and a jvp staticmethod)",
    "vmap": "this function cannot run under torch.vmap (a custom autograd.Function needs "
    "generate_vmap_rule = True or a vmap staticmethod)",
    "d_vjp": "the backward cannot be differentiated again",
    "d_jvp": "the jvp rule cannot be differentiated again",
}


class CheckFailure(AssertionError):
    """Raised by ``derivs.check(..., raise_exception=True)`` on a mismatch; ``.report`` has it all."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(f"{API}: {report.function} failed: {report.verdict}\n\n{report}")
        self.report = report


@dataclass(frozen=True)
class CheckRow:
    """One comparison: ``method``'s result for ``operator`` against ``reference``.

    ``status`` is ``"pass"``, ``"FAIL"``, ``"error"`` (the method or oracle raised; see
    ``note``), ``"skip"`` (an oracle that does not apply, e.g. the complex step for a
    function that rejects complex input) or ``"n/a"`` (the sum trick refused the function).
    An element passes when ``|actual - expected| <= atol + rtol |expected| + 2 error``
    (``derivs.testing.tolerance``, ``error`` being the finite-difference estimate);
    ``ratio`` is the largest ``|actual - expected| / tolerance``, ``tolerance`` its
    denominator there, and ``worst`` locates that element. ``trusted`` is False when the
    reference rests on a derivative rule this report found wrong.
    """

    operator: str
    method: str
    reference: str
    status: str
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    worst: str = ""
    note: str = ""
    trusted: bool = True


@dataclass(frozen=True)
class CheckReport:
    """What ``derivs.check`` found: the rows, a verdict per operator and a headline.

    ``str(report)`` is a table; ``report.to_dict()`` a JSON-ready dict; ``report.passed``
    is True when no row is ``FAIL`` or ``error``.
    """

    function: str
    inputs: str
    argnums: Any
    order: int
    batched: Any
    device: str
    rows: tuple[CheckRow, ...]
    verdict: str
    verdicts: dict[str, str]
    sum_trick: str | None
    notes: tuple[str, ...]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(r.status in ("FAIL", "error") for r in self.rows)

    @property
    def failures(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if r.status in ("FAIL", "error"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "inputs": self.inputs,
            "argnums": self.argnums,
            "order": self.order,
            "batched": self.batched,
            "device": self.device,
            "passed": self.passed,
            "verdict": self.verdict,
            "verdicts": dict(self.verdicts),
            "sum_trick": self.sum_trick,
            "notes": list(self.notes),
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "rows": [{k: _plain(v) for k, v in asdict(r).items()} for r in self.rows],
        }

    def __str__(self) -> str:
        head = (
            f"{API}: {self.inputs}  argnums={self.argnums!r}  order={self.order}"
            + (f"  batched={self.batched!r}" if self.batched is not None else "")
            + f"  on {self.device}  ({self.seconds:.2f} s)"
        )
        header = (
            "operator",
            "method",
            "reference",
            "max abs err",
            "max rel err",
            "tolerance",
            "err/tol",
            "result",
        )
        table = [header]
        notes: list[str] = []
        for r in self.rows:
            result = r.status + ("" if r.trusted else "*")
            if r.note and r.status != "n/a":
                notes.append(f"  {r.operator} {r.method}: {r.note}")
            table.append(
                (
                    r.operator,
                    r.method,
                    r.reference,
                    _fmt(r.max_abs_error),
                    _fmt(r.max_rel_error),
                    _fmt(r.tolerance),
                    _fmt(r.ratio, ".2g"),
                    result,
                )
            )
        widths = [max(len(row[c]) for row in table) for c in range(len(header))]
        lines = [head, ""]
        for k, row in enumerate(table):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        refs = {r.reference for r in self.rows}
        legend = [f"{name} = {text}" for name, text in _LEGEND.items() if name in refs]
        if any(not r.trusted for r in self.rows):
            legend.append("* = the reference rests on a derivative rule this report found wrong")
        if legend:
            lines += ["", "references: " + "; ".join(legend)]
        if notes:
            lines += ["", "notes:", *dict.fromkeys(notes)]
        lines += ["", f"verdict: {'PASS' if self.passed else 'FAIL'}: {self.verdict}"]
        lines += [f"  {op}: {text}" for op, text in self.verdicts.items()]
        if self.sum_trick is not None:
            lines.append(f"  sum trick: {self.sum_trick}")
        lines += [f"  note: {text}" for text in self.notes]
        return "\n".join(lines)


_LEGEND = {
    "loop": "naive autograd loop (uses the backward)",
    "fd": "finite differences of values",
    "cs": "complex step of values",
    "fd(grad)": "finite differences of the autograd gradient",
    "cs(grad)": "complex step of the autograd gradient",
}


def _plain(value: Any) -> Any:
    """JSON-safe: a non-finite float becomes the string 'inf', '-inf' or 'nan'."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _fmt(value: float | None, spec: str = ".1e") -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return format(value, spec)


# ----------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """One way of computing an operator: a method of derivs or an oracle."""

    name: str
    oracle: bool
    tags: frozenset[str]
    leaves: list[Tensor] | None = None
    errors: list[Tensor] | None = None
    status: str = "ok"  # ok | error | skip | n/a
    note: str = ""
    seconds: float = 0.0


def _leaves(tree: Any) -> list[Tensor]:
    return [t for t in tree_flatten(tree)[0]]


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 400:
        first = first[:397] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _run(
    name: str,
    oracle: bool,
    tags: Iterable[str],
    thunk: Callable[[], Any],
    *,
    estimate: bool = False,
    skip: tuple[type[Exception], ...] = (),
    refused: str | None = None,
) -> _Source:
    """Compute one source; whatever it raises is recorded on it, not propagated.

    NOTE: func itself was already evaluated once at the given point (its exceptions
    propagate from there); what fails here fails under a transform or at a perturbed point,
    and belongs in the report next to the results that did work.
    """
    src = _Source(name, oracle, frozenset(tags))
    start = time.perf_counter()
    try:
        result = thunk()
    except skip as exc:
        src.status, src.note = "skip", _summary(exc)
    except Exception as exc:
        src.status, src.note = (refused or "error"), _summary(exc)
    else:
        if estimate:
            src.leaves, src.errors = _leaves(result[0]), _leaves(result[1])
        else:
            src.leaves = _leaves(result)
    src.seconds = time.perf_counter() - start
    return src


# ----------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class _Cmp:
    ok: bool
    max_abs: float
    max_rel: float
    tol: float
    ratio: float
    worst: str

    @classmethod
    def mismatch(cls, what: str) -> _Cmp:
        """Results that cannot be compared element by element (block count or shape)."""
        return cls(False, math.inf, math.inf, math.nan, math.inf, what)


def _fmt_index(flat: int, shape: Sequence[int]) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return str(tuple(reversed(index)))


# NOTE: blocks are compared in float64 on the cpu, in chunks of this many elements, so that
# comparing two (32, 512, 512) Hessians needs a few temporaries of 8 MiB, not of 512 MiB.
_CHUNK = 2**20


def _magnitude(values: list[Any]) -> float:
    """The largest finite |value| among the floating-point tensors in ``values``."""
    best = 0.0
    for v in values:
        if (
            isinstance(v, Tensor)
            and v.dtype.is_floating_point
            and v.numel()
            and v.device.type != "meta"
        ):
            t = v.detach()
            finite = t[torch.isfinite(t)]
            if finite.numel():
                best = max(best, float(finite.abs().max()))
    return best


def _compare_block(
    a: Tensor,
    e: Tensor,
    err: Tensor | None,
    rtol: float | None,
    atol: float | None,
    value_scale: float = 0.0,
) -> tuple[float, float, float, float, int, float, float]:
    """(max abs, max rel, worst ratio, tolerance there, its flat index, actual, expected)."""
    fa, fe = a.detach().reshape(-1), e.detach().reshape(-1)
    fr = None if err is None else err.detach().broadcast_to(e.shape).reshape(-1)
    n = fe.numel()
    spans = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]

    def chunk(t: Tensor, s: int, stop: int) -> Tensor:
        return t[s:stop].to("cpu", torch.float64)

    # NOTE: the two sides are peers here (a method and an oracle, or two methods), so the
    # block's scale is the larger finite magnitude of both; the formula is testing.tolerance's.
    # It is at least value_scale, the magnitude of func's inputs and output: a derivative's
    # rounding error is relative to the values its computation passes through, so a block
    # made small by cancellation still carries an absolute error of order eps * those values.
    scale = value_scale
    for s, stop in spans:
        for t in (chunk(fa, s, stop), chunk(fe, s, stop)):
            m = torch.where(torch.isfinite(t), t.abs(), torch.zeros_like(t))
            scale = max(scale, float(m.max()))
    lower = a.dtype if torch.finfo(a.dtype).eps >= torch.finfo(e.dtype).eps else e.dtype
    tol = testing.tolerance(lower, n, scale)
    t_abs = tol.atol if atol is None else atol
    t_rel = tol.rtol if rtol is None else rtol
    max_abs = max_rel = 0.0
    best = (-1.0, math.nan, 0, math.nan, math.nan)
    for s, stop in spans:
        ca, ce = chunk(fa, s, stop), chunk(fe, s, stop)
        allowed = t_abs + t_rel * ce.abs()
        if fr is not None:
            allowed = allowed + testing.ERROR_SAFETY * chunk(fr, s, stop).abs()
        diff = (ca - ce).abs()
        finite = torch.isfinite(diff)
        same = (torch.isnan(ca) & torch.isnan(ce)) | (torch.isinf(ce) & (ca == ce))
        ratio = torch.where(diff == 0, torch.zeros_like(diff), diff / allowed.clamp_min(1e-300))
        ratio = torch.where(finite, ratio, torch.where(same, 0.0, math.inf))
        safe = torch.where(finite, diff, torch.zeros_like(diff))
        max_abs = max(max_abs, float(safe.max()) if bool(finite.all()) else math.inf)
        rel = torch.where(ce != 0, safe / ce.abs(), torch.zeros_like(safe))
        max_rel = max(max_rel, float(rel.max()))
        w = int(torch.argmax(ratio))
        if float(ratio[w]) > best[0]:
            best = (float(ratio[w]), float(allowed[w]), s + w, float(ca[w]), float(ce[w]))
    ratio_, allowed_, index, av, ev = best
    return max_abs, max_rel, ratio_, allowed_, index, av, ev


def _compare(
    actual: list[Tensor],
    expected: list[Tensor],
    errors: list[Tensor] | None,
    labels: list[str],
    rtol: float | None,
    atol: float | None,
    value_scale: float = 0.0,
) -> _Cmp:
    """Compare block by block with ``derivs.testing.tolerance``; summarise the worst element."""
    if len(actual) != len(expected):
        return _Cmp.mismatch(f"{len(actual)} blocks vs {len(expected)}")
    max_abs = max_rel = 0.0
    worst = _Cmp(True, 0.0, 0.0, math.nan, -1.0, "")
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        label = labels[k] if k < len(labels) else f"[{k}]"
        if a.shape != e.shape:
            return _Cmp.mismatch(f"{label} shape {tuple(a.shape)} vs {tuple(e.shape)}")
        if e.numel() == 0:
            continue
        err = None if errors is None else errors[k]
        b_abs, b_rel, ratio, allowed, index, av, ev = _compare_block(
            a, e, err, rtol, atol, value_scale
        )
        max_abs, max_rel = max(max_abs, b_abs), max(max_rel, b_rel)
        if ratio > worst.ratio:
            where = (
                f"{label}{' ' if label else ''}{_fmt_index(index, e.shape)}: {av:.6g} vs {ev:.6g}"
            )
            worst = _Cmp(True, 0.0, 0.0, allowed, ratio, where)
    ratio = max(worst.ratio, 0.0)
    return _Cmp(not ratio > 1.0, max_abs, max_rel, worst.tol, ratio, worst.worst)


class _Comparisons:
    """Every comparison of one operator, computed once (the verdict and the rows share them)."""

    def __init__(
        self, labels: list[str], rtol: float | None, atol: float | None, value_scale: float
    ) -> None:
        self.labels, self.rtol, self.atol = labels, rtol, atol
        self.value_scale = value_scale
        self.done: dict[tuple[int, int], _Cmp] = {}

    def get(self, actual: _Source, expected: _Source) -> _Cmp:
        key = (id(actual), id(expected))
        if key not in self.done:
            assert actual.leaves is not None and expected.leaves is not None
            pieces = [x for x in (actual.errors, expected.errors) if x is not None]
            errors = (
                [sum(p, torch.zeros(())) for p in zip(*pieces, strict=True)] if pieces else None
            )
            self.done[key] = _compare(
                actual.leaves,
                expected.leaves,
                errors,
                self.labels,
                self.rtol,
                self.atol,
                self.value_scale,
            )
        return self.done[key]

    def agree(self, a: _Source, b: _Source) -> bool:
        """Symmetric: a comparison made in either direction is reused."""
        back = self.done.get((id(b), id(a)))
        return back.ok if back is not None else self.get(a, b).ok


# ----------------------------------------------------------------------------- verdict


def _names(sources: Iterable[_Source]) -> str:
    names = [s.name + (" oracle" if s.oracle and s.name == "loop" else "") for s in sources]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _cause_of(tag: str | frozenset[str]) -> tuple[str, str]:
    if isinstance(tag, frozenset):
        return _PAIR_CAUSES[tag]
    if tag.startswith("m:"):
        return (
            f"method {tag[2:]!r}",
            f"a bug in derivs' {tag[2:]!r} method (please report it with this report)",
        )
    if tag.startswith("o:"):
        return (f"the {tag[2:]} oracle", "a bug in derivs.oracles (please report it)")
    return _CAUSES[tag]


def _explain(
    bad: Sequence[_Source], good: Sequence[_Source]
) -> list[tuple[list[_Source], tuple[str, str]]] | None:
    """Group the ``bad`` sources by the rule to blame: one that every source of the group uses
    and no ``good`` source does. One group when a single rule explains them all; else the
    rule explaining the most first (two bugs at once, or a torch limitation on top of a bug).
    None when some bad source is explained by no rule."""
    tags: set[str] = set().union(*(s.tags for s in bad))
    singles: list[str | frozenset[str]] = [t for t in _CAUSES if t in tags]
    singles += sorted(t for t in tags if t.startswith(("m:", "o:")))
    candidates = singles + list(_PAIR_CAUSES)

    def uses(src: _Source, rule: str | frozenset[str]) -> bool:
        return rule <= src.tags if isinstance(rule, frozenset) else rule in src.tags

    usable = [r for r in candidates if not any(uses(g, r) for g in good)]
    for rule in usable:  # NOTE: a single rule explaining every outlier wins outright
        if all(uses(s, rule) for s in bad):
            return [(list(bad), _cause_of(rule))]
    groups: list[tuple[list[_Source], tuple[str, str]]] = []
    left = list(bad)
    while left:
        scored = [(sum(uses(s, r) for s in left), -k, r) for k, r in enumerate(usable)]
        count, _, rule = max(scored, key=lambda t: (t[0], t[1]), default=(0, 0, ""))
        if not count:
            return None
        groups.append(([s for s in left if uses(s, rule)], _cause_of(rule)))
        left = [s for s in left if not uses(s, rule)]
    return groups


def _explained(
    groups: list[tuple[list[_Source], tuple[str, str]]], good: Sequence[_Source]
) -> tuple[str, tuple[str, ...], frozenset[str]]:
    """(verdict line, short causes, tags found wrong) for the groups of ``_explain``."""
    parts = []
    for k, (members, (label, why)) in enumerate(groups):
        verb = f"disagree with {_names(good)}" if k == 0 else "also disagree"
        parts.append(f"{label} ({_names(members)}) {verb}: {why}")
    causes = tuple(why for _, (_, why) in groups)
    found: frozenset[str] = frozenset().union(*(_found(cause) for _, cause in groups))
    return "; ".join(parts), causes, found


def _clusters(
    sources: list[_Source], agree: Callable[[_Source, _Source], bool]
) -> list[list[_Source]]:
    """Connected components of the agreement graph, largest first."""
    groups: list[list[_Source]] = []
    for s in sources:
        joined = [g for g in groups if any(agree(s, t) for t in g)]
        merged = [s, *itertools.chain.from_iterable(joined)]
        groups = [g for g in groups if g not in joined] + [merged]
    for g in groups:
        g.sort(key=sources.index)
    return sorted(groups, key=lambda g: (-len(g), sources.index(g[0])))


@dataclass
class _Diagnosis:
    line: str  # the operator's verdict
    problem: bool
    causes: tuple[str, ...] = ()  # the short explanations, for the headline
    found: frozenset[str] = frozenset()  # the rules found wrong (their tags)


def _count(sources: Sequence[_Source]) -> str:
    m = sum(not s.oracle for s in sources)
    o = len(sources) - m
    parts = [f"{m} method{'s' * (m != 1)}" if m else "", f"{o} oracle{'s' * (o != 1)}" if o else ""]
    return " and ".join(p for p in parts if p)


def _found(cause: tuple[str, str]) -> frozenset[str]:
    tags = {t for t, c in _CAUSES.items() if c == cause}
    tags |= {t for pair, c in _PAIR_CAUSES.items() if c == cause for t in pair}
    return frozenset(tags)


def _diagnose(
    operator: str, sources: list[_Source], cmp: _Comparisons, untrusted: set[str]
) -> _Diagnosis:
    """Explain one operator's results: who disagrees with whom, and which rule is to blame."""
    ok = [s for s in sources if s.status == "ok"]
    failed = [s for s in sources if s.status == "error"]
    prefix = ""
    reason: tuple[str, ...] = ()
    if failed:
        common = frozenset.intersection(*(s.tags for s in failed))
        text = next(
            (
                text
                for tag, text in _ERROR_CAUSES.items()
                if tag in common and not any(tag in s.tags for s in ok)
            ),
            f"{_names(failed)} raised",
        )
        reason = (text,)
        prefix = f"{_names(failed)} raised ({failed[0].note}): {text}; "
    problem = bool(failed)
    if not ok:
        return _Diagnosis(prefix.rstrip("; ") or "nothing was computed", problem, reason)

    arbiters = [s for s in ok if s.oracle and s.name[:2] in ("cs", "fd") and not s.tags & untrusted]
    if arbiters:
        arbiter = arbiters[0]
        good = [s for s in ok if s is arbiter or cmp.agree(s, arbiter)]
        bad = [s for s in ok if s not in good]
        refs = [s for s in good if s.oracle]
        if not bad:
            methods = [s for s in good if not s.oracle]
            what = (
                f"all {len(methods)} methods agree"
                if len(methods) > 1
                else f"{_names(methods)} agrees"
            )
            line = f"{what} with {_names(refs)}" if methods else f"{_names(refs)} agree"
            return _Diagnosis(prefix + line, problem, reason)
        explanation = _explain(bad, good)
        if explanation is not None and len(explanation) == 1:
            line, whys, found = _explained(explanation, good)
            return _Diagnosis(prefix + line, True, whys, found)
        # NOTE: every AD result agreeing with every other, and only value-based oracles
        # against them, is more likely a kink than two wrong rules that happen to agree.
        ad_bad = [s for s in bad if "eval" not in s.tags]
        if (
            ad_bad
            and all(cmp.agree(ad_bad[0], s) for s in ad_bad[1:])
            and all("eval" in s.tags for s in good)
        ):
            why = (
                "func may not be differentiable at this point (a kink such as relu or abs at "
                "0), or its backward and jvp are wrong the same way; try another point"
            )
            line = f"{_names(bad)} agree with each other but disagree with {_names(good)}: {why}"
            return _Diagnosis(prefix + line, True, (why,))
        if explanation is not None:
            line, whys, found = _explained(explanation, good)
            return _Diagnosis(prefix + line, True, whys, found)
        line = f"{_names(bad)} disagree with {_names(good)}; see the rows"
        return _Diagnosis(prefix + line, True, (line,))

    # NOTE: no independent arbiter (no fd oracle, or it rests on a rule found wrong at first
    # order): describe the clusters of mutually agreeing results instead.
    groups = _clusters(ok, cmp.agree)
    if len(groups) == 1:
        tainted = frozenset.intersection(*(s.tags for s in ok)) & untrusted
        if tainted:
            rule = "backward" if "vjp" in tainted else "jvp"
            line = (
                f"all {_count(ok)} agree, but every one rests on the {rule}, found wrong "
                "above: they agree on a wrong answer"
            )
            return _Diagnosis(prefix + line, True, reason)
        who = f"all {_count(ok)}" if len(ok) > 2 else _names(ok)
        return _Diagnosis(prefix + f"{who} agree (no independent oracle)", problem, reason)
    tainted_groups = [g for g in groups if frozenset.intersection(*(s.tags for s in g)) & untrusted]
    if tainted_groups:
        g = tainted_groups[0]
        rest = [s for s in ok if s not in g]
        rule = "backward" if "vjp" in frozenset.intersection(*(s.tags for s in g)) else "jvp"
        line = (
            f"{_names(g)} rest on the {rule}, found wrong above, and disagree with "
            f"{_names(rest)}: as expected (no {operator} oracle is independent of the {rule})"
        )
        return _Diagnosis(prefix + line, True, reason)
    majority, minority = groups[0], [s for g in groups[1:] for s in g]
    explanation = _explain(minority, majority)
    if explanation is not None:
        line, whys, found = _explained(explanation, majority)
        return _Diagnosis(prefix + line, True, whys, found)
    line = f"{_names(minority)} disagree with {_names(majority)}; see the rows"
    return _Diagnosis(prefix + line, True, (line,))


# ----------------------------------------------------------------------------- setup


def _check_methods(methods: object) -> dict[str, list[str]]:
    """``methods`` -> operator -> selected method names (in the order of ``OPERATORS``)."""
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Iterable):
        raise TypeError(
            f"{API}: methods must be 'all' or an iterable of names like 'rev' or "
            f"'hessian:fwd_rev', got {_validate.describe(methods)}"
        )
    wanted = list(methods)
    if not wanted:
        raise ValueError(f"{API}: methods is empty; give 'all' or at least one method name")
    chosen: dict[str, set[str]] = {op: set() for op in OPERATORS}
    for item in wanted:
        if not isinstance(item, str):
            raise TypeError(f"{API}: methods holds {_validate.describe(item)}; names are strings")
        op, sep, name = item.rpartition(":")
        if not sep and name in OPERATORS:  # an operator: all of its methods
            op, name = name, "all"
        ops = [o for o in OPERATORS if not op or o == op]
        hits = [o for o in ops if name == "all" or name in OPERATORS[o]]
        if not hits or (sep and op not in OPERATORS):
            valid = ", ".join(f"{o}: {'/'.join(t)}" for o, t in OPERATORS.items())
            raise ValueError(
                f"{API}: methods entry {item!r} names no method; give 'all', a method name "
                f"(applies to every operator that has it), an operator, or 'operator:method', "
                f"from {valid}"
            )
        for o in hits:
            chosen[o] |= set(OPERATORS[o]) if name == "all" else {name}
    return {op: [m for m in OPERATORS[op] if m in chosen[op]] for op in OPERATORS}


def _check_oracles(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise TypeError(
            f"{API}: oracles must be an iterable of {list(ORACLES)}, got "
            f"{_validate.describe(value)}"
        )
    out = []
    for item in value:
        if item not in ORACLES:
            listing = "; ".join(f"{k!r}: {v}" for k, v in ORACLES.items())
            raise ValueError(
                f"{API}: oracles entry {item!r} is not one of {list(ORACLES)} ({listing})"
            )
        out.append(item)
    return tuple(dict.fromkeys(out))


def _check_tol(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{API}: {name} must be None or a non-negative number, got {_validate.describe(value)}"
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{API}: {name}={value!r} must be a finite number >= 0 (or None)")
    return float(value)


def _describe_inputs(name: str, args: Sequence[Any], nums: tuple[int, ...]) -> str:
    parts = []
    for k, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            text = f"{str(a.dtype).removeprefix('torch.')}[{', '.join(map(str, a.shape))}]"
        else:
            text = type(a).__name__
        parts.append(text + ("*" if k in nums else ""))
    return f"{name}({', '.join(parts)})"


def _labels_jacobian(nums: tuple[int, ...], single: bool) -> list[str]:
    return [""] if single else [f"[{i}]" for i in range(len(nums))]


def _labels_hessian(nums: tuple[int, ...], single: bool) -> list[str]:
    return [""] if single else [f"[{i}][{j}]" for i in range(len(nums)) for j in range(len(nums))]


def _mode_tags(out_numel: int, in_numel: int, device: torch.device) -> frozenset[str]:
    """What ``method='auto'`` of jacobian picks, as tags.

    In plain eager code auto's forward mode is the double-vjp (it rests on the backward and
    the backward's own derivatives), except with a custom ``autograd.Function`` in the graph,
    where it uses that Function's ``jvp``, as ``torch.func.jvp`` does. Only custom Functions
    can have a wrong rule here, so ``"jvp"`` is the tag that matters for a verdict.
    """
    return frozenset({"jvp"} if prefers_forward(out_numel, in_numel, device) else {"vjp"})


def _second(first: frozenset[str], outer: str) -> frozenset[str]:
    rule = "vjp" if "vjp" in first else "jvp"
    return first | {f"d_{rule}", f"d_{rule}_{outer}"}


_JAC_TAGS = {
    "rev": {"vjp", "vmap"},
    "vjp_vmap": {"vjp", "vmap"},
    "loop": {"vjp"},
    "fwd": {"jvp", "vmap"},
}
_HESS_TAGS = {
    "fwd_rev": _second(frozenset({"vjp", "vmap"}), "fwd"),
    "rev_rev": _second(frozenset({"vjp", "vmap"}), "rev"),
    "fwd_fwd": _second(frozenset({"jvp", "vmap"}), "fwd"),
    "rev_fwd": _second(frozenset({"jvp", "vmap"}), "rev"),
    "loop": _second(frozenset({"vjp"}), "rev"),
}
_HVP_TAGS = {
    "fwd_rev": _second(frozenset({"vjp"}), "fwd"),
    "rev_rev": _second(frozenset({"vjp"}), "rev"),
}


# NOTE: measured on predict (out = in = D): hessian(method='rev_rev') peaked at 6.6 GB and
# 'rev_fwd' at 8.7 GB for D = 128, where the Hessian itself is 16 MiB. Reverse mode pushes
# out*in cotangents through the inner Jacobian, whose intermediates hold out*in values per
# cotangent: about (out*in)**2 values, D**4 here (~2 TB at D = 512). The factor 4 matches
# the measured peaks; derivs' memory budget only guards the Hessian and the basis.
_REVERSE_OUTER_FACTOR = 4


def _reverse_outer_refusal(method: str, out_numel: int, diff: Sequence[Tensor]) -> str:
    """Why a reverse-over-X Hessian would exhaust memory here ('' when it will not)."""
    if method not in ("rev_rev", "rev_fwd"):
        return ""
    cells = out_numel * sum(x.numel() for x in diff)
    need = _REVERSE_OUTER_FACTOR * cells**2 * _validate.itemsize_of(diff)
    budget = get_memory_budget()
    if need <= budget:
        return ""
    return (
        f"not run: reverse mode over this {out_numel}-output Jacobian would materialise about "
        f"{_validate._fmt_bytes(need)} of intermediates (~4 (out*in)**2 values), above the memory "
        f"budget of {_validate._fmt_bytes(budget)} (raise it with derivs.set_memory_budget to run it)"
    )


def _sample(args: Sequence[Any], dims: Sequence[int | None], b: int) -> tuple[Any, ...]:
    return tuple(a if d is None else a.select(d, b) for a, d in zip(args, dims, strict=True))


def _contract(H: list[list[Tensor]], vs: list[Tensor], left: bool) -> list[Tensor]:
    """``sum_j H[i][j] @ v_j`` (hvp) or, with ``left``, ``sum_i v_i @ H[i][j]`` (vhp)."""
    n = len(vs)
    if left:
        return [
            sum(
                (torch.tensordot(vs[i], H[i][j], dims=vs[i].dim()) for i in range(n)),
                torch.zeros_like(vs[j]),
            )
            for j in range(n)
        ]
    return [
        sum(
            (torch.tensordot(H[i][j], vs[j], dims=vs[j].dim()) for j in range(n)),
            torch.zeros_like(vs[i]),
        )
        for i in range(n)
    ]


def _nested(leaves: list[Tensor], n: int) -> list[list[Tensor]]:
    return [leaves[i * n : (i + 1) * n] for i in range(n)]


def _contracted(src: _Source, vs: list[Tensor], left: bool) -> _Source:
    """An oracle's Hessian turned into an hvp/vhp oracle (errors contracted with ``|v|``)."""
    out = _Source(src.name, src.oracle, src.tags, status=src.status, note=src.note)
    if src.leaves is None:
        return out
    n = len(vs)
    out.leaves = _contract(_nested(src.leaves, n), vs, left)
    if src.errors is not None:
        out.errors = _contract(_nested(src.errors, n), [v.abs() for v in vs], left)
    return out


class _Plan:
    """The oracles of one check: loop, fd and cs, first or second order, at one or more points.

    The complex step is tried once per order; a function that rejects complex input (or is
    not holomorphic) is noted and the complex step is not tried again for that order.
    """

    def __init__(
        self, func: Callable[..., Any], argnums: Any, nums: tuple[int, ...], chosen: tuple[str, ...]
    ) -> None:
        self.func, self.argnums, self.nums = func, argnums, nums
        self.loop, self.fd = "loop" in chosen, "fd" in chosen
        self.cs = {False: True, True: True}
        self.notes: dict[str, str] = {}
        self.cache: dict[tuple[bool, int], list[_Source]] = {}

    def oracles(
        self,
        grad: bool,
        points: list[tuple[Any, ...]],
        *,
        batched: Any = None,
        full: tuple[Any, ...] = (),
    ) -> list[_Source]:
        """The oracles at ``points``: one point, or every sample of a batch (stacked)."""
        key = (grad, len(points) if batched is None else -1)
        if batched is None and key in self.cache:
            return self.cache[key]
        found: list[_Source] = []
        func, argnums = self.func, self.argnums
        suffix = "(grad)" if grad else ""
        if self.loop:
            tags = {"vjp", "d_vjp", "d_vjp_rev", "o:loop"} if grad else {"vjp", "o:loop"}
            if batched is None:
                loop = _oracles.loop_hessian if grad else _oracles.loop_jacobian
                found.append(_run("loop", True, tags, partial(loop, func, points[0], argnums)))
            else:
                loop_b = _oracles.loop_batch_hessian if grad else _oracles.loop_batch_jacobian
                found.append(
                    _run("loop", True, tags, partial(loop_b, func, full, argnums, batched))
                )
        if self.fd:
            base = {"vjp"} if grad else {"eval"}
            fd = _oracles.fd_hessian if grad else _oracles.fd_jacobian

            def estimate(scheme: str) -> Any:
                results = [fd(func, p, argnums, scheme=scheme) for p in points]
                if batched is None:
                    return results[0]
                return _stack_estimates(results)

            if self.cs[grad]:
                cs = _run(
                    f"cs{suffix}",
                    True,
                    base | {"complex", "o:cs"},
                    partial(estimate, "complex_step"),
                    estimate=True,
                    skip=(TypeError, ValueError),
                )
                if cs.status == "skip":
                    self.cs[grad] = False
                    if not grad:
                        self.cs[True] = False
                    what = (
                        "the complex step of the gradient (it needs a backward that is "
                        "correct for complex input)"
                        if grad
                        else "the complex step"
                    )
                    self.notes.setdefault(cs.name, f"{what} does not apply here: {cs.note}")
                else:
                    found.append(cs)
            found.append(
                _run(
                    f"fd{suffix}",
                    True,
                    base | {"o:fd"},
                    partial(estimate, "richardson"),
                    estimate=True,
                )
            )
        if batched is None:
            self.cache[key] = found
        return found


# ----------------------------------------------------------------------------- check


def check(
    func: Callable[..., Any],
    *args: Any,
    argnums: _validate.Argnums = 0,
    order: int = 2,
    methods: str | Iterable[str] = "all",
    oracles: str | Iterable[str] = ("loop", "fd"),
    batched: int | tuple[int | None, ...] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    raise_exception: bool = True,
) -> CheckReport:
    """Check every derivative operator of ``func`` at ``args`` by every method and oracle.

    Operators: the Jacobian (``order >= 1``); with ``order=2`` also the Hessian, and
    ``hvp``/``vhp`` (with a random tangent/cotangent) when ``func`` is scalar-valued. With
    ``batched`` the batch forms too (``batch_jacobian``, and ``batch_hessian`` at order 2,
    by ``vmap``, ``loop`` and the sum trick), and the report says whether the sum trick is
    valid for ``func``.

    Every method's result is compared with every oracle, and the oracles with each other:
    ``loop`` (naive ``torch.autograd.grad`` loops; it shares the function's backward with the
    rev-mode methods, so it cannot catch a wrong backward on its own) and ``fd`` (Richardson
    finite differences with an error estimate, plus the complex step where ``func`` accepts
    complex input; at first order they use only evaluations of ``func``, so they arbitrate).
    The verdict names the outliers and the derivative rule they share, e.g. "rev-mode
    methods (...) disagree with fwd, fd and cs: the backward (vjp) of this function is wrong".

    Args:
        func: the function to check; returns a real floating-point tensor.
        *args: its positional arguments (with ``batched``: the batched arguments).
        argnums: which arguments to differentiate, an int or a tuple of ints.
        order: 1 (Jacobians) or 2 (also Hessians, hvp/vhp and batch Hessians).
        methods: ``"all"``, or names: a method name applies to every operator that has it
            (``"loop"``), ``"operator:method"`` to one (``"hessian:fwd_rev"``), an operator
            name (``"hessian"``) selects all of its methods. Operators with no selected
            method are not checked.
        oracles: a subset of ``("loop", "fd")``; with none, methods are compared with the
            operator's first method and the verdict goes by majority.
        batched: ``None`` (no batch forms), or the ``in_dims`` of ``args`` as in
            ``torch.vmap`` (``0``, or e.g. ``(None, None, 0)`` for ``predict(w, b, x)``):
            ``func`` is then the per-sample function, the batch forms are checked over the
            whole batch, and the other operators at the first sample. The sum trick calls
            ``func`` on the whole batch; if ``func`` refuses (raises, or couples samples), the
            report says the sum trick is not valid for it, and that is not a failure.
        rtol, atol: replace the derived tolerances (``derivs.testing.tolerance``: ``8 eps``
            relative and ``32 eps sqrt(numel) max|value|`` absolute per block, plus twice the
            finite-difference error estimate).
        raise_exception: raise :class:`CheckFailure` (an ``AssertionError`` carrying the
            report) when a row fails or errors, instead of returning the report.

    Returns:
        A :class:`CheckReport`: ``print(report)`` gives the table and the verdict,
        ``report.passed`` the outcome, ``report.to_dict()`` everything for logs.

    Raises:
        TypeError, ValueError: bad arguments, naming ``derivs.check`` and the argument.
        CheckFailure: a mismatch, with ``raise_exception=True``.
        Exception: whatever ``func`` raises when called once at ``args``, unchanged.
            Failures later, under a transform or at a perturbed point, become ``error``
            rows instead.

    >>> import torch, derivs
    >>> report = derivs.check(torch.sin, torch.tensor([0.5, 1.0], dtype=torch.float64))
    >>> report.passed
    True
    """
    started = time.perf_counter()
    _validate.check_callable(API, func)
    _validate.check_argnums_spec(API, argnums)
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(f"{API}: order must be 1 or 2, got {_validate.describe(order)}")
    if order not in (1, 2):
        raise ValueError(
            f"{API}: order={order} is not supported; use 1 (Jacobians) or 2 "
            "(also Hessians, hvp/vhp)"
        )
    selected = _check_methods(methods)
    chosen_oracles = _check_oracles(oracles)
    rtol_, atol_ = _check_tol("rtol", rtol), _check_tol("atol", atol)
    _validate.check_bool(API, "raise_exception", raise_exception)
    nums = _validate.normalize_argnums(API, argnums, len(args))
    _validate.check_diff_args(API, args, nums)
    single = not isinstance(argnums, tuple)
    dims: tuple[int | None, ...] | None = None
    size = 0
    if batched is not None:
        if isinstance(batched, bool) or not isinstance(batched, int | tuple):
            raise TypeError(
                f"{API}: batched must be None or the in_dims of args as in torch.vmap (an int, "
                f"or a tuple of int/None per argument, e.g. (None, None, 0)), got "
                f"{_validate.describe(batched)}"
            )
        dims, size = _validate.check_in_dims(f"{API}: batched", batched, args)
        if size == 0:
            raise ValueError(f"{API}: batched: the batch is empty (batch size 0)")
    point = args if dims is None else _sample(args, dims, 0)
    name = str(
        getattr(func, "__qualname__", None)
        or getattr(func, "__name__", None)
        or type(func).__name__
    )

    out = func(*point)  # NOTE: func's own exceptions propagate from this call, unchanged
    if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point:
        raise TypeError(
            f"{API}: func must return a real floating-point tensor, got {_validate.describe(out)} "
            "(check one output at a time, e.g. lambda *a: func(*a)[0])"
        )
    diff = [point[a] for a in nums]
    value_scale = _magnitude([*point, out])
    first = _mode_tags(out.numel(), sum(x.numel() for x in diff), diff[0].device)
    plan = _Plan(func, argnums, nums, chosen_oracles)
    operators: dict[str, tuple[list[_Source], list[str]]] = {}
    notes: dict[str, str] = {}

    def method_call(transform: Callable[..., Any], m: str) -> Any:
        return transform(func, argnums, method=m)(*point)

    if selected["jacobian"]:
        srcs = [
            _run(
                m,
                False,
                (_JAC_TAGS.get(m) or first | {"vmap"}) | {f"m:{m}"},
                partial(method_call, jacobian, m),
            )
            for m in selected["jacobian"]
        ]
        operators["jacobian"] = (
            srcs + plan.oracles(False, [point]),
            _labels_jacobian(nums, single),
        )
    scalar = out.dim() == 0
    auto_hess = _second(first | {"vmap"}, "fwd")
    if order == 2 and selected["hessian"]:
        srcs = []
        for m in selected["hessian"]:
            tags = (_HESS_TAGS.get(m) or auto_hess) | {f"m:{m}"}
            refusal = _reverse_outer_refusal(m, out.numel(), diff)
            if refusal:
                srcs.append(_Source(m, False, tags, status="skip", note=refusal))
            else:
                srcs.append(_run(m, False, tags, partial(method_call, hessian, m)))
        operators["hessian"] = (srcs + plan.oracles(True, [point]), _labels_hessian(nums, single))
    if order == 2 and not scalar and (selected["hvp"] or selected["vhp"]):
        notes["hvp"] = (
            f"hvp and vhp not checked: func is not scalar-valued (shape {tuple(out.shape)})"
        )
    if order == 2 and scalar and (selected["hvp"] or selected["vhp"]):
        gen = torch.Generator().manual_seed(_TANGENT_SEED)
        vectors = {
            op: [
                torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype).to(x.device)
                for x in diff
            ]
            for op in ("hvp", "vhp")
        }

        def restricted(*d: Tensor) -> Any:
            full = list(point)
            for a, x in zip(nums, d, strict=True):
                full[a] = x
            return func(*full)

        def product_call(product: Callable[..., Any], vs: list[Tensor], m: str) -> Any:
            return product(restricted, tuple(diff), tuple(vs), method=m)

        restricted.__name__ = name
        hess_refs = plan.oracles(True, [point])
        for op, product in (("hvp", hvp), ("vhp", vhp)):
            srcs = [
                _run(
                    m,
                    False,
                    (_HVP_TAGS.get(m) or auto_hess) | {f"m:{m}"},
                    partial(product_call, product, vectors[op], m),
                )
                for m in selected[op]
            ]
            if srcs:
                refs = [_contracted(s, vectors[op], op == "vhp") for s in hess_refs]
                operators[op] = (srcs + refs, [f"[{i}]" for i in range(len(nums))])
    sum_sources: list[_Source] = []
    if dims is not None:
        samples = [_sample(args, dims, b) for b in range(size)]
        batch_in = sum(args[a].numel() for a in nums)

        def batch_call(transform: Callable[..., Any], m: str) -> Any:
            return transform(func, argnums, in_dims=batched, method=m)(*args)

        for op, grad in (("batch_jacobian", False), ("batch_hessian", True)):
            if not selected[op] or (grad and order < 2):
                continue
            srcs = []
            for m in selected[op]:
                if m == "sum" and grad:
                    tags = _second(frozenset({"vjp", "vmap"}), "fwd") | {"sum", "m:sum"}
                elif m == "sum":
                    tags = _mode_tags(out.numel(), batch_in, args[nums[0]].device) | {
                        "vmap",
                        "sum",
                        "m:sum",
                    }
                else:
                    tags = (auto_hess if grad else first | {"vmap"}) | {f"m:{m}"}
                transform = batch_hessian if grad else batch_jacobian
                srcs.append(
                    _run(
                        m,
                        False,
                        tags,
                        partial(batch_call, transform, m),
                        refused="n/a" if m == "sum" else None,
                    )
                )
            sum_sources += [s for s in srcs if s.name == "sum"]
            labels = _labels_hessian(nums, single) if grad else _labels_jacobian(nums, single)
            operators[op] = (srcs + plan.oracles(grad, samples, batched=batched, full=args), labels)
    notes.update(plan.notes)

    # ---- compare, diagnose, report
    rows: list[CheckRow] = []
    verdicts: dict[str, str] = {}
    untrusted: set[str] = set()
    causes: list[str] = []
    problems: list[str] = []
    for op, (srcs, labels) in operators.items():
        cmp = _Comparisons(labels, rtol_, atol_, value_scale)
        diagnosis = _diagnose(op, srcs, cmp, untrusted)
        untrusted |= diagnosis.found
        verdicts[op] = diagnosis.line
        if diagnosis.problem:
            problems.append(op)
            causes += diagnosis.causes
        rows += _rows(op, srcs, cmp, untrusted)
    sum_trick = _sum_verdict(sum_sources, rows) if dims is not None else None
    if causes:
        headline = "; ".join(dict.fromkeys(causes))
    elif problems:
        headline = f"see {', '.join(problems)}"
    elif operators:
        headline = f"every method agrees with the oracles ({', '.join(operators)})"
    else:
        headline = "nothing was checked"
    timings: dict[str, float] = {}
    for op, (srcs, _) in operators.items():
        for s in srcs:
            key = f"{op}:{'oracle:' if s.oracle else ''}{s.name}"
            timings[key] = timings.get(key, 0.0) + s.seconds
    report = CheckReport(
        function=name,
        inputs=_describe_inputs(name, point if dims is None else args, nums),
        argnums=argnums,
        order=order,
        batched=batched,
        device=str(diff[0].device),
        rows=tuple(rows),
        verdict=headline,
        verdicts=verdicts,
        sum_trick=sum_trick,
        notes=tuple(notes.values()),
        seconds=time.perf_counter() - started,
        timings=timings,
    )
    if raise_exception and not report.passed:
        raise CheckFailure(report)
    return report


def _stack_estimates(estimates: list[_oracles.Estimate]) -> tuple[list[Tensor], list[Tensor]]:
    values = [_leaves(e.value) for e in estimates]
    errors = [_leaves(e.error) for e in estimates]
    return (
        [torch.stack(col) for col in zip(*values, strict=True)],
        [torch.stack(col) for col in zip(*errors, strict=True)],
    )


def _rows(op: str, srcs: list[_Source], cmp: _Comparisons, untrusted: set[str]) -> list[CheckRow]:
    """Every method against every oracle, then the oracles against each other."""
    methods = [s for s in srcs if not s.oracle]
    refs = [s for s in srcs if s.oracle and s.status == "ok"]
    ok_methods = [s for s in methods if s.status == "ok"]
    base = refs or ok_methods[:1]  # NOTE: no oracle: compare with the first method instead
    rows: list[CheckRow] = []

    def row(actual: _Source, ref: _Source) -> CheckRow:
        c = cmp.get(actual, ref)
        return CheckRow(
            operator=op,
            method=f"{actual.name} oracle" if actual.oracle else actual.name,
            reference=ref.name if ref.oracle else f"method {ref.name}",
            status="pass" if c.ok else "FAIL",
            max_abs_error=c.max_abs,
            max_rel_error=c.max_rel,
            tolerance=c.tol,
            ratio=c.ratio,
            worst=c.worst,
            trusted=not (ref.oracle and ref.tags & untrusted),
        )

    for s in methods:
        if s.status != "ok":
            rows.append(CheckRow(op, s.name, "-", s.status, note=s.note))
        else:
            rows += [row(s, r) for r in base if r is not s]
    rows += [row(a, b) for a, b in itertools.combinations(refs, 2)]
    rows += [
        CheckRow(op, f"{s.name} oracle", "-", s.status, note=s.note)
        for s in srcs
        if s.oracle and s.status != "ok"
    ]
    return rows


def _sum_verdict(sum_sources: list[_Source], rows: list[CheckRow]) -> str:
    if not sum_sources:
        return "not checked (no 'sum' method selected)"
    refused = [s for s in sum_sources if s.status == "n/a"]
    if refused:
        return f"not valid for this function ({refused[0].note}); use method='vmap'"
    bad = [
        r
        for r in rows
        if r.operator.startswith("batch_")
        and r.method == "sum"
        and r.status == "FAIL"
        and r.trusted
    ]
    if bad:
        return (
            "gives wrong per-sample derivatives although derivs' coupling probe accepted "
            "func: do not use it here (method='vmap' is always valid)"
        )
    return "valid: func keeps samples independent, and the sum-trick results match the oracles"
