"""From the computed sources to the report: every comparison as a row, every operator's
verdict, the headline, the sum trick's verdict and the timings."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from derivs.check._compare import Comparisons
from derivs.check._diagnose import diagnose
from derivs.check._report import CheckReport, CheckRow
from derivs.check._setup import Case
from derivs.check._sources import Operator, Source


class Judged(NamedTuple):
    rows: list[CheckRow]
    verdicts: dict[str, str]  # operator -> its verdict line
    headline: str


def judge(
    operators: dict[str, Operator], rtol: float | None, atol: float | None, value_scale: float
) -> Judged:
    """Compare and diagnose the operators in order; a rule found wrong in one operator makes
    the references of the later ones that rest on it untrusted."""
    rows: list[CheckRow] = []
    verdicts: dict[str, str] = {}
    untrusted: set[str] = set()
    causes: list[str] = []
    problems: list[str] = []
    for op, (srcs, labels) in operators.items():
        cmp = Comparisons(labels, rtol, atol, value_scale)
        diagnosis = diagnose(op, srcs, cmp, untrusted)
        untrusted |= diagnosis.found
        verdicts[op] = diagnosis.line
        if diagnosis.problem:
            problems.append(op)
            causes += diagnosis.causes
        rows += _rows(op, srcs, cmp, untrusted)
    return Judged(rows, verdicts, _headline(causes, problems, list(operators)))


def _headline(causes: list[str], problems: list[str], operators: list[str]) -> str:
    if causes:
        return "; ".join(dict.fromkeys(causes))
    if problems:
        return f"see {', '.join(problems)}"
    if operators:
        return f"every method agrees with the oracles ({', '.join(operators)})"
    return "nothing was checked"


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
        verdicts=judged.verdicts,
        sum_trick=_sum_verdict(operators, judged.rows) if batched else None,
        notes=tuple(notes.values()),
        seconds=time.perf_counter() - started,
        timings=timings,
    )
