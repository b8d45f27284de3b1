"""Sparsity detection: global patterns contain every nonzero, and are exact on known structures.

The reference is twofold: the dense Jacobian (``derivs.jacobian``, AD) at random points, whose
nonzeros a pattern must contain (soundness), and the structure each sparse strategy derives
from its own parameters (offsets, bandwidths, index lists, kernel geometry), which the global
pattern must equal (tightness). The meta-tests of the strategies come first: their
structures are themselves checked against dense Jacobians.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from suite_helpers import Snapshot

import derivs
import derivs.strategies as ds
from derivs.sparse._detect import hessian_pattern, jacobian_pattern

API = "derivs.jacobian_sparsity"

pytestmark = [
    # NOTE: torch.func's dense oracle has no batching rule for unfold_backward (banded kind),
    # and torch calls CSR tensors beta: both are torch's notices, not findings.
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning"),
]


def _points(problem, k: int = 3):
    """``problem.args`` and ``k - 1`` more points of the same shapes, dtype and device."""
    g = torch.Generator().manual_seed(sum(a.numel() for a in problem.args))
    points = [problem.args]
    for _ in range(k - 1):
        points.append(
            tuple(
                (2 * torch.rand(a.shape, generator=g, dtype=torch.float64) - 1).to(a)
                for a in problem.args
            )
        )
    return points


def _dense_jacobian(func, args, argnums):
    """``(m, n)``: the Jacobian of ``func`` w.r.t. ``args[argnums]``, flattened, by AD."""
    blocks = derivs.jacobian(func, argnums=tuple(argnums))(*args)
    out = func(*args)
    return torch.cat([b.reshape(out.numel(), -1) for b in blocks], 1)


def _dense_hessian(func, args, argnums):
    blocks = derivs.hessian(func, argnums=tuple(argnums))(*args)
    sizes = [args[k].numel() for k in argnums]
    rows = [
        torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(sizes))], 1)
        for i in range(len(sizes))
    ]
    return torch.cat(rows, 0)


def _matrix(pattern) -> torch.Tensor:
    rows, cols, shape = pattern
    out = torch.zeros(shape, dtype=torch.bool)
    out[rows, cols] = True
    return out


def _check_format(pattern, shape) -> None:
    rows, cols, got = pattern
    assert got == shape, f"pattern shape {got}, expected {shape}"
    for name, t in (("rows", rows), ("cols", cols)):
        assert t.dtype == torch.int64 and t.device.type == "cpu" and t.dim() == 1, name
    assert rows.numel() == cols.numel()
    keys = rows * max(shape[1], 1) + cols
    assert torch.equal(keys, torch.unique(keys)), "pairs must be unique and sorted by row, column"


def _assert_contains(pattern: torch.Tensor, dense: torch.Tensor, what: str, func) -> None:
    missed = (dense != 0) & ~pattern
    if missed.any():
        where = missed.nonzero()[:5].tolist()
        raise AssertionError(f"{what} misses nonzeros at (row, col) {where} of {func!r}")


def _argnums(data, func) -> tuple[int, ...]:
    if func.n_args == 1:
        return (0,)
    return tuple(data.draw(st.permutations(range(func.n_args))))[
        : data.draw(st.integers(1, func.n_args))
    ]


# --------------------------------------------------------------------------------------------
# meta-tests of the sparse strategies


@given(ds.sparse_problems(device="cpu", dtype=torch.float64))
def test_sparse_functions_round_trip_and_have_their_shapes(problem):
    f = problem.func
    out = f(*problem.args)
    assert tuple(out.shape) == f.out_shape and f.scalar == (f.out_shape == ())
    assert torch.equal(ds.eval_sparse_formula(repr(f))(*problem.args), out)
    m = 1 if f.scalar else out.numel()
    n = sum(a.numel() for a in problem.args)
    assert tuple(f.structure().shape) == ((n, n) if f.scalar else (m, n))


@given(ds.sparse_problems(device="cpu", dtype=torch.float64))
def test_strategy_structures_are_the_dense_nonzeros(problem):
    """Contains the dense nonzeros at every point; equals their union unless value-dependent."""
    f = problem.func
    argnums = tuple(range(f.n_args))
    dense = _dense_hessian if f.scalar else _dense_jacobian
    union = torch.zeros_like(f.structure())
    for args in _points(problem):
        nonzero = dense(f, args, argnums) != 0
        _assert_contains(f.structure(), nonzero, "the strategy's structure", f)
        _assert_contains(f.local_structure(*args), nonzero, "the strategy's local structure", f)
        union |= nonzero
    if f.kind not in ds.VALUE_DEPENDENT_KINDS:
        assert torch.equal(union, f.structure()), f"structure looser than the Jacobian of {f!r}"


@settings(max_examples=2)
@given(st.data())
def test_every_sparse_kind_builds_with_a_structure_of_its_shape(data):
    for kind in ds.SPARSE_KINDS:
        f = data.draw(ds.sparse_functions(kinds=[kind]), label=kind)
        n = sum(math.prod(s) for s in f.in_shapes)
        m = n if f.scalar else math.prod(f.out_shape)
        assert f.kind == kind and tuple(f.structure().shape) == (m, n), repr(f)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ds.sparse_functions(kinds=["nope"]), "unknown ['nope']"),
        (lambda: ds.sparse_functions(kinds="stencil1d"), "collection of kind names"),
        (lambda: ds.sparse_functions(scalar="yes"), "scalar='yes'"),
        (lambda: ds.sparse_functions(kinds=["rosenbrock"], scalar=False), "leaves no kind"),
        (lambda: ds.sparse_problems(ds.sparse_functions(), kinds=["conv"]), "not both"),
    ],
    ids=["unknown-kind", "kinds-string", "scalar-type", "empty-selection", "func-and-kinds"],
)
def test_invalid_sparse_strategy_arguments_raise_eagerly(make, message):
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        make().example()


# --------------------------------------------------------------------------------------------
# the properties


@given(ds.sparse_problems(scalar=False), st.data())
def test_global_jacobian_pattern_contains_the_dense_nonzeros_and_equals_the_structure(
    problem, data
):
    f = problem.func
    argnums = _argnums(data, f)
    snapshot = Snapshot(problem.args)
    pattern = jacobian_pattern(f, problem.args, argnums)
    snapshot.check("jacobian_pattern")
    m, n = f.structure(argnums).shape
    _check_format(pattern, (m, n))
    found = _matrix(pattern)
    for args in _points(problem):
        _assert_contains(found, _dense_jacobian(f, args, argnums), "the global pattern", f)
    assert torch.equal(found, f.structure(argnums)), (
        f"global pattern has {int(found.sum())} entries, the structure {int(f.structure(argnums).sum())}: {f!r}"
    )


@given(ds.sparse_problems(scalar=True))
def test_hessian_pattern_is_symmetric_contains_the_dense_nonzeros_and_equals_the_structure(problem):
    f = problem.func
    pattern = hessian_pattern(f, problem.args, (0,))
    n = problem.args[0].numel()
    _check_format(pattern, (n, n))
    found = _matrix(pattern)
    assert torch.equal(found, found.T), "a Hessian pattern is symmetric"
    for args in _points(problem):
        _assert_contains(found, _dense_hessian(f, args, (0,)), "the Hessian pattern", f)
    assert torch.equal(found, f.structure()), f"Hessian pattern is not the structure of {f!r}"


@given(ds.sparse_problems(kinds=["where", "custom", "gather", "conv", "coupled", "rosenbrock"]))
def test_local_pattern_contains_the_dense_nonzeros_at_its_point(problem):
    f = problem.func
    detect, dense = (
        (hessian_pattern, _dense_hessian) if f.scalar else (jacobian_pattern, _dense_jacobian)
    )
    local = _matrix(detect(f, problem.args, (0,), local=True))
    _assert_contains(local, dense(f, problem.args, (0,)), "the local pattern", f)
    globally = _matrix(detect(f, problem.args, (0,)))
    assert not (local & ~globally).any(), "a local pattern lies within the global one"
    assert torch.equal(local, f.local_structure(*problem.args)), f"local pattern of {f!r}"


@given(ds.problems(), st.booleans())
def test_patterns_of_generated_functions_contain_their_dense_nonzeros(problem, local):
    """Any smooth expression tree (softmax, logsumexp, cumsum, roll, matmul, reshapes ...)."""
    f = problem.func
    argnums = tuple(range(f.n_args))
    if problem.device == "meta":
        return
    found = _matrix(jacobian_pattern(f, problem.args, argnums, local=local))
    _assert_contains(found, _dense_jacobian(f, problem.args, argnums), "the pattern", f)
    if f.out_shape == ():
        found = _matrix(hessian_pattern(f, problem.args, argnums, local=local))
        _assert_contains(found, _dense_hessian(f, problem.args, argnums), "the Hessian pattern", f)


# --------------------------------------------------------------------------------------------
# examples: what tracing the derivative gets right


def _pattern(func, *args, argnums=(0,), local=False) -> list[list[int]]:
    return _matrix(jacobian_pattern(func, args, argnums, local=local)).int().tolist()


def _eye(n: int) -> list[list[int]]:
    return torch.eye(n, dtype=torch.int).tolist()


class OldStyleSTE(torch.autograd.Function):
    """A straight-through round written the old way (ctx in forward), as users often do."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class NumpyBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return torch.from_numpy(g.numpy() * 2)


