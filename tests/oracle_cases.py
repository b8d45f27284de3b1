"""The oracles' meta-test cases: functions with closed-form derivatives, and the check.

Inputs are drawn with hypothesis.extra.numpy from floats exact in float32 (width=32), so
one float64 closed form is the truth for float32 and float64 inputs alike. The closed forms
avoid cancellation (sech(u)**2, not 1 - tanh(u)**2) so their own rounding stays at a few
ulps; the checks allow for that with ``TRUTH_SLACK`` ulps of the largest true value.
Shared by tests/test_oracles.py and tests/test_oracle_noise.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.extra import numpy as hnp

from derivs.oracles import Estimate
from derivs.testing import tolerance

F64_EPS = torch.finfo(torch.float64).eps
# the closed forms' own rounding, in ulps of their largest magnitude (norm-wise)
TRUTH_SLACK = 8.0

# NOTE: inputs in [-1, 1] and weights in [-1/2, 1/2] keep tanh away from saturation, where
# 1 - tanh**2 is computed with cancellation and every method (closed forms included) loses
# relative accuracy; the oracles' behaviour there is measured in docs/oracles.md instead.
UNIT = st.floats(-1, 1, allow_nan=False, allow_infinity=False, width=32)
HALF = st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False, width=32)
WIDE = st.floats(-2, 2, allow_nan=False, allow_infinity=False, width=32)


def arrays(shape: Any, elements: st.SearchStrategy[float] = UNIT) -> st.SearchStrategy[Any]:
    return hnp.arrays(np.float64, shape, elements=elements)


def tensor(a: Any, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(device=device, dtype=dtype)


def f64(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def sech2(u: torch.Tensor) -> torch.Tensor:
    return 1 / torch.cosh(u) ** 2


@dataclass
class Case:
    """A function, its arguments, argnums, and the closed-form derivative (float64, cpu)."""

    name: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    argnums: int | tuple[int, ...]
    truth: Any
    # NOTE: the magnitude the derivative's rounding is relative to, where it exceeds the
    # truth's: the Hessian of tanh(W x + b) is W^T diag(-2 tanh(u) sech(u)**2) W, which
    # cancels to nearly 0 at u ~ 0 while every term is of order max|W|**2 (the false-alarm
    # sweep found the complex step 1.5x over 8 ulps of a truth of 0.026 there); the gradient
    # of x @ S @ x, (S + S^T) x, sums terms of (|S| + |S^T|) |x| (seed 532: 2.9x over 8 ulps
    # of a truth of 0.031), its Hessian S + S^T terms of |S| + |S^T|.
    scale: float = 0.0

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(a.shape)) for a in self.args)
        return f"Case({self.name}, args of shapes {shapes}, argnums={self.argnums})"


def linear(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return A @ x + b


def quadratic(x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    return x @ S @ x


def predict(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The tutorial's model: F.linear(x, weight, bias).tanh()."""
    return torch.nn.functional.linear(x, weight, bias).tanh()


def sum_sin(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x).sum()


def mixed(x: torch.Tensor, y: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return torch.sin(x).sum() + x @ A @ y


def quadratic_gradient_case(x: Any, S: Any, device: str, dtype: torch.dtype) -> Case:
    """``x @ S @ x`` wrt ``x``: the truth ``(S + S^T) x`` sums terms of ``(|S| + |S^T|) |x|``."""
    S64, x64 = f64(S), f64(x)
    terms = float(((S64.abs() + S64.T.abs()) @ x64.abs()).max())
    args = (tensor(x, device, dtype), tensor(S, device, dtype))
    return Case("x @ S @ x", quadratic, args, 0, (S64 + S64.T) @ x64, terms)


@st.composite
def jacobian_cases(draw: st.DrawFn, device: str, dtype: torch.dtype) -> Case:
    kind = draw(st.sampled_from(["linear", "sin", "quadratic", "predict_x", "predict_wb"]))
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    t = lambda a: tensor(a, device, dtype)  # noqa: E731
    if kind == "sin":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3))
        x = draw(arrays(shape, WIDE))
        truth = torch.diag(torch.cos(f64(x)).reshape(-1)).reshape((*shape, *shape))
        return Case("sin(x)", torch.sin, (t(x),), 0, truth)
    if kind == "linear":
        x, A, b = draw(arrays(n, WIDE)), draw(arrays((m, n), WIDE)), draw(arrays(m, WIDE))
        truth = (f64(A), torch.eye(m, dtype=torch.float64))
        return Case("A @ x + b", linear, (t(x), t(A), t(b)), (0, -1), truth)
    if kind == "quadratic":
        x, S = draw(arrays(n, WIDE)), draw(arrays((n, n), WIDE))
        return quadratic_gradient_case(x, S, device, dtype)
    W, b, x = draw(arrays((m, n), HALF)), draw(arrays(m, HALF)), draw(arrays(n))
    d = sech2(f64(W) @ f64(x) + f64(b))
    if kind == "predict_x":
        return Case("tanh(W x + b) wrt x", predict, (t(W), t(b), t(x)), 2, d[:, None] * f64(W))
    dW = torch.einsum("i,ik,l->ikl", d, torch.eye(m, dtype=torch.float64), f64(x))
    return Case(
        "tanh(W x + b) wrt (W, b)", predict, (t(W), t(b), t(x)), (0, 1), (dW, torch.diag(d))
    )


