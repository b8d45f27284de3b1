"""``derivs.check``: correct functions pass, planted bugs are caught and blamed on the right rule.

* generated smooth functions (``strategies``) pass at order 2, batched ones too, and the sum
  trick is reported valid for sample-independent functions and not valid for coupled ones;
* custom ``torch.autograd.Function``s with a wrong backward or a wrong jvp fail, with the
  verdict naming the backward or the jvp; a bug planted in one derivs method is blamed on it;
* the report's table, ``to_dict`` and ``passed``; the CLI's exit statuses; bad arguments.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from check_functions import Softplus
from hypothesis import given, settings
from hypothesis import strategies as st

import derivs
import derivs.strategies as ds
from derivs import CheckFailure, CheckReport, check
from derivs.__main__ import main
from derivs._check import _limits
from examples.check_examples import (
    SoftplusWrongBackward,
    energy,
    energy_wrong_backward,
    energy_wrong_jvp,
    per_sample_norm,
    predict,
    predict_d16,
)

ROOT = Path(__file__).resolve().parents[1]
x4 = torch.linspace(-1.0, 1.5, 4, dtype=torch.float64)

# NOTE: small functions keep a full order-2 check (6 operators x every method x three
# oracles) around a tenth of a second, so the properties stay within the file's budget.
SMALL = dict(max_elements=6, max_depth=2)
# NOTE: example counts are fixed per profile (dev: as written) to keep this file near 40 s
# on 2 cores; the ci and thorough profiles scale them up.
SCALE = {"ci": 2, "thorough": 10}.get(os.environ.get("HYPOTHESIS_PROFILE", "dev"), 1)


def rows(report: CheckReport, operator: str, method: str | None = None) -> list[Any]:
    return [
        r for r in report.rows if r.operator == operator and (method is None or r.method == method)
    ]


# ----------------------------------------------------------------------------- correct functions


@settings(max_examples=8 * SCALE)
@given(ds.problems(ds.functions(n_args=st.integers(1, 2), **SMALL)), st.data())
def test_generated_functions_pass(problem: ds.Problem, data: st.DataObject) -> None:
    """Every operator, method and oracle agrees on a random smooth function (repr = formula)."""
    argnums = data.draw(ds.argnums(problem.func.n_args), label="argnums")
    report = check(problem.func, *problem.args, argnums=argnums)
    assert report.passed
    assert {r.status for r in report.rows} == {"pass"}
    expected_ops = {"jacobian", "hessian"} | (
        {"hvp", "vhp"} if problem.func.out_shape == () else set()
    )
    assert {r.operator for r in report.rows} == expected_ops


@settings(max_examples=5 * SCALE)
@given(
    ds.batched_problems(
        ds.functions(n_args=1, batch_polymorphic=True, **SMALL),
        in_dims=0,
        device="cpu",
    )
)
def test_batch_forms_pass_and_sum_trick_is_valid(problem: ds.BatchedProblem) -> None:
    report = check(problem.func, *problem.args, batched=0)
    assert report.passed
    assert {"batch_jacobian", "batch_hessian"} <= {r.operator for r in report.rows}
    assert report.sum_trick is not None and report.sum_trick.startswith("valid"), report.sum_trick


@settings(max_examples=3 * SCALE)
@given(
    ds.batched_problems(
        # NOTE: per-sample inputs of at least one dim, so that the couplings (which act along
        # dim 0) also make sense as per-sample functions, as check(batched=...) uses them.
        ds.coupled_functions(
            in_shapes=st.tuples(ds.shapes(min_dims=1, max_elements=6)), max_elements=6
        ),
        device="cpu",
    )
)
def test_coupled_functions_sum_trick_not_valid(problem: ds.BatchedProblem) -> None:
    """A coupled function is fine per sample; the report says the sum trick does not apply."""
    report = check(problem.func, *problem.args, batched=0, order=1)
    assert report.passed, report
    assert report.sum_trick is not None and report.sum_trick.startswith("not valid")
    assert "couples samples" in report.sum_trick
    (sum_row,) = rows(report, "batch_jacobian", "sum")
    assert sum_row.status == "n/a"


def test_tutorial_predict_batched_with_shared_parameters() -> None:
    torch.manual_seed(0)
    w, b, xs = (
        torch.randn(5, 4, dtype=torch.float64),
        torch.randn(5, dtype=torch.float64),
        torch.randn(3, 4, dtype=torch.float64),
    )
    report = check(predict, w, b, xs, argnums=2, batched=(None, None, 0))
    assert report.passed
    assert report.sum_trick is not None and report.sum_trick.startswith("valid")
    assert "hvp and vhp not checked" in report.notes[-1]


# ----------------------------------------------------------------------------- planted bugs


def test_wrong_backward_is_blamed_on_the_backward() -> None:
    report = check(energy_wrong_backward, x4, raise_exception=False)
    assert not report.passed
    assert report.verdict.startswith(
        "the backward (vjp) of this function is wrong; "
        "`SoftplusWrongBackward.backward` (called at `"
    ), report.verdict
    assert report.verdict.endswith("examples/check_examples.py:115`) is wrong")
    assert report.verdicts["jacobian"].startswith(
        "rev-mode methods (auto, rev, vjp_vmap, loop and loop oracle) disagree with fwd, cs and fd"
    )
    for method in ("rev", "vjp_vmap", "loop", "auto"):
        assert all(
            r.status == "FAIL" for r in rows(report, "jacobian", method) if r.reference == "fd"
        )
    (fwd_fd,) = [r for r in rows(report, "jacobian", "fwd") if r.reference == "fd"]
    assert fwd_fd.status == "pass" and fwd_fd.trusted
    # references that rest on the backward are flagged, not believed
    (rev_loop,) = [r for r in rows(report, "jacobian", "rev") if r.reference == "loop"]
    assert rev_loop.status == "pass" and not rev_loop.trusted
    assert "rest on the backward, found wrong above" in report.verdicts["hessian"]
    assert "agree on a wrong answer" in report.verdicts["hvp"]


def test_wrong_jvp_is_blamed_on_forward_mode() -> None:
    report = check(energy_wrong_jvp, x4, raise_exception=False)
    assert report.verdict.startswith(
        "the jvp (forward-mode derivative) of this function is wrong; "
        "`SoftplusWrongJvp.jvp` (called at `"
    ), report.verdict
    assert report.verdicts["jacobian"].startswith("forward-mode methods (fwd) disagree with")
    assert report.verdicts["hessian"].startswith("forward-mode methods (rev_fwd)")
    assert report.verdicts["hvp"].startswith("all 4 methods agree")
    failing = {(r.operator, r.method) for r in report.failures}
    assert failing == {("jacobian", "fwd"), ("hessian", "rev_fwd")}
    # torch's nested forward mode cannot differentiate a custom jvp rule: not run, not a FAIL
    (fwd_fwd,) = rows(report, "hessian", "fwd_fwd")
    assert fwd_fwd.status == "skip" and "nested forward mode" in fwd_fwd.note


def test_raise_exception_carries_the_report() -> None:
    with pytest.raises(
        CheckFailure, match=r"the backward \(vjp\) of this function is wrong"
    ) as info:
        check(energy_wrong_backward, x4, order=1)
    assert isinstance(info.value, AssertionError)
    assert not info.value.report.passed
    assert "operator" in str(info.value)  # the table comes with the message


def test_correct_custom_function() -> None:
    """Passes at both orders; torch (2.x) gives zeros for nested forward mode through a
    custom jvp rule, so forward-over-forward is a skip row naming that limitation."""
    f = lambda x: Softplus.apply(x).sum()  # noqa: E731
    assert check(f, x4, order=1).passed
    report = check(f, x4)
    assert report.status == "passed" and not report.failures
    skipped = {(r.operator, r.method) for r in report.rows if r.status == "skip"}
    if _limits.nested_forward_drops_jvp():
        assert skipped == {("hessian", "fwd_fwd")}
        (limit,) = report.limitations
        assert limit.startswith("hessian fwd_fwd: not run: torch") and "through Softplus " in limit
        assert report.verdict.startswith("every derivative that could be checked agrees")
    else:
        assert not skipped


class SoftplusDetachedBackward(Softplus):
    """Right first derivatives, but the backward cannot be differentiated again."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * torch.sigmoid(ctx.saved_tensors[0].detach())


