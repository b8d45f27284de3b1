"""Meta-tests of the finite differences' measured rounding noise (derivs/oracles/_noise.py).

One evaluation of ``f`` is taken to be off by ``_ROUNDING * max(eps max|f|, noise)``, the
noise measured by moving every operand of every operation one ulp. Here:

* cancelling draws: every case of tests/oracle_cases.py with its value (Jacobians) or its
  gradient (Hessians) at the point subtracted, so that it cancels to about 0 there while
  its terms stay as large as before; every scheme's estimate must still cover the true
  error. The false-alarm sweep's seed-439 and seed-404 draws are of this kind, and pinned,
  each shown to need the measured noise;
* the measurement itself: nothing beyond the model where nothing cancels, the size of the
  terms where they do, amplification by a later factor, views and in-place writes kept,
  determinism, and the fallback to the model for a function that refuses dispatch modes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle_cases import (
    F64_EPS,
    Case,
    check_within_estimate,
    f64,
    hessian_cases,
    jacobian_cases,
    predict,
    quadratic,
    sech2,
)
from torch.utils._python_dispatch import _get_current_dispatch_mode

from derivs import oracles
from derivs.oracles import _noise, fd_hessian, fd_jacobian, loop_jacobian
from derivs.oracles._differences import _ROUNDING
from derivs.oracles._noise import measured_noise

F32_EPS = torch.finfo(torch.float32).eps


def compute_dtype(device: str) -> torch.dtype:
    """The oracles' default compute dtype there (mps has no float64)."""
    return torch.float32 if device.startswith("mps") else torch.float64


