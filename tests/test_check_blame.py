"""derivs.check names whose rule is wrong: a custom autograd.Function (class and call site) or
a torch operator (its aten name), each checked on the inputs it saw in func's forward."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import derivs
from derivs._check._blame import locate
from derivs.oracles import fd_jacobian

F64 = torch.float64


class SwishBad(torch.autograd.Function):
    """x sigmoid(x) whose backward drops the x s (1 - s) term."""

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class SwishGood(SwishBad):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


class Swish(nn.Module):
    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn.apply(x)


class SinWrongJvp(torch.autograd.Function):
    """sin with a right backward and a jvp of the wrong sign."""

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return -t * torch.cos(x)


class SquareBadBackward(torch.autograd.Function):
    """x**2 with backward g x (should be 2 g x)."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x


class Cube(torch.autograd.Function):
    """x**3 whose backward 3 g x**2 is right but computes x**2 by SquareBadBackward: its
    own derivative (the double backward) is wrong."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * g * SquareBadBackward.apply(x)


class CubeDetached(Cube):
    """x**3 whose backward detaches x: right gradient, zero double backward."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * g * x.detach() ** 2


class OldStyleBad(torch.autograd.Function):
    """The old style (forward takes ctx): exp with backward g (should be g exp(x))."""

    @staticmethod
    def forward(ctx, x):
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        return g


class Float32OnlyBad(SwishBad):
    """SwishBad with a forward that works only in float32 (a kernel would)."""

    @staticmethod
    def forward(x):
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return x * torch.sigmoid(x)


def _sequential(fn: type[torch.autograd.Function], dtype: torch.dtype = F64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), Swish(fn), nn.Linear(6, 1)
    ).to(dtype)


def _line_of(func: object, text: str) -> str:
    """``path:line`` of the first line of ``func``'s source that contains ``text``."""
    lines, start = inspect.getsourcelines(func)  # type: ignore[arg-type]
    offset = next(k for k, line in enumerate(lines) if text in line)
    return f"{inspect.getsourcefile(func)}:{start + offset}"  # type: ignore[arg-type]


def _only(located):
    assert len(located.findings) == 1, (located.findings, located.notes)
    return located.findings[0]


# ----------------------------------------------------------------------------- custom Functions


def test_wrong_backward_in_a_sequential_is_named_with_its_module_path():
    model = _sequential(SwishBad)
    finding = _only(locate(model, (torch.randn(4, dtype=F64),), 0, "vjp"))
    assert (finding.owner, finding.name, finding.rule, finding.module) == (
        "function",
        "SwishBad",
        "vjp",
        "model.3",
    )
    assert str(finding) == "`SwishBad.backward` (called at `model.3`) is wrong"
    assert finding.ratio > 1 and finding.max_abs_error > finding.tolerance
    assert finding.to_dict()["text"] == str(finding)


def test_a_closure_names_the_model_by_its_variable():
    net = _sequential(SwishBad)
    finding = _only(locate(lambda x: net(x).sum(), (torch.randn(4, dtype=F64),), 0, "vjp"))
    assert finding.module == "net.3"


def test_outside_modules_the_call_site_is_file_and_line():
    def energy(x):
        return SwishBad.apply(x).sum()

    finding = _only(locate(energy, (torch.randn(3, dtype=F64),), 0, "vjp"))
    assert finding.module == ""
    path, line = _line_of(energy, "SwishBad.apply").rsplit(":", 1)
    assert finding.line.endswith(f"{path.rsplit('/', 1)[-1]}:{line}")
    assert str(finding) == f"`SwishBad.backward` (called at `{finding.line}`) is wrong"


def test_a_correct_function_next_to_a_wrong_one_is_not_blamed():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 5), Swish(SwishGood), nn.Linear(5, 5), Swish(SwishBad), nn.Linear(5, 1)
    ).double()
    finding = _only(locate(model, (torch.randn(4, dtype=F64),), 0, "vjp"))
    assert (finding.name, finding.module) == ("SwishBad", "model.3")


def test_a_right_backward_is_not_blamed():
    model = _sequential(SwishGood)
    located = locate(model, (torch.randn(4, dtype=F64),), 0, "vjp")
    assert located.findings == []


def test_a_wrong_jvp_is_named_as_jvp_and_its_backward_is_cleared():
    def f(x):
        return SinWrongJvp.apply(x).sum()

    x = torch.randn(3, dtype=F64)
    finding = _only(locate(f, (x,), 0, "jvp"))
    assert (finding.name, finding.rule) == ("SinWrongJvp", "jvp")
    assert str(finding).startswith("`SinWrongJvp.jvp` (called at ")
    assert locate(f, (x,), 0, "vjp").findings == []


@pytest.mark.parametrize("fn", [Cube, CubeDetached], ids=["inner-wrong-backward", "detach"])
def test_a_wrong_double_backward_is_named(fn):
    x = torch.tensor([0.7, -1.3, 2.1], dtype=F64)
    located = locate(lambda x: fn.apply(x).sum(), (x,), 0, "d_vjp")
    named = {(f.name, f.rule) for f in located.findings}
    assert (fn.__name__, "d_vjp_rev") in named, (located.findings, located.notes)
    assert all(name == fn.__name__ for name, _ in named)
    text = str(next(f for f in located.findings if f.rule == "d_vjp_rev"))
    assert text.startswith(f"`{fn.__name__}.backward` (called at ")
    assert "wrong when differentiated (double backward)" in text
    # its first derivative is right: the backward itself is not blamed
    assert locate(lambda x: fn.apply(x).sum(), (x,), 0, "vjp").findings == []


