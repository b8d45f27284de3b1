"""derivs.check and the oracles on float32/bfloat16/float16 code, and check(reference=).

The oracles evaluate a function whose closed-over tensors are of lower precision by raising
the whole computation to float64 (derivs/oracles/_promote.py); the methods keep the
function's own dtype. ``reference=`` compares a low-precision kernel with a plain-PyTorch
reference by the rule of flash-attention's tests (|d - d_ref64| <= k |d_ref_low - d_ref64|).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import derivs
from derivs import oracles

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_F = nn.functional


def _seeded(build):
    torch.manual_seed(0)
    return build()


def _attention():
    d = 4
    q, k, v = (torch.randn(d, d) for _ in range(3))  # float32, closed over

    def attention(x):
        return torch.softmax((x @ q) @ (x @ k).T / math.sqrt(d), -1) @ (x @ v)

    return attention, torch.randn(3, d)


MODELS = {
    "mlp": lambda: (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)), torch.randn(4)),
    "conv1d_gelu": lambda: (nn.Sequential(nn.Conv1d(2, 3, 3), nn.GELU()), torch.randn(2, 6)),
    "layernorm": lambda: (
        nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 3), nn.Softplus()),
        torch.randn(2, 4),
    ),
    "attention": _attention,
    "gru_cell": lambda: (nn.GRUCell(3, 4), torch.randn(2, 3)),
    "bf16_linear_tanh": lambda: (
        nn.Sequential(nn.Linear(4, 3), nn.Tanh()).to(torch.bfloat16),
        torch.randn(4, dtype=torch.bfloat16),
    ),
    "f16_linear_tanh": lambda: (
        nn.Sequential(nn.Linear(4, 3), nn.Tanh()).to(torch.float16),
        torch.randn(4, dtype=torch.float16),
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_low_precision_models_pass_first_order(name: str) -> None:
    model, x = _seeded(MODELS[name])
    report = derivs.check(model, x, order=1, raise_exception=False)
    assert report.passed, str(report)
    fd_rows = [r for r in report.rows if r.reference in ("fd", "cs")]
    assert fd_rows and all(r.status == "pass" for r in fd_rows), str(report)
    assert any(n.startswith("fd, cs: func raised to float64") for n in report.notes), report.notes


@pytest.mark.parametrize("name", ["mlp", "attention", "bf16_linear_tanh", "f16_linear_tanh"])
def test_low_precision_models_pass_second_order(name: str) -> None:
    model, x = _seeded(MODELS[name])
    report = derivs.check(model, x, order=2, raise_exception=False)
    assert report.passed, str(report)
    assert any(r.reference.startswith("fd(grad)") and r.status == "pass" for r in report.rows)


def test_evaluation_names_what_was_raised() -> None:
    model, x = _seeded(MODELS["mlp"])
    ev = oracles.evaluation(model, (x,))
    assert ev.dtype == torch.float64
    assert ev.arguments == ("float32 (4,)",)
    assert ev.promoted == ("float32 (8, 4)", "float32 (8,)", "float32 (3, 8)", "float32 (3,)")
    assert ev.kept == () and ev.mutated == ()
    assert ev.summary().startswith("func raised to float64 (its float32 arguments cast; 4 tensors")
    # a float64 function of float64 tensors: nothing to say
    assert oracles.evaluation(torch.sin, (torch.ones(2, dtype=torch.float64),)).summary() == ""


def _closed_form_mlp_jacobian(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    w1, b1 = model[0].weight.double(), model[0].bias.double()
    w2 = model[2].weight.double()
    h = torch.tanh(w1 @ x.double() + b1)
    return w2 @ torch.diag(1 - h**2) @ w1


@pytest.mark.parametrize("scheme", oracles.SCHEMES)
def test_fd_jacobian_of_a_float32_module_matches_the_float64_closed_form(scheme: str) -> None:
    model, x = _seeded(MODELS["mlp"])
    est = oracles.fd_jacobian(model, (x,), scheme=scheme, compute_dtype=torch.float64)
    exact = _closed_form_mlp_jacobian(model, x)
    # the result is returned in x's dtype (float32), its error including that cast
    assert est.value.dtype == torch.float32
    assert bool(((est.value.double() - exact).abs() <= est.error.double()).all())


def test_fd_hessian_of_a_float32_module_matches_the_float64_closed_form() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)

    def energy(x):
        return torch.tanh(lin(x)).sum()

    x = torch.randn(3)
    est = oracles.fd_hessian(energy, (x,))
    w, b = lin.weight.double()[0], lin.bias.double()[0]
    t = torch.tanh(w @ x.double() + b)
    exact = -2 * t * (1 - t**2) * torch.outer(w, w)
    assert bool(((est.value.double() - exact).abs() <= est.error.double()).all())


def test_the_oracles_leave_the_users_tensors_alone() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3).train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(5, 3)
    est = oracles.fd_jacobian(bn, (x,), scheme="central")
    assert torch.isfinite(est.value).all()
    for k, v in bn.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    ev = oracles.evaluation(bn, (x,))
    # running stats updated on the promoted copies, the counter by an undone add_
    assert "int64 () by torch.Tensor.add_" in ev.mutated
    assert any(m.endswith("its copy") for m in ev.mutated)
    assert "modifies tensors it did not create" in ev.summary()


def test_explicit_casts_are_kept_and_measured() -> None:
    w = torch.randn(3, dtype=torch.float64)

    def func(x):
        return (x.float() * 3).double() * w  # a float32 step on purpose

    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    ev = oracles.evaluation(func, (x,))
    assert ev.kept == ("torch.Tensor.float",)
    est = oracles.fd_jacobian(func, (x,), scheme="central")
    exact = torch.diag(3 * w)
    assert bool(((est.value - exact).abs() <= est.error).all())
    # the estimate accounts for float32 rounding: it is far above float64's
    assert float(est.error.max()) > 1e3 * torch.finfo(torch.float64).eps


def test_integer_tensors_are_never_promoted() -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(5, 3)
    idx = torch.tensor([0, 3, 3])

    def func(x):
        return (emb(idx) * x).sum(-1)

    x = torch.randn(3)
    ev = oracles.evaluation(func, (x,))
    assert ev.promoted == ("float32 (5, 3)",)
    assert derivs.check(func, x, order=1, raise_exception=False).passed


class _Scale(torch.autograd.Function):
    """x * c with a float32 constant made inside forward, and a backward off by ``factor``."""

    factor = 1.0

    @staticmethod
    def forward(x):
        return x * torch.tensor([1.5, -2.0, 0.5])

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * torch.tensor([1.5, -2.0, 0.5]) * _Scale.factor


def test_a_custom_function_in_a_float32_model_passes_and_a_planted_wrong_backward_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)

    def model(x):
        return torch.tanh(_Scale.apply(lin(x)))

    x = torch.randn(3)
    assert derivs.check(model, x, order=1, methods="rev", raise_exception=False).passed
    monkeypatch.setattr(_Scale, "factor", 1.1)
    report = derivs.check(model, x, order=1, methods="rev", raise_exception=False)
    assert not report.passed
    assert "backward (vjp)" in report.verdict, report.verdict


# ----------------------------------------------------------------------------- reference=


def _fused_gelu(wrong: float):
    """A 'fused' tanh-gelu kernel: its own forward and backward, in the input's dtype."""
    c = math.sqrt(2 / math.pi)

    class FusedGelu(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * x**3)))

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            t = torch.tanh(c * (x + 0.044715 * x**3))
            d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x**2)
            return g * d * wrong

    return FusedGelu.apply


