"""sparse_jacobian / sparse_hessian: compressed evaluation against the dense transforms and the
finite-difference oracle; colourings checked by definition; reuse, chunking, guard, given
patterns, torch.compile, and every bad input.

Functions come from ``derivs.strategies.sparse_problems`` (stencils, bands, blocks, gathers,
scatters, convolutions, couplings, custom Functions, value-dependent ``where``; scalar ones for
Hessians), each knowing its true structure. AD-vs-AD comparisons are tight
(``suite_helpers.assert_close``); FD comparisons add the oracle's error estimate. The
colouring checks here are written from the definitions, independently of derivs.sparse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from suite_helpers import assert_close_scaled, call_repr, fd_check, values_of

import derivs
import derivs.strategies as ds
from bench.problems import brusselator

JAC_MODES = derivs.SPARSE_MODES["sparse_jacobian"]
HESS_MODES = derivs.SPARSE_MODES["sparse_hessian"]
LAYOUTS = ("coo", "csr", "dense")
ORDERS = tuple(derivs.sparse.ORDER_CHOICES)


# --- helpers ---------------------------------------------------------------------------------


def to_dense(result: Any, like: Any) -> Any:
    """A sparse result (any layout, blocks nested like ``like``) as dense tensors of ``like``'s
    shapes."""
    if isinstance(result, tuple):
        return tuple(to_dense(r, e) for r, e in zip(result, like, strict=True))
    dense = result.to_dense() if result.layout != torch.strided else result
    return dense.reshape(like.shape)


def draw_jacobian_problem(
    data: st.DataObject, device: str, dtype: torch.dtype
) -> tuple[ds.Problem, Any]:
    p = data.draw(ds.sparse_problems(scalar=False, device=device, dtype=dtype), label="problem")
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    return p, argnums


# NOTE: a straight-through round has Jacobian I by autograd and 0 by finite differences, and
# a value-dependent where jumps within the FD steps near its threshold: no FD oracle for them.
FD_KINDS = [k for k in ds.SPARSE_KINDS if k not in ds.VALUE_DEPENDENT_KINDS]


def draw_hessian_problem(
    data: st.DataObject, device: str, dtype: torch.dtype
) -> tuple[ds.Problem, Any]:
    p = data.draw(ds.sparse_problems(scalar=True, device=device, dtype=dtype), label="problem")
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    return p, argnums


def column_conflicts(rows: torch.Tensor, cols: torch.Tensor, colors: torch.Tensor) -> list[Any]:
    """Pairs of columns sharing a row and a colour (by definition, in Python)."""
    seen: dict[tuple[int, int], int] = {}
    bad = []
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        key = (i, int(colors[j]))
        if key in seen:
            bad.append((i, seen[key], j))
        seen[key] = j
    return bad


def star_violations(rows: torch.Tensor, cols: torch.Tensor, colors: torch.Tensor) -> list[Any]:
    """Adjacent vertices of one colour, and paths a-b-c-d on two colours (by enumeration)."""
    nbrs: dict[int, set[int]] = {}
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if i != j:
            nbrs.setdefault(i, set()).add(j)
    c = colors.tolist()
    bad: list[Any] = [(i, j) for i in nbrs for j in nbrs[i] if c[i] == c[j]]
    for b in nbrs:
        for cc in nbrs[b]:
            for a in nbrs[b] - {cc}:
                for d in nbrs.get(cc, set()) - {b, a}:
                    if c[a] == c[cc] and c[b] == c[d]:
                        bad.append((a, b, cc, d))
    return bad


@st.composite
def patterns(draw: st.DrawFn, symmetric: bool = False) -> torch.Tensor:
    """Random bool matrices up to 40 x 40, density 0 to 1, maybe with a dense row and column
    (symmetric ones square)."""
    m = draw(st.integers(1, 40), label="m")
    n = m if symmetric else draw(st.integers(1, 40), label="n")
    density = draw(st.sampled_from([0.0, 0.05, 0.15, 0.4, 1.0]), label="density")
    seed = draw(st.integers(0, 2**16), label="seed")
    dense = torch.rand(m, n, generator=torch.Generator().manual_seed(seed)) < density
    # NOTE: a dense row and column among sparse ones: the colouring's skewed-degree path.
    if draw(st.booleans(), label="dense line"):
        dense[m // 2, :] = True
        dense[:, n // 2] = True
    if symmetric:
        dense = dense | dense.T
        if draw(st.booleans(), label="diagonal"):
            dense |= torch.eye(n, dtype=torch.bool)
    return dense


# --- values: sparse == dense (AD vs AD), == FD ---------------------------------------------------


@given(data=st.data())
def test_jacobian_matches_dense(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Every mode and layout equals derivs.jacobian (tight), any argnums."""
    p, argnums = draw_jacobian_problem(data, device, dtype)
    mode = data.draw(st.sampled_from(JAC_MODES), label="mode")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    ctx = call_repr("sparse_jacobian", p.func, argnums=argnums, mode=mode, layout=layout)
    result = derivs.sparse_jacobian(p.func, argnums, mode=mode, layout=layout)(*p.args)
    dense = derivs.jacobian(p.func, argnums)(*p.args)
    assert_close_scaled(to_dense(result, dense), dense, values=values_of(p), context=ctx)
    leaves = result if isinstance(result, tuple) else (result,)
    for r in leaves:
        assert r.dtype == dtype and r.device.type == torch.device(device).type, ctx
        assert r.layout == {"coo": torch.sparse_coo, "csr": torch.sparse_csr}.get(
            layout, torch.strided
        ), ctx


