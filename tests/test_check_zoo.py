"""The field zoo: ``derivs.check`` on functions as users write them (none drawn by the
project's strategies), each asserting the verdict (passed / failed / unverified) and, for a
bug, the rule the verdict names.

* correct float32 and bfloat16 ``nn.Module``s (Linear, Conv, norm layers, attention, a
  recurrent cell, embeddings + softmax, a residual block) pass;
* correct custom ``autograd.Function``s in every style (old style, setup_context with and
  without jvp, generate_vmap_rule, once_differentiable) pass, what they cannot run is a skip;
* wrong rules (backward, a backward wrong only on a region, ``.detach()`` in backward, jvp,
  double backward, a backward that loses precision) fail naming that rule;
* a Hessian over the memory budget passes with the refused methods skipped; a real kink is
  called a kink; torch's own wrong forward-over-forward rules through ``layer_norm`` and
  ``batch_norm`` (torch 2.13, pytorch#196700) fail naming forward over forward;
* no independent oracle (``oracles="loop"``) is unverified.

A false FAIL a user can hit is a bug: grow this module with each one found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from check_functions import Softplus, SoftplusNoJvp, softplus_with
from torch import nn
from torch.autograd.function import once_differentiable

import derivs
from derivs._check import CheckReport, check

Tensor = torch.Tensor


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _module(build: Callable[[], nn.Module], dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build().to(dtype)


# ----------------------------------------------------------------------------- modules


class Attention(nn.Module):
    """Single-head self-attention as users write it: softmax(q k^T / sqrt(d)) v."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        return torch.softmax(q @ k.T / math.sqrt(x.shape[-1]), dim=-1) @ v