def test_a_backward_that_is_not_differentiable_is_named() -> None:
    report = check(lambda x: SoftplusDetachedBackward.apply(x).sum(), x4, raise_exception=False)
    assert report.verdicts["jacobian"].startswith("all 5 methods agree")
    assert report.verdicts["hessian"].startswith(
        "methods that differentiate the backward (auto, fwd_rev, rev_rev, loop and loop oracle)"
    )
    assert report.verdicts["hvp"].startswith("methods that differentiate the backward")
    assert report.verdict.startswith(
        "the double backward (the derivative of the backward) of this function is wrong"
    )


class SinNoJvp(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.sin()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * ctx.saved_tensors[0].cos()


def test_a_mode_the_function_lacks_is_a_skip_row() -> None:
    """A missing jvp rule is a limitation, not a wrong derivative: a skip, and a pass."""
    report = check(lambda x: SinNoJvp.apply(x).sum(), x4, order=1)
    (fwd,) = rows(report, "jacobian", "fwd")
    assert (
        fwd.status == "skip" and "SinNoJvp is a custom autograd.Function without a jvp" in fwd.note
    )
    assert report.passed
    assert (
        report.verdict
        == "every derivative that could be checked agrees with the oracles (jacobian)"
    )
    assert report.limitations == (f"jacobian fwd: {fwd.note}",)
    assert all(r.status == "pass" for r in report.rows if r.method != "fwd")


def test_a_bug_in_one_derivs_method_is_blamed_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = derivs.jacobian

    def buggy(func: Callable[..., Any], argnums: Any = 0, *, method: str = "auto") -> Any:
        inner = real(func, argnums, method=method)
        return (lambda *a: inner(*a) * 1.001) if method == "vjp_vmap" else inner

    monkeypatch.setattr(derivs._check, "jacobian", buggy)
    report = check(energy, x4, order=1, raise_exception=False)
    assert report.verdicts["jacobian"].startswith("method 'vjp_vmap' (vjp_vmap) disagree")
    assert "a bug in derivs' 'vjp_vmap' method" in report.verdict


def test_a_kink_is_not_blamed_on_a_derivative_rule() -> None:
    report = check(
        torch.relu,
        torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64),
        order=1,
        raise_exception=False,
    )
    assert (
        "one-sided differences differ there (output 0, input 0: 1 from the right, 0 from the left)"
        in (report.verdicts["jacobian"])
    )
    assert report.verdict.startswith("func is not differentiable at this point (a kink")
    assert any("complex step does not apply" in n for n in report.notes)


