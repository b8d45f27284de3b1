"""torch.compile of derivs' transforms: one graph, no graph break, no recompile on new values.

The dynamo-level properties do not depend on the backend, so the graphs are handed to the
``eager`` backend (no AOT autograd, no C++ build) to keep the file fast;
``bench/compile.py`` times the inductor-compiled calls against the closed forms.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

import derivs
from bench.problems import predict, predict_inputs, predict_jacobian, sin_roll, vector_inputs
from derivs import _compiled
from derivs.testing import assert_close

pytestmark = pytest.mark.compile


def _predict() -> Callable[..., torch.Tensor]:
    """The tutorial's function (``bench.problems.predict``), a new function object each time.

    NOTE: jacobian's auto remembers output sizes per function; a fresh one per test keeps a
    test from finding what another left there (the first call is the one that matters).
    """

    def fresh(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return predict(weight, bias, x)

    return fresh


def _predict_args(n_in: int, n_out: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
    def make(seed: int) -> tuple[torch.Tensor, ...]:
        return predict_inputs(n_in, n_out, "cpu", seed=seed)

    return make


def _vector_args(n: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
    def make(seed: int) -> tuple[torch.Tensor, ...]:
        return vector_inputs(n, "cpu", seed=seed)

    return make


def _hvp(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return derivs.hvp(sin_roll, (x,), (v,))


def _vhp(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return derivs.vhp(sin_roll, (x,), (v,))


# The tutorial's three Jacobian shapes (auto takes forward mode on the tall one, reverse on
# the others), a Hessian and both products, each with its default method.
Maker = Callable[[int], tuple[torch.Tensor, ...]]
CASES: dict[str, tuple[Callable[[], Callable[..., Any]], Maker]] = {
    "jacobian square D=16": (lambda: derivs.jacobian(_predict(), argnums=2), _predict_args(16, 16)),
    "jacobian tall 32->2048": (
        lambda: derivs.jacobian(_predict(), argnums=2),
        _predict_args(32, 2048),
    ),
    "jacobian wide 2048->32": (
        lambda: derivs.jacobian(_predict(), argnums=2),
        _predict_args(2048, 32),
    ),
    "hessian 8->4": (lambda: derivs.hessian(_predict(), argnums=2), _predict_args(8, 4)),
    "hvp": (lambda: _hvp, _vector_args(64)),
    "vhp": (lambda: _vhp, _vector_args(64)),
}


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# NOTE: explain traces once more; the Jacobians get it, the other cases are compiled with
# fullgraph=True below, which fails on any graph break just the same.
@pytest.mark.parametrize("name", [name for name in CASES if name.startswith("jacobian")])
def test_one_graph_no_break(name: str) -> None:
    build, make = CASES[name]
    fn = build()
    explained = torch._dynamo.explain(fn)(*make(0))
    reasons = [r.reason for r in explained.break_reasons]
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), (
        f"torch.compile({name}): {explained.graph_count} graphs, breaks: {reasons}"
    )


@pytest.mark.parametrize("name", CASES)
def test_no_recompile_on_new_values(name: str) -> None:
    """One graph (fullgraph: no break), reused by calls with new values of the same shapes."""
    build, make = CASES[name]
    fn = build()
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    compiled(*make(0))
    assert counter.frame_count == 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in (1, 2):
            args = make(seed)
            assert_close(compiled(*args), fn(*args), context=f"torch.compile({name}) vs eager")
    assert counter.frame_count == 1


# ----------------------------------------------------------------------------- inductor
# NOTE: these compile with inductor (a C++ build per graph, about a second each): the pass
# that drops the identity products (derivs/_compiled.py) runs only there.


class _Products:
    """A post-grad pass that counts the matrix products Inductor will compute."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        mms = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)
        self.counts.append(sum(node.target in mms for node in graph.nodes))

    def uuid(self) -> None:
        return None  # no FX graph cache: every graph is compiled, and counted


def rewrite_or_its_warning() -> contextlib.AbstractContextManager[Any]:
    """Where Inductor has no custom-pass API (torch before 2.6), derivs must say that its
    rewrite is off (``_compiled.NO_REWRITE``) and still compute the right values."""
    if _compiled._custom_graph_pass() is not None:
        return contextlib.nullcontext()
    said = _compiled.NO_REWRITE.format(version=torch.__version__)
    return pytest.warns(UserWarning, match=f"^{re.escape(said)}$")


def _inductor(fn: Callable[..., Any], *args: torch.Tensor) -> tuple[Any, list[int]]:
    from torch._inductor import config

    products = _Products()
    with config.patch(post_grad_custom_post_pass=products, fx_graph_cache=False):
        out = torch.compile(fn, fullgraph=True)(*args)
    return out, products.counts


