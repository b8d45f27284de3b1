"""Meta-tests of derivs.oracles: the ground truth checked against closed forms.

* every finite-difference scheme against closed forms (linear maps, sin -> diag(cos),
  x^T S x -> S + S^T, the tutorial's tanh-linear, a vector-valued Hessian, a mixed
  Hessian), with the true error inside the reported error estimate;
* complex step within a few ulps of the closed forms in float64;
* the loop oracles equal to the closed forms, and their contract (shapes, argnums, in_dims,
  pytrees, zeros, no mutation, non-contiguous and empty inputs);
* bad arguments raise errors that name the API; the oracle package imports nothing it
  checks (by its source, and alone in a fresh interpreter).

The cases and their closed forms are in tests/oracle_cases.py.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from oracle_cases import (
    F64_EPS,
    HALF,
    TRUTH_SLACK,
    WIDE,
    Case,
    arrays,
    check_complex_step,
    check_within_estimate,
    f64,
    hessian_cases,
    jacobian_cases,
    leaves,
    quadratic,
    sech2,
    tensor,
    truth_atol,
)

from derivs import oracles
from derivs.oracles import (
    Estimate,
    fd_hessian,
    fd_jacobian,
    loop_batch_hessian,
    loop_batch_jacobian,
    loop_hessian,
    loop_jacobian,
)
from derivs.oracles._differences import _FLOOR, _RICHARDSON_BASE, _RICHARDSON_EXPONENT, _ROUNDING
from derivs.testing import assert_close

ORACLES_DIR = Path(oracles.__file__).parent
ORACLE_FILES = sorted(ORACLES_DIR.glob("*.py"))

# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize(
    ("kind", "func", "x"),
    [
        ("jacobian", lambda x: x**3, 0.0),  # J = 0, the step gives -h**2 = -1e-40
        ("hessian", lambda x: (x**2) ** 2, 0.0),  # the conformance run's draw: H = 0, -4e-40
        ("hessian", lambda x: torch.tanh(x.logsumexp(-1)), [0.0]),  # its other draw
        ("jacobian", lambda x: torch.sin(x) - x, 0.0),  # J = 0 from cancelling terms
    ],
)
def test_complex_step_bounds_its_truncation_where_the_derivative_is_zero(
    kind: str, func: Callable[[torch.Tensor], torch.Tensor], x: object
) -> None:
    """A derivative of exactly 0 is off by the step's O(h**2) truncation alone; the estimate
    must cover it (it was 1e-54 against a value of -4e-40, so an exact 0 failed)."""
    point = torch.tensor(x, dtype=torch.float64)
    if kind == "jacobian":
        est = fd_jacobian(func, (point,), 0, scheme="complex_step")
        exact = oracles.loop_jacobian(func, (point,), 0)
    else:
        est = fd_hessian(func, (point,), 0, scheme="complex_step")
        exact = oracles.loop_hessian(func, (point,), 0)
    assert bool((exact == 0).all()), exact
    assert bool(((est.value - exact).abs() <= est.error).all()), (est, exact)
    assert float(est.error.max()) < 1e-30  # a truncation bound, not a blanket tolerance


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
@given(data=st.data())
def test_fd_jacobian_within_its_error_estimate(
    scheme: str, device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    case = data.draw(jacobian_cases(device, dtype), label="case")
    est = fd_jacobian(case.func, case.args, case.argnums, scheme=scheme)
    check_within_estimate(est, case.truth, case.args, case)


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
@given(data=st.data())
def test_fd_hessian_within_its_error_estimate(
    scheme: str, device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    case = data.draw(hessian_cases(device, dtype), label="case")
    est = fd_hessian(case.func, case.args, case.argnums, scheme=scheme)
    check_within_estimate(est, case.truth, case.args, case)


@given(data=st.data())
def test_fd_oracles_pass_assert_close_with_their_estimate(device: str, data: st.DataObject) -> None:
    """The way the suite uses them: assert_close(closed form, oracle, error=estimate)."""
    case = data.draw(jacobian_cases(device, torch.float64), label="case")
    est = fd_jacobian(case.func, case.args, case.argnums)
    if isinstance(case.truth, tuple):
        truth: Any = tuple(t.to(device) for t in case.truth)
    else:
        truth = case.truth.to(device)
    assert_close(truth, est.value, error=est.error, context=f"fd_jacobian on {case}")


@pytest.mark.parametrize("kind", ["jacobian", "hessian"])
@given(data=st.data())
def test_complex_step_within_a_few_ulps_in_float64(
    kind: str, device: str, data: st.DataObject
) -> None:
    if device.startswith("mps"):
        pytest.skip("mps has no float64")
    draw = jacobian_cases if kind == "jacobian" else hessian_cases
    case = data.draw(draw(device, torch.float64), label="case")
    oracle = fd_jacobian if kind == "jacobian" else fd_hessian
    est = oracle(case.func, case.args, case.argnums, scheme="complex_step")
    check_complex_step(est, case)


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
def test_fd_compute_in_float32_widens_the_estimate(scheme: str) -> None:
    """compute_dtype=float32 is what mps gets: less accurate, and the estimate says so."""
    x = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    truth = torch.diag(torch.cos(x))
    wide = fd_jacobian(torch.sin, (x,), scheme=scheme, compute_dtype=torch.float32)
    narrow = fd_jacobian(torch.sin, (x,), scheme=scheme)
    assert wide.value.dtype == torch.float64  # returned in the argument's dtype
    assert bool(((wide.value - truth).abs() <= wide.error).all())
    assert float(wide.error.max()) > 100 * float(narrow.error.max())


def test_fd_step_override_is_used() -> None:
    x = torch.tensor([0.5], dtype=torch.float64)
    coarse = fd_jacobian(torch.exp, (x,), scheme="central", step=0.1)
    assert abs(float(coarse.value) - math.exp(0.5)) > 1e-4  # a step of 0.1 is visibly coarse
    assert float(coarse.error) >= abs(float(coarse.value) - math.exp(0.5))


def test_complex_step_override_is_used() -> None:
    """Im((x + ih)**3) / h = 3 x**2 - h**2: a step of 0.1 is visibly coarse, and bounded."""
    x = torch.tensor([0.5, -0.3], dtype=torch.float64)
    h = 0.1
    est = fd_jacobian(lambda x: x**3, (x,), scheme="complex_step", step=h)
    assert_close(est.value, torch.diag(3 * x**2 - h**2))
    exact = torch.diag(3 * x**2)
    assert bool(((est.value - exact).abs() <= est.error).all())


def test_fd_hessian_central_differences_the_gradient() -> None:
    """Central differences of the gradient exp(x) with step h: exp(x) sinh(h) / h."""
    x = torch.tensor([0.5, -0.3], dtype=torch.float64)
    h = 0.1
    est = fd_hessian(lambda x: torch.exp(x).sum(), (x,), scheme="central", step=h)
    assert_close(est.value, torch.diag(torch.exp(x) * math.sinh(h) / h))


def test_complex_step_computes_in_the_complex_dtype_of_compute_dtype() -> None:
    seen: list[torch.dtype] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return torch.sin(x)

    x = torch.tensor([0.5, -0.3])
    est = fd_jacobian(f, (x,), scheme="complex_step", compute_dtype=torch.float32)
    assert torch.complex64 in seen and torch.complex128 not in seen
    assert_close(est.value, torch.diag(torch.cos(x)), error=est.error)


def test_fd_jacobian_of_an_empty_output() -> None:
    x = torch.tensor([0.5, -0.3], dtype=torch.float64)
    for scheme in oracles.SCHEMES:
        est = fd_jacobian(lambda x: x[:0], (x,), scheme=scheme)
        assert est.value.shape == (0, 2) and est.error.shape == (0, 2)


def test_complex_step_through_a_convolution_with_a_keyword_bias() -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.rand(6, generator=g, dtype=torch.float64) - 0.5
    k = torch.rand(1, 1, 3, generator=g, dtype=torch.float64) - 0.5
    b = torch.tensor([0.25], dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.nn.functional.conv1d(x[None, None], k, bias=b)).reshape(-1)

    est = fd_jacobian(f, (x,), scheme="complex_step")
    truth = loop_jacobian(f, (x,))
    scale = float(k.abs().sum())
    assert float((est.value - truth).abs().max()) <= TRUTH_SLACK * F64_EPS * scale
    # the bias moves the point tanh is taken at: without it the Jacobian differs
    unbiased = loop_jacobian(
        lambda x: torch.tanh(torch.nn.functional.conv1d(x[None, None], k)).reshape(-1), (x,)
    )
    assert float((truth - unbiased).abs().max()) > 1e3 * TRUTH_SLACK * F64_EPS * scale


def test_complex_step_refuses_a_func_whose_leaves_change_with_complex_input() -> None:
    """One output leaf for real input, two for complex: refused, not silently truncated."""

    def f(x: torch.Tensor) -> Any:
        return (torch.sin(x), torch.cos(x)) if x.is_complex() else (torch.sin(x),)

    with pytest.raises(
        ValueError, match=r"fd_jacobian: scheme='complex_step': func returned 2 output tensors"
    ):
        fd_jacobian(f, (torch.tensor([0.5, -0.3], dtype=torch.float64),), scheme="complex_step")


@pytest.mark.parametrize("compute_dtype", [torch.float32, None], ids=["float32", "float64"])
@pytest.mark.parametrize("scheme", oracles.SCHEMES)
def test_fd_error_estimate_scales_with_a_tiny_function(
    scheme: str, compute_dtype: torch.dtype | None
) -> None:
    """A linear map of slope 1e-33 (normal in float32): the estimate is relative to it.

    Computed in float32, or in float64 and cast to float32 (the cast's rounding is added,
    raised by float32's smallest subnormal): the estimate's absolute floor is a subnormal
    spacing, far below such values; an estimate at the slope's own size would certify
    any answer.
    """
    c = 1e-33
    x = torch.tensor([0.5, -0.3])
    est = fd_jacobian(lambda x: c * x, (x,), scheme=scheme, compute_dtype=compute_dtype)
    assert est.value.dtype == torch.float32
    assert float(est.error.max()) <= 1e-2 * c
    assert bool(((est.value - c * torch.eye(2)).abs() <= est.error).all())


def test_fd_richardson_is_accurate_and_its_estimate_tight_on_exp() -> None:
    """Richardson's extrapolation in float64: far beyond central's eps**(2/3), and says so."""
    x = torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64)
    est = fd_jacobian(torch.exp, (x,))
    truth = torch.diag(torch.exp(x))
    scale = float(truth.abs().max())
    assert float((est.value - truth).abs().max()) <= 1e-11 * scale
    assert float(est.error.max()) <= 1e-9 * scale


def test_fd_richardson_estimate_is_the_rounding_model_where_truncation_vanishes() -> None:
    """``2 x`` on a point where every difference is exact: the estimate is pure rounding.

    Each quotient is exactly 2 (``x + h`` and ``x - h`` are within a factor of two, so their
    difference is exact, and doubling is exact), so both extrapolations and every spread are
    0, and what Richardson reports is the rounding model of the module's NOTE alone: each
    evaluation off by ``_ROUNDING eps max|f|``, a quotient of span ``d`` by twice that over
    ``d``, propagated through ``R2 = (64 D_k - 20 D_{k-1} + D_{k-2}) / 45`` at the first
    window (the widest spans, the smallest bound), raised by the block floor.
    """
    x = torch.tensor([0.5], dtype=torch.float64)
    est = fd_jacobian(lambda x: 2 * x, (x,))
    assert float(est.value) == 2.0
    eps = torch.finfo(torch.float64).eps
    h0 = _RICHARDSON_BASE * eps**_RICHARDSON_EXPONENT
    spans = [float((x + h0 * 2.0**-k) - (x - h0 * 2.0**-k)) for k in range(3)]
    worst_f = 2 * float(x + h0)
    delta = _ROUNDING * eps * worst_f  # one evaluation's rounding, by the model
    coefficients = (1, 20, 64)  # |weights| of D_0, D_1, D_2 in R2, times 45
    bound = sum(c * 2 * delta / d for c, d in zip(coefficients, spans, strict=True)) / 45
    assert math.isclose(float(est.error), bound * (1 + _FLOOR), rel_tol=1e-12)


def test_complex_step_guard_sees_a_small_wrong_part_beside_a_large_constant() -> None:
    """``1e10 + x + 0.05 |x|**2``: the complex step misses ``0.1 x``; the guard must not.

    The constant puts rounding noise of ``eps 1e10`` into every real evaluation the guard's
    Richardson makes, so its tolerance depends on its base step: at Richardson's own step
    the wrong part (about 0.1) is many times the tolerance; at a step 64 times smaller the
    noise it propagates would hide it.
    """
    x = torch.tensor([1.0, 0.8], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not holomorphic"):
        fd_jacobian(lambda x: 1e10 + x + 0.05 * x.abs() ** 2, (x,), scheme="complex_step")


def test_fd_richardson_survives_a_domain_edge() -> None:
    """Steps that leave the domain give NaN there; the other windows are used."""
    x = torch.tensor([0.05, 2.0], dtype=torch.float64)
    est = fd_jacobian(torch.sqrt, (x,))
    truth = torch.diag(0.5 / torch.sqrt(x))
    assert bool(((est.value - truth).abs() <= est.error).all())
    assert bool(torch.isfinite(est.value).all())


def test_fd_jacobian_pytree_output_and_non_float_args() -> None:
    x = torch.tensor([0.2, 0.4], dtype=torch.float32)
    idx = torch.tensor([1, 0])

    def f(x: torch.Tensor, idx: torch.Tensor, scale: float) -> dict[str, Any]:
        return {"perm": x[idx] * scale, "pair": (x.sum(), torch.sin(x))}

    est = fd_jacobian(f, (x, idx, 3.0))
    loop = loop_jacobian(f, (x, idx, 3.0))
    assert list(est.value) == ["perm", "pair"] and isinstance(est.value["pair"], tuple)
    assert list(est.error) == ["perm", "pair"] and isinstance(est.error["pair"], tuple)
    # with several argnums each output leaf holds a tuple of blocks, in value and error
    y = torch.tensor([0.5], dtype=torch.float32)
    two = fd_jacobian(lambda x, y: {"a": x * y, "b": (x.sum() + y,)}, (x, y), argnums=(0, 1))
    for part in (two.value, two.error):
        assert list(part) == ["a", "b"] and isinstance(part["b"], tuple)
        assert isinstance(part["a"], tuple) and len(part["a"]) == 2
    assert_close(loop, est.value, error=est.error, context="fd vs loop on a dict output")


def test_fd_hessian_of_a_linear_function_is_zero() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    est = fd_hessian(lambda x: (3 * x).sum(), (x,))
    assert bool((est.value == 0).all()) and est.value.shape == (2, 2)


def test_complex_step_refuses_functions_it_cannot_handle() -> None:
    x = torch.tensor([0.5, -0.25], dtype=torch.float64)
    with pytest.raises(TypeError, match=r"derivs\.oracles\.fd_jacobian: scheme='complex_step'"):
        fd_jacobian(torch.nn.functional.softplus, (x,), scheme="complex_step")
    with pytest.raises(ValueError, match=r"derivs\.oracles\.fd_jacobian: scheme='complex_step'"):
        fd_jacobian(lambda x: x.abs() * x, (x,), scheme="complex_step")  # real output
    with pytest.raises(ValueError, match=r"not holomorphic"):
        fd_jacobian(lambda x: torch.sin(x).conj() * 2, (x,), scheme="complex_step")
    with pytest.raises(ValueError, match=r"derivs\.oracles\.fd_hessian: scheme='complex_step'"):
        fd_hessian(lambda x: (torch.sin(x).conj() * x).sum(), (x,), scheme="complex_step")


# ----------------------------------------------------------------------------- complex step
# through closures: the function's real weights meet the complex input in ops that do not
# promote (matmul, linear, conv, einsum, ...); the oracle promotes them for it.

F = torch.nn.functional


def conv_matrix(k: torch.Tensor, n: int) -> torch.Tensor:
    """The (n - len(k) + 1, n) matrix of conv1d (a cross-correlation) with kernel k."""
    rows = n - k.numel() + 1
    C = torch.zeros(rows, n, dtype=torch.float64)
    for i in range(rows):
        C[i, i : i + k.numel()] = k
    return C


# name -> (u(x, W, b, k) built with a non-promoting op, the matrix of x -> u, whether b is added)
CLOSURE_FORMS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], bool]] = {
    "W @ x": (lambda x, W, b, k: W @ x, lambda W, k, n: W, False),
    "x @ W.T": (lambda x, W, b, k: x @ W.T, lambda W, k, n: W, False),
    "mv": (lambda x, W, b, k: torch.mv(W, x), lambda W, k, n: W, False),
    "mm": (lambda x, W, b, k: torch.mm(W, x[:, None])[:, 0], lambda W, k, n: W, False),
    "addmv": (lambda x, W, b, k: torch.addmv(b, W, x), lambda W, k, n: W, True),
    "linear": (lambda x, W, b, k: F.linear(x, W, b), lambda W, k, n: W, True),
    "einsum": (lambda x, W, b, k: torch.einsum("ij,j->i", W, x), lambda W, k, n: W, False),
    "tensordot": (lambda x, W, b, k: torch.tensordot(W, x, dims=1), lambda W, k, n: W, False),
    "bmm": (
        lambda x, W, b, k: torch.bmm(W[None], x[None, :, None]).reshape(-1),
        lambda W, k, n: W,
        False,
    ),
    "conv1d": (
        lambda x, W, b, k: F.conv1d(x[None, None], k[None, None])[0, 0],
        lambda W, k, n: conv_matrix(k, n),
        False,
    ),
    "conv_transpose1d": (
        lambda x, W, b, k: F.conv_transpose1d(x[None, None], k[None, None])[0, 0],
        lambda W, k, n: conv_matrix(k, n + k.numel() - 1).T,
        False,
    ),
}


@pytest.mark.parametrize("form", list(CLOSURE_FORMS))
@given(data=st.data())
def test_complex_step_through_closed_over_real_tensors(form: str, data: st.DataObject) -> None:
    """tanh(u(x)) with real W, b, k closed over: the complex step within a few ulps."""
    build, matrix, biased = CLOSURE_FORMS[form]
    n, m = data.draw(st.integers(2, 5), label="n"), data.draw(st.integers(1, 4), label="m")
    W, b = f64(data.draw(arrays((m, n), HALF))), f64(data.draw(arrays(m, HALF)))
    k = f64(data.draw(arrays(data.draw(st.integers(1, n)), HALF), label="kernel"))
    x = f64(data.draw(arrays(n), label="x"))
    A = matrix(W, k, n)
    u = A @ x + (b if biased else 0)
    # the Hessian's terms are of order |A|^T |A| even where they cancel (see Case.scale)
    terms = float((A.abs().T @ A.abs()).max())
    checks = [(fd_jacobian, lambda x: torch.tanh(build(x, W, b, k)), sech2(u)[:, None] * A, 0.0)]
    if "conv" not in form:  # NOTE: CI time; the convolutions' Hessian has its own example
        hess = A.T @ torch.diag(-2 * torch.tanh(u) * sech2(u)) @ A
        checks.append((fd_hessian, lambda x: torch.tanh(build(x, W, b, k)).sum(), hess, terms))
    for oracle, func, truth, floor in checks:
        est = oracle(func, (x,), scheme="complex_step")
        err = float((est.value - truth).abs().max())
        scale = max(float(truth.abs().max()), floor)
        note(f"{oracle.__name__}: {err / F64_EPS / max(scale, 1e-300):.2f} ulps of max|truth|")
        assert err <= TRUTH_SLACK * F64_EPS * scale, (form, oracle, err)
        # the estimate covers the oracle's error; the slack, the closed form's own rounding
        bound = est.error + TRUTH_SLACK * F64_EPS * scale
        assert bool(((est.value - truth).abs() <= bound).all())


@pytest.mark.parametrize("form", ["conv1d", "conv_transpose1d"])
def test_complex_step_hessian_through_a_convolution(form: str) -> None:
    """The split complex convolution is differentiable: the Hessian's complex step."""
    build, matrix, _ = CLOSURE_FORMS[form]
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, generator=g, dtype=torch.float64) - 0.5
    k = torch.rand(3, generator=g, dtype=torch.float64) - 0.5
    A = matrix(None, k, 5)
    u = A @ x
    truth = A.T @ torch.diag(-2 * torch.tanh(u) * sech2(u)) @ A
    est = fd_hessian(
        lambda x: torch.tanh(build(x, None, None, k)).sum(), (x,), scheme="complex_step"
    )
    scale = float((A.abs().T @ A.abs()).max())
    assert float((est.value - truth).abs().max()) <= TRUTH_SLACK * F64_EPS * scale


