"""Curvature of a model's loss over its parameters: derivs, curvlinops and BackPACK.

Each curvature adapter (``derivs.conformance._curvature``) is checked on drawn models
(``derivs.strategies.model_problems``) against references built from derivs' operators on
the parameter dict: the Hessian (``derivs.hessian``), the GGN ``J^T H_loss J``
(``derivs.jacobian`` of the outputs, ``derivs.hessian`` of the loss), per-sample gradients
(``derivs.batch_jacobian``). Properties of ``hvp`` and ``ggn``: the operator applied to every
unit vector is the dense reference; it is symmetric and linear; the pieces of the single
samples sum to the batch's. Per-sample gradients match and sum to the batch gradient;
the diagonals match the references' diagonals. The references themselves are checked
first (against torch.func, and GGN = Hessian where the model is linear and the loss MSE).

An adapter whose library is not installed is skipped with a reason naming the package;
``tox -e curvature-curvlinops`` and ``tox -e curvature-backpack`` install and run them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import derivs
import derivs.strategies as ds
from derivs.conformance._curvature import (
    CURVATURE_ADAPTERS,
    basis,
    flatten,
    flatten_matrix,
    load_curvature,
    reference_ggn,
    reference_hessian,
    reference_per_sample_gradients,
)
from derivs.testing import assert_close, tolerance

pytestmark = pytest.mark.derivs_only("curvature adapters over a model's parameters")

REFERENCES: dict[str, Callable[[Any], torch.Tensor]] = {
    "hvp": reference_hessian,
    "ggn": reference_ggn,
}
DIAGONALS = {"diag_ggn": reference_ggn, "diag_hessian": reference_hessian}
INSTALL = "pip install torch==2.13.0 curvlinops-for-pytorch backpack-for-pytorch"


@functools.cache
def _load(name: str) -> Any:
    return load_curvature(name)


@pytest.fixture(scope="module", params=list(CURVATURE_ADAPTERS))
def curvature(request: pytest.FixtureRequest) -> Any:
    """Each curvature adapter; skipped, naming the package, where its library is missing."""
    package = CURVATURE_ADAPTERS[request.param][1]
    if package is not None:
        pytest.importorskip(package, reason=f"{package} is not installed ({INSTALL})")
    return _load(request.param)


def _problem(data: st.DataObject, adapter: Any, op: str) -> Any:
    """A model the adapter declares ``op`` for (skipped if it declares no ``op``)."""
    if op not in adapter.operators:
        pytest.skip(f"{adapter.name} declares no {op}")
    return data.draw(ds.model_problems(**adapter.operators[op]), label="problem")


def _dense(adapter: Any, op: str, problem: Any) -> torch.Tensor:
    """The adapter's operator applied to every unit vector: its dense ``P x P`` matrix."""
    columns = getattr(adapter, op)(problem, basis(problem.params()))
    return flatten(columns, lead=1).T


def _vectors(data: st.DataObject, problem: Any, k: int) -> dict[str, torch.Tensor]:
    """``k`` vectors of the parameter space (a dict with leading dim ``k``), from a drawn seed."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="vector seed"))
    return {
        name: torch.randn((k, *p.shape), generator=gen, dtype=p.dtype)
        for name, p in problem.params().items()
    }


def _assert_sum_close(
    actual: torch.Tensor, expected: torch.Tensor, *, scale: float, context: str
) -> None:
    """``assert_close`` where ``expected`` is a sum or combination of terms: the absolute
    tolerance scales with the terms' magnitude (``scale``), which cancellation can leave far
    above the result's own."""
    tol = tolerance(expected.dtype, expected.numel(), scale=scale)
    assert_close(actual, expected, rtol=tol.rtol, atol=tol.atol, context=context)


# --- the strategy -----------------------------------------------------------------------------


@given(ds.model_problems())
def test_sample_terms_sum_to_the_loss_and_leave_the_model_alone(problem: Any) -> None:
    before = {k: p.detach().clone() for k, p in problem.model.named_parameters()}
    params = problem.params()
    terms = [problem.sample(n).loss(params) for n in range(problem.batch_size)]
    direct = [
        problem.sample_loss(params, problem.X[n], problem.y[n]) for n in range(problem.batch_size)
    ]
    loss = problem.loss(params)
    _assert_sum_close(
        torch.stack(terms).sum(),
        loss,
        scale=sum(abs(t.item()) for t in terms),
        context=repr(problem),
    )
    assert_close(torch.stack(direct), torch.stack(terms), context=repr(problem))
    assert not problem.model.training
    assert_close(dict(problem.model.named_parameters()), before, rtol=0, atol=0)


