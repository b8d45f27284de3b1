"""Every example of the tutorial (shared/seed), run through derivs and checked.

The tutorial is PyTorch's "Jacobians, Hessians, hvp, vhp, and more: composing function
transforms". Each test follows one section, with the tutorial's sizes and its random draws
in the same order after ``torch.manual_seed(0)``; results are checked against closed forms
for ``predict(weight, bias, x) = tanh(weight @ x + bias)``:

* ``d y / d x = (1 - y**2)[:, None] * W``
* ``d y_i / d W_jk = (1 - y_i**2) [i == j] x_k``,  ``d y_i / d b_j = (1 - y_i**2) [i == j]``
* ``d^2 y_i / d x d x = -2 y_i (1 - y_i**2) W_i W_i^T``
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

import derivs
from bench.problems import predict
from bench.problems import predict_hessian as closed_form_hessian
from bench.problems import predict_jacobian as closed_form_jacobian
from derivs.testing import assert_close

JAC_METHODS = derivs.METHODS["jacobian"]
HESS_METHODS = derivs.METHODS["hessian"]

# The first Jacobian row the tutorial prints, with torch.manual_seed(0) and D = 16.
# fmt: off
TUTORIAL_FIRST_ROW = [
    -0.5956, -0.6096, -0.1326, -0.2295, 0.4490, 0.3661, -0.1672, -1.1190,
    0.1705, -0.6683, 0.1851, 0.1630, 0.0634, 0.6547, 0.5908, -0.1308,
]
# fmt: on


@pytest.fixture
def square() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tutorial's first draws: D = 16, straight after torch.manual_seed(0)."""
    torch.manual_seed(0)
    D = 16
    weight = torch.randn(D, D)
    bias = torch.randn(D)
    x = torch.randn(D)
    return weight, bias, x


def test_first_row_is_the_tutorials(square: tuple[torch.Tensor, ...]) -> None:
    """Each jacobian method prints the tutorial's first row (4 decimals) and the closed form."""
    weight, bias, x = square
    expected = closed_form_jacobian(weight, bias, x)
    for method in JAC_METHODS:
        jac = derivs.jacobian(predict, argnums=2, method=method)(weight, bias, x)
        assert jac.shape == (16, 16)
        assert [round(v, 4) for v in jac[0].tolist()] == TUTORIAL_FIRST_ROW, method
        assert_close(jac, expected, context=f"jacobian(predict, argnums=2, method={method!r})")


def test_naive_loop_and_vmap_vjp_as_written(square: tuple[torch.Tensor, ...]) -> None:
    """The tutorial's own compute_jac loop and vmap(vjp_fn)(unit_vectors) equal derivs."""
    weight, bias, x = square
    xp = x.clone().requires_grad_()
    unit_vectors = torch.eye(16)
    rows = [torch.autograd.grad(predict(weight, bias, xp), xp, v)[0] for v in unit_vectors]
    naive = torch.stack(rows)
    _, vjp_fn = torch.func.vjp(partial(predict, weight, bias), x)
    (ft_jacobian,) = torch.func.vmap(vjp_fn)(unit_vectors)
    assert_close(
        derivs.jacobian(predict, argnums=2, method="loop")(weight, bias, x), naive, context="loop"
    )
    assert_close(
        derivs.jacobian(predict, argnums=2, method="vjp_vmap")(weight, bias, x),
        ft_jacobian,
        context="vjp_vmap",
    )
    assert_close(
        derivs.jacobian(predict, argnums=2, method="rev")(weight, bias, x),
        torch.func.jacrev(predict, argnums=2)(weight, bias, x),
        context="rev",
    )


def test_parameters_jacobian_argnums_0_1(square: tuple[torch.Tensor, ...]) -> None:
    weight, bias, x = square
    y = predict(weight, bias, x)
    d = 1 - y**2
    eye = torch.eye(16)
    expected_w = d[:, None, None] * eye[:, :, None] * x[None, None, :]
    expected_b = d[:, None] * eye
    for method in JAC_METHODS:
        jw, jb = derivs.jacobian(predict, argnums=(0, 1), method=method)(weight, bias, x)
        assert jw.shape == (16, 16, 16) and jb.shape == (16, 16)
        assert_close(
            (jw, jb),
            (expected_w, expected_b),
            context=f"jacobian(argnums=(0, 1), method={method!r})",
        )