# ----------------------------------------------------------------------------- options


def test_methods_and_oracles_select_rows() -> None:
    report = check(energy, x4, methods=["rev", "hessian:fwd_rev", "hvp:dense"], oracles="fd")
    assert [(r.operator, r.method, r.reference) for r in report.rows] == [
        ("jacobian", "rev", "cs"),
        ("jacobian", "rev", "fd"),
        ("jacobian", "cs oracle", "fd"),
        ("hessian", "fwd_rev", "cs(grad)"),
        ("hessian", "fwd_rev", "fd(grad)"),
        ("hessian", "cs(grad) oracle", "fd(grad)"),
        ("hvp", "dense", "cs(grad)"),
        ("hvp", "dense", "fd(grad)"),
        ("hvp", "cs(grad) oracle", "fd(grad)"),
    ]


def test_without_oracles_methods_are_compared_with_the_first() -> None:
    """Agreement without an independent oracle is unverified, not a pass."""
    report = check(energy, x4, order=1, oracles=(), raise_exception=False)
    assert {r.reference for r in report.rows} == {"method auto"}
    assert report.verdicts["jacobian"] == "all 5 methods agree (no independent oracle)"
    assert report.status == "unverified" and not report.passed and not report.failures
    assert report.unverified == ("jacobian",)
    with pytest.raises(CheckFailure, match="energy unverified: unverified: no independent oracle"):
        check(energy, x4, order=1, oracles=())


def test_explicit_tolerances_are_used() -> None:
    report = check(energy, x4, order=1, methods="rev", oracles="fd", rtol=0.0, atol=1.0)
    assert all(r.tolerance is not None and r.tolerance >= 1.0 for r in report.rows)


def test_float32_predict_passes() -> None:
    report = check(
        predict_d16, torch.randn(16, generator=torch.Generator().manual_seed(1)), order=1
    )
    assert report.passed and "float32[16]" in report.inputs