def _gelu_reference(x):
    return _F.gelu(x, approximate="tanh")


def test_reference_accepts_a_correct_bf16_kernel() -> None:
    x = _seeded(lambda: torch.randn(16, dtype=torch.bfloat16))
    report = derivs.check(
        _fused_gelu(1.0), x, reference=_gelu_reference, order=1, raise_exception=False
    )
    assert report.passed, str(report)
    ref_rows = [r for r in report.rows if r.reference == "ref"]
    assert ref_rows and all(r.status == "pass" for r in ref_rows)
    note = next(n for n in report.notes if n.startswith("reference:"))
    assert "2 x (reference's own bfloat16 error" in note
    assert note in report.to_dict()["notes"]
    assert next(r for r in report.to_dict()["rows"] if r["reference"] == "ref")["tolerance"] > 0


def test_reference_rejects_a_bf16_backward_wrong_by_a_margin() -> None:
    # bfloat16's eps is 2**-7 = 0.8%: a backward 3% off is a bug, not rounding
    x = _seeded(lambda: torch.randn(16, dtype=torch.bfloat16))
    report = derivs.check(
        _fused_gelu(1.03), x, reference=_gelu_reference, order=1, raise_exception=False
    )
    assert not report.passed
    assert report.verdict == "the backward (vjp) of this function is wrong", report.verdict


def _softmax_fused(x):
    """softmax as a kernel would write it: exp of the shifted input, one division."""
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def test_reference_mode_on_a_bf16_softmax_against_a_float32_reference() -> None:
    x = _seeded(lambda: torch.randn(2, 5, dtype=torch.bfloat16))
    w = torch.linspace(0.5, 1.5, 5)  # float32: the reference is plain float32 PyTorch

    def reference(z):
        return torch.softmax(z * w, -1)

    def kernel(z):
        return _softmax_fused(z * w.to(z.dtype))

    report = derivs.check(kernel, x, reference=reference, order=1, raise_exception=False)
    assert report.passed, str(report)


def test_reference_k_scales_the_tolerance() -> None:
    x = _seeded(lambda: torch.randn(16, dtype=torch.bfloat16))
    kernel = _fused_gelu(1.0)
    tight = derivs.check(kernel, x, reference=_gelu_reference, order=1, raise_exception=False)
    loose = derivs.check(
        kernel, x, reference=_gelu_reference, reference_k=3, order=1, raise_exception=False
    )

    def tol(report):
        return next(r.tolerance for r in report.rows if r.reference == "ref")

    assert tol(loose) == pytest.approx(1.5 * tol(tight))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"reference": 3}, TypeError, "derivs.check: reference must be None or a callable"),
        ({"reference": torch.sin, "reference_k": 0.5}, ValueError, "reference_k=0.5"),
        ({"reference": torch.sin, "reference_k": "2"}, TypeError, "reference_k must be"),
        (
            {"reference": lambda x: x.sum()},
            ValueError,
            r"derivs.check: reference returned shape \(\) at args, but func returned \(3,\)",
        ),
        (
            {"reference": lambda x: x > 0},
            ValueError,
            "derivs.check: reference must return a real floating-point tensor",
        ),
        (
            {"reference": torch.sin, "mode": "projected"},
            ValueError,
            "reference= compares dense derivatives",
        ),
    ],
    ids=["not-callable", "k-below-1", "k-not-a-number", "wrong-shape", "not-float", "projected"],
)
def test_reference_is_validated(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        derivs.check(torch.sin, torch.ones(3, dtype=torch.bfloat16), order=1, **kwargs)


def test_an_exception_of_the_reference_propagates() -> None:
    def reference(x):
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        derivs.check(torch.sin, torch.ones(3), reference=reference, order=1)
