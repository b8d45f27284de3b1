"""The benchmark problems (``bench/``): closed forms against AD, one definition across arrays.

Every benchmark checks derivs against these closed forms before timing it, so each is checked
here against torch.func in float64. The sparse problems are written once over an array
namespace: their torch evaluation must equal the numpy reference (the JAX anchor checks its
own against the same reference before it times anything), and the true patterns the detection
benchmark compares with must be the nonzeros of the dense derivative at a random point.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import derivs
from bench import problems as bp
from bench import sparse_problems as sp

F64 = torch.float64


def _predict_args(batch: int | None = None) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(F64) for t in bp.predict_inputs(5, 7, "cpu", batch=batch, seed=3))


def test_predict_closed_forms_match_torch_func() -> None:
    args = _predict_args()
    derivs.testing.assert_close(
        bp.predict_jacobian(*args), torch.func.jacrev(bp.predict, argnums=2)(*args)
    )
    derivs.testing.assert_close(
        bp.predict_hessian(*args), torch.func.hessian(bp.predict, argnums=2)(*args)
    )


def _ad_predict_hvp(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """torch.func's ``jvp(grad)`` of ``predict(weight, bias, x).sum()`` in ``x``."""
    grad = torch.func.grad(lambda x: bp.predict(weight, bias, x).sum())
    hvp: torch.Tensor = torch.func.jvp(grad, (x,), (v,))[1]
    return hvp


def _tangent(x: torch.Tensor) -> torch.Tensor:
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=F64)


def test_predict_hvp_is_the_contracted_hessian_and_torch_funcs() -> None:
    weight, bias, x = _predict_args()
    v = _tangent(x)
    hvp = bp.predict_hvp(weight, bias, x, v)
    contracted = torch.einsum("ijk,k->j", bp.predict_hessian(weight, bias, x), v)
    derivs.testing.assert_close(hvp, contracted, context="the contracted closed-form Hessian")
    derivs.testing.assert_close(hvp, _ad_predict_hvp(weight, bias, x, v), context="jvp(grad)")


def test_predict_hvp_with_a_batch_dimension() -> None:
    weight, bias, x = _predict_args(batch=4)
    v = _tangent(x)
    per_sample = torch.func.vmap(_ad_predict_hvp, (None, None, 0, 0))(weight, bias, x, v)
    derivs.testing.assert_close(bp.predict_hvp(weight, bias, x, v), per_sample)


def test_sin_sum_products_are_what_derivs_returns() -> None:
    x, v = (t.to(F64) for t in bp.vector_inputs(40, "cpu", seed=1))
    expected = bp.sin_sum_products(x, v)
    derivs.testing.assert_close(derivs.hvp(bp.sin_sum, (x,), (v,)), expected, context="hvp")
    derivs.testing.assert_close(derivs.vhp(bp.sin_sum, (x,), (v,)), expected, context="vhp")


def test_predict_jacobian_with_a_batch_dimension() -> None:
    args = _predict_args(batch=4)
    per_sample = torch.func.vmap(torch.func.jacrev(bp.predict, argnums=2), (None, None, 0))
    derivs.testing.assert_close(bp.predict_jacobian(*args), per_sample(*args))


@pytest.mark.parametrize("name", list(bp.SCALAR))
def test_scalar_hvp_closed_forms(name: str) -> None:
    problem = bp.SCALAR[name]
    x, v = (t.to(F64) for t in bp.vector_inputs(40, "cpu", seed=1))
    expected = torch.func.jvp(torch.func.grad(problem.func), (x,), (v,))[1]
    derivs.testing.assert_close(problem.hvp(x, v), expected, context=name)


@pytest.mark.parametrize(
    ("closed", "func", "transform"),
    [
        (bp.stencil_jacobian, bp.stencil, torch.func.jacfwd),
        (bp.rosenbrock_hessian, bp.rosenbrock, torch.func.hessian),
    ],
    ids=["stencil", "rosenbrock"],
)
def test_sparse_closed_forms(
    closed: Callable[[torch.Tensor], torch.Tensor],
    func: Callable[[torch.Tensor], torch.Tensor],
    transform: Callable[..., Callable[[torch.Tensor], torch.Tensor]],
) -> None:
    x = bp.point(50)
    derivs.testing.assert_close(closed(x), transform(func)(x))


@pytest.mark.parametrize("name", list(sp.problems(sp.numpy_ops())))
def test_torch_evaluates_the_numpy_reference(name: str) -> None:
    """One definition: torch's evaluation of each sparse problem is numpy's, at its point."""
    mine, reference = bp.sparse()[name], sp.problems(sp.numpy_ops())[name]
    assert mine.hessian == reference.hessian
    derivs.testing.assert_close(mine.x, torch.from_numpy(reference.x), context=f"{name} point")
    derivs.testing.assert_close(
        mine.func(mine.x), torch.as_tensor(reference.func(reference.x)), context=name
    )


def test_the_problems_are_the_published_ones() -> None:
    """Sizes and parameters the figures in docs/bench state."""
    problems = bp.sparse()
    assert problems["brusselator"].x.shape == (2, 32, 32) and sp.ALPHA == 10.0
    assert problems["stencil"].x.shape == problems["rosenbrock"].x.shape == (10**4,)
    assert problems["conv"].x.shape == (1, 28, 28)
    assert problems["rosenbrock"].hessian and not problems["conv"].hessian


@pytest.mark.parametrize(("name", "shape"), [("brusselator", (2, 32, 32)), ("conv", (1, 28, 28))])
def test_true_patterns_are_the_dense_nonzeros(name: str, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.1
    func = bp.sparse()[name].func
    dense = torch.func.jacfwd(func)(x).reshape(func(x).numel(), x.numel())
    rows, cols = dense.nonzero(as_tuple=True)
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == sp.pattern(name)


def test_pattern_of_an_unknown_problem() -> None:
    with pytest.raises(ValueError, match="pattern: no problem named 'nope'"):
        sp.pattern("nope")