@st.composite
def hessian_cases(draw: st.DrawFn, device: str, dtype: torch.dtype) -> Case:
    kind = draw(st.sampled_from(["quadratic", "sum_sin", "predict", "mixed"]))
    n, m = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    t = lambda a: tensor(a, device, dtype)  # noqa: E731
    if kind == "quadratic":
        x, S = draw(arrays(n, WIDE)), draw(arrays((n, n), WIDE))
        S64 = f64(S)
        terms = float((S64.abs() + S64.T.abs()).max())
        return Case("x @ S @ x", quadratic, (t(x), t(S)), 0, S64 + S64.T, terms)
    if kind == "sum_sin":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
        x = draw(arrays(shape, WIDE))
        truth = torch.diag(-torch.sin(f64(x)).reshape(-1)).reshape((*shape, *shape))
        return Case("sum(sin(x))", sum_sin, (t(x),), 0, truth)
    if kind == "predict":  # vector-valued: one Hessian per output, shape (m, n, n)
        W, b, x = draw(arrays((m, n), HALF)), draw(arrays(m, HALF)), draw(arrays(n))
        u = f64(W) @ f64(x) + f64(b)
        coef = -2 * torch.tanh(u) * sech2(u)
        truth = coef[:, None, None] * f64(W)[:, :, None] * f64(W)[:, None, :]
        wmax = float(f64(W).abs().max())
        return Case("tanh(W x + b) wrt x", predict, (t(W), t(b), t(x)), 2, truth, wmax**2)
    k = draw(st.integers(1, 4))
    x, y, A = draw(arrays(n, WIDE)), draw(arrays(k, WIDE)), draw(arrays((n, k), WIDE))
    A64 = f64(A)
    truth = (
        (torch.diag(-torch.sin(f64(x))), A64),
        (A64.T, torch.zeros(k, k, dtype=torch.float64)),
    )
    return Case("sum(sin x) + x @ A @ y", mixed, (t(x), t(y), t(A)), (0, 1), truth)


def leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [t for sub in tree for t in leaves(sub)]


def check_within_estimate(est: Estimate, truth: Any, like: tuple[Any, ...], case: Case) -> None:
    """Structure, dtype and device as the arguments; |value - truth| <= error (+ slack)."""
    values, errors, truths = leaves(est.value), leaves(est.error), leaves(truth)
    assert len(values) == len(errors) == len(truths), case
    nums = (case.argnums,) if isinstance(case.argnums, int) else case.argnums
    for k, (v, e, t) in enumerate(zip(values, errors, truths, strict=True)):
        src = like[nums[k % len(nums)]]
        assert v.shape == t.shape == e.shape, (k, v.shape, t.shape, e.shape)
        assert v.dtype == e.dtype == src.dtype and v.device == src.device, (k, v.dtype, v.device)
        err = (v.detach().cpu().double() - t).abs()
        bound = e.cpu().double() + TRUTH_SLACK * F64_EPS * (t.abs().max() if t.numel() else 0)
        worst = float((err / bound.clamp_min(1e-300)).max()) if t.numel() else 0.0
        if currently_in_test_context():  # also used by plain (pinned) tests
            note(
                f"block {k}: max err {float(err.max()) if t.numel() else 0:.3g}, ratio {worst:.3g}"
            )
        assert bool((err <= bound).all()), (
            f"{case}: block {k}: true error exceeds the estimate by {worst:.3g}x"
            f" (max true error {float(err.max()):.3g}, max estimate {float(e.max()):.3g})"
        )


def check_complex_step(est: Estimate, case: Case) -> None:
    """The complex step within ``TRUTH_SLACK`` ulps (float64) of the closed form's scale, the
    larger of max|truth| and the magnitude of its terms (``Case.scale``)."""
    for v, t in zip(leaves(est.value), leaves(case.truth), strict=True):
        scale = max(float(t.abs().max()) if t.numel() else 0.0, case.scale)
        err = float((v.cpu() - t).abs().max()) if t.numel() else 0.0
        if currently_in_test_context():
            note(f"max error {err / F64_EPS / max(scale, 1e-300):.2f} ulps of the scale")
        assert err <= TRUTH_SLACK * F64_EPS * scale, (case, err, scale)


def truth_atol(case: Case, dtype: torch.dtype, blocks: list[torch.Tensor]) -> float | None:
    """The atol of a comparison with ``case``'s closed form: None (the default, scaled by the
    truth) unless the case names a larger magnitude of terms (``Case.scale``)."""
    if not case.scale:
        return None
    numel = max(b.numel() for b in blocks)
    top = max((float(b.abs().max()) for b in blocks if b.numel()), default=0.0)
    return tolerance(dtype, numel, max(top, case.scale)).atol