def test_complex_step_of_tanh_W_x_from_the_issue() -> None:
    g = torch.Generator().manual_seed(13)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64)
    x = torch.randn(4, generator=g, dtype=torch.float64)
    est = fd_jacobian(lambda x: torch.tanh(W @ x), (x,), scheme="complex_step")
    truth = sech2(W @ x)[:, None] * W
    assert float((est.value - truth).abs().max()) <= 4 * F64_EPS * float(truth.abs().max())
    assert not W.is_complex() and W.dtype == torch.float64  # the closure was left alone


_W = torch.tensor([[0.5, -0.25], [1.0, 0.75]], dtype=torch.float64)
# functions that are not complex-capable (or not holomorphic), with a real closure: refused
NOT_COMPLEX_CAPABLE = [
    ("relu", lambda x: torch.relu(_W @ x), TypeError, "clamp"),
    ("abs", lambda x: (_W @ x).abs(), ValueError, "complex output"),
    ("abs-inside", lambda x: (_W @ x).abs() * x, ValueError, "not holomorphic"),
    ("comparison", lambda x: (_W @ x > 0) * x, TypeError, "needs func to accept complex input"),
    ("sort", lambda x: torch.sort(_W @ x).values, TypeError, "needs func to accept complex"),
    ("where", lambda x: torch.where(_W @ x > 0, _W @ x, 0.0), TypeError, "needs func"),
    ("vecdot", lambda x: torch.linalg.vecdot(_W, x), TypeError, "needs func"),
]


