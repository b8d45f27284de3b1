"""Meta-tests: the strategies themselves keep their promises (bounds, flags, layouts, shrinking)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch.func import jacfwd, jacrev, jvp, vmap

import derivs
import derivs.strategies as ds

# NOTE: find() explores until it has shrunk; these settings keep it quick and repeatable (the
# explain phase traces every line and makes find() five times slower).
FIND = settings(
    max_examples=300, database=None, derandomize=True, phases=[Phase.generate, Phase.shrink]
)


def _rand_like_shapes(shapes, *, batch=(), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        (2 * torch.rand((*batch, *s), generator=g, dtype=dtype) - 1).clamp(-1, 1) for s in shapes
    )


def _loose_equal(a, b):
    """Equal up to rounding (batched kernels may sum in another order)."""
    tight = a.dtype in (torch.float64, torch.complex128)
    rtol, atol = (1e-10, 1e-12) if tight else (1e-5, 1e-6)
    return a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol)


def _dense(args):
    # NOTE: torch.func forward mode (jvp, jacfwd) refuses inputs with internal overlap (stride 0,
    # the "expanded" layout): "more than one element of the written-to tensor refers to a single
    # memory location". The meta-tests check the functions, so they feed it dense copies.
    return tuple(a.contiguous() for a in args)


# --------------------------------------------------------------------------------------------
# invalid arguments are rejected eagerly, with the offending bound in the message

INVALID = [
    (
        "shapes-dims",
        lambda: ds.shapes(min_dims=3, max_dims=2),
        "min_dims=3 is larger than max_dims=2",
    ),
    (
        "shapes-sides",
        lambda: ds.shapes(min_side=4, max_side=3),
        "min_side=4 is larger than max_side=3",
    ),
    (
        "shapes-budget",
        lambda: ds.shapes(min_dims=3, min_side=4, max_elements=32),
        "max_elements=32",
    ),
    ("shapes-negative", lambda: ds.shapes(min_dims=-1), "min_dims=-1 must be at least 0"),
    ("shapes-bool", lambda: ds.shapes(max_dims=True), "max_dims=True must be an int"),
    ("tensors-layout", lambda: ds.tensors((3,), layout="diagonal"), "layout='diagonal'"),
    ("tensors-impossible", lambda: ds.tensors((1, 3), layout="transposed"), "impossible for shape"),
    ("tensors-dtype", lambda: ds.tensors((3,), torch.int64), "floating"),
    ("tensors-device", lambda: ds.tensors((3,), device="nowhere"), "not a torch device"),
    (
        "tensors-values",
        lambda: ds.tensors((3,), min_value=2.0, max_value=1.0),
        "min_value=2.0 is larger",
    ),
    ("tensors-mode", lambda: ds.tensors((3,), values="gaussian"), "values='gaussian'"),
    ("argnums-n", lambda: ds.argnums(0), "n_args=0 must be at least 1"),
    ("argnums-size", lambda: ds.argnums(2, min_size=3), "min_size=3 is larger than n_args=2"),
    (
        "argnums-order",
        lambda: ds.argnums(3, min_size=3, max_size=2),
        "min_size=3 is larger than max_size=2",
    ),
    (
        "argnums-nothing",
        lambda: ds.argnums(2, allow_int=False, allow_tuple=False),
        "nothing to draw",
    ),
    ("in_dims-empty", lambda: ds.in_dims(()), "no arguments"),
    ("batch-order", lambda: ds.batch_sizes(min_size=5, max_size=2), "min_size=5 is larger"),
    ("chunk-total", lambda: ds.chunk_sizes(0), "total=0 must be at least 1"),
    (
        "functions-depth",
        lambda: ds.functions(min_depth=3, max_depth=1),
        "min_depth=3 is larger than max_depth=1",
    ),
    ("functions-ops", lambda: ds.functions(ops=["tanh", "relu"]), "unknown ['relu']"),
    ("functions-scalar", lambda: ds.functions(out_shape=(2,), scalar_output=True), "contradicts"),
    ("functions-n", lambda: ds.functions(n_args=2, in_shapes=[(3,)]), "n_args=2 but in_shapes"),
    ("functions-flag", lambda: ds.functions(batch_polymorphic="yes"), "True, False or None"),
    ("coupled-kind", lambda: ds.coupled_functions(couplings=["shuffle"]), "valid couplings"),
    (
        "predict-kind",
        lambda: ds.tutorial_predict(kind="tall", min_features=4, max_features=4),
        "needs two sizes",
    ),
    ("problems-layout", lambda: ds.problems(layout="diagonal"), "layout='diagonal'"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_arguments_raise_eagerly(make, message):
    with pytest.raises(InvalidArgument) as info:
        make()
    assert message in str(info.value)


# --------------------------------------------------------------------------------------------
# blocks


@given(st.data())
def test_shapes_respect_bounds(data):
    min_dims = data.draw(st.integers(0, 3), label="min_dims")
    max_dims = data.draw(st.integers(min_dims, 5), label="max_dims")
    min_side = data.draw(st.integers(0, 2), label="min_side")
    max_side = data.draw(st.integers(max(min_side, 1), 8), label="max_side")
    max_elements = data.draw(st.integers(max(min_side, 1) ** min_dims, 40), label="max_elements")
    shape = data.draw(
        ds.shapes(
            min_dims=min_dims,
            max_dims=max_dims,
            min_side=min_side,
            max_side=max_side,
            max_elements=max_elements,
        )
    )
    assert min_dims <= len(shape) <= max_dims
    assert all(min_side <= s <= max_side for s in shape)
    assert math.prod(shape) <= max_elements


def test_shapes_shrink_to_the_smallest():
    assert find(ds.shapes(), lambda s: True, settings=FIND) == ()
    assert find(ds.shapes(min_dims=2), lambda s: True, settings=FIND) == (1, 1)
    # non-square shapes exist and shrink to the simplest one
    assert find(ds.shapes(), lambda s: len(set(s)) > 1, settings=FIND) in {(1, 2), (2, 1)}


@given(ds.devices(include_meta=True), st.data())
def test_devices_and_dtypes_come_from_the_configured_list(device, data):
    assert device in [*ds.get_devices(), "meta"]
    dtype = data.draw(ds.dtypes(device))
    assert dtype in ds.dtypes_for(device)
    assert ds.dtypes_for("mps") == (torch.float32,)


@given(ds.argnums(3), ds.argnums(3, allow_int=False, min_size=2))
def test_argnums_are_valid_and_distinct(a, b):
    for draw in (a, b):
        positions = ds.normalize_argnums(draw, 3)
        assert all(0 <= p < 3 for p in positions)
        assert len(set(positions)) == len(positions)
        items = (draw,) if isinstance(draw, int) else draw
        assert all(-3 <= i < 3 for i in items)
    assert isinstance(b, tuple) and len(b) >= 2


def test_argnums_reach_negative_and_reordered_tuples():
    assert find(ds.argnums(3), lambda a: True, settings=FIND) == 0
    assert find(ds.argnums(3), lambda a: isinstance(a, int) and a < 0, settings=FIND) == -1
    found = find(
        ds.argnums(3), lambda a: isinstance(a, tuple) and list(a) != sorted(a), settings=FIND
    )
    assert len(found) == 2


@given(st.data())
def test_in_dims_lay_out_batched_args_as_vmap_expects(data):
    in_shapes = data.draw(
        st.lists(ds.shapes(max_elements=8), min_size=1, max_size=3), label="in_shapes"
    )
    dims = data.draw(ds.in_dims(in_shapes), label="in_dims")
    b = data.draw(ds.batch_sizes(), label="batch")
    args = data.draw(ds.batched_args(in_shapes, dims, b, torch.float64, "cpu"), label="args")
    norm = ds.normalize_in_dims(dims, in_shapes)
    assert any(d is not None for d in norm)
    out = vmap(lambda *xs: tuple(x * 1 for x in xs), in_dims=dims, out_dims=0)(*args)
    for shape, d, x, y in zip(in_shapes, norm, args, out, strict=True):
        assert y.shape == (b, *shape)
        expected = x.expand(b, *shape) if d is None else x.movedim(d, 0)
        assert torch.equal(y, expected)


def test_in_dims_reach_none_nonzero_and_negative():
    shapes = [(2, 3), (3,)]
    assert find(ds.in_dims(shapes), lambda d: True, settings=FIND) == 0
    assert None in find(
        ds.in_dims(shapes), lambda d: isinstance(d, tuple) and None in d, settings=FIND
    )
    assert find(ds.in_dims(shapes), lambda d: isinstance(d, int) and d < 0, settings=FIND) == -1


@given(st.integers(1, 12), st.data())
def test_chunk_sizes_divide_or_not_as_asked(total, data):
    assert total % data.draw(ds.chunk_sizes(total, divides=True)) == 0
    assert total % data.draw(ds.chunk_sizes(total, divides=False)) != 0
    assert 1 <= data.draw(ds.chunk_sizes(total)) <= total + 2
    assert data.draw(ds.batch_sizes()) >= 1


# --------------------------------------------------------------------------------------------
# tensors and layouts


@given(st.data())
def test_tensors_have_the_requested_shape_dtype_device_and_values(device, dtype, data):
    shape = data.draw(ds.shapes(), label="shape")
    layout = data.draw(st.sampled_from(ds.feasible_layouts(shape)), label="layout")
    x = data.draw(ds.tensors(shape, dtype, device, layout=layout, min_value=-0.5, max_value=2.0))
    assert x.shape == shape and x.dtype == dtype and x.device.type == torch.device(device).type
    assert not x.requires_grad
    assert torch.all((x >= -0.5) & (x <= 2.0)), x
    if layout in ds.NON_CONTIGUOUS_LAYOUTS:
        assert not x.is_contiguous(), (layout, x.stride())
    if layout == "offset":
        assert x.is_contiguous() and x.storage_offset() > 0
    if layout == "expanded":
        assert 0 in x.stride()
    if layout == "sliced":
        # the gaps of the buffer hold NaN: reading past the view is caught
        assert torch.isnan(x._base).any()


@given(st.data())
def test_every_layout_is_reachable_and_shared_shapes_stay_shared(data):
    shape = st.shared(ds.shapes(min_dims=2, min_side=2), key="same")
    x = data.draw(ds.tensors(shape, layout="transposed"))
    y = data.draw(ds.tensors(shape, layout="sliced"))
    z = data.draw(ds.tensors(shape, layout="expanded"))
    assert x.shape == y.shape == z.shape
    assert not (x.is_contiguous() or y.is_contiguous() or z.is_contiguous())


def test_value_modes_both_shrink_to_simple_values():
    x = find(ds.tensors((3,), values="hypothesis"), lambda t: bool((t != 0).any()), settings=FIND)
    assert sorted(x.tolist()) in ([0.0, 0.0, 1.0], [-1.0, 0.0, 0.0])
    y = find(ds.tensors((3,), layout="sliced"), lambda t: True, settings=FIND)
    assert y.shape == (3,) and y.is_contiguous() is False


@given(st.data())
def test_tangents_match_primals(device, dtype, data):
    shapes = data.draw(st.lists(ds.shapes(), min_size=1, max_size=3), label="shapes")
    primals = tuple(data.draw(ds.tensors(s, dtype, device)) for s in shapes)
    tangents = data.draw(ds.tangents_like(primals))
    assert len(tangents) == len(primals)
    for p, t in zip(primals, tangents, strict=True):
        assert (t.shape, t.dtype, t.device) == (p.shape, p.dtype, p.device)


# --------------------------------------------------------------------------------------------
# generated functions: shapes, bounds, finiteness


@given(ds.problems(ds.functions(max_depth=4)))
def test_functions_are_finite_and_bounded_on_drawn_inputs(problem):
    f, _, dtype, args = problem
    before = [a.clone() for a in args]
    y = f(*args)
    assert y.shape == f.out_shape and y.dtype == dtype and y.device == args[0].device
    assert torch.isfinite(y).all(), f
    slack = 1 + (1e-4 if dtype == torch.float32 else 1e-9)
    assert float(y.abs().max()) <= f.value_bound * slack if y.numel() else True
    assert all(torch.equal(a, b) for a, b in zip(args, before, strict=True)), "f mutated its inputs"


@given(st.data())
def test_function_bounds_and_requests_are_respected(data):
    n = data.draw(st.integers(1, 3), label="n_args")
    lo = data.draw(st.integers(0, 3), label="min_depth")
    hi = data.draw(st.integers(lo, 4), label="max_depth")
    scalar = data.draw(st.sampled_from([None, True, False]), label="scalar_output")
    f = data.draw(
        ds.functions(n_args=n, min_depth=lo, max_depth=hi, scalar_output=scalar, max_elements=12)
    )
    assert f.n_args == len(f.in_shapes) == n
    assert all(math.prod(s) <= 12 and len(s) <= ds.MAX_DIMS for s in f.in_shapes)
    assert lo <= f.drawn_depth <= hi and f.drawn_depth <= f.depth
    if scalar is not None:
        assert (f.out_shape == ()) == scalar
    assert f.ops <= set(ds.OPS) | {"broadcast"}
    y = f(*_rand_like_shapes(f.in_shapes))
    assert y.shape == f.out_shape


@given(ds.functions(ops=["linear", "tanh"], in_shapes=[(2, 3), (3,)], out_shape=(4,)))
def test_functions_honour_ops_and_fixed_shapes(f):
    assert f.in_shapes == ((2, 3), (3,)) and f.out_shape == (4,)
    # the shape-fitting ops may appear, but no other drawn primitive
    assert f.ops <= {
        "linear",
        "tanh",
        "add",
        "sum",
        "mean",
        "flatten",
        "unflatten",
        "linear_left",
        "broadcast",
    }


@given(ds.functions(n_args=2, max_depth=1))
def test_generated_function_behaves_like_a_python_function(f):
    assert f.__name__ == "f" and str(inspect.signature(f)) == "(x0, x1, /)"
    with pytest.raises(TypeError, match="takes 2 tensors"):
        f(torch.zeros(()))


# --------------------------------------------------------------------------------------------
# flags are honest


@given(ds.batched_problems(ds.functions(batch_polymorphic=True), device="cpu", dtype=torch.float64))
def test_batch_polymorphic_functions_evaluate_batches_sample_by_sample(problem):
    f, args, dims = problem.func, problem.args, problem.in_dims
    assert f.batch_polymorphic and f.sample_independent and not f.coupled
    norm = ds.normalize_in_dims(dims, f.in_shapes)
    moved = [a if d is None else a.movedim(d, 0) for a, d in zip(args, norm, strict=True)]
    direct = f(*moved)  # unbatched args broadcast against the batched ones
    looped = torch.stack([f(*problem.sample(b)) for b in range(problem.batch_size)])
    assert direct.shape == (problem.batch_size, *f.out_shape)
    assert _loose_equal(direct, looped), f
    assert _loose_equal(vmap(f, in_dims=dims)(*args), looped), f


@given(ds.functions(batch_polymorphic=True, max_elements=12))
def test_sample_independent_functions_have_block_diagonal_batch_jacobians(f):
    xs = _rand_like_shapes(f.in_shapes, batch=(2,), seed=1)
    blocks = jacrev(f, argnums=tuple(range(f.n_args)))(*xs)
    for block, shape in zip(blocks, f.in_shapes, strict=True):
        j = block.reshape(2, math.prod(f.out_shape), 2, math.prod(shape))
        assert torch.count_nonzero(j[0, :, 1]) == 0 and torch.count_nonzero(j[1, :, 0]) == 0


@settings(max_examples=20)
@given(st.sampled_from([None, False]).flatmap(lambda p: ds.functions(batch_polymorphic=p)))
def test_non_polymorphic_functions_really_mix_up_batches(f):
    if f.batch_polymorphic:
        return
    assert f.ops & ds.NON_POLYMORPHIC_OPS
    xs = _rand_like_shapes(f.in_shapes, batch=(2,), seed=2)
    looped = torch.stack([f(*(x[b] for x in xs)) for b in range(2)])
    try:
        direct = f(*xs)
    except (RuntimeError, IndexError):
        return
    # NOTE: a saturated nonlinearity can hide the mixing from the values (found by the seed
    # sweep: tanh(exp(x1).sum()) is 1.0 whether it sums one sample or both), so where the
    # values agree the dependence itself must cross samples.
    assert not _loose_equal(direct, looped) or _depends_across_samples(f, xs, 2), f


def _depends_across_samples(f, xs, batch):
    """Whether an output element of one sample depends on an input element of another."""
    pattern = derivs.jacobian_sparsity(f, argnums=tuple(range(len(xs))))(*xs)
    rows_per_sample = pattern.shape[0] // batch
    sample_of_col = torch.cat([torch.arange(x.numel()) // (x.numel() // batch) for x in xs])
    return bool((pattern.rows // rows_per_sample != sample_of_col[pattern.cols]).any())


@given(
    ds.batched_problems(
        ds.coupled_functions(n_args=st.integers(1, 2)), device="cpu", dtype=torch.float64
    )
)
def test_coupled_functions_really_couple_samples(problem):
    f, args, bsz = problem.func, problem.args, problem.batch_size
    assert f.coupled and not f.sample_independent and not f.batch_polymorphic and bsz >= 2
    y = f(*args)
    assert y.shape == (bsz, *f.out_shape) and torch.isfinite(y).all()
    jac = jacrev(f, argnums=tuple(range(f.n_args)))(*args)
    off_diagonal = 0.0
    for block in jac:
        j = block.reshape(bsz, math.prod(f.out_shape), bsz, -1)
        for b in range(bsz):
            for c in range(bsz):
                if b != c:
                    off_diagonal = max(off_diagonal, float(j[b, :, c].abs().max()))
    assert off_diagonal > 1e-8, f


@given(ds.problems(ds.functions(real_analytic=True), device="cpu", dtype=torch.float64))
def test_real_analytic_functions_allow_complex_step(problem):
    f, args = problem.func, problem.args
    assert f.real_analytic and not (f.ops & ds.NON_ANALYTIC_OPS)
    y = f(*args)
    z = f(*(a.to(torch.complex128) for a in args))
    assert _loose_equal(z.real, y) and torch.count_nonzero(z.imag) == 0
    vs = _rand_like_shapes(f.in_shapes, seed=3)
    h = 1e-30
    step = f(*(a + 1j * h * v for a, v in zip(args, vs, strict=True))).imag / h
    _, exact = jvp(f, _dense(args), vs)
    assert torch.allclose(step, exact, rtol=1e-9, atol=1e-12 * f.value_bound), f


@settings(max_examples=30)
@given(ds.functions(real_analytic=False))
def test_functions_flagged_non_analytic_say_why(f):
    assert not f.real_analytic and f.ops & ds.NON_ANALYTIC_OPS
    xs = _rand_like_shapes(f.in_shapes, seed=4)
    with pytest.raises(RuntimeError, match="not implemented for 'Complex"):
        f(*(x.to(torch.complex128) for x in xs))


# --------------------------------------------------------------------------------------------
# repr is the formula


@given(
    st.one_of(ds.problems(), ds.problems(ds.coupled_functions())),
)
def test_repr_round_trips_to_bit_identical_values(problem):
    f, _, _, args = problem
    if f.coupled:
        args = tuple(torch.stack([a, -a, a.flip(0) if a.ndim else a]) for a in args)
    g = ds.eval_formula(repr(f))
    assert torch.equal(g(*args), f(*args)), repr(f)


@given(ds.tutorial_predict())
def test_tutorial_predict_is_the_tutorial_model(p):
    d_out, d_in = p.weight.shape
    assert {"tall": d_out > d_in, "wide": d_out < d_in, "square": d_out == d_in}[p.kind]
    expected = F.linear(p.x, p.weight, p.bias).tanh()
    assert torch.equal(p.func(*p.args), expected)
    assert torch.equal(ds.eval_formula(repr(p.func))(*p.args), expected)
    batched = vmap(p.func, in_dims=p.in_dims)(*p.batched_args)
    assert _loose_equal(batched, p.func(*p.batched_args))
    assert p.xs.shape[1:] == p.x.shape and p.func.real_analytic and not p.func.batch_polymorphic


# --------------------------------------------------------------------------------------------
# torch.func transforms


@given(ds.problems(device="cpu", dtype=torch.float64))
def test_functions_work_under_jacrev_jacfwd_and_vmap(problem):
    f, _, _, args = problem
    argnums = tuple(range(f.n_args))
    rev = jacrev(f, argnums=argnums)(*args)
    fwd = jacfwd(f, argnums=argnums)(*_dense(args))
    for r, w, shape in zip(rev, fwd, f.in_shapes, strict=True):
        assert r.shape == (*f.out_shape, *shape)
        assert torch.allclose(r, w, rtol=1e-9, atol=1e-12 * f.value_bound), f
    xs = _rand_like_shapes(f.in_shapes, batch=(2,), seed=5)
    per_sample = torch.stack([f(*(x[b] for x in xs)) for b in range(2)])
    assert _loose_equal(vmap(f)(*xs), per_sample)
    assert vmap(jacrev(f))(*xs).shape == (2, *f.out_shape, *f.in_shapes[0])


@given(ds.problems(include_meta=True))
def test_problems_match_their_function_on_every_device(problem):
    f, device, dtype, args = problem
    assert len(args) == f.n_args
    for a, s in zip(args, f.in_shapes, strict=True):
        assert (a.shape, a.dtype, a.device.type) == (s, dtype, torch.device(device).type)
    assert f(*args).shape == f.out_shape  # on meta: shapes only


# --------------------------------------------------------------------------------------------
# shrinking reaches the simple end


def test_functions_shrink_to_the_identity():
    assert repr(find(ds.functions(), lambda f: True, settings=FIND)) == "f(x0: ()) -> () = x0"


def test_functions_shrink_to_a_sum_of_arguments():
    assert repr(find(ds.functions(), lambda f: f.n_args == 2, settings=FIND)) == (
        "f(x0: (), x1: ()) -> () = x0 + x1"
    )


def test_functions_shrink_to_a_single_primitive():
    assert repr(find(ds.functions(), lambda f: "tanh" in f.ops, settings=FIND)) == (
        "f(x0: ()) -> () = tanh(x0)"
    )


def test_functions_shrink_to_a_single_linear_map():
    linear = find(ds.functions(n_args=1), lambda f: "linear" in f.ops, settings=FIND)
    assert linear.n_ops == 1 and linear.formula == "x0 @ W1", linear


def test_coupled_functions_shrink_to_batch_mean_subtraction():
    f = find(ds.coupled_functions(), lambda f: True, settings=FIND)
    assert repr(f) == "f(x0: (B,)) -> (B,) = x0 - x0.mean(0)"
