"""From the computed sources to the report: every comparison as a row, every operator's
verdict, the headline, the sum trick's verdict and the timings."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import torch

from derivs._check import _blame, _kink
from derivs._check._compare import Comparisons
from derivs._check._diagnose import diagnose
from derivs._check._report import CheckReport, CheckRow
from derivs._check._setup import Case
from derivs._check._sources import Operator, Source


class Judged(NamedTuple):
    rows: list[CheckRow]
    verdicts: dict[str, str]  # operator -> its verdict line
    headline: str
    limitations: list[str]  # what could not be checked, and why
    unverified: list[str]  # what no independent oracle checked
    located: _blame.Located  # whose rule is wrong: a custom Function's or torch's


def judge(
    operators: dict[str, Operator],
    rtol: float | None,
    atol: float | None,
    value_scale: float,
    case: Case | None = None,
) -> Judged:
    """Compare and diagnose the operators in order; a rule found wrong in one operator makes
    the references of the later ones that rest on it untrusted. With ``case``, a first-order
    disagreement that only value-based oracles side with is probed for a kink."""
    rows: list[CheckRow] = []
    verdicts: dict[str, str] = {}
    untrusted: set[str] = set()
    cleared: set[str] = set()  # NOTE: the first-order rules found right; diagnose adds to it
    causes: list[str] = []
    problems: list[str] = []
    unverified: list[str] = []
    checked: list[str] = []
    located = _blame.Located()
    for op, (srcs, labels) in operators.items():
        cmp = Comparisons(labels, rtol, atol, value_scale)
        kink = None if case is None else partial(_kink.at_worst, case, op)
        diagnosis = diagnose(op, srcs, cmp, untrusted, kink, cleared)
        owners = _owners(case, op, diagnosis.found - untrusted, located)
        untrusted |= diagnosis.found
        verdicts[op] = diagnosis.line + (f": {owners}" if owners else "")
        if diagnosis.problem:
            problems.append(op)
            causes += [*diagnosis.causes, *([owners] if owners else [])]
        elif not diagnosis.verified:
            unverified.append(op)
        elif any(s.status == "ok" and not s.oracle for s in srcs):
            checked.append(op)
        rows += _rows(op, srcs, cmp, untrusted)
    if not (problems or unverified or checked):
        unverified.append("nothing")  # NOTE: no method could run at all
    limitations = _limitations(operators)
    headline = _headline(causes, problems, unverified, checked, bool(limitations))
    return Judged(rows, verdicts, headline, limitations, unverified, located)


def _owners(case: Case | None, op: str, rules: frozenset[str], located: _blame.Located) -> str:
    """Whose ``rules`` (found wrong just now by operator ``op``) are wrong, as a clause; the
    findings and notes are added to ``located``."""
    if case is None or not rules:
        return ""
    second = op in ("hessian", "hvp", "vhp", "batch_hessian")
    found = _blame.blame(case.func, case.point, case.opts.nums, rules, second)
    located.findings += found.findings
    located.notes += found.notes
    return found.clause()


def _headline(
    causes: list[str],
    problems: list[str],
    unverified: list[str],
    checked: list[str],
    limited: bool,
) -> str:
    if causes:
        return "; ".join(dict.fromkeys(causes))
    if problems:
        return f"see {', '.join(problems)}"
    if unverified == ["nothing"]:
        return "nothing could be checked: no method ran (see the notes)"
    if unverified:
        return (
            f"unverified: no independent oracle checked {', '.join(unverified)} (the loop "
            "oracle shares the backward with the methods; add the 'fd' oracle)"
        )
    which = "every derivative that could be checked" if limited else "every method"
    return f"{which} agrees with the oracles ({', '.join(checked)})"


def _limitations(operators: dict[str, Operator]) -> list[str]:
    """``operator method, ...: reason`` for each reason some source could not run."""
    by_reason: dict[str, list[str]] = {}
    for op, (srcs, _) in operators.items():
        for s in srcs:
            if s.status == "skip":
                name = f"{s.name} oracle" if s.oracle else s.name
                by_reason.setdefault(s.note, []).append(f"{op} {name}")
    return [f"{', '.join(who)}: {reason}" for reason, who in by_reason.items()]


def _rows(op: str, srcs: list[Source], cmp: Comparisons, untrusted: set[str]) -> list[CheckRow]:
    """Every method against every oracle, then the oracles against each other."""
    methods = [s for s in srcs if not s.oracle]
    refs = [s for s in srcs if s.oracle and s.status == "ok"]
    ok_methods = [s for s in methods if s.status == "ok"]
    base = refs or ok_methods[:1]  # NOTE: no oracle: compare with the first method instead

    def row(actual: Source, ref: Source) -> CheckRow:
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

    rows: list[CheckRow] = []
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


def _sum_verdict(operators: dict[str, Operator], rows: list[CheckRow]) -> str:
    """Whether the sum trick is valid for func: refused, wrong or right."""
    sums = [
        s
        for op in ("batch_jacobian", "batch_hessian")
        if op in operators
        for s in operators[op].sources
        if s.name == "sum" and not s.oracle
    ]
    if not sums:
        return "not checked (no 'sum' method selected)"
    refused = [s for s in sums if s.status == "n/a"]
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


def _timings(operators: dict[str, Operator]) -> dict[str, float]:
    """Seconds per ``operator:method`` and ``operator:oracle:name``."""
    timings: dict[str, float] = {}
    for op, (srcs, _) in operators.items():
        for s in srcs:
            key = f"{op}:{'oracle:' if s.oracle else ''}{s.name}"
            timings[key] = timings.get(key, 0.0) + s.seconds
    return timings


def _describe_inputs(name: str, args: Sequence[Any], nums: tuple[int, ...]) -> str:
    """``name(float64[3, 4]*, int)``: dtypes and shapes, ``*`` on the differentiated ones."""
    parts = []
    for k, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            text = f"{str(a.dtype).removeprefix('torch.')}[{', '.join(map(str, a.shape))}]"
        else:
            text = type(a).__name__
        parts.append(text + ("*" if k in nums else ""))
    return f"{name}({', '.join(parts)})"


def build_report(
    case: Case,
    operators: dict[str, Operator],
    judged: Judged,
    notes: dict[str, str],
    started: float,
) -> CheckReport:
    """The report; ``started`` is the check's ``time.perf_counter()`` at its start."""
    opts = case.opts
    batched = opts.dims is not None
    timings = _timings(operators)
    return CheckReport(
        function=case.name,
        inputs=_describe_inputs(case.name, case.args if batched else case.point, opts.nums),
        argnums=opts.argnums,
        order=opts.order,
        batched=opts.batched,
        device=str(case.diff[0].device),
        rows=tuple(judged.rows),
        verdict=judged.headline,
        limitations=tuple(judged.limitations),
        unverified=tuple(judged.unverified),
        verdicts=judged.verdicts,
        sum_trick=_sum_verdict(operators, judged.rows) if batched else None,
        notes=(*notes.values(), *judged.located.notes),
        findings=tuple(judged.located.findings),
        seconds=time.perf_counter() - started,
        timings=timings,
    )