@given(ds.model_problems(layers=(), activations=("tanh",), losses=("cross_entropy",)))
def test_no_layers_draws_one_linear_layer(problem: Any) -> None:
    assert [type(m) for m in problem.model] == [torch.nn.Linear]
    assert repr(problem).startswith("ModelProblem(Linear(")
    assert "CrossEntropyLoss" in repr(problem)


@given(data=st.data())
def test_drawing_a_model_leaves_the_global_generator_alone(data: st.DataObject) -> None:
    state = torch.random.get_rng_state()
    data.draw(ds.model_problems())
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ("dense",)}, r"layers has unknown kinds \['dense'\]"),
        ({"activations": ()}, "activations is empty"),
        ({"losses": ("hinge",)}, r"losses has unknown kinds \['hinge'\]"),
        ({"dtype": torch.int64}, "must be a floating-point dtype"),
        ({"max_batch": 0}, "max_batch=0 must be at least 1"),
    ],
)
def test_bad_model_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ds.model_problems(**kwargs)


# --- the references ---------------------------------------------------------------------------


# NOTE: no LayerNorm: torch.func.hessian is wrong there (tests/test_upstream_models.py).
@given(ds.model_problems(layers=("linear", "conv", "batchnorm", "residual")))
def test_reference_hessian_matches_torch_func(problem: Any) -> None:
    params = problem.params()
    expected = flatten_matrix(torch.func.hessian(problem.loss)(params), params)
    assert_close(reference_hessian(problem), expected, context=f"[{problem}]")


@given(ds.model_problems(layers=(), losses=("mse",)))
def test_reference_ggn_is_the_hessian_of_a_linear_model_under_mse(problem: Any) -> None:
    """A linear model under MSE: the outputs are linear in the parameters, so ``G = H``."""
    assert_close(reference_ggn(problem), reference_hessian(problem), context=f"[{problem}]")


@given(ds.model_problems())
def test_reference_ggn_is_positive_semidefinite(problem: Any) -> None:
    """MSE and cross-entropy are convex in the outputs: ``J^T H_loss J`` has no negative
    eigenvalue beyond rounding (eps times the norm, times the dimension)."""
    ggn = reference_ggn(problem)
    assert_close(ggn, ggn.T, context=f"[{problem}: symmetry]")
    smallest = torch.linalg.eigvalsh(ggn).min().item()
    bound = torch.finfo(ggn.dtype).eps * ggn.shape[0] * torch.linalg.matrix_norm(ggn, 2).item()
    assert smallest >= -bound, f"[{problem}] GGN eigenvalue {smallest:.3g} < -{bound:.3g}"


# --- Hessian and GGN products -----------------------------------------------------------------


@pytest.mark.parametrize("op", list(REFERENCES))
@given(data=st.data())
def test_matrix_matches_the_reference(curvature: Any, op: str, data: st.DataObject) -> None:
    problem = _problem(data, curvature, op)
    assert_close(
        _dense(curvature, op, problem),
        REFERENCES[op](problem),
        context=f"[{curvature.name} {op} @ eye: {problem}]",
    )


@pytest.mark.parametrize("op", list(REFERENCES))
@given(data=st.data())
def test_products_are_symmetric(curvature: Any, op: str, data: st.DataObject) -> None:
    """``u . (M v) == v . (M u)``, within the error of the products themselves (each entry
    within ``assert_close``'s tolerance of its exact value, weighted by ``|u|``, ``|v|``) and
    of the two dot products (``P eps`` per term)."""
    problem = _problem(data, curvature, op)
    V = _vectors(data, problem, 2)
    MV = flatten(getattr(curvature, op)(problem, V), lead=1)
    u, v = flatten(V, lead=1)
    uMv, vMu = u @ MV[1], v @ MV[0]
    n, eps = u.numel(), torch.finfo(u.dtype).eps

    def product_error(w: torch.Tensor, Mw: torch.Tensor) -> torch.Tensor:
        atol = tolerance(Mw.dtype, n, scale=Mw.abs().max().item()).atol
        return w.abs().sum() * atol + n * eps * (w * Mw).abs().sum()

    # NOTE: the first version bounded the dot products' rounding alone and failed curvlinops'
    # GGN at 120 eps relative (a false alarm: the products carry rounding of their own).
    bound = product_error(u, MV[1]) + product_error(v, MV[0])
    assert (uMv - vMu).abs() <= bound, (
        f"[{curvature.name} {op}: {problem}] u.(M v) = {uMv.item():.17g} but "
        f"v.(M u) = {vMu.item():.17g}, |diff| > {bound.item():.3g}"
    )