@given(data=st.data())
def test_jacobian_matches_finite_differences(device: str, data: st.DataObject) -> None:
    """The sparse Jacobian equals the FD oracle within the oracle's error estimate."""
    p = data.draw(
        ds.sparse_problems(kinds=FD_KINDS, scalar=False, device=device, dtype=torch.float64),
        label="problem",
    )
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    result = derivs.sparse_jacobian(p.func, argnums, layout="dense")(*p.args)
    fd_check(
        result,
        p.func,
        p.args,
        argnums,
        order=1,
        real_analytic=False,
        context=call_repr("sparse_jacobian", p.func, argnums=argnums, layout="dense"),
    )


@given(data=st.data())
def test_hessian_matches_dense(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Star and column modes, every layout, equal derivs.hessian (tight), any argnums."""
    p, argnums = draw_hessian_problem(data, device, dtype)
    mode = data.draw(st.sampled_from(HESS_MODES), label="mode")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    ctx = call_repr("sparse_hessian", p.func, argnums=argnums, mode=mode, layout=layout)
    result = derivs.sparse_hessian(p.func, argnums, mode=mode, layout=layout)(*p.args)
    dense = derivs.hessian(p.func, argnums)(*p.args)
    assert_close_scaled(to_dense(result, dense), dense, values=values_of(p), context=ctx)


@given(data=st.data())
def test_hessian_matches_finite_differences(device: str, data: st.DataObject) -> None:
    """The sparse Hessian equals the FD oracle within the oracle's error estimate."""
    p, argnums = draw_hessian_problem(data, device, torch.float64)
    result = derivs.sparse_hessian(p.func, argnums, layout="dense")(*p.args)
    fd_check(
        result,
        p.func,
        p.args,
        argnums,
        order=2,
        real_analytic=False,
        context=call_repr("sparse_hessian", p.func, argnums=argnums, layout="dense"),
    )


@given(data=st.data())
def test_recovers_a_given_sparse_matrix(data: st.DataObject) -> None:
    """For f(x) = A @ x with a random sparse A, the Jacobian from A's pattern is A (to
    rounding), in every mode and order: a recovery that reads any entry from the wrong place
    shows."""
    dense = data.draw(patterns(), label="pattern")
    mode = data.draw(st.sampled_from(JAC_MODES), label="mode")
    order = data.draw(st.sampled_from(ORDERS), label="order")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(dense.shape, generator=gen, dtype=torch.float64) * dense
    x = torch.randn(dense.shape[1], generator=gen, dtype=torch.float64)
    J = derivs.sparse_jacobian(lambda x: A @ x, pattern=dense, mode=mode, order=order)(x)
    assert_close_scaled(J.to_dense(), A, context=f"A @ x, mode={mode!r}, order={order!r}")


# --- colourings, by definition ----------------------------------------------------------------


@given(dense=patterns(), mode=st.sampled_from(["column", "row"]), order=st.sampled_from(ORDERS))
def test_jacobian_coloring_is_structurally_orthogonal(
    dense: torch.Tensor, mode: str, order: str
) -> None:
    """No two columns (rows) of one colour share a row (column); at least as many colours as
    the most nonzeros in a row (column); colours 0 .. k-1 all used."""
    c = derivs.coloring(dense, mode=mode, order=order)
    rows, cols = dense.nonzero().unbind(1)
    if mode == "row":
        rows, cols = cols, rows
    bad = column_conflicts(rows, cols, c.colors)
    assert not bad, f"{c}: (row, column, column) sharing a colour: {bad[:5]}"
    per_line = int(torch.bincount(rows).max()) if rows.numel() else 0
    assert c.num_colors >= per_line, f"{c}: fewer colours than {per_line} nonzeros in a line"
    assert c.colors.numel() == dense.shape[0 if mode == "row" else 1]
    assert set(c.colors.tolist()) == set(range(c.num_colors)), c


@given(dense=patterns(symmetric=True), order=st.sampled_from(ORDERS))
def test_star_coloring_conditions(dense: torch.Tensor, order: str) -> None:
    """Star colouring: adjacent vertices differ, every path on four vertices has >= 3 colours."""
    c = derivs.coloring(dense, mode="star", order=order)
    rows, cols = dense.nonzero().unbind(1)
    bad = star_violations(rows, cols, c.colors)
    assert not bad, f"{c}: violations (edges, or 2-coloured paths a-b-c-d): {bad[:5]}"


@given(dense=patterns(symmetric=True))
def test_star_recovery_of_a_symmetric_matrix(dense: torch.Tensor) -> None:
    """For f(x) = x^T A x / 2 with a random symmetric sparse A, the star-coloured Hessian is A."""
    n = dense.shape[0]
    gen = torch.Generator().manual_seed(n)
    B = torch.randn(n, n, generator=gen, dtype=torch.float64) * dense
    A = (B + B.T) / 2
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    H = derivs.sparse_hessian(lambda x: x @ A @ x / 2, pattern=dense)(x)
    assert_close_scaled(H.to_dense(), A, context="x^T A x / 2, mode='star'")


def test_best_order_keeps_the_fewest_colours() -> None:
    """order='best' never has more colours than any single order (on a 2-D Brusselator)."""
    p = derivs.jacobian_sparsity(brusselator)(torch.rand(2, 8, 8, dtype=torch.float64))
    best = derivs.coloring(p, mode="column")
    for order in derivs.sparse.ORDERS:
        assert best.num_colors <= derivs.coloring(p, mode="column", order=order).num_colors


# --- reuse, chunking, given patterns, local detection ------------------------------------------


@given(data=st.data())
def test_reuse_equals_fresh(device: str, data: st.DataObject) -> None:
    """A transform called at a second point reuses its plan and equals a fresh transform there."""
    p, argnums = draw_jacobian_problem(data, device, torch.float64)
    q = data.draw(ds.sparse_problems(p.func, device=device, dtype=torch.float64), label="second")
    transform = derivs.sparse_jacobian(p.func, argnums, layout="dense")
    transform(*p.args)
    plan = transform.prepare(*p.args)
    again = transform(*q.args)
    assert transform.prepare(*q.args) is plan, "the plan was not reused"
    fresh = derivs.sparse_jacobian(p.func, argnums, layout="dense")(*q.args)
    assert_close_scaled(again, fresh, context=call_repr("sparse_jacobian (reused)", p.func))
    assert_close_scaled(plan(*q.args), fresh, context=call_repr("SparsePlan", p.func))


@given(data=st.data())
def test_chunk_size_changes_nothing(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """Pushing the seeds through in chunks gives the same matrix (Jacobians and Hessians)."""
    scalar = data.draw(st.booleans(), label="hessian")
    p = data.draw(ds.sparse_problems(scalar=scalar, device=device, dtype=dtype), label="problem")
    transform = derivs.sparse_hessian if scalar else derivs.sparse_jacobian
    whole = transform(p.func, layout="dense")
    k = whole.prepare(*p.args).num_colors
    chunk = data.draw(st.integers(1, max(k, 1) + 1), label="chunk_size")
    chunked = transform(p.func, layout="dense", chunk_size=chunk)(*p.args)
    assert_close_scaled(chunked, whole(*p.args), values=values_of(p), context=f"chunk_size={chunk}")


@given(data=st.data())
def test_given_patterns_of_every_type(data: st.DataObject) -> None:
    """The true structure given as bool (m, n), bool (*out, *in), COO, CSR or a
    SparsityPattern gives the dense Jacobian."""
    p = data.draw(ds.sparse_problems(scalar=False, dtype=torch.float64, device="cpu"))
    (x,) = p.args[:1]
    func = p.func if p.func.n_args == 1 else (lambda x: p.func(x, *p.args[1:]))
    truth = p.func.structure([0])
    kinds = {
        "bool (m, n)": truth,
        "bool (*out, *in)": truth.reshape(*p.func.out_shape, *x.shape),
        "coo": truth.to_sparse(),
        "csr": truth.to(torch.float64).to_sparse_csr(),
        "SparsityPattern": derivs.coloring(truth, mode="column").pattern,
    }
    kind = data.draw(st.sampled_from(sorted(kinds)), label="given as")
    result = derivs.sparse_jacobian(func, pattern=kinds[kind], layout="dense", guard=True)(x)
    dense = derivs.jacobian(func)(x)
    assert_close_scaled(result, dense, values=values_of(p), context=f"pattern given as {kind}")


@given(data=st.data())
def test_guard_names_a_missed_entry(data: st.DataObject) -> None:
    """A given pattern missing a nonzero of the Jacobian at the point: the guard raises
    SparsityError naming that entry; the complete pattern passes."""
    p = data.draw(ds.sparse_problems(scalar=False, dtype=torch.float64, device="cpu"))
    args = p.args
    nums = tuple(range(p.func.n_args))
    dense = derivs.jacobian(p.func, nums)(*args)
    m = math.prod(p.func.out_shape)
    flat = torch.cat([b.reshape(m, -1) for b in dense], 1)
    truth = p.func.structure()
    derivs.sparse_jacobian(p.func, nums, pattern=truth, guard=True)(*args)  # passes
    big = flat.abs() > 1e-3 * flat.abs().max()
    if not big.any():
        return
    i, j = (int(v) for v in big.nonzero()[data.draw(st.integers(0, int(big.sum()) - 1))])
    note(f"dropped ({i}, {j}) = {float(flat[i, j])}")
    holed = truth.clone()
    holed[i, j] = False
    with pytest.raises(derivs.SparsityError, match=re.escape(f"({i}, {j})")) as info:
        derivs.sparse_jacobian(p.func, nums, pattern=holed, guard=True)(*args)
    assert any((a, b) == (i, j) for a, b, _ in info.value.missed)


def test_guard_in_reverse_mode_and_for_hessians() -> None:
    """The guard names missed entries of row colourings (u^T J) and of Hessians (H v) too."""
    x = torch.linspace(-1, 1, 6, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin() * x.roll(1)

    holed = torch.eye(6, dtype=torch.bool)  # misses the (i, i - 1) entries
    with pytest.raises(derivs.SparsityError, match=r"\(1, 0\)"):
        derivs.sparse_jacobian(f, pattern=holed, mode="rev", guard=True)(x)
    with pytest.raises(derivs.SparsityError, match=r"misses"):
        derivs.sparse_hessian(lambda x: (f(x) ** 2).sum(), pattern=holed, guard=True)(x)


def test_local_detection_where_global_tracing_cannot() -> None:
    """A Python branch on values: global detection refuses (with the hint), local works."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.roll(1) * x if x.sum() > 0 else x.sin()

    x = torch.linspace(0.1, 1, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^derivs\.sparse_jacobian: .*pattern"):
        derivs.sparse_jacobian(f)(x)
    transform = derivs.sparse_jacobian(f, pattern="local", layout="dense")
    assert_close_scaled(transform(x), derivs.jacobian(f)(x), context="local, x > 0")
    assert_close_scaled(transform(-x), derivs.jacobian(f)(-x), context="local, x < 0")
    assert transform.prepare(x).pattern.kind == "local"


@given(data=st.data())
def test_eager_and_torch_func_routes_agree(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    """Plain eager calls (one autograd graph) and calls that need torch.func (an input that
    requires grad; for mode='auto' on a symmetric pattern, reverse then forward mode) agree."""
    scalar = data.draw(st.booleans(), label="hessian")
    p = data.draw(ds.sparse_problems(scalar=scalar, device=device, dtype=dtype), label="problem")
    transform = (derivs.sparse_hessian if scalar else derivs.sparse_jacobian)(
        p.func, layout="dense"
    )
    eager = transform(*p.args)
    leaf = p.args[0].detach().requires_grad_()
    traced = transform(leaf, *p.args[1:])
    note(f"plan: {transform.prepare(*p.args)}")
    assert_close_scaled(traced.detach(), eager, values=values_of(p), context="requires_grad input")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_differentiable_when_the_input_requires_grad(layout: str) -> None:
    """Gradients flow through the sparse Jacobian's values as through derivs.jacobian's."""
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin() * x.roll(1)

    a = x.clone().requires_grad_()
    J = derivs.sparse_jacobian(f, layout=layout)(a)
    total = (J.to_dense() if layout != "dense" else J).pow(2).sum()
    (grad,) = torch.autograd.grad(total, a)
    b = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(derivs.jacobian(f)(b).pow(2).sum(), b)
    assert_close_scaled(grad, expected, context=f"d/dx sum(J**2), layout={layout!r}")


# --- torch.compile ----------------------------------------------------------------------------


@pytest.mark.compile
@pytest.mark.parametrize("mode", ["fwd", "rev", "star"])
def test_compiled_evaluation_matches_eager(mode: str) -> None:
    """torch.compile of the transform (plan made eagerly inside) equals eager, at two points."""
    torch._dynamo.reset()
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[1:] * x[:-1]) + x[:-1] ** 3

    if mode == "star":
        transform = derivs.sparse_hessian(lambda x: f(x).sum(), layout="dense")
    else:
        transform = derivs.sparse_jacobian(f, mode=mode, layout="dense")
    compiled = torch.compile(transform, backend="aot_eager")
    for point in (x, x.flip(0) * 0.5):
        assert_close_scaled(compiled(point), transform(point), context=f"compiled, mode={mode!r}")


# --- bad input ---------------------------------------------------------------------------------

x5 = torch.ones(5)


def _vec(x: torch.Tensor) -> torch.Tensor:
    return x.sin()


def _sum(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum()


ERRORS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("jac-func", lambda: derivs.sparse_jacobian(3), TypeError, "func must be callable"),
    ("hess-func", lambda: derivs.sparse_hessian(None), TypeError, "func must be callable"),
    ("jac-mode", lambda: derivs.sparse_jacobian(_vec, mode="fast"), ValueError, "mode='fast' is not one of"),
    ("hess-mode", lambda: derivs.sparse_hessian(_sum, mode="fwd"), ValueError, "mode='fwd' is not one of"),
    ("jac-order", lambda: derivs.sparse_jacobian(_vec, order="random"), ValueError, "order='random' is not one of"),
    ("jac-layout", lambda: derivs.sparse_jacobian(_vec, layout="csc"), ValueError, "layout='csc' is not one of"),
    ("jac-chunk", lambda: derivs.sparse_jacobian(_vec, chunk_size=0), ValueError, "chunk_size must be None or >= 1"),
    ("jac-guard", lambda: derivs.sparse_jacobian(_vec, guard=1), TypeError, "guard must be True or False"),
    ("jac-argnums", lambda: derivs.sparse_jacobian(_vec, argnums=[0]), TypeError, "argnums must be an int"),
    ("jac-pattern-str", lambda: derivs.sparse_jacobian(_vec, pattern="traced"), ValueError, "pattern='traced' is not one of"),
    ("jac-pattern-type", lambda: derivs.sparse_jacobian(_vec, pattern=[[True]]), TypeError, "pattern must be 'global', 'local', a bool tensor"),
    ("jac-pattern-shape", lambda: derivs.sparse_jacobian(_vec, pattern=torch.ones(3, 4, dtype=torch.bool))(x5), ValueError, r"pattern has shape \(3, 4\), expected \(5, 5\)"),
    ("jac-pattern-dtype", lambda: derivs.sparse_jacobian(_vec, pattern=torch.eye(5))(x5), TypeError, "pattern is a float32 tensor; a pattern is a bool tensor"),
    ("hess-pattern-shape", lambda: derivs.sparse_hessian(_sum, pattern=torch.eye(4, dtype=torch.bool))(x5), ValueError, r"pattern has shape \(4, 4\), expected \(5, 5\)"),
    ("hess-not-scalar", lambda: derivs.sparse_hessian(_vec)(x5), ValueError, "func must return a scalar"),
    ("jac-output-int", lambda: derivs.sparse_jacobian(lambda x: x.long())(x5), TypeError, "outputs must be real floating point"),
    ("jac-output-tuple", lambda: derivs.sparse_jacobian(lambda x: (x, x))(x5), TypeError, "func must return a Tensor"),
    ("jac-input-int", lambda: derivs.sparse_jacobian(_vec)(torch.ones(3, dtype=torch.long)), TypeError, r"args\[0\] .*only real floating-point tensors"),
    ("jac-argnums-range", lambda: derivs.sparse_jacobian(_vec, argnums=1)(x5), ValueError, "argnums=1 is out of range"),
    ("plan-signature", lambda: derivs.sparse_jacobian(_vec).prepare(x5)(torch.ones(4)), ValueError, "this plan was prepared for arguments"),
    ("guard-miss", lambda: derivs.sparse_jacobian(lambda x: x.roll(1), pattern=torch.eye(5, dtype=torch.bool), guard=True)(torch.arange(5.0)), derivs.SparsityError, r"guard: the given pattern misses 5 nonzero"),
    ("sparsity-detection", lambda: derivs.jacobian_sparsity(_vec, detection="probe"), ValueError, "detection='probe' is not one of"),
    ("hess-sparsity-not-scalar", lambda: derivs.hessian_sparsity(_vec)(x5), ValueError, "func must return a scalar"),
    ("coloring-mode", lambda: derivs.coloring(torch.eye(3, dtype=torch.bool), mode="both"), ValueError, "mode='both' is not one of"),
    ("coloring-pattern", lambda: derivs.coloring(torch.ones(3, dtype=torch.bool)), TypeError, "pattern must be a derivs.SparsityPattern or a 2-D"),
    ("coloring-star-asymmetric", lambda: derivs.coloring(torch.ones(2, 3, dtype=torch.bool), mode="star"), ValueError, "mode='star' needs a symmetric pattern"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "exc", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_bad_input_names_api_and_argument(
    call: Callable[[], Any], exc: type[Exception], message: str
) -> None:
    with pytest.raises(exc) as info:
        call()
    text = str(info.value)
    assert re.match(
        r"derivs\.(sparse_jacobian|sparse_hessian|jacobian_sparsity|hessian_sparsity|coloring): ",
        text,
    ), text
    assert re.search(message, text), text