def test_reverse_over_vector_jacobian_is_refused_above_the_memory_budget() -> None:
    """rev_rev/rev_fwd Hessians of a vector function need ~(out*in)**2 intermediates."""
    x = torch.linspace(-1, 1, 16, dtype=torch.float64)
    with derivs.memory_budget(2**20):
        report = check(predict_d16, x, methods=["hessian:all"], oracles="fd")
    skipped = {r.method: r.note for r in report.rows if r.status == "skip"}
    assert set(skipped) == {"rev_rev", "rev_fwd"}
    assert "above the memory budget of 1.0 MiB" in skipped["rev_rev"]
    assert report.passed


# ----------------------------------------------------------------------------- the report


def test_report_table_and_dict() -> None:
    report = check(energy, x4, order=1)
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith(
        "derivs.check: energy(float64[4]*)  argnums=0  order=1  mode=dense  on cpu"
    )
    header = re.split(r"\s{2,}", lines[2])
    assert header == [
        "operator",
        "method",
        "reference",
        "max abs err",
        "max rel err",
        "tolerance",
        "err/tol",
        "result",
    ]
    # 5 methods x 3 oracles, then the 3 pairs of oracles
    assert len(report.rows) == 18 and sum(line.startswith("jacobian") for line in lines) == 18
    assert "verdict: PASS: every method agrees with the oracles (jacobian)" in text
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["passed"] is True and d["order"] == 1 and len(d["rows"]) == 18
    assert set(d["rows"][0]) == {
        "operator",
        "method",
        "reference",
        "status",
        "max_abs_error",
        "max_rel_error",
        "tolerance",
        "ratio",
        "worst",
        "note",
        "trusted",
    }
    assert all(r["ratio"] <= 1 for r in d["rows"])
    assert math.isclose(sum(d["timings"].values()), d["seconds"], rel_tol=1.0)


def test_failing_report_marks_rows_and_locates_the_worst_element() -> None:
    report = check(energy_wrong_backward, x4, order=1, raise_exception=False)
    text = str(report)
    assert "verdict: FAIL: the backward (vjp) of this function is wrong" in text
    assert "pass*" in text and "* = the reference rests on a derivative rule" in text
    (rev_fd,) = [r for r in rows(report, "jacobian", "rev") if r.reference == "fd"]
    assert rev_fd.ratio is not None and rev_fd.ratio > 1e6
    assert re.fullmatch(r"\(\d,\): -?[\d.e+-]+ vs -?[\d.e+-]+", rev_fd.worst)


# ----------------------------------------------------------------------------- bad arguments


def _raise_mine(x: torch.Tensor) -> torch.Tensor:
    raise KeyError("from func")


BAD: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("func-not-callable", lambda: check(3, x4), TypeError, r"func must be callable"),
    ("no-args", lambda: check(energy), ValueError, r"argnums=0 is out of range for 0"),
    ("argnums-str", lambda: check(energy, x4, argnums="0"), TypeError, r"argnums must be an int"),
    (
        "argnums-range",
        lambda: check(energy, x4, argnums=1),
        ValueError,
        r"argnums=1 is out of range",
    ),
    ("int-input", lambda: check(energy, torch.ones(4, dtype=torch.int64)), TypeError, r"args\[0\]"),
    ("order-3", lambda: check(energy, x4, order=3), ValueError, r"order=3"),
    ("order-bool", lambda: check(energy, x4, order=True), TypeError, r"order must be 1 or 2"),
    (
        "methods-unknown",
        lambda: check(energy, x4, methods=["revv"]),
        ValueError,
        r"methods entry 'revv'",
    ),
    (
        "methods-op",
        lambda: check(energy, x4, methods=["hvp:rev"]),
        ValueError,
        r"'hvp:rev' names no",
    ),
    ("methods-empty", lambda: check(energy, x4, methods=[]), ValueError, r"methods is empty"),
    ("methods-int", lambda: check(energy, x4, methods=3), TypeError, r"methods must be 'all'"),
    (
        "oracles-unknown",
        lambda: check(energy, x4, oracles=("fdd",)),
        ValueError,
        r"oracles entry 'fdd'",
    ),
    ("batched-bool", lambda: check(energy, x4, batched=True), TypeError, r"batched must be None"),
    ("batched-range", lambda: check(energy, x4, batched=2), ValueError, r"batched: in_dims\[0\]=2"),
    (
        "batched-len",
        lambda: check(energy, x4, batched=(0, 0)),
        ValueError,
        r"batched: in_dims=\(0, 0\)",
    ),
    ("rtol-negative", lambda: check(energy, x4, rtol=-1.0), ValueError, r"rtol=-1.0 must be"),
    ("atol-str", lambda: check(energy, x4, atol="1"), TypeError, r"atol must be None"),
    (
        "raise-str",
        lambda: check(energy, x4, raise_exception="yes"),
        TypeError,
        r"raise_exception must",
    ),
    ("returns-tuple", lambda: check(lambda x: (x, x), x4), TypeError, r"func must return a real"),
    ("returns-int", lambda: check(lambda x: x.long(), x4), TypeError, r"func must return a real"),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_arguments(call: Callable[[], Any], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=r"^derivs\.check: .*" + pattern):
        call()