@pytest.mark.parametrize("op", list(REFERENCES))
@given(data=st.data(), a=st.floats(-2, 2), b=st.floats(-2, 2))
def test_products_are_linear(
    curvature: Any, op: str, data: st.DataObject, a: float, b: float
) -> None:
    problem = _problem(data, curvature, op)
    V = _vectors(data, problem, 2)
    combined = {k: (a * v[0] + b * v[1])[None] for k, v in V.items()}
    apply = getattr(curvature, op)
    MV, Mc = flatten(apply(problem, V), lead=1), flatten(apply(problem, combined), lead=1)[0]
    _assert_sum_close(
        Mc,
        a * MV[0] + b * MV[1],
        scale=(abs(a) * MV[0].abs() + abs(b) * MV[1].abs()).max().item(),
        context=f"[{curvature.name} {op}(a u + b v), a={a}, b={b}: {problem}]",
    )


@pytest.mark.parametrize("op", list(REFERENCES))
@given(data=st.data())
def test_sample_pieces_sum_to_the_batch(curvature: Any, op: str, data: st.DataObject) -> None:
    problem = _problem(data, curvature, op)
    pieces = [_dense(curvature, op, problem.sample(n)) for n in range(problem.batch_size)]
    _assert_sum_close(
        torch.stack(pieces).sum(0),
        _dense(curvature, op, problem),
        scale=sum(piece.abs().max().item() for piece in pieces),
        context=f"[{curvature.name} {op}: sum over samples vs the batch: {problem}]",
    )


# --- per-sample gradients and diagonals -------------------------------------------------------


@given(data=st.data())
def test_per_sample_gradients_match_batch_jacobian(curvature: Any, data: st.DataObject) -> None:
    problem = _problem(data, curvature, "per_sample_gradients")
    grads = curvature.per_sample_gradients(problem)
    context = f"[{curvature.name} per_sample_gradients: {problem}]"
    assert_close(grads, reference_per_sample_gradients(problem), context=context)
    batch = derivs.jacobian(problem.loss)(problem.params())
    _assert_sum_close(
        flatten({k: g.sum(0) for k, g in grads.items()}),
        flatten(batch),
        scale=max(g.abs().sum(0).max().item() for g in grads.values()),
        context=f"{context} summed over samples vs the batch gradient",
    )


@pytest.mark.parametrize("op", list(DIAGONALS))
@given(data=st.data())
def test_diagonal_matches_the_reference(curvature: Any, op: str, data: st.DataObject) -> None:
    problem = _problem(data, curvature, op)
    diagonal = getattr(curvature, op)(problem)
    dense = DIAGONALS[op](problem)
    assert_close(
        flatten(diagonal),
        dense.diagonal(),
        # NOTE: an entry of the diagonal is one element of the dense matrix: the tolerance of
        # the matrix it comes from (its size and largest entry), not of the diagonal alone.
        atol=tolerance(dense.dtype, dense.numel(), scale=dense.abs().max().item()).atol,
        context=f"[{curvature.name} {op}: {problem}]",
    )


# --- the anchor -------------------------------------------------------------------------------


def test_curvlinops_hessian_operator_at_eye_is_torch_func_hessian() -> None:
    """The issue's anchor: ``HessianLinearOperator(model, loss_func, params, [(X, y)]) @ eye``
    equals torch.func's Hessian over the parameters on a small MLP."""
    curvlinops = pytest.importorskip(
        "curvlinops", reason=f"curvlinops is not installed ({INSTALL})"
    )
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()
    X = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (5,), generator=gen)
    loss_func = torch.nn.CrossEntropyLoss()
    params = dict(model.named_parameters())
    op = curvlinops.HessianLinearOperator(model, loss_func, list(params.values()), [(X, y)])
    n = sum(p.numel() for p in params.values())

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_func(torch.func.functional_call(model, p, (X,)), y)

    detached = {k: p.detach() for k, p in params.items()}
    expected = flatten_matrix(torch.func.hessian(loss)(detached), detached)
    actual = op @ torch.eye(n, dtype=torch.float64)
    assert_close(actual, expected, context="[curvlinops HessianLinearOperator @ eye]")
