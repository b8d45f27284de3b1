"""derivs.check's projected mode: the mode chosen, a correct function passed, and each planted
wrong rule (backward, jvp, double backward) named, over 20 seeds of the random directions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import derivs
from derivs._check import _projected

SEEDS = range(20)


def _saved(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.save_for_forward(inputs[0])


class WrongBackward(torch.autograd.Function):
    """sin with a backward 10% off (its jvp right)."""

    setup_context = staticmethod(_saved)

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.sin()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * x.cos() * 1.1

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return t * x.cos()


class WrongJvp(WrongBackward):
    """sin with a jvp 10% off (its backward right)."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * x.cos()

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return t * x.cos() * 1.1


class CosBadBackward(torch.autograd.Function):
    """cos with a backward 10% off: used inside a backward, it makes that one's derivative wrong."""

    setup_context = staticmethod(_saved)

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.cos()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return -g * x.sin() * 1.1

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return -t * x.sin()


class WrongDoubleBackward(WrongJvp):
    """sin whose backward and jvp are right, but the backward's own backward is 10% off."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * CosBadBackward.apply(x)

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return t * x.cos()


def _model(fn: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int = 0) -> tuple[Any, Any]:
    """``x -> sum(tanh(W fn(x)))`` with ``W`` 8 x n, and a point."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(8, n, generator=gen, dtype=torch.float64) / n**0.5
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    return (lambda x: (weight @ fn(x)).tanh().sum()), x


# rule -> (planted Function, the words naming the rule in the verdict, the rows that fail)
PLANTED = {
    "backward": (WrongBackward, "backward (vjp)", {("vjp", "rev")}),
    "jvp": (WrongJvp, "jvp", {("jvp", "fwd"), ("vjp", "fwd")}),
    "double backward": (WrongDoubleBackward, "double backward", {("hvp", "rev_rev")}),
}


def _failing(report: derivs.CheckReport) -> set[tuple[str, str]]:
    return {(r.operator, r.method) for r in report.rows if r.status == "FAIL" and r.trusted}


def test_auto_is_dense_for_small_inputs_and_projected_past_the_threshold() -> None:
    small = torch.linspace(-1, 1, 8, dtype=torch.float64)
    assert derivs.check(torch.sin, small, order=1).mode == "dense"
    n = _projected.DENSE_MAX_INPUTS + 1
    func, x = _model(torch.sin, n)
    report = derivs.check(func, x, order=1)
    assert report.mode == "projected"
    assert {r.operator for r in report.rows} == {"jvp", "vjp"}
    assert any(f"manual_seed({_projected.SEED})" in note for note in report.notes)
    assert "mode=projected" in str(report)


def test_projected_order_2_passes_a_correct_function_with_every_row() -> None:
    func, x = _model(torch.sin, 3000)
    report = derivs.check(func, x, order=2)
    assert report.passed, report
    rows = {(r.operator, r.method, r.reference) for r in report.rows}
    for op, method in [("jvp", "fwd"), ("vjp", "rev"), ("vjp", "fwd"), ("hvp", "fwd_rev")]:
        ref = "fd(grad)" if op == "hvp" else "fd(dir)"
        assert (op, method, ref) in rows
    assert {("hvp", "rev_rev", "fd(grad)"), ("uHv", "fwd_fwd", "fd(grad)")} <= rows


def test_mode_dense_forces_dense_on_a_large_input() -> None:
    x = torch.linspace(-1, 1, _projected.DENSE_MAX_INPUTS + 1, dtype=torch.float64)
    report = derivs.check(
        torch.sin, x, order=1, mode="dense", methods="rev", oracles="loop", raise_exception=False
    )
    assert report.mode == "dense"
    assert {r.operator for r in report.rows} == {"jacobian"}


@pytest.mark.parametrize(
    ("mode", "error"), [("sparse", ValueError), ("Projected", ValueError), (2, TypeError)]
)
def test_bad_mode_is_refused_naming_check_and_mode(mode: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"derivs\.check: mode"):
        derivs.check(torch.sin, torch.ones(2, dtype=torch.float64), mode=mode)


def test_without_fd_a_projected_check_is_unverified_and_a_wrong_backward_still_fails() -> None:
    """No fd oracle: only the identity <w, J u> = <J^T w, u> between the two rules is left."""
    kwargs: dict[str, Any] = {"order": 1, "mode": "projected", "oracles": "loop"}
    func, x = _model(torch.sin, 64)
    assert derivs.check(func, x, raise_exception=False, **kwargs).status == "unverified"
    func, x = _model(WrongBackward.apply, 64)
    assert derivs.check(func, x, raise_exception=False, **kwargs).status == "failed"


@pytest.mark.parametrize("rule", list(PLANTED))
def test_planted_rule_named_in_projected_mode_for_every_seed(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kill rate over 20 direction seeds (the goal: >= 95%); each miss is listed."""
    planted, words, rows = PLANTED[rule]
    func, x = _model(planted.apply, 256)
    missed = []
    for seed in SEEDS:
        monkeypatch.setattr(_projected, "SEED", seed)
        report = derivs.check(func, x, order=2, mode="projected", raise_exception=False)
        caught = not report.passed and words in report.verdict and rows <= _failing(report)
        if not caught:
            missed.append((seed, report.verdict))
    assert len(missed) <= 0.05 * len(SEEDS), missed
