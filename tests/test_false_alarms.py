"""Regression draws of the false-alarm sweep (tools/false_alarm_sweep.py, docs/suite/trust.md).

Each draw failed a correct implementation, and each failure was a tolerance derived from
the wrong magnitudes, not a bug in the code under test: seed 343's layout comparison
scaled by the values of an ill-conditioned function (fixed by suite_helpers.sensitivity),
seed 353's roundings meta-test scaled by a sum that cancels, seed 539's vmap comparison
blind to an intermediate its inputs do not move (fixed by suite_helpers.measured_rounding),
seed 532's complex-step meta-test scaled by a closed form whose terms cancel (Case.scale).
Each test here passes with the mended derivation and fails without it on the draw itself.
(The sweep's oracle failures of seeds 404 and 439 are pinned in tests/test_oracle_noise.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from oracle_cases import F64_EPS, TRUTH_SLACK, check_complex_step, quadratic_gradient_case
from suite_helpers import (
    IMPL,
    assert_close_scaled,
    batched_values,
    magnitude,
    measured_rounding,
    oracle_run,
    sensitivity,
)

import derivs
from derivs import oracles, testing

# The draw of seed 343 of the false-alarm sweep: tanh(sin(x0.sum() * x1.sum())) with the
# product near -2 pi, on sliced views (x0 every other element, x1 a slice of a (4, 2, 1, 3)).
SEED_343_X0 = [
    0.9401059746742249,
    0.415639728307724,
    -0.08123411238193512,
    0.8414953947067261,
    0.2900482416152954,
    0.5822957754135132,
    -0.6427876353263855,
    -0.2977847456932068,
]
SEED_343_X1 = [
    [-0.8778934478759766, -0.5508909821510315, -0.5314949750900269],
    [-0.6458015441894531, 0.112136110663414, -0.7811123132705688],
    [-0.07817421853542328, 0.4167305529117584, 0.15955251455307007],
    [-0.006665376480668783, 0.020750343799591064, -0.3409247100353241],
]
SEED_343_V0 = [
    0.10295410454273224,
    0.0684276670217514,
    -0.641362190246582,
    0.055996283888816833,
    0.6556986570358276,
    0.7146844863891602,
    -0.2533794939517975,
    -0.0914648249745369,
]
SEED_343_V1 = [
    [-0.6729913949966431, 0.7003760933876038, 0.062025286257267],
    [0.4159664511680603, -0.3268905282020569, 0.9227026104927063],
    [0.09047722071409225, -0.600695013999939, -0.014466715045273304],
    [0.5523297786712646, -0.7867741584777832, -0.5293214917182922],
]


def seed_343() -> tuple[
    Callable[..., torch.Tensor], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]
]:
    def f(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.sin(x0.sum() * x1.sum()))

    x0 = torch.zeros(16)
    x0[::2] = torch.tensor(SEED_343_X0)
    x1 = torch.zeros(4, 2, 1, 3)
    x1[:, 0, 0] = torch.tensor(SEED_343_X1)
    v = (torch.tensor(SEED_343_V0), torch.tensor(SEED_343_V1).reshape(4, 1, 1, 3))
    return f, (x0[::2], x1[:, :1]), v


def hvp_closed_form(
    s0: torch.Tensor, s1: torch.Tensor, v: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hvp of g(s0 s1), g = tanh o sin, s0 = x0.sum(), s1 = x1.sum(): constant blocks."""
    u = s0 * s1
    (g1,) = torch.autograd.grad(torch.tanh(torch.sin(u)), u, create_graph=True)
    (g2,) = torch.autograd.grad(g1, u, create_graph=True)
    mixed = g2 * s0 * s1 + g1
    V0, V1 = v[0].sum(), v[1].sum()
    return g2 * s1 * s1 * V0 + mixed * V1, mixed * V0 + g2 * s0 * s0 * V1


def test_sensitivity_matches_its_closed_form() -> None:
    """suite_helpers.sensitivity: sum_k |s_k dR/ds_k| for the seed-343 hvp, from its closed form.

    Scaling x_k scales s_k = x_k.sum(), so the probe's per-input change is s_k dR/ds_k; the
    step 2**-26 leaves an error of order 1e-8 (relative), hence rtol 1e-6.
    """
    f, args, v = seed_343()
    v64 = tuple(t.double() for t in v)
    s = [a.double().sum().requires_grad_() for a in args]
    blocks = hvp_closed_form(s[0], s[1], v64)
    expected = []
    for block in blocks:
        grads = torch.autograd.grad(block, s, retain_graph=True)
        expected.append(((s[0] * grads[0]).abs() + (s[1] * grads[1]).abs()).detach())
    got = sensitivity(oracle_run("hvp", f, None, v), args)
    assert len(got) == 2
    for block, value in zip(got, expected, strict=True):
        testing.assert_close(block, value.expand_as(block), rtol=1e-6)