@pytest.mark.parametrize(("din", "dout"), [(32, 2048), (2048, 32)], ids=["tall", "wide"])
def test_tall_and_wide_fwd_equals_rev(din: int, dout: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(dout, din)
    bias = torch.randn(dout)
    x = torch.randn(din)
    fwd = derivs.jacobian(predict, argnums=2, method="fwd")(weight, bias, x)
    rev = derivs.jacobian(predict, argnums=2, method="rev")(weight, bias, x)
    auto = derivs.jacobian(predict, argnums=2)(weight, bias, x)
    assert fwd.shape == (dout, din)
    assert_close(fwd, rev, context=f"fwd vs rev, {din} -> {dout}")
    assert_close(auto, rev, context=f"auto vs rev, {din} -> {dout}")
    assert_close(
        fwd, closed_form_jacobian(weight, bias, x), context=f"fwd vs closed form, {din} -> {dout}"
    )


def test_hessian_three_ways() -> None:
    """hessian(predict) == jacfwd(jacfwd) == jacrev(jacrev): a (32, 512, 512) vector Hessian."""
    torch.manual_seed(0)
    weight = torch.randn(32, 512)
    bias = torch.randn(32)
    x = torch.randn(512)
    expected = closed_form_hessian(weight, bias, x)
    api = derivs.hessian(predict, argnums=2)(weight, bias, x)
    assert api.shape == (32, 512, 512)
    assert_close(api, expected, context="hessian(predict, argnums=2)")
    for method in ("fwd_fwd", "rev_rev"):
        h = derivs.hessian(predict, argnums=2, method=method)(weight, bias, x)
        assert_close(h, api, context=f"hessian(method={method!r}) vs hessian(method='auto')")


def test_hessian_every_method_small() -> None:
    """The remaining methods, loop included, on a 5 -> 3 predict (the suite covers more)."""
    torch.manual_seed(0)
    weight, bias, x = torch.randn(3, 5), torch.randn(3), torch.randn(5)
    for method in HESS_METHODS:
        h = derivs.hessian(predict, argnums=2, method=method)(weight, bias, x)
        assert_close(h, closed_form_hessian(weight, bias, x), context=f"hessian(method={method!r})")


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    weight = torch.randn(33, 31)
    bias = torch.randn(33)
    x = torch.randn(64, 31)
    return weight, bias, x


def test_batch_jacobian_vmap_and_sum_trick(batch: tuple[torch.Tensor, ...]) -> None:
    weight, bias, x = batch
    expected = closed_form_jacobian(weight, bias, x)
    assert expected.shape == (64, 33, 31)
    by = {}
    for method in derivs.METHODS["batch_jacobian"]:
        by[method] = derivs.batch_jacobian(
            predict, argnums=2, in_dims=(None, None, 0), method=method
        )(weight, bias, x)
        assert_close(by[method], expected, context=f"batch_jacobian(method={method!r})")
    # The tutorial's spelling of the sum trick, verbatim.
    summed = torch.func.jacrev(lambda w, b, x: predict(w, b, x).sum(0), argnums=2)(
        weight, bias, x
    ).movedim(1, 0)
    assert_close(by["sum"], summed, context="sum trick vs the tutorial's jacrev(...).movedim(1, 0)")


def test_batch_hessian_shape_and_values(batch: tuple[torch.Tensor, ...]) -> None:
    weight, bias, x = batch
    expected = closed_form_hessian(weight, bias, x)
    for method in derivs.METHODS["batch_jacobian"]:
        h = derivs.batch_hessian(predict, argnums=2, in_dims=(None, None, 0), method=method)(
            weight, bias, x
        )
        assert h.shape == (64, 33, 31, 31)
        assert_close(h, expected, context=f"batch_hessian(method={method!r})")


def test_hvp_fwd_rev_and_rev_rev() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin().sum()

    torch.manual_seed(0)
    x = torch.randn(2048)
    tangent = torch.randn(2048)
    expected = -x.sin() * tangent  # H = diag(-sin x)
    for method in derivs.METHODS["hvp"]:
        if method == "dense":
            continue  # a 2048 x 2048 Hessian: fine, but the point of hvp is not to form it
        (result,) = derivs.hvp(f, (x,), (tangent,), method=method)
        assert_close(result, expected, context=f"hvp(method={method!r})")
    (vhp,) = derivs.vhp(f, (x,), (tangent,))
    assert_close(vhp, expected, context="vhp(method='rev_rev')")
    # The tutorial's own definitions, verbatim.
    tutorial_hvp = torch.func.jvp(torch.func.grad(f), (x,), (tangent,))[1]
    _, vjp_fn = torch.func.vjp(torch.func.grad(f), x)
    assert_close(
        derivs.hvp(f, (x,), (tangent,))[0], tutorial_hvp, context="hvp vs tutorial's jvp(grad(f))"
    )
    assert_close(
        derivs.hvp(f, (x,), (tangent,), method="rev_rev")[0],
        vjp_fn(tangent)[0],
        context="hvp(rev_rev) vs tutorial's hvp_revrev",
    )