def rewritten(fn: Callable[..., Any], *args: torch.Tensor) -> tuple[Any, list[int]]:
    """:func:`_inductor` on a function of derivs, whose graph has the basis to rewrite."""
    with rewrite_or_its_warning():
        return _inductor(fn, *args)


@pytest.mark.parametrize("name", [name for name in CASES if name.startswith("jacobian")])
def test_inductor_computes_only_the_forward_product(name: str) -> None:
    """No identity product (``I @ W.T``, ``diag(1 - y**2) @ W``), no zero-tangent product:
    the one matrix product left is ``F.linear``'s own, as in the closed form."""
    build, make = CASES[name]
    weight, bias, x = args = make(0)
    jac, counts = rewritten(build(), *args)
    closed = predict_jacobian(weight, bias, x)
    y = predict(weight, bias, x)
    # NOTE: 1 - y**2 cancels where |y| is near 1: a tanh one ulp (eps |y|) off, as Inductor's
    # may be against eager's, moves it by 2 |y| eps |y|; that is the closed form's own error.
    eps = torch.finfo(y.dtype).eps
    error = (2 * y.abs() ** 2 * eps)[:, None] * weight.abs()
    assert_close(jac, closed, error=error, context=f"torch.compile({name})")
    if _compiled._custom_graph_pass() is not None:  # else: warned, and the products stay
        assert counts == [1], f"torch.compile({name}): matrix products per graph {counts}"


def test_rewrite_survives_a_second_import_of_derivs() -> None:
    """A second copy of derivs imported in the process (``bench.pytree_overhead`` imports an
    older checkout beside this one) defines ``derivs::identity`` again, and graphs then hold
    the new overload object: the pass must still recognise the basis (it compared objects,
    and this module's product counts failed after such an import in a whole-suite run)."""
    from pathlib import Path

    from bench.pytree_overhead import load_package

    build, make = CASES["jacobian square D=16"]
    weight, bias, x = args = make(0)
    rewritten(build(), *args)  # this copy's pass installed, as after any compiled call
    before = torch.ops.derivs.identity.default
    load_package(Path(__file__).resolve().parents[1])
    assert torch.ops.derivs.identity.default is not before  # the op was defined again
    torch._dynamo.reset()  # traced again, with the op as it is now
    jac, counts = rewritten(build(), *args)
    closed = predict_jacobian(weight, bias, x)
    assert_close(jac, closed, context="torch.compile after a second import of derivs")
    if _compiled._custom_graph_pass() is not None:
        assert counts == [1], f"matrix products per graph {counts}"


def test_inductor_keeps_a_users_identity_product() -> None:
    """Graphs without derivs' basis are not rewritten: ``torch.eye(n) @ W`` stays a product
    (it differs from ``W`` where ``W`` holds inf: ``0 * inf`` is nan)."""
    with rewrite_or_its_warning():
        _compiled.install()  # as after any compiled derivs call: the pass is there, and declines
    weight = torch.randn(8, 8)
    out, counts = _inductor(lambda w: torch.eye(8) @ w, weight)
    assert counts == [1]
    assert torch.equal(out, weight)


def _shapes_case(form: str) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    cases: dict[str, tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]] = {
        "W @ x": (lambda x: torch.tanh(w @ x), (torch.randn(5, generator=gen, dtype=w.dtype),)),
        "x @ W": (lambda x: torch.sin(x @ w), (torch.randn(6, generator=gen, dtype=w.dtype),)),
        "W @ X": (lambda x: torch.tanh(w @ x), (torch.randn(5, 3, generator=gen, dtype=w.dtype),)),
        "X @ W": (lambda x: torch.sin(x @ w), (torch.randn(3, 6, generator=gen, dtype=w.dtype),)),
        "W.T @ (W @ x)": (
            lambda x: w.T @ torch.tanh(w @ x),
            (torch.randn(5, generator=gen, dtype=w.dtype),),
        ),
        "two arguments": (
            lambda x, z: torch.tanh(w @ x) * z.sum(),
            (
                torch.randn(5, generator=gen, dtype=w.dtype),
                torch.randn(2, generator=gen, dtype=w.dtype),
            ),
        ),
    }
    return cases[form]


@pytest.mark.parametrize("method", ["vjp_vmap", "fwd"])
@pytest.mark.parametrize(
    "form", ["W @ x", "x @ W", "W @ X", "X @ W", "W.T @ (W @ x)", "two arguments"]
)
def test_inductor_rewrites_keep_the_jacobian(form: str, method: str) -> None:
    """Products with the basis on either side, in both modes, one or two arguments."""
    func, args = _shapes_case(form)
    argnums = tuple(range(len(args))) if len(args) > 1 else 0
    jac = derivs.jacobian(func, argnums=argnums, method=method)
    compiled, _ = _inductor(jac, *args)  # the values only: the warning is asserted above
    assert_close(
        compiled, jac(*args), context=f"torch.compile(jacobian({form}, method={method!r}))"
    )