def test_layout_comparison_scaled_by_sensitivity_seed_343() -> None:
    """Seed 343's draw: an ill-conditioned function (the hvp moves by 100 eps of itself per
    eps of relative change in a sum), where views and contiguous copies round the sums
    differently and gave results 1.96e-5 apart against the values' scale of 1.9e-5. Its
    sensitivity is over 100 times the values and bounds the difference."""
    f, args, v = seed_343()
    dense = tuple(a.contiguous() for a in args)
    scale = sensitivity(oracle_run("hvp", f, None, v), args)
    assert magnitude(scale) > 100 * magnitude(args, f(*args), v)
    for method in IMPL.methods("hvp"):
        assert_close_scaled(
            derivs.hvp(f, args, v, method=method),
            derivs.hvp(f, dense, v, method=method),
            values=(args, f(*args), scale),
            context=f"hvp(method={method!r}) on the seed-343 views vs contiguous copies",
        )


def test_cancelling_sum_is_scaled_by_its_intermediates_seed_353() -> None:
    """Seed 353's draw of test_roundings_pass_at_every_magnitude: a*b + c cancels to 6.78e-39
    (float32, below tiny) from terms of 3.3e-36; the product's rounding, 9e-44, is past the
    sum's own floor (4.5e-44) and well inside the intermediates' tolerance (1.3e-41)."""
    a, b, c = (
        torch.tensor([x], dtype=torch.float32)
        for x in (5.3305949618146685e-36, -0.625, 3.3384039563352965e-36)
    )
    exact = (a.double() * b.double() + c.double()).to(torch.float32)
    with pytest.raises(AssertionError, match="underflow floor"):
        testing.assert_close(a * b + c, exact)
    scale = float((a.double() * b.double()).abs().max())
    testing.assert_close(a * b + c, exact, atol=testing.tolerance(torch.float32, 1, scale).atol)


def seed_539() -> SimpleNamespace:
    """``tanh(x0.logsumexp(-1))[..., None] * W1`` at one sample ``x0 = 0.00390625``: the
    logsumexp of one element computes ``exp(x - x) = 1``, and its second derivative, a softmax
    times ``1 - softmax``, cancels 1 against 1 whatever ``x0`` is."""
    W1 = torch.randn((1,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def f(x0: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x0.logsumexp(-1))[..., None] * W1

    x0 = torch.tensor([[0.00390625]], dtype=torch.float64)
    return SimpleNamespace(func=f, args=(x0,), in_dims=0)


@pytest.mark.parametrize("method", IMPL.params("hessian", "vmap"))
def test_vmap_comparison_scaled_by_the_measured_rounding_seed_539(method: str) -> None:
    """Seed 539's draw of test_composition.py::test_vmap_over_the_transform (float64, every
    Hessian method but the loop): vmap and the per-sample loop 4.86e-17 apart, against a
    tolerance of 4.59e-17 from the values (0.005) and a sensitivity (0.01) that both miss
    the cancelling 1s. Their measured rounding is larger, and covers the difference."""
    p = seed_539()
    oracle = oracles.loop_batch_hessian
    reference = oracle(p.func, p.args, 0, in_dims=0)
    result = torch.func.vmap(IMPL.hessian(p.func, 0, method=method), in_dims=0)(*p.args)
    run = lambda *a: oracle(p.func, a, 0, in_dims=0)  # noqa: E731
    before = (p.args, torch.func.vmap(p.func)(*p.args), sensitivity(run, p.args))
    assert magnitude(measured_rounding(run, p.args)) > 10 * magnitude(*before)
    context = f"vmap(hessian(f, method={method!r})) on the seed-539 draw"
    if not torch.equal(result, reference):  # methods that happen to round alike pass either way
        with pytest.raises(AssertionError, match="values differ"):
            assert_close_scaled(result, reference, values=before, context=context)
    assert_close_scaled(result, reference, values=batched_values(p, oracle, 0), context=context)


def test_complex_step_scaled_by_the_terms_of_its_closed_form_seed_532() -> None:
    """Seed 532's draw of test_complex_step_within_a_few_ulps_in_float64[jacobian]: x @ S @ x
    at x = (1, 1), S = [[0, 1.5], [-1.46875, 0]], whose gradient (S + S^T) x = 0.03125 sums
    terms of 1.5: the complex step is off by 1.6e-16, 2.9 times 8 ulps of the truth, and far
    inside 8 ulps of the terms."""
    case = quadratic_gradient_case([1.0, 1.0], [[0.0, 1.5], [-1.46875, 0.0]], "cpu", torch.float64)
    est = oracles.fd_jacobian(case.func, case.args, case.argnums, scheme="complex_step")
    check_complex_step(est, case)
    err = float((est.value - case.truth).abs().max())
    assert err > TRUTH_SLACK * F64_EPS * float(case.truth.abs().max())