X = torch.tensor([0.3, -0.7, 0.2, 0.9], dtype=torch.float64)


def test_straight_through_round_has_the_identity_pattern_not_zero():
    # round has derivative 0 everywhere; the STE's backward says identity: autograd gives I
    assert _pattern(OldStyleSTE.apply, X) == _eye(4)
    assert _pattern(lambda x: x + (x.round() - x).detach(), X) == _eye(4)


def test_detached_paths_carry_no_dependence():
    assert _pattern(lambda x: x * x.detach().sum(), X) == _eye(4)
    assert _pattern(lambda x: x.detach().roll(1) + x.sin(), X) == _eye(4)


def test_in_place_updates_through_views_are_followed():
    def f(x):
        y = torch.zeros(4, dtype=x.dtype)
        y[1:3] = x[:2]  # a view of y written in place
        y.view(2, 2)[1, 1] += x[3]  # through another view
        y.mul_(2.0)
        return y

    assert _pattern(f, X) == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]


def test_views_reshape_transpose_and_expand():
    f = lambda x: x.view(2, 2).t().reshape(4) * x[:1].expand(4)  # noqa: E731
    # out = [x0 x0, x2 x0, x1 x0, x3 x0]
    assert _pattern(f, X) == [[1, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1]]


def test_gather_and_scatter_with_fixed_index_tensors():
    idx = torch.tensor([3, 3, 0])
    assert _pattern(lambda x: x[idx] * x.gather(0, torch.tensor([1, 2, 1])), X) == [
        [0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0],
    ]  # fmt: skip
    add = lambda x: torch.zeros(2, dtype=x.dtype).index_add(0, torch.tensor([1, 0, 1, 1]), x)  # noqa: E731
    assert _pattern(add, X) == [[0, 1, 0, 0], [1, 0, 1, 1]]

    def scat(x):
        return torch.zeros(3, dtype=x.dtype).scatter_add(0, torch.tensor([2, 2, 0, 1]), x.exp())

    assert _pattern(scat, X) == [[0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]]