def test_exception_from_func_propagates_unchanged() -> None:
    with pytest.raises(KeyError, match="from func"):
        check(_raise_mine, x4)


# ----------------------------------------------------------------------------- command line


def test_cli_runs_as_a_module_from_the_current_directory() -> None:
    """``python -m derivs check`` imports the target from the working directory; 1 = mismatch."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "derivs", "check", target, "--shape", "4", "--order", "1"],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for target in ("examples.check_examples:energy_wrong_backward", "no_such_module:f")
    ]
    (out1, _), (_, err2) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [1, 2]
    assert "verdict: FAIL: the backward (vjp) of this function is wrong" in out1
    assert "cannot import 'no_such_module'" in err2


@pytest.mark.parametrize(
    ("target", "shape", "code", "stream", "text"),
    [
        ("energy", "4", 0, "out", "verdict: PASS"),
        (
            "energy_wrong_jvp",
            "4",
            1,
            "out",
            "the jvp (forward-mode derivative) of this function is wrong",
        ),
        ("predict_d16", "5", 3, "err", "RuntimeError"),
    ],
    ids=["pass-0", "mismatch-1", "func-raised-3"],
)
def test_cli_exit_statuses(
    target: str, shape: str, code: int, stream: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["check", f"examples.check_examples:{target}", "--shape", shape, "--order", "1"])
        == code
    )
    captured = capsys.readouterr()
    assert text in (captured.out if stream == "out" else captured.err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "examples.check_examples:energy"], "give one --shape per positional argument"),
        (["check", "examples.check_examples:energy", "--shape", "3,x"], "--shape '3,x'"),
        (["check", "no_such_module:f", "--shape", "3"], "cannot import 'no_such_module'"),
        (
            ["check", "examples.check_examples", "--shape", "3"],
            "not of the form package.module:function",
        ),
        (["check", "examples.check_examples:_A", "--shape", "3"], "is a Tensor, not a function"),
        (
            ["check", "examples.check_examples:energy", "--shape", "4", "--argnums", "2"],
            "derivs.check: argnums=2 is out of range",
        ),
        (
            ["check", "examples.check_examples:energy", "--shape", "4", "--batched", "x"],
            "--batched 'x'",
        ),
        (
            ["check", "examples.check_examples:energy", "--shape", "4", "--device", "nope"],
            "--device 'nope'",
        ),
    ],
    ids=[
        "no-shape",
        "bad-shape",
        "no-module",
        "no-colon",
        "not-callable",
        "argnums",
        "batched",
        "device",
    ],
)
def test_cli_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "examples.check_examples:energy", "--shape", "4", "--order", "3"])
    assert info.value.code == 2
    assert "--order: invalid choice" in capsys.readouterr().err


def test_cli_json_and_batched(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "check",
            "examples.check_examples:per_sample_norm",
            "--shape",
            "3,4",
            "--batched",
            "0",
            "--order",
            "1",
            "--json",
            "--methods",
            "rev,vmap,sum",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["batched"] == 0 and d["sum_trick"].startswith("valid")
    assert {r["operator"] for r in d["rows"]} == {"jacobian", "batch_jacobian"}


def test_examples_module_is_what_the_docs_use() -> None:
    assert isinstance(SoftplusWrongBackward.apply(x4), torch.Tensor)
    assert per_sample_norm(torch.ones(2, 4)).shape == (2, 4)