def cast(args: tuple[Any, ...], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(a.to(dtype) for a in args)


def value_cancelled(case: Case, dtype: torch.dtype) -> Case:
    """``f - f(point)``: the same Jacobian, a value of about 0 at the point."""
    at_point = case.func(*cast(case.args, dtype)).detach()
    return Case(
        f"{case.name} - its value at the point",
        lambda *a: case.func(*a) - at_point,
        case.args,
        case.argnums,
        case.truth,
        case.scale,
    )


def gradient_cancelled(case: Case, dtype: torch.dtype) -> Case:
    """``f - J(point) . args``: the same Hessian, a gradient of about 0 at the point."""
    nums = (case.argnums,) if isinstance(case.argnums, int) else case.argnums
    blocks = loop_jacobian(case.func, cast(case.args, dtype), nums)

    def func(*a: torch.Tensor) -> torch.Tensor:
        linear = sum(
            torch.tensordot(J, a[p], dims=a[p].dim()) for J, p in zip(blocks, nums, strict=True)
        )
        return case.func(*a) - linear

    name = f"{case.name} - its gradient at the point, times the arguments"
    return Case(name, func, case.args, case.argnums, case.truth, case.scale)


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
@given(data=st.data())
def test_fd_jacobian_covers_its_error_where_the_function_cancels(
    scheme: str, device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    case = value_cancelled(data.draw(jacobian_cases(device, dtype)), compute_dtype(device))
    est = fd_jacobian(case.func, case.args, case.argnums, scheme=scheme)
    check_within_estimate(est, case.truth, case.args, case)


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
@given(data=st.data())
def test_fd_hessian_covers_its_error_where_the_gradient_cancels(
    scheme: str, device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    case = gradient_cancelled(data.draw(hessian_cases(device, dtype)), compute_dtype(device))
    est = fd_hessian(case.func, case.args, case.argnums, scheme=scheme)
    check_within_estimate(est, case.truth, case.args, case)


# ----------------------------------------------------------------------------- pinned draws


def _seed_439(dtype: torch.dtype) -> Case:
    a = 1.9375
    x = torch.tensor([a, -a, -a], dtype=dtype)
    S = torch.full((3, 3), 1.5, dtype=dtype)
    S[0, 0] = 0.0
    S64 = S.double()
    return Case("x @ S @ x", quadratic, (x, S), 0, (S64 + S64.T) @ x.double())


def _seed_404(dtype: torch.dtype) -> Case:
    W = torch.tensor([[0.5, 0.5]], dtype=dtype)
    b = torch.tensor([0.5], dtype=dtype)
    x = torch.tensor(
        [-0.484375, -0.484375] if dtype == torch.float64 else [-0.4921875] * 2, dtype=dtype
    )
    truth = sech2(f64(W.double() @ x.double() + b.double()))[:, None] * W.double()
    return Case("tanh(W x + b) wrt x", predict, (W, b, x), 2, truth)


def _no_noise(
    evaluate: Callable[..., Any],
    points: list[torch.Tensor],
    reference: list[torch.Tensor],
    **options: Any,
) -> list[torch.Tensor]:
    return [r.new_zeros(()) for r in reference]


@pytest.mark.parametrize(
    ("draw", "precision"),
    [
        # terms of 5.6 sum to 0: the model saw max|f| ~ 1e-4, the error was 3.74x its bound
        pytest.param(_seed_439, torch.float64, id="seed439-quadratic-float64"),
        # W x sums two 0.24s, b adds 0.5: u = 0.016 inside tanh (1.06x and 1x)
        pytest.param(_seed_404, torch.float64, id="seed404-tanh-float64"),
        pytest.param(_seed_404, torch.float32, id="seed404-tanh-float32"),
    ],
)
def test_the_sweeps_central_difference_draws_need_and_get_the_measured_noise(
    draw: Callable[[torch.dtype], Case], precision: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's three oracle failures (docs/suite/trust.md): covered now, not without."""
    case = draw(precision)
    est = fd_jacobian(case.func, case.args, case.argnums, scheme="central")
    check_within_estimate(est, case.truth, case.args, case)
    monkeypatch.setattr("derivs.oracles._fd.measured_noise", _no_noise)
    model_alone = fd_jacobian(case.func, case.args, case.argnums, scheme="central")
    with pytest.raises(AssertionError, match="exceeds the estimate"):
        check_within_estimate(model_alone, case.truth, case.args, case)


# ----------------------------------------------------------------------------- the measurement


def noise_of(func: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    (noise,) = measured_noise(lambda points: [func(points[0])], [x], [func(x)])
    return float(noise)


def test_the_noise_stays_within_the_model_where_nothing_cancels() -> None:
    """A few operands moved an ulp each, none cancelling: a few eps of max|f|, within the
    model's factor, so the estimate of such a function is what the model alone gave."""
    x = torch.tensor([0.3, -1.7, 2.5, 1e-3], dtype=torch.float64)
    for func in (lambda x: 2 * x, torch.exp, lambda x: x * x.sin()):
        assert noise_of(func, x) <= _ROUNDING * F64_EPS * float(func(x).abs().max())


def test_the_noise_of_a_cancelling_sum_is_the_size_of_its_terms() -> None:
    x = torch.tensor([1e8, -1e8] * 4 + [0.5], dtype=torch.float64)
    big = torch.tensor(1e8, dtype=torch.float64)
    ulp = float(torch.nextafter(big, 2 * big) - big)
    noise = noise_of(torch.sum, x)
    assert 2 * ulp <= noise <= 8 * ulp  # 8 terms moved one ulp each; the sum is 0.5


def test_a_later_factor_amplifies_the_noise() -> None:
    """1e6 (a - b): the subtraction's roundings, scaled by the product after it."""
    x = torch.tensor([1.0 + 2**-40, 1.0], dtype=torch.float64)
    noise = noise_of(lambda x: 1e6 * (x[0] - x[1]), x)
    assert noise >= 1e6 * F64_EPS / 2


def test_a_cast_to_float32_inside_func_is_measured_in_float32_ulps() -> None:
    """``sin(x)`` rounded to float32 inside a float64 func: the noise is float32's (the cast's
    ``dtype`` is a keyword of ``aten._to_copy``), and it covers the central difference's
    error, about float32's eps over the step."""

    def func(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x).to(torch.float32).to(torch.float64)

    x = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    assert noise_of(func, x) >= F32_EPS / 2 * float(torch.sin(x).abs().max())
    est = fd_jacobian(func, (x,), scheme="central")
    assert bool(((est.value - torch.diag(torch.cos(x))).abs() <= est.error).all())


def test_views_and_in_place_writes_keep_their_meaning_under_the_jitter() -> None:
    """A function that writes into a view of its own buffer: the jittered run must compute
    the same thing (a view of a moved copy would leave the buffer's zeros in the result)."""

    def func(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(4, dtype=x.dtype)
        out[0] = 2 * x[0]
        out[1:].add_(x[1:] ** 2)
        return out

    x = torch.tensor([0.75, -1.5, 2.0, 3.0], dtype=torch.float64)
    assert noise_of(func, x) <= 4 * F64_EPS * float(func(x).abs().max())


def test_the_estimate_is_deterministic() -> None:
    case = value_cancelled(_seed_439(torch.float64), torch.float64)
    first = fd_jacobian(case.func, case.args, case.argnums, scheme="central")
    again = fd_jacobian(case.func, case.args, case.argnums, scheme="central")
    assert torch.equal(first.value, again.value) and torch.equal(first.error, again.error)


def test_a_function_that_refuses_dispatch_modes_keeps_the_model() -> None:
    def refuses_modes(x: torch.Tensor) -> torch.Tensor:
        if _get_current_dispatch_mode() is not None:
            raise RuntimeError("this function runs under no dispatch mode")
        return torch.sin(x)

    x = torch.tensor([0.5, -1.25], dtype=torch.float64)
    assert noise_of(refuses_modes, x) == 0.0
    est = fd_jacobian(refuses_modes, (x,), scheme="central")
    assert bool(((est.value - torch.diag(torch.cos(x))).abs() <= est.error).all())


def test_the_varying_values_move_and_a_larger_closed_over_weight_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``varying_only``: ``x`` moves (and ``W @ x`` through it), the 4 x 1000 weight ``W``
    the function closes over stays (it is the same in every evaluation), ``W @ W.T`` of
    constants alone runs untouched; without it every operand moves as before."""
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(4, 1000, generator=gen, dtype=torch.float64)
    x = torch.randn(1000, generator=gen, dtype=torch.float64)
    moved: list[tuple[int, ...]] = []
    real_move = _noise._UlpJitter._move

    def spy(self: Any, t: Any) -> Any:
        moved.append(tuple(t.shape))
        return real_move(self, t)

    monkeypatch.setattr(_noise._UlpJitter, "_move", spy)

    def func(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(W @ x) + (W @ W.T).diagonal()

    evaluate = lambda points: [func(points[0])]  # noqa: E731
    noise = measured_noise(evaluate, [x], evaluate([x]), varying_only=True)
    assert float(noise[0]) > 0.0
    assert (1000,) in moved and (4, 1000) not in moved and (1000, 4) not in moved
    moved.clear()
    measured_noise(evaluate, [x], evaluate([x]))
    assert (4, 1000) in moved