@pytest.mark.parametrize("oracle", [fd_jacobian, fd_hessian], ids=lambda o: o.__name__)
@pytest.mark.parametrize(
    ("func", "exc", "match"), [pytest.param(*row[1:], id=row[0]) for row in NOT_COMPLEX_CAPABLE]
)
def test_complex_step_still_refuses_functions_that_are_not_complex_capable(
    oracle: Callable[..., Estimate], func: Callable[..., Any], exc: type[Exception], match: str
) -> None:
    x = torch.tensor([0.5, -0.25], dtype=torch.float64)
    f = func if oracle is fd_jacobian else (lambda x: func(x).sum())
    with pytest.raises((TypeError, ValueError)) as info:
        oracle(f, (x,), scheme="complex_step")
    message = str(info.value)
    assert message.startswith(f"derivs.oracles.{oracle.__name__}: scheme='complex_step'")
    if oracle is fd_jacobian:  # the Hessian's gradient may fail in another of the checks
        assert isinstance(info.value, exc) and match in message, message


def test_complex_step_still_refuses_a_conjugate_through_a_closure() -> None:
    x = torch.tensor([0.5, -0.25], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^derivs\.oracles\.fd_jacobian: .*not holomorphic"):
        fd_jacobian(lambda x: torch.sin(_W @ x).conj() * 2, (x,), scheme="complex_step")


def test_derivs_check_uses_the_complex_step_through_a_closure() -> None:
    """derivs.check's ``cs`` rows pass on tanh(W @ x) and are skipped for relu(W @ x)."""
    import derivs

    x = torch.tensor([0.5, -0.25], dtype=torch.float64)
    analytic = derivs.check(lambda x: torch.tanh(_W @ x), x, order=1, raise_exception=False)
    cs = [r for r in analytic.rows if r.reference == "cs"]
    assert cs and all(r.status == "pass" for r in cs), analytic
    piecewise = derivs.check(lambda x: torch.relu(_W @ x), x, order=1, raise_exception=False)
    cs = [r for r in piecewise.rows if r.reference == "cs"]
    assert all(r.status == "skip" for r in cs), piecewise


# ----------------------------------------------------------------------------- loops


@given(data=st.data())
def test_loop_jacobian_equals_closed_forms(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    check_loop_jacobian(data.draw(jacobian_cases(device, dtype), label="case"), device, dtype)


def check_loop_jacobian(case: Case, device: str, dtype: torch.dtype) -> None:
    jac = loop_jacobian(case.func, case.args, case.argnums)
    truth = case.truth if isinstance(case.truth, tuple) else (case.truth,)
    got = jac if isinstance(jac, tuple) else (jac,)
    expected = tuple(t.to(device, dtype) for t in truth)
    atol = truth_atol(case, dtype, list(expected))
    assert_close(got, expected, atol=atol, context=f"loop_jacobian on {case}")


def test_loop_jacobian_subnormal_case_is_no_false_alarm(device: str) -> None:
    """Hypothesis once drew x @ S @ x with S = 1.4e-45, x = 1.5 in float32 (issue 13).

    The loop Jacobian is 4 subnormal spacings, the closed form 3: a genuine rounding, which
    the tolerance's underflow floor (derivs/testing.py) allows.
    """
    x, S = np.array([1.5]), np.array([[1.4e-45]])
    t = lambda a: tensor(a, device, torch.float32)  # noqa: E731
    S32 = f64(S).float().double()  # the subnormal as float32 holds it
    case = Case("x @ S @ x", quadratic, (t(x), t(S)), 0, (S32 + S32.T) @ f64(x))
    check_loop_jacobian(case, device, torch.float32)


@given(data=st.data())
def test_loop_hessian_equals_closed_forms(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    case = data.draw(hessian_cases(device, dtype), label="case")
    hess = loop_hessian(case.func, case.args, case.argnums)
    cast = tuple(t.to(device, dtype) for t in leaves(case.truth))
    atol = truth_atol(case, dtype, list(cast))
    assert_close(tuple(leaves(hess)), cast, atol=atol, context=f"loop_hessian on {case}")
    if isinstance(case.argnums, tuple):
        assert isinstance(hess, tuple) and all(isinstance(row, tuple) for row in hess)


@given(
    batch=st.integers(0, 4),
    n=st.integers(1, 4),
    layout=st.sampled_from(["front", "back"]),
    data=st.data(),
)
def test_loop_batch_oracles_stack_per_sample_results(
    device: str, batch: int, n: int, layout: str, data: st.DataObject
) -> None:
    S = tensor(data.draw(arrays((n, n), WIDE), label="S"), device, torch.float64)
    xs = tensor(data.draw(arrays((batch, n), WIDE), label="xs"), device, torch.float64)
    dim = 0 if layout == "front" else -1
    batched = xs if layout == "front" else xs.T  # a non-contiguous view when layout="back"

    def per_sample(x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * (S @ x)

    jac = loop_batch_jacobian(per_sample, (batched, S), (0, 1), in_dims=(dim, None))
    hess = loop_batch_hessian(per_sample, (batched, S), 0, in_dims=(dim, None))
    assert jac[0].shape == (batch, n, n) and jac[1].shape == (batch, n, n, n)
    assert hess.shape == (batch, n, n, n)
    for b in range(batch):
        one = loop_jacobian(per_sample, (xs[b], S), (0, 1))
        assert_close((jac[0][b], jac[1][b]), one, context=f"loop_batch_jacobian sample {b}")
        assert_close(hess[b], loop_hessian(per_sample, (xs[b], S)), context=f"sample {b}")


def test_loop_jacobian_contract() -> None:
    """Zeros for unused inputs and constant outputs, pytrees, negative argnums, 0-d, empty."""
    x = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor(0.5, dtype=torch.float64)

    def f(x: torch.Tensor, y: torch.Tensor) -> Any:
        return (x * 2, [torch.ones(2), (x**2).sum()], {"yy": y * y})

    jx, jy = [loop_jacobian(f, (x, y), a) for a in (0, -1)]
    assert jx[0].dtype == torch.float32 and jy[0].dtype == torch.float64
    assert_close(jx[0], 2 * torch.eye(3))
    assert_close(jx[1][0], torch.zeros(2, 3))  # the output does not require grad
    assert_close(jx[1][1], 2 * x)
    assert_close(jx[2]["yy"], torch.zeros(3))  # the output does not depend on x
    assert_close(jy[2]["yy"], 2 * y)
    assert jy[0].shape == (3,) and jy[2]["yy"].shape == ()
    both = loop_jacobian(f, (x, y), (1, 0))
    assert isinstance(both[0], tuple) and both[0][1].shape == (3, 3) and both[0][0].shape == (3,)
    empty = torch.zeros(0, 2)
    assert loop_jacobian(lambda e: e.sum(0), (empty,)).shape == (2, 0, 2)
    assert loop_jacobian(lambda e: e.t() * 1, (empty,)).shape == (2, 0, 0, 2)
    assert loop_hessian(lambda e: e.sum(), (empty,)).shape == (0, 2, 0, 2)


def test_loop_oracles_do_not_touch_their_arguments() -> None:
    leaf = torch.tensor([[0.1, 0.2], [0.3, 0.4]], requires_grad=True)
    view = leaf.t()  # non-contiguous, requires grad, not a leaf
    plain = torch.tensor([0.5, 0.6])
    before = (leaf.detach().clone(), leaf._version, plain._version)
    jac = loop_jacobian(lambda a, b: torch.tanh(a @ b), (view, plain), (0, 1))
    hess = loop_hessian(lambda a, b: (torch.tanh(a @ b) ** 2).sum(), (view, plain), (0, 1))
    assert leaf.grad is None and leaf.requires_grad and not plain.requires_grad
    assert torch.equal(leaf.detach(), before[0])
    assert (leaf._version, plain._version) == before[1:]
    contiguous = loop_jacobian(
        lambda a, b: torch.tanh(a @ b), (view.detach().contiguous(), plain), (0, 1)
    )
    assert_close(jac, contiguous, context="non-contiguous vs contiguous input")
    assert not jac[0].requires_grad and not hess[0][1].requires_grad
    assert hess[0][1].shape == (2, 2, 2) and hess[1][0].shape == (2, 2, 2)


def test_user_exceptions_propagate_unchanged() -> None:
    class Boom(Exception):
        pass

    def f(x: torch.Tensor) -> torch.Tensor:
        raise Boom("from func")

    x = torch.ones(2)
    for call in (
        lambda: loop_jacobian(f, (x,)),
        lambda: loop_hessian(f, (x,)),
        lambda: loop_batch_jacobian(f, (x[None],)),
        lambda: fd_jacobian(f, (x,)),
        lambda: fd_hessian(f, (x,)),
        lambda: fd_jacobian(f, (x,), scheme="complex_step"),
    ):
        with pytest.raises(Boom, match="from func"):
            call()


# ----------------------------------------------------------------------------- bad arguments

_X = torch.ones(3)
_SIN = torch.sin
BAD_ARGUMENTS = [
    ("func-not-callable", "loop_jacobian", (3, (_X,)), {}, TypeError, "func must be callable"),
    ("args-not-tuple", "fd_jacobian", (_SIN, [_X]), {}, TypeError, "args must be a tuple"),
    ("argnums-out-of-range", "loop_hessian", (_SIN, (_X,), 1), {}, ValueError, "out of range"),
    (
        "argnums-negative-out-of-range",
        "fd_hessian",
        (_SIN, (_X,), -2),
        {},
        ValueError,
        "out of range",
    ),
    ("argnums-empty", "loop_jacobian", (_SIN, (_X,), ()), {}, ValueError, "empty"),
    (
        "argnums-duplicate",
        "loop_jacobian",
        (_SIN, (_X, _X), (0, -2)),
        {},
        ValueError,
        "same argument twice",
    ),
    ("argnums-float", "fd_jacobian", (_SIN, (_X,), 0.0), {}, TypeError, "argnums must be an int"),
    ("argnums-bool", "fd_jacobian", (_SIN, (_X,), (True,)), {}, TypeError, "not an int"),
    ("integer-input", "loop_jacobian", (_SIN, (torch.arange(3),)), {}, TypeError, "floating-point"),
    (
        "complex-input",
        "fd_jacobian",
        (_SIN, (_X.to(torch.complex64),)),
        {},
        TypeError,
        "floating-point",
    ),
    ("non-tensor-input", "fd_hessian", (_SIN, (1.0,)), {}, TypeError, "only tensors"),
    (
        "unknown-scheme",
        "fd_jacobian",
        (_SIN, (_X,)),
        {"scheme": "foo"},
        ValueError,
        "scheme='foo' is not one of 'central', 'richardson', 'complex_step'",
    ),
    (
        "step-zero",
        "fd_hessian",
        (_SIN, (_X,)),
        {"step": 0.0},
        ValueError,
        "step=0.0 must be positive",
    ),
    (
        "step-negative",
        "fd_jacobian",
        (_SIN, (_X,)),
        {"step": -1e-3},
        ValueError,
        "must be positive",
    ),
    ("step-string", "fd_jacobian", (_SIN, (_X,)), {"step": "1e-3"}, TypeError, "step must be"),
    (
        "compute-dtype-int",
        "fd_jacobian",
        (_SIN, (_X,)),
        {"compute_dtype": torch.int64},
        TypeError,
        "compute_dtype",
    ),
    (
        "in-dims-length",
        "loop_batch_jacobian",
        (_SIN, (_X,)),
        {"in_dims": (0, None)},
        ValueError,
        "has 2 entries",
    ),
    (
        "in-dims-out-of-range",
        "loop_batch_hessian",
        (_SIN, (_X,)),
        {"in_dims": 1},
        ValueError,
        "out of range",
    ),
    (
        "in-dims-none-only",
        "loop_batch_jacobian",
        (_SIN, (_X,)),
        {"in_dims": (None,)},
        ValueError,
        "batches no argument",
    ),
    (
        "batch-sizes-differ",
        "loop_batch_jacobian",
        (torch.add, (_X, torch.ones(2))),
        {},
        ValueError,
        "different batch sizes",
    ),
    ("output-not-tensor", "loop_jacobian", (lambda x: 1.0, (_X,)), {}, TypeError, "is a float"),
    (
        "args-a-bare-tensor",
        "fd_jacobian",
        (_SIN, _X),
        {},
        TypeError,
        "args must be a tuple of positional arguments, got Tensor (wrap a single tensor as (x,))",
    ),
    ("args-not-tuple-batch", "loop_batch_jacobian", (_SIN, [_X]), {}, TypeError, "got list"),
    (
        "integer-input-fd",
        "fd_jacobian",
        (_SIN, (torch.arange(3),)),
        {},
        TypeError,
        "args[0] has dtype torch.int64; only floating-point tensors can be differentiated"
        " (cast it first, e.g. x.double())",
    ),
    (
        "complex-output",
        "fd_jacobian",
        (lambda x: x.to(torch.complex64), (_X,)),
        {},
        TypeError,
        "output is complex (torch.complex64); the oracles differentiate real-valued functions only",
    ),
    (
        "complex-output-hessian",
        "fd_hessian",
        (lambda x: x.sum().to(torch.complex64), (_X,)),
        {},
        TypeError,
        "output is complex (torch.complex64); the oracles differentiate real-valued functions only",
    ),
    (
        "complex-dict-leaf",
        "fd_jacobian",
        (lambda x: {"a": x, "b": x.to(torch.complex64)}, (_X,)),
        {},
        TypeError,
        "output['b'] is complex",
    ),
    (
        "unknown-scheme-hints",
        "fd_hessian",
        (_SIN, (_X,)),
        {"scheme": "foo"},
        ValueError,
        "(richardson: most accurate for any smooth function; central: cheapest;"
        " complex_step: exact to rounding, for functions that accept complex input)",
    ),
    (
        "complex-step-imaginary-output",
        "fd_jacobian",
        (lambda x: x + 1j if x.is_complex() else x, (_X,)),
        {"scheme": "complex_step"},
        ValueError,
        "given real values as complex input, func returned non-zero imaginary parts",
    ),
    (
        "in-dims-string",
        "loop_batch_jacobian",
        (_SIN, (_X,)),
        {"in_dims": "0"},
        TypeError,
        "in_dims must be an int or a tuple of ints/None, got str",
    ),
    (
        "in-dims-non-tensor",
        "loop_batch_jacobian",
        (torch.add, (_X, 2.0)),
        {"in_dims": (0, 0)},
        TypeError,
        "in_dims[1]=0 batches args[1], which is a float, not a tensor (use None for unbatched",
    ),
    # NOTE: a pytree output is a Hessian per leaf (tests/test_pytrees.py); a leaf that is not
    # a tensor is named by its path.
    (
        "hessian-non-tensor-output-leaf",
        "loop_hessian",
        (lambda x: (x, 3), (_X,)),
        {},
        TypeError,
        "output[1] is a int",
    ),
]


@pytest.mark.parametrize(
    ("api", "args", "kwargs", "exc", "match"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_ARGUMENTS],
)
def test_bad_arguments_raise_naming_the_api(
    api: str, args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc) as info:
        getattr(oracles, api)(*args, **kwargs)
    message = str(info.value)
    assert message.startswith(f"derivs.oracles.{api}: "), message
    assert match in message, message


# ----------------------------------------------------------------------------- independence


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


@pytest.mark.parametrize("path", ORACLE_FILES, ids=lambda p: p.name)
def test_oracles_import_nothing_they_check(path: Path) -> None:
    """Every oracle module: torch, typing, the standard library and its own package only."""
    allowed_roots = {"torch", "typing", "__future__"} | set(sys.stdlib_module_names)
    if "MUTANT_UNDER_TEST" in os.environ:  # mutmut's trampolines import its runtime
        allowed_roots.add("mutmut")
    forbidden = ("torch.func", "functorch", "torch.autograd.functional", "torch._functorch")
    imports = _imported_modules(path)
    assert imports, f"expected {path.name} to import something"
    for module, level in imports:
        assert level == 0, f"{path.name} has a relative import (level {level}) of {module!r}"
        own = module == "derivs.oracles" or module.startswith("derivs.oracles.")
        assert own or module.split(".")[0] in allowed_roots, f"{path.name} imports {module!r}"
        assert not module.startswith(forbidden), f"{path.name} imports {module!r}"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            assert not dotted.startswith(forbidden), f"{path.name} uses {dotted}"
            assert node.attr not in ("vmap", "jacrev", "jacfwd", "jvp", "vjp"), dotted


# NOTE: importing derivs.oracles normally runs derivs/__init__.py first, which imports every
# operator; so the fresh interpreter registers an empty ``derivs`` package (only its path)
# and imports the oracles under it. Any import of an operator module, direct or through a
# helper, would then show up in sys.modules.
_ALONE = """
import sys, types
pkg = types.ModuleType("derivs"); pkg.__path__ = [sys.argv[1]]; sys.modules["derivs"] = pkg
import derivs.oracles as o
x = o.loop_jacobian(lambda v: v * v, (__import__("torch").ones(2),))
print(" ".join(sorted(m for m in sys.modules if m.startswith("derivs"))))
"""


def test_oracles_import_alone_in_a_fresh_interpreter() -> None:
    found = subprocess.run(
        [sys.executable, "-c", _ALONE, str(ORACLES_DIR.parent)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "derivs.oracles" in found
    others = [m for m in found if m != "derivs" and not m.startswith("derivs.oracles")]
    assert not others, f"importing derivs.oracles alone also imported {others}"


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"
