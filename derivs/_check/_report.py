"""What ``derivs.check`` returns: its rows, the report and its table, and the exception."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from derivs._check._blame import Finding
from derivs._check._setup import API


@dataclass(frozen=True)
class CheckRow:
    """One comparison: ``method``'s result for ``operator`` against ``reference``.

    ``status`` is ``"pass"``, ``"FAIL"``, ``"error"`` (the method or oracle raised for a
    reason check could not establish; see ``note``), ``"skip"`` (it could not run, or could
    not check anything, for a reason other than a wrong derivative, named in ``note``: the
    memory budget, a rule func's custom ``autograd.Function`` does not define, a torch
    limitation) or ``"n/a"`` (the sum trick refused the function).
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

    ``str(report)`` is a table; ``report.to_dict()`` a JSON-ready dict. ``report.status`` is
    ``"passed"`` (every derivative that could be checked agrees with an independent oracle),
    ``"failed"`` (a row is ``FAIL`` or ``error``) or ``"unverified"`` (nothing failed, but no
    independent oracle checked some operator, e.g. ``oracles="loop"``, which shares the
    backward with the methods); ``report.passed`` is True only for ``"passed"``.
    ``limitations`` lists what could not be checked and why (the ``skip`` rows), and
    ``unverified`` the operators no independent oracle checked. ``findings`` says whose rule
    is wrong when the verdict names one: a custom ``autograd.Function`` (class and call site)
    or a torch operator, each checked on the inputs it saw (``derivs._check._blame``).
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
    limitations: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    mode: str = "dense"  # "dense" or "projected": what check's mode= resolved to
    findings: tuple[Finding, ...] = ()  # whose rule is wrong (derivs._check._blame)

    @property
    def verified(self) -> bool:
        return not self.unverified

    @property
    def status(self) -> str:
        if self.failures:
            return "failed"
        return "passed" if self.verified else "unverified"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failures(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if r.status in ("FAIL", "error"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "inputs": self.inputs,
            "argnums": self.argnums,
            "order": self.order,
            "mode": self.mode,
            "batched": self.batched,
            "device": self.device,
            "passed": self.passed,
            "status": self.status,
            "verdict": self.verdict,
            "limitations": list(self.limitations),
            "unverified": list(self.unverified),
            "verdicts": dict(self.verdicts),
            "findings": [f.to_dict() for f in self.findings],
            "sum_trick": self.sum_trick,
            "notes": list(self.notes),
            "seconds": self.seconds,
            "timings": dict(self.timings),
            "rows": [{k: _plain(v) for k, v in asdict(r).items()} for r in self.rows],
        }

    def __str__(self) -> str:
        head = (
            f"{API}: {self.inputs}  argnums={self.argnums!r}  order={self.order}"
            + f"  mode={self.mode}"
            + (f"  batched={self.batched!r}" if self.batched is not None else "")
            + f"  on {self.device}  ({self.seconds:.2f} s)"
        )
        lines = [head, "", *_table(self.rows)]
        legend = _legend(self.rows)
        if legend:
            lines += ["", "references: " + "; ".join(legend)]
        # NOTE: an n/a row's note is the sum trick's refusal, which the verdict quotes; a skip
        # row's is listed under "not checked".
        notes = [
            f"  {r.operator} {r.method}: {r.note}"
            for r in self.rows
            if r.note and r.status not in ("n/a", "skip")
        ]
        if notes:
            lines += ["", "notes:", *dict.fromkeys(notes)]
        word = {"passed": "PASS", "failed": "FAIL", "unverified": "UNVERIFIED"}[self.status]
        lines += ["", f"verdict: {word}: {self.verdict}"]
        lines += [f"  {op}: {text}" for op, text in self.verdicts.items()]
        lines += [f"  not checked: {text}" for text in self.limitations]
        if self.sum_trick is not None:
            lines.append(f"  sum trick: {self.sum_trick}")
        lines += [f"  note: {text}" for text in self.notes]
        return "\n".join(lines)


class CheckFailure(AssertionError):
    """Raised by ``derivs.check(..., raise_exception=True)`` on a mismatch; ``.report`` has it all."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(f"{API}: {report.function} {report.status}: {report.verdict}\n\n{report}")
        self.report = report


_HEADER = (
    "operator",
    "method",
    "reference",
    "max abs err",
    "max rel err",
    "tolerance",
    "err/tol",
    "result",
)
_LEGEND = {
    "loop": "naive autograd loop (uses the backward)",
    "fd": "finite differences of values",
    "cs": "complex step of values",
    "fd(grad)": "finite differences of the autograd gradient",
    "fd(dir)": "finite differences of values along the random directions",
    "cs(grad)": "complex step of the autograd gradient",
    "ref": "reference= in float64, tolerance k x its own error in func's dtype (see notes)",
}


def _table(rows: tuple[CheckRow, ...]) -> list[str]:
    """The rows as left-aligned columns under a header and a rule."""
    table = [_HEADER]
    for r in rows:
        table.append(
            (
                r.operator,
                r.method,
                r.reference,
                _fmt(r.max_abs_error),
                _fmt(r.max_rel_error),
                _fmt(r.tolerance),
                _fmt(r.ratio, ".2g"),
                r.status + ("" if r.trusted else "*"),
            )
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(_HEADER))]
    lines = []
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _legend(rows: tuple[CheckRow, ...]) -> list[str]:
    refs = {r.reference for r in rows}
    legend = [f"{name} = {text}" for name, text in _LEGEND.items() if name in refs]
    if any(not r.trusted for r in rows):
        legend.append("* = the reference rests on a derivative rule this report found wrong")
    return legend


def _plain(value: Any) -> Any:
    """JSON-safe: a non-finite float becomes the string 'inf', '-inf' or 'nan'."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _fmt(value: float | None, spec: str = ".1e") -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return format(value, spec)