def test_an_index_computed_from_the_input_is_global_only_conservatively():
    f = lambda x: x[x.argsort()[:2]]  # noqa: E731
    assert _pattern(f, X) == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert _pattern(f, X, local=True) == [[0, 1, 0, 0], [0, 0, 1, 0]]  # argsort(X)[:2] = [1, 2]


def test_value_dependent_where_counts_both_branches_globally_and_one_locally():
    f = lambda x: torch.where(x > 0, x.sin(), x.roll(1) ** 2)  # noqa: E731
    both = [[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert _pattern(f, X) == both
    taken = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # X[1] <= 0 takes x[0]
    assert _pattern(f, X, local=True) == taken
    relu = lambda x: torch.relu(x) * 3  # noqa: E731
    assert _pattern(relu, X) == _eye(4)
    assert _pattern(relu, X, local=True) == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_cumsum_is_lower_triangular_and_reductions_are_per_group():
    assert (
        _pattern(lambda x: x.cumsum(0), X) == torch.tril(torch.ones(4, 4, dtype=torch.int)).tolist()
    )
    # out = [x2, x2 x3, x0, x0 x1]; cumprod's backward may only overestimate within a line
    exact = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    line = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    got = torch.tensor(_pattern(lambda x: x.view(2, 2).flip(0).cumprod(1).view(-1), X))
    assert (got >= exact).all() and (got <= line).all()
    assert _pattern(lambda x: x.view(2, 2).sum(1), X) == [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert _pattern(lambda x: x.view(2, 2).softmax(0).view(-1), X) == [
        [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1],
    ]  # fmt: skip


def test_matmul_couples_rows_with_columns():
    w = torch.randn(2, 3, dtype=torch.float64)
    # (x.view(2, 2) @ w): out[i, k] depends on row i of x
    assert (
        _pattern(lambda x: (x.view(2, 2) @ w).view(-1), X)
        == [[1, 1, 0, 0]] * 3 + [[0, 0, 1, 1]] * 3
    )
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    # outer-product-like: out[i, k] = x[i] y[k] depends on x[i] and y[k]
    got = _pattern(lambda x, y: (x.view(3, 1) @ y.view(1, 2)).view(-1), a, b, argnums=(0, 1))
    assert got == [[1, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1],
                   [0, 0, 1, 1, 0], [0, 0, 1, 0, 1]]  # fmt: skip


def test_sparse_matrices_of_fixed_structure_give_their_nonzeros():
    i = torch.arange(4)
    idx = torch.cat(
        [torch.stack([i, i]), torch.stack([i[1:], i[:-1]]), torch.tensor([[0], [3]])], 1
    )
    ones = torch.ones(idx.shape[1], dtype=torch.float64)
    lap = torch.sparse_coo_tensor(idx, ones, (4, 4), check_invariants=True)
    expected = [[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert _pattern(lambda x: lap @ x + x**2, X) == expected
    csr = lap.coalesce().to_sparse_csr()
    assert _pattern(lambda x: (csr @ x.view(4, 1)).view(-1), X) == expected
    assert _pattern(lambda x: (x.view(1, 4) @ lap).view(-1), X) == torch.tensor(expected).T.tolist()
    # a dense constant matrix is dense, whatever its values
    assert _pattern(lambda x: lap.to_dense() @ x, X) == [[1] * 4] * 4


def test_a_fixed_mask_selects_exactly():
    mask = torch.tensor([True, False, True, False])
    f = lambda x: torch.where(mask, x, x.roll(1)).masked_fill(mask.roll(1), 0.0)  # noqa: E731
    # where: [x0, x0, x2, x2]; masked_fill zeroes positions 1 and 3
    assert _pattern(f, X) == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_cat_and_stack():
    f = lambda x: torch.stack([torch.cat([x[2:], x[:1]]), x[1:] ** 2]).sum(0)  # noqa: E731
    # out = [x2 + x1^2, x3 + x2^2, x0 + x3^2]
    assert _pattern(f, X) == [[0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]]


def test_convolution_reads_its_window():
    w = torch.randn(1, 1, 3, dtype=torch.float64)
    f = lambda x: F.conv1d(x.view(1, 1, 4), w, padding=1).view(-1)  # noqa: E731
    assert _pattern(f, X) == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    pooled = lambda x: F.max_pool1d(x.view(1, 1, 4), 2).view(-1)  # noqa: E731
    assert _pattern(pooled, X) == [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert _pattern(pooled, X, local=True) == [[1, 0, 0, 0], [0, 0, 0, 1]]


def test_interpolation_and_adaptive_pooling_read_their_neighbours():
    # linear interpolation of 4 points to 7 with aligned corners: output k sits at k / 2
    f = lambda x: F.interpolate(x.view(1, 1, 4), size=7, mode="linear", align_corners=True)  # noqa: E731
    assert _pattern(lambda x: f(x).view(-1), X) == [
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1],
        [0, 0, 0, 1],
    ]  # fmt: skip
    # adaptive windows of 4 into 3: [0, 2), [1, 3), [2, 4)
    g = lambda x: F.adaptive_avg_pool1d(x.view(1, 1, 4), 3).view(-1)  # noqa: E731
    assert _pattern(g, X) == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


def test_rosenbrock_hessian_is_tridiagonal():
    f = lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()  # noqa: E731
    found = _matrix(hessian_pattern(f, (X,), (0,))).int()
    assert found.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]


def test_functions_without_dependence_give_empty_patterns():
    rows, cols, shape = jacobian_pattern(lambda x: torch.ones(3, dtype=x.dtype), (X,), (0,))
    assert shape == (3, 4) and rows.numel() == cols.numel() == 0
    rows, _, shape = hessian_pattern(lambda x: x.sum() * 2, (X,), (0,))
    assert shape == (4, 4) and rows.numel() == 0


def test_func_may_update_its_argument_in_place_without_touching_the_caller():
    x = X.clone()
    snapshot = Snapshot((x,))
    assert _pattern(lambda t: t.mul_(2).roll(1), x) == [
        [0, 0, 0, 1],
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
    ]
    snapshot.check("in-place func")


# --------------------------------------------------------------------------------------------
# errors


def _branchy(x):
    return x * 2 if x.sum() > 0 else x.flip(0)


def _swallows(x):
    try:
        return x * 2 if x.sum() > 0 else x.flip(0)
    except Exception:  # the refusal, caught: the trace would go where func never goes
        return x.roll(1)


class UserError(Exception):
    pass


def _raises_user_error(x):
    raise UserError("from func")


ERRORS = [
    ("python-branch", _branchy, ValueError, r"derivs\.jacobian_sparsity: global .*local detection"),
    ("item", lambda x: x * x.max().item(), ValueError, r"^derivs\.jacobian_sparsity: .*local"),
    ("caught-refusal", _swallows, ValueError, r"global sparsity detection cannot trace func"),
    ("tolist", lambda x: x * x.tolist()[0], ValueError, r"\.tolist\(\)"),
    ("numpy", lambda x: x * float(x.numpy()[0]), ValueError, r"\.numpy\(\)"),
    ("mask-shape", lambda x: x[x > 0], ValueError, r"data-dependent shapes"),
    ("numpy-backward", NumpyBackward.apply, ValueError, r"derivative passes through \.numpy\(\)"),
    ("not-a-tensor", lambda x: (x, x), ValueError, r"single floating-point tensor, got tuple"),
    ("integer-output", lambda x: x.argmax(), ValueError, r"single floating-point tensor"),
    ("user-exception", _raises_user_error, UserError, r"^from func$"),
]


@pytest.mark.parametrize(
    ("func", "kind", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_untraceable_functions_raise_with_a_hint(func, kind, match):
    with pytest.raises(kind, match=match):
        jacobian_pattern(func, (X,), (0,))


def test_local_detection_follows_python_branches_at_the_point():
    assert _pattern(_branchy, X, local=True) == _eye(4)  # X.sum() > 0 takes x * 2
    with pytest.raises(ValueError, match=r"local sparsity detection cannot trace func.*numpy"):
        jacobian_pattern(NumpyBackward.apply, (X,), (0,), local=True)


def test_docstring_examples():
    import doctest

    import derivs.sparse._detect as detect

    assert doctest.testmod(detect).failed == 0


class ResizingBackward(torch.autograd.Function):
    """Identity forward; a backward that grows a buffer in place: ``g + g[0] + g[1]``."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        buf = g.clone()
        buf.resize_(g.numel() + 2)  # the storage grows; the first elements stay
        buf[-2:] = g[:2]
        return buf[:-2] + buf[-2:].sum()


def test_a_buffer_resized_in_place_keeps_what_it_held():
    expected = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert _pattern(ResizingBackward.apply, X) == expected
    dense = derivs.jacobian(ResizingBackward.apply, method="loop")(X)
    assert (dense != 0).int().tolist() == expected


def test_bad_arguments_name_the_api():
    with pytest.raises(TypeError, match=r"^derivs\.sparse_jacobian: args\[0\]"):
        jacobian_pattern(torch.sin, (torch.arange(3),), (0,), api="derivs.sparse_jacobian")
    with pytest.raises(
        ValueError, match=r"^derivs\.hessian_sparsity: func must return a single element"
    ):
        hessian_pattern(torch.sin, (X,), (0,))
    with pytest.raises(ValueError, match=r"^derivs\.jacobian_sparsity: args\[0\] is on the meta"):
        jacobian_pattern(torch.sin, (X.to("meta"),), (0,))