class Residual(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class EmbedSoftmax(nn.Module):
    """Token embeddings mixed by a softmax over a learned query: differentiated with respect
    to the query (the token ids are integers)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.ids = torch.tensor([1, 5, 2])

    def forward(self, query: Tensor) -> Tensor:
        e = self.embed(self.ids)
        return torch.softmax(e @ query, dim=0) @ e


class Model(NamedTuple):
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    order: int


# NOTE: sizes are the smallest that exercise each layer, so an order-2 check of each stays
# around a second on 2 cores. Each function is summed where it is vector-valued at order 2,
# to keep the Hessian of one output.
MODELS: dict[str, Model] = {
    "mlp": Model(lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), (4,), 2),
    "conv1d-gelu": Model(lambda: nn.Sequential(nn.Conv1d(2, 2, 3), nn.GELU()), (2, 5), 1),
    "groupnorm-linear": Model(
        lambda: nn.Sequential(nn.GroupNorm(1, 2), nn.Flatten(0), nn.Linear(6, 2)), (1, 2, 3), 1
    ),
    "attention": Model(lambda: Attention(3), (2, 3), 1),
    "gru-cell": Model(lambda: nn.GRUCell(3, 2), (3,), 2),
    "embedding-softmax": Model(EmbedSoftmax, (4,), 2),
    "residual": Model(lambda: Residual(3), (3,), 2),
}


def _scalar(model: nn.Module, order: int) -> Callable[[Tensor], Tensor]:
    return (lambda x: model(x).sum()) if order == 2 else model


@pytest.mark.parametrize("precision", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_correct_modules_pass(name: str, precision: torch.dtype) -> None:
    """A correct model with float32 (or float64) parameters passes: the oracles raise the
    closed-over parameters with the input."""
    build, shape, order = MODELS[name]
    model = _module(build, precision)
    report = check(_scalar(model, order), _randn(*shape, seed=1, dtype=precision), order=order)
    assert report.status == "passed", report
    assert next(model.parameters()).dtype == precision  # the user's objects untouched


def test_bfloat16_module_passes() -> None:
    model = _module(lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh()), torch.bfloat16)
    report = check(model, _randn(4, seed=2, dtype=torch.bfloat16), order=1)
    assert report.status == "passed", report


# ----------------------------------------------------------------------------- custom Functions


class OldStyle(torch.autograd.Function):
    """The most common form in user code: forward(ctx, x), no setup_context."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


class SoftplusNoVmapRule(SoftplusNoJvp):
    generate_vmap_rule = False


class SoftplusOnce(SoftplusNoJvp):
    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


CORRECT: dict[str, tuple[type[torch.autograd.Function], set[str]]] = {
    # name: (Function, the methods that must be skipped at order 2, as "operator method")
    "old-style": (OldStyle, {"hessian fwd_rev", "hessian rev_rev", "jacobian fwd"}),
    "setup-context-jvp": (Softplus, {"hessian fwd_fwd"}),
    "no-jvp": (SoftplusNoJvp, {"jacobian fwd", "hessian fwd_fwd", "hessian rev_fwd"}),
    "no-vmap-rule": (SoftplusNoVmapRule, {"jacobian fwd", "hessian fwd_rev"}),
    "once-differentiable": (
        SoftplusOnce,
        {"hessian fwd_rev", "hessian rev_rev", "hessian loop", "hessian loop oracle"},
    ),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_custom_functions_pass(name: str) -> None:
    """Correct in every style: passed; what the style cannot run is a skip row with its
    reason (an old-style Function under torch.func, a missing jvp or vmap rule, a
    once_differentiable backward, torch's nested forward mode), listed as a limitation."""
    fn, must_skip = CORRECT[name]
    report = check(lambda x: fn.apply(x).sum(), _randn(4, seed=3))
    assert report.status == "passed", report
    skipped = {f"{r.operator} {r.method}" for r in report.rows if r.status == "skip"}
    assert must_skip <= skipped, (must_skip - skipped, report)
    assert all(
        fn.__qualname__ in r.note or "torch" in r.note for r in report.rows if r.status == "skip"
    )
    assert report.limitations and "could be checked" in report.verdict


# ----------------------------------------------------------------------------- wrong rules


def _double_backward_wrong(x: Tensor, grad: Tensor) -> Tensor:
    # NOTE: the value is sigmoid(x); its derivative gains 3 (x - x.detach() is 0 but not constant)
    return grad * (torch.sigmoid(x) + 3 * (x - x.detach()))


WRONG: dict[str, tuple[type[torch.autograd.Function], str]] = {
    # name: (Function, the start of the verdict that names its rule)
    "backward": (
        softplus_with(backward=lambda x, g: g * torch.sigmoid(-x), name="SignSlip"),
        "the backward (vjp) of this function is wrong",
    ),
    "backward-on-a-region": (
        softplus_with(
            backward=lambda x, g: g * torch.where(x > 0.5, 1.1, 1.0) * torch.sigmoid(x),
            name="RegionSlip",
        ),
        "the backward (vjp) of this function is wrong",
    ),
    "detach-in-backward": (
        softplus_with(backward=lambda x, g: g * torch.sigmoid(x.detach()), name="Detached"),
        "the double backward (the derivative of the backward) of this function is wrong",
    ),
    "jvp": (
        softplus_with(jvp=lambda x, t: t * torch.sigmoid(-x), name="JvpSlip"),
        "the jvp (forward-mode derivative) of this function is wrong",
    ),
    "double-backward": (
        softplus_with(backward=_double_backward_wrong, name="DoubleSlip"),
        "the double backward (the derivative of the backward) of this function is wrong",
    ),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_rules_fail_naming_the_rule(name: str) -> None:
    fn, verdict = WRONG[name]
    x = torch.linspace(-1.0, 1.5, 6, dtype=torch.float64)  # NOTE: both sides of x = 0.5
    report = check(lambda x: fn.apply(x).sum(), x, raise_exception=False)
    assert report.status == "failed", report
    assert report.verdict.startswith(verdict), report.verdict
    assert "derivs'" not in report.verdict and "kink" not in report.verdict


class DoubleSlipNoJvp(SoftplusNoJvp):
    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return _double_backward_wrong(x, grad)


def test_wrong_double_backward_without_jvp_is_named_first() -> None:
    """Without a jvp rule the double backward is named, the missing jvp is a limitation."""
    report = check(
        lambda x: DoubleSlipNoJvp.apply(x).sum(), _randn(4, seed=4), raise_exception=False
    )
    assert report.status == "failed"
    assert report.verdict.startswith("the double backward (the derivative of the backward)")
    assert "forward-mode AD is not available" not in report.verdict
    assert any("without a jvp staticmethod" in text for text in report.limitations)


class LogCosh(torch.autograd.Function):
    """log(cosh(x)) with its derivative tanh(x) written as 1 - 2/(exp(2x)+1): right in exact
    arithmetic, but it cancels to a few digits near 0 (in float32: no digit left at 1e-3)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.log(torch.cosh(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (1 - 2 / (torch.exp(2 * x) + 1))


@pytest.mark.parametrize("precision", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_a_backward_that_loses_precision_is_a_wrong_backward_not_a_kink(
    precision: torch.dtype,
) -> None:
    x = torch.tensor([1e-3, 2e-3, -1.5e-3], dtype=precision)
    report = check(lambda x: LogCosh.apply(x).sum(), x, order=1, raise_exception=False)
    assert report.status == "failed", report
    assert report.verdict.startswith("the backward (vjp) of this function is wrong"), report.verdict
    assert "kink" not in report.verdict


def test_float32_module_with_a_wrong_backward_names_the_backward() -> None:
    model = _module(lambda: nn.Linear(4, 3), torch.float32)
    slip = WRONG["backward"][0]
    report = check(
        lambda x: slip.apply(model(x)).sum(),
        _randn(4, seed=5, dtype=torch.float32),
        order=1,
        raise_exception=False,
    )
    assert report.status == "failed", report
    assert report.verdict.startswith("the backward (vjp) of this function is wrong"), report.verdict


# ----------------------------------------------------------------------------- limits, kinks, torch


def test_a_hessian_over_the_memory_budget_is_skipped_and_passes() -> None:
    """The refused methods are skips naming the budget; the loop and the products check."""
    A = _randn(40, 12, seed=6)
    with derivs.memory_budget(2**14):
        report = check(lambda x: (A @ x).tanh().sum(), _randn(12, seed=7))
    assert report.status == "passed", report
    refused = [r for r in report.rows if r.operator == "hessian" and r.status == "skip"]
    assert {r.method for r in refused} >= {"auto", "fwd_rev"}
    assert all("memory budget" in r.note for r in refused)
    assert "forward-mode" not in report.verdict


def test_a_real_kink_is_called_a_kink() -> None:
    x = torch.tensor([0.0, 0.7, -0.4], dtype=torch.float64)
    report = check(lambda x: torch.relu(x) * 2.0, x, order=1, raise_exception=False)
    assert report.status == "failed"
    assert report.verdict.startswith("func is not differentiable at this point (a kink")


@pytest.mark.parametrize(
    "norm",
    [
        lambda x: F.layer_norm(x, (4,)).pow(3).sum(),
        lambda x: F.batch_norm(x.reshape(2, 2), None, None, training=True).pow(3).sum(),
    ],
    ids=["layer_norm", "batch_norm"],
)
def test_torch_forward_over_forward_through_norms_is_named(
    norm: Callable[[Tensor], Tensor],
) -> None:
    """torch 2.13's second-order rules through the forward-mode rule of layer_norm and
    batch_norm are wrong (pytorch#196700): only methods that differentiate the jvp disagree,
    the verdict names that rule (the jvp itself is right at first order) and torch's op."""
    report = check(norm, _randn(4, seed=8), raise_exception=False)
    bad = {(r.operator, r.method) for r in report.failures}
    if not bad:  # NOTE: a torch with the rules fixed
        assert report.status == "passed"
        return
    assert {m for _, m in bad} <= {"fwd_fwd", "rev_fwd", "fwd_rev", "auto"}, bad
    assert report.verdict.startswith("the derivative of the jvp rule of this function is wrong")
    assert "torch's" in report.verdict and "not your code" in report.verdict


def test_no_independent_oracle_is_unverified_not_a_pass() -> None:
    """The loop oracle shares the backward: a wrong backward passes against it, so the run
    is unverified (not a pass), and adding fd catches the bug."""
    slip = WRONG["backward"][0]
    f = lambda x: slip.apply(x).sum()  # noqa: E731
    report: CheckReport = check(
        f, _randn(4, seed=9), methods="rev", oracles="loop", order=1, raise_exception=False
    )
    assert report.status == "unverified" and not report.passed and not report.failures
    assert report.verdict.startswith("unverified: no independent oracle checked jacobian")
    caught = check(f, _randn(4, seed=9), methods="rev", order=1, raise_exception=False)
    assert caught.status == "failed"