def test_an_old_style_function_is_checked_too():
    x = torch.randn(3, dtype=F64)
    finding = _only(locate(lambda x: OldStyleBad.apply(x).sum(), (x,), 0, "vjp"))
    assert (finding.name, finding.rule) == ("OldStyleBad", "vjp")


def test_a_float32_model_is_checked_in_float64():
    model = _sequential(SwishBad, torch.float32)
    finding = _only(locate(model, (torch.randn(4),), 0, "vjp"))
    assert (finding.name, finding.module) == ("SwishBad", "model.3")
    assert finding.detail == "in float64"


def test_a_float32_only_forward_is_checked_in_float32():
    x = torch.randn(5)
    finding = _only(locate(lambda x: Float32OnlyBad.apply(x).sum(), (x,), 0, "vjp"))
    assert finding.detail == "in float32"
    # the float32 tolerance, derived from its eps and the differences' own error
    assert finding.tolerance > 8 * torch.finfo(torch.float32).eps * 1e-3
    assert finding.ratio > 1


def test_a_large_input_is_checked_along_random_directions():
    x = torch.randn(1000, dtype=F64)
    finding = _only(locate(lambda x: SwishBad.apply(x).sum(), (x,), 0, "vjp"))
    assert "random directions" in finding.detail and "1000 input elements" in finding.detail


def test_other_tags_name_no_one():
    assert locate(_sequential(SwishBad), (torch.randn(4, dtype=F64),), 0, "vmap").findings == []


def test_the_users_exception_propagates_unchanged():
    class Boom(Exception):
        pass

    def f(x):
        raise Boom("mine")

    with pytest.raises(Boom, match="mine"):
        locate(f, (torch.randn(2, dtype=F64),), 0, "vjp")


# ----------------------------------------------------------------------------- torch operators


def _fwd_fwd_error(f, x: torch.Tensor) -> tuple[float, float]:
    """(|jacfwd(jacfwd(f)) - fd of jacrev(f)|, the differences' error estimate), float64."""
    fwd_fwd = torch.func.jacfwd(torch.func.jacfwd(f))(x)
    est = fd_jacobian(torch.func.jacrev(f), (x,))
    return float((fwd_fwd - est.value).detach().abs().max()), float(est.error.max())


def _layer_norm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 3), nn.Softplus()).double()


def _batch_norm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Tanh()
    ).double()


NORMS = [
    pytest.param(_layer_norm_model, (5,), "aten.native_layer_norm", id="layer_norm"),
    pytest.param(_batch_norm_model, (6, 3), "aten.native_batch_norm", id="batch_norm"),
]


@pytest.mark.parametrize(("make", "shape", "op"), NORMS)
def test_torchs_wrong_forward_over_forward_is_named(make, shape, op):
    model = make()
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(1))

    def f(x):
        return model(x).sum()

    error, estimate = _fwd_fwd_error(f, x)
    if error <= 1e3 * estimate:
        pytest.skip(f"this torch's forward-over-forward rule is right here ({error:.2g})")
    finding = _only(locate(f, (x,), 0, "d_jvp_fwd"))
    assert (finding.owner, finding.name, finding.rule, finding.module) == (
        "torch",
        op,
        "d_jvp_fwd",
        "model.0" if op.endswith("layer_norm") else "model.1",
    )
    assert str(finding) == (
        f"torch's forward-over-forward rule of `{op}` (called at `{finding.module}`) is wrong "
        "(not your code; reverse-mode methods are right)"
    )
    # torch's reverse-mode rules are right: nothing to blame there
    assert locate(f, (x,), 0, "d_vjp_rev").findings == []


def test_a_custom_function_explains_it_before_torch_is_suspected():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(4), Swish(SwishBad), nn.Linear(4, 1)).double()
    finding = _only(locate(model, (torch.randn(4, dtype=F64),), 0, "vjp"))
    assert (finding.owner, finding.name) == ("function", "SwishBad")


def test_a_kink_at_the_recorded_input_is_not_blamed_on_torch():
    x = torch.tensor([-1.0, 0.5, -0.3, 2.0], dtype=F64)

    def f(x):
        return F.relu(F.relu(x) * 1.5).sum()  # the outer relu sees exact zeros

    assert locate(f, (x,), 0, "vjp").findings == []


# ----------------------------------------------------------------------------- derivs.check


def test_check_names_the_function_in_its_report():
    model = _sequential(SwishBad)
    report = derivs.check(model, torch.randn(4, dtype=F64), order=1, raise_exception=False)
    assert not report.passed
    assert "`SwishBad.backward` (called at `model.3`) is wrong" in str(report)
    found = report.to_dict()["findings"]
    assert [(f["name"], f["rule"], f["module"]) for f in found] == [("SwishBad", "vjp", "model.3")]


def test_check_names_torchs_operator_in_its_report():
    model = _layer_norm_model()
    x = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(1))

    def f(x):
        return model(x).sum()

    error, estimate = _fwd_fwd_error(f, x)
    if error <= 1e3 * estimate:
        pytest.skip(f"this torch's forward-over-forward rule is right here ({error:.2g})")
    report = derivs.check(f, x, raise_exception=False)
    assert "of `aten.native_layer_norm` (called at `model.0`)" in str(report)
    assert "(not your code; reverse-mode methods are right)" in report.verdict
    found = {(f["owner"], f["name"], f["rule"]) for f in report.to_dict()["findings"]}
    assert ("torch", "aten.native_layer_norm", "d_jvp_fwd") in found
    assert {name for _, name, _ in found} == {"aten.native_layer_norm"}
