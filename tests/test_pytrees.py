"""Pytrees in every operator: structure as torch.func nests it, values as derivs' flat results.

Every operator and method runs on each kind of pytree argument (dict, list, nested tuple,
namedtuple, a single leaf) and, for jacobian, hessian and the batch operators, on a pytree
output (its structure outside, as torch.func nests it). Three references:

* structure: torch.func (``jacrev``, ``hessian``, ``vmap(jacrev)``, ``jvp(grad)``), whose
  nesting derivs promises to follow;
* values: the same derivs operator and method on the flat leaves (a tuple ``argnums`` over
  them), the tensor code path; the pytree path computes the same products on the same
  leaves, so the values agree exactly. torch.func's values agree to float64 rounding too;
* per output leaf: a pytree output's result is the operator's result on each output leaf
  alone (a tensor-valued function), packed in the output's structure.

Bad input: a leaf that is not a floating-point tensor is named by its path; tangents
structured unlike primals by the first difference.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from suite_helpers import IMPL, Snapshot, assert_close_scaled, oracle_result
from torch.utils._pytree import TreeSpec, tree_flatten, tree_map, tree_structure, tree_unflatten

import derivs
import derivs.strategies as ds
from derivs import oracles
from derivs._memory import predicted_peak
from derivs.testing import assert_close

pytestmark = pytest.mark.conformance
# NOTE: the tests of derivs' own operators, oracles, assert_close and check (the grid below)
# are derivs-only; the properties at the end run on any implementation declaring `pytrees`.
DERIVS_ONLY = pytest.mark.derivs_only("derivs' operators, oracles and check over pytrees")

Pair = namedtuple("Pair", ["first", "second"])


def _t(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


KINDS: dict[str, Callable[[], Any]] = {
    "dict": lambda: {"0.weight": _t(2, 3, seed=1), "0.bias": _t(2, seed=2)},
    "list": lambda: [_t(3, seed=3), _t(2, 2, seed=4)],
    "nested_tuple": lambda: (_t(2, seed=5), (_t(3, seed=6), [_t(1, seed=7)])),
    "namedtuple": lambda: Pair(_t(2, seed=8), {"w": _t(2, seed=9)}),
    "single_leaf": lambda: {"w": _t(3, seed=10)},
}


def _mix(tree: Any, x: torch.Tensor) -> torch.Tensor:
    """A vector function of every leaf and of ``x``; no Hessian block (mixed ones too) is zero."""
    sums = torch.stack([torch.sin(leaf).sum() for leaf in tree_flatten(tree)[0]])
    return x * (sums.prod() + (sums**2).sum()) + torch.tanh(x) * sums.sum()


def vector(tree: Any, x: torch.Tensor) -> torch.Tensor:
    return _mix(tree, x)


def scalar(tree: Any, x: torch.Tensor) -> torch.Tensor:
    return _mix(tree, x).sum()


def tree_out(tree: Any, x: torch.Tensor) -> dict[str, Any]:
    y = _mix(tree, x)
    return {"y": y, "rest": [y.sum(), (y[:1] ** 2)]}


X = _t(2, seed=11)


def _on_leaves(func: Callable[..., Any], spec: Any) -> Callable[..., Any]:
    """``func(tree, x)`` as a function of the tree's leaves and then ``x``."""

    def flat(*a: Any) -> Any:
        return func(tree_unflatten(list(a[:-1]), spec), a[-1])

    return flat


def _flat_call(
    op: Callable[..., Any], func: Callable[..., Any], tree: Any, argnums: Any, **kw: Any
) -> Any:
    """The same operator on the flat leaves: argnums over the leaves (and ``x`` if named)."""
    leaves, spec = tree_flatten(tree)
    n = len(leaves)
    nums = tuple(range(n)) + ((n,) if argnums != 0 else ())
    return op(_on_leaves(func, spec), nums, **kw)(*leaves, X)


def _same(result: Any, structure_ref: Any, values_ref: Any, *, exact: bool = True) -> None:
    """``result`` nested like ``structure_ref``; its leaves equal to ``values_ref``'s (the
    same computation on the flat leaves: ``exact``) or close to them (another method)."""
    assert tree_structure(result) == tree_structure(structure_ref)
    got = tree_flatten(result)[0]
    for g, r in zip(got, tree_flatten(values_ref)[0], strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        if exact:
            assert torch.equal(g, r)
        else:
            assert_close(g, r)
    # NOTE: torch.func on the same well-conditioned float64 function: rounding only.
    assert_close(result, structure_ref)


ARGNUMS = [0, (0, 1)]


@DERIVS_ONLY
@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", derivs.METHODS["jacobian"])
@pytest.mark.parametrize("func", [vector, tree_out], ids=["tensor_out", "pytree_out"])
def test_jacobian(func: Callable[..., Any], method: str, kind: str, argnums: Any) -> None:
    tree = KINDS[kind]()
    result = derivs.jacobian(func, argnums, method=method)(tree, X)
    flat = _flat_call(derivs.jacobian, func, tree, argnums, method=method)
    _same(result, torch.func.jacrev(func, argnums)(tree, X), flat)


@DERIVS_ONLY
@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", derivs.METHODS["hessian"])
@pytest.mark.parametrize("func", [scalar, vector, tree_out], ids=["scalar", "vector", "pytree_out"])
def test_hessian(func: Callable[..., Any], method: str, kind: str, argnums: Any) -> None:
    tree = KINDS[kind]()
    result = derivs.hessian(func, argnums, method=method)(tree, X)
    flat = _flat_call(derivs.hessian, func, tree, argnums, method=method)
    _same(result, torch.func.hessian(func, argnums)(tree, X), flat)


#: the leaves of ``tree_out``, each a tensor-valued function of its own
TREE_OUT_LEAVES: list[Callable[..., torch.Tensor]] = [
    lambda tree, x: tree_out(tree, x)["y"],
    lambda tree, x: tree_out(tree, x)["rest"][0],
    lambda tree, x: tree_out(tree, x)["rest"][1],
]


def _per_output_leaf(
    derivative: Callable[[Callable[..., Any]], Callable[..., Any]],
    leaves: Sequence[Callable[..., torch.Tensor]],
    spec: TreeSpec,
    *args: Any,
) -> Any:
    """``derivative`` of each output leaf's function alone (``leaves``, in order), evaluated
    at ``args`` and packed in the output's structure ``spec``."""
    return tree_unflatten([derivative(f)(*args) for f in leaves], spec)


@DERIVS_ONLY
@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
@pytest.mark.parametrize("kind", ["dict", "nested_tuple"])
@pytest.mark.parametrize("method", derivs.METHODS["hessian"])
def test_hessian_of_a_pytree_output_is_each_leafs(method: str, kind: str, argnums: Any) -> None:
    """A pytree output's Hessian is the tensor path's Hessian of each output leaf, nested."""
    tree = KINDS[kind]()
    result = derivs.hessian(tree_out, argnums, method=method)(tree, X)
    spec = tree_structure(tree_out(tree, X))
    per_leaf = _per_output_leaf(
        lambda f: derivs.hessian(f, argnums, method=method), TREE_OUT_LEAVES, spec, tree, X
    )
    # NOTE: not bitwise: 'auto' picks its modes by the output's size, all leaves together.
    _same(result, torch.func.hessian(tree_out, argnums)(tree, X), per_leaf, exact=False)


def _product(name: str, method: str, kind: str) -> tuple[Any, Any, Any]:
    tree = KINDS[kind]()
    primals = (tree, X)
    vectors = tree_map(lambda t: torch.cos(3 * t), primals)
    op = getattr(derivs, name)
    result = op(scalar, primals, vectors, method=method)
    leaves, spec = tree_flatten(primals)
    flat = op(
        lambda *a: scalar(*tree_unflatten(list(a), spec)),
        tuple(leaves),
        tuple(tree_flatten(vectors)[0]),
        method=method,
    )
    ref = torch.func.jvp(torch.func.grad(scalar, (0, 1)), primals, vectors)[1]
    return result, ref, tree_unflatten(list(flat), spec)


@DERIVS_ONLY
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", derivs.METHODS["hvp"])
def test_hvp(method: str, kind: str) -> None:
    result, ref, flat = _product("hvp", method, kind)
    _same(result, ref, flat)


@DERIVS_ONLY
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", derivs.METHODS["vhp"])
def test_vhp(method: str, kind: str) -> None:
    """v^T H = H v: the Hessian is symmetric (torch.func's hvp is the structure reference)."""
    result, ref, flat = _product("vhp", method, kind)
    _same(result, ref, flat)


B = 3


def _batched(tree: Any) -> Any:
    return tree_map(lambda t: torch.stack([t * (1 + b) for b in range(B)]), tree)


XB = torch.stack([X, -X, 2 * X])


@DERIVS_ONLY
@pytest.mark.parametrize("output", ["tensor", "pytree"])
@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("batch_op", ["batch_jacobian", "batch_hessian"])
def test_batch_shared_tree(
    batch_op: str, method: str, kind: str, argnums: Any, output: str
) -> None:
    """A shared (unbatched) parameter tree, batched inputs: in_dims=(None, 0)."""
    tree = KINDS[kind]()
    op = getattr(derivs, batch_op)
    func = tree_out if output == "pytree" else vector if batch_op == "batch_jacobian" else scalar
    result = op(func, argnums, in_dims=(None, 0), method=method)(tree, XB)
    leaves, spec = tree_flatten(tree)
    n = len(leaves)
    nums = tuple(range(n)) + ((n,) if argnums != 0 else ())
    flat = op(_on_leaves(func, spec), nums, in_dims=(None,) * n + (0,), method=method)(*leaves, XB)
    inner = torch.func.jacrev if batch_op == "batch_jacobian" else torch.func.hessian
    ref = torch.func.vmap(inner(func, argnums), in_dims=(None, 0))(tree, XB)
    _same(result, ref, flat)


def _per_sample(tree: Any) -> torch.Tensor:
    """Per sample: a scalar of every leaf (the sum trick's batch: one output per sample)."""
    sums = torch.stack(
        [torch.sin(leaf).sum(tuple(range(1, leaf.dim()))) for leaf in tree_flatten(tree)[0]]
    )
    return sums.prod(0) + (sums**2).sum(0)


def _pack_output(v: torch.Tensor, output: str) -> Any:
    """``v``, or a pytree of it and elementwise functions of it (batched as ``v`` is)."""
    return v if output == "tensor" else {"s": v, "t": (v**2, torch.sin(v))}


@DERIVS_ONLY
@pytest.mark.parametrize("output", ["tensor", "pytree"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", derivs.METHODS["batch_jacobian"])
@pytest.mark.parametrize("batch_op", ["batch_jacobian", "batch_hessian"])
def test_batch_batched_tree(batch_op: str, method: str, kind: str, output: str) -> None:
    """The tree itself batched along dim 0 (every method, the sum trick included)."""
    tree = _batched(KINDS[kind]())
    op = getattr(derivs, batch_op)
    func, one = _batch_funcs(method, output)
    result = op(func, method=method)(tree)
    leaves, spec = tree_flatten(tree)
    flat = op(
        lambda *a: func(tree_unflatten(list(a), spec)), tuple(range(len(leaves))), method=method
    )(*leaves)
    _same(result, _vmap_reference(batch_op, one, tree), flat if output == "pytree" else tuple(flat))


def _batch_funcs(method: str, output: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(func, one): the function a batch operator's ``method`` is handed (the whole batch for
    the sum trick, one sample for the others), and the per-sample one (torch.func's)."""

    def one(t: Any) -> Any:
        return _pack_output(_per_sample(tree_map(lambda x: x[None], t))[0], output)

    def func(t: Any) -> Any:
        # NOTE: the sum trick calls func on the whole batch; the others on one sample.
        return _pack_output(_per_sample(t), output) if method == "sum" else one(t)

    return func, one


def _vmap_reference(batch_op: str, one: Callable[[Any], Any], tree: Any) -> Any:
    """torch.func's per-sample Jacobian or Hessian of ``one`` over the batched ``tree``."""
    inner = torch.func.jacrev if batch_op == "batch_jacobian" else torch.func.hessian
    return torch.func.vmap(inner(one))(tree)


@DERIVS_ONLY
@pytest.mark.parametrize("method", derivs.METHODS["batch_jacobian"])
@pytest.mark.parametrize("batch_op", ["batch_jacobian", "batch_hessian"])
def test_batch_pytree_output_is_each_leafs(batch_op: str, method: str) -> None:
    """Per sample, a pytree output's derivatives are those of each output leaf alone."""
    tree = _batched(KINDS["dict"]())
    op = getattr(derivs, batch_op)
    func, one = _batch_funcs(method, "pytree")
    spec = tree_structure(func(tree))
    leaves = [lambda t, k=k: tree_flatten(func(t))[0][k] for k in range(spec.num_leaves)]
    result = op(func, method=method)(tree)
    per_leaf = _per_output_leaf(lambda f: op(f, method=method), leaves, spec, tree)
    _same(result, _vmap_reference(batch_op, one, tree), per_leaf, exact=False)


@DERIVS_ONLY
def test_batch_in_dims_pytree() -> None:
    """in_dims as vmap takes them: a pytree of ints and None shaped like the argument."""
    tree = {"u": _batched(_t(3, seed=12)), "v": _t(2, seed=13)}

    def func(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return (torch.sin(t["u"]) * t["v"].sum()).sum()

    dims = ({"u": 0, "v": None},)
    result = derivs.batch_hessian(func, in_dims=dims)(tree)
    flat = derivs.batch_hessian(lambda u, v: func({"u": u, "v": v}), (0, 1), in_dims=(0, None))(
        tree["u"], tree["v"]
    )
    _same(result, torch.func.vmap(torch.func.hessian(func), in_dims=dims)(tree), flat)


@DERIVS_ONLY
def test_plain_tensors_keep_their_results() -> None:
    """A tensor argument is not a pytree: the results are the tensors they always were."""
    x = _t(3, seed=14)
    assert isinstance(derivs.jacobian(torch.sin)(x), torch.Tensor)
    assert isinstance(derivs.hessian(lambda v: v.pow(3).sum())(x), torch.Tensor)
    assert isinstance(derivs.hvp(lambda v: v.pow(3).sum(), (x,), (x,)), tuple)


@DERIVS_ONLY
def test_memory_guard_counts_every_leaf() -> None:
    """Two leaves of 60 are refused where one of 60 fits: the guard sees all 120 inputs."""
    one = {"a": torch.ones(60, dtype=torch.float64)}
    two = {**one, "b": torch.ones(60, dtype=torch.float64)}

    def func(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((torch.sin(leaf) ** 2).sum() for leaf in t.values())  # type: ignore[return-value]

    # NOTE: the budget is the memory model's prediction for the one leaf, as a tensor.
    budget = predicted_peak(lambda a: func({"a": a}), (one["a"],), (0,), "auto")
    assert budget is not None
    with derivs.memory_budget(budget):
        derivs.hessian(func)(one)
        with pytest.raises(ValueError, match=r"derivs\.hessian: .* would need"):
            derivs.hessian(func)(two)
    # NOTE: batch_hessian refuses by sizes: per sample the basis (n^2) and the Hessians
    # (2 n^2) in float64. n = 60 (28.1 KiB, 56.2 KiB) fits 10^5 bytes; n = 120, with the
    # unbatched leaf, does not (112.5 KiB, 225.0 KiB).
    batch = torch.ones(2, 60, dtype=torch.float64)
    with derivs.memory_budget(10**5):
        derivs.batch_hessian(func)({"b": batch})
        with pytest.raises(
            ValueError, match=r"derivs\.batch_hessian: .* would need .*\((14,400|28,800) elements\)"
        ):
            derivs.batch_hessian(func, in_dims=({"a": None, "b": 0},))({"a": one["a"], "b": batch})


@DERIVS_ONLY
def test_memory_guard_counts_every_output_leaf() -> None:
    """A second output leaf is refused where the first alone fits: every leaf is counted."""
    x = torch.linspace(-1, 1, 30, dtype=torch.float64)

    def y(v: torch.Tensor) -> torch.Tensor:
        return torch.sin(v)[:20]

    # NOTE: the budget is the memory model's prediction for the one leaf, as a tensor.
    budget = predicted_peak(y, (x,), (0,), "auto")
    assert budget is not None
    with derivs.memory_budget(budget):
        derivs.hessian(lambda v: {"a": y(v)})(x)
        with pytest.raises(ValueError, match=r"derivs\.hessian: .* would need"):
            derivs.hessian(lambda v: {"a": y(v), "b": [y(v) ** 2]})(x)
    # NOTE: per sample 10 inputs, so 100 Hessian entries per output element; a batch of 2
    # with 10 output elements per leaf: 2,000 elements (15.6 KiB in float64) for one leaf,
    # 4,000 (31.2 KiB) for two, against 20,000 bytes.
    batch = torch.ones(2, 10, dtype=torch.float64)
    with derivs.memory_budget(20_000):
        derivs.batch_hessian(lambda v: {"a": v.sin()})(batch)
        for method in derivs.METHODS["batch_hessian"]:
            with pytest.raises(
                ValueError, match=r"derivs\.batch_hessian: the Hessian .*\(4,000 elements\)"
            ):
                derivs.batch_hessian(lambda v: {"a": v.sin(), "b": [v.cos()]}, method=method)(batch)


# ----------------------------------------------------------------------------- bad input


@DERIVS_ONLY
def test_non_tensor_leaf_named_by_path() -> None:
    with pytest.raises(TypeError, match=r"derivs\.hessian: args\[0\]\['lr'\] is an int, not a"):
        derivs.hessian(lambda p: p["w"].sum())({"w": torch.ones(2), "lr": 3})


@DERIVS_ONLY
def test_integer_tensor_leaf_named_by_path() -> None:
    with pytest.raises(
        TypeError, match=r"derivs\.jacobian: args\[1\]\[0\]\.second is a int64 tensor"
    ):
        derivs.jacobian(lambda x, p: x * p[0].first, 1)(
            torch.ones(2), [Pair(torch.ones(2), torch.ones(2, dtype=torch.int64))]
        )


@DERIVS_ONLY
def test_leaf_in_primals_named_by_path() -> None:
    with pytest.raises(TypeError, match=r"derivs\.hvp: primals\[0\]\['s'\] is a str"):
        derivs.hvp(lambda p: p["w"].sum(), ({"w": torch.ones(2), "s": "x"},), ({"w": 1},))


@DERIVS_ONLY
def test_empty_pytree() -> None:
    with pytest.raises(ValueError, match=r"derivs\.batch_jacobian: args\[0\] is an empty dict"):
        derivs.batch_jacobian(lambda p: torch.ones(1))({})


@pytest.mark.parametrize(
    ("tangents", "pattern"),
    [
        (
            ({"w": torch.ones(2), "c": torch.ones(3)},),
            r"tangents\[0\] \(a dict with keys \['c', 'w'\]\) against primals\[0\] \(a dict with keys \['b', 'w'\]\)",
        ),
        (
            (({"w": torch.ones(2), "b": (torch.ones(3),)}),),
            r"tangents\[0\]\['b'\] \(a tuple of 1\)",
        ),
        (
            ([torch.ones(2), torch.ones(3)],),
            r"tangents\[0\] \(a list of 2\) against primals\[0\] \(a dict",
        ),
    ],
    ids=["keys", "leaf_vs_tuple", "list_vs_dict"],
)
@DERIVS_ONLY
def test_tangents_structure_names_first_difference(tangents: Any, pattern: str) -> None:
    primals = ({"w": torch.ones(2), "b": torch.ones(3)},)
    with pytest.raises(ValueError, match=r"derivs\.vhp: cotangents is not structured like primals"):
        derivs.vhp(lambda p: p["w"].sum(), primals, tuple(tangents))
    with pytest.raises(ValueError, match=pattern):
        derivs.hvp(lambda p: p["w"].sum(), primals, tuple(tangents))


@DERIVS_ONLY
def test_tangent_leaf_shape_named_by_path() -> None:
    primals = (Pair(torch.ones(2), torch.ones(3)),)
    tangents = (Pair(torch.ones(2), torch.ones(4)),)
    with pytest.raises(
        ValueError, match=r"derivs\.hvp: tangents\[0\]\.second has shape \(4,\), expected \(3,\)"
    ):
        derivs.hvp(lambda p: p.first.sum(), primals, tangents)


@DERIVS_ONLY
def test_namedtuple_against_tuple() -> None:
    primals = (Pair(torch.ones(2), torch.ones(3)),)
    with pytest.raises(
        ValueError, match=r"tangents\[0\] \(a tuple of 2\) against primals\[0\] \(a Pair of 2\)"
    ):
        derivs.hvp(lambda p: p.first.sum(), primals, ((torch.ones(2), torch.ones(3)),))


@DERIVS_ONLY
def test_in_dims_unlike_the_tree() -> None:
    with pytest.raises(
        ValueError, match=r"derivs\.batch_jacobian: in_dims\[0\]=\{'u': 0\} does not match"
    ):
        derivs.batch_jacobian(lambda t: t["u"], in_dims=({"u": 0},))(
            {"u": torch.ones(2, 3), "v": torch.ones(2)}
        )


@DERIVS_ONLY
def test_sparse_refuses_pytrees() -> None:
    with pytest.raises(
        TypeError,
        match=r"derivs\.sparse_jacobian: args\[0\] .*got dict \(a pytree: .* takes tensors only",
    ):
        derivs.sparse_jacobian(lambda p: p["w"] ** 2)({"w": torch.ones(3)})


def _int_leaf(p: Any) -> Any:
    return {"y": p["w"].sin(), "n": [p["w"].sum(), 3]}


def _int_tensor_leaf(p: Any) -> Any:
    return {"y": p["w"].sin(), "n": (p["w"].sum(), p["w"].long())}


def _batched_int_leaf(p: Any) -> Any:
    return {"y": p["w"].sin(), "n": [p["w"].sum(-1), 3]}


BAD_OUTPUTS = [
    # (operator, kwargs, function, pattern)
    (derivs.hessian, {}, _int_leaf, r"derivs\.hessian: func's output\['n'\]\[1\] is int 3, not a"),
    (
        derivs.hessian,
        {"method": "loop"},
        _int_tensor_leaf,
        r"derivs\.hessian: func's output\['n'\]\[1\] is a int64 tensor of shape \(2, 2\); outputs "
        r"must be real floating point",
    ),
    *[
        (getattr(derivs, op), {"method": m}, _int_leaf, rf"derivs\.{op}: func's output\['n'\]\[1\]")
        for op in ("batch_jacobian", "batch_hessian")
        for m in ("vmap", "loop")
    ],
    *[
        (
            getattr(derivs, op),
            {"method": "sum"},
            _batched_int_leaf,
            rf"{op}: func's output\['n'\]\[1\]",
        )
        for op in ("batch_jacobian", "batch_hessian")
    ],
]


@DERIVS_ONLY
@pytest.mark.parametrize(
    ("op", "kw", "func", "pattern"),
    [
        pytest.param(*row, id=f"{row[0].__name__}-{row[1].get('method', 'auto')}-{row[2].__name__}")
        for row in BAD_OUTPUTS
    ],
)
def test_bad_output_leaf_named_by_path(
    op: Callable[..., Any], kw: dict[str, Any], func: Callable[..., Any], pattern: str
) -> None:
    w = torch.ones(2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=pattern):
        op(func, **kw)({"w": w})


@DERIVS_ONLY
@pytest.mark.parametrize("name", ["hvp", "vhp"])
def test_products_refuse_pytree_outputs(name: str) -> None:
    """torch.func's hvp differentiates a scalar: a pytree output is refused, its leaves named."""
    x = torch.ones(2, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=rf"derivs\.{name}: func must return a Tensor, got dict \(leaves output\['a'\], "
        r"output\['b'\]\[0\]\); Hessian-vector products need one scalar output, as torch\.func's "
        r"hvp does",
    ):
        getattr(derivs, name)(lambda v: {"a": v.sum(), "b": [v.prod()]}, (x,), (x,))


@DERIVS_ONLY
def test_sum_trick_names_the_unbatched_output_leaf() -> None:
    with pytest.raises(
        ValueError,
        match=r"derivs\.batch_hessian: method='sum' needs .* but func returned shape \(\) at "
        r"output\['t'\]\[0\]",
    ):
        derivs.batch_hessian(lambda x: {"s": x.sum(-1), "t": (x.sum(),)}, method="sum")(
            torch.ones(3, 2, dtype=torch.float64)
        )


@DERIVS_ONLY
def test_empty_output_pytree() -> None:
    with pytest.raises(TypeError, match=r"derivs\.hessian: func returned an empty dict"):
        derivs.hessian(lambda x: {})(torch.ones(2))


@DERIVS_ONLY
@pytest.mark.parametrize("name", ["sparse_jacobian", "sparse_hessian"])
def test_sparse_refuses_pytree_outputs(name: str) -> None:
    with pytest.raises(TypeError, match=rf"derivs\.{name}: func must return a Tensor, got dict"):
        getattr(derivs, name)(lambda x: {"y": (x**3).sum()})(torch.ones(3))


# ----------------------------------------------------------------------------- oracles

Oracle = tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]


def _fd(
    name: str, func: Callable[..., Any], transform: Callable[..., Any], suffix: str = ""
) -> dict[str, Oracle]:
    """The finite-difference oracle ``name`` with every scheme, on ``func``."""
    oracle = getattr(oracles, name)
    return {
        f"{name}_{scheme}{suffix}": (
            lambda f, a, n, s=scheme: oracle(f, a, n, scheme=s),
            func,
            transform,
        )
        for scheme in oracles.SCHEMES
    }


ORACLES: dict[str, Oracle] = {
    # name: (oracle, function, torch.func transform giving the reference)
    "loop_jacobian": (oracles.loop_jacobian, tree_out, torch.func.jacrev),
    "loop_hessian": (oracles.loop_hessian, scalar, torch.func.hessian),
    "loop_hessian_pytree_out": (oracles.loop_hessian, tree_out, torch.func.hessian),
    **_fd("fd_jacobian", tree_out, torch.func.jacrev),
    **_fd("fd_hessian", vector, torch.func.hessian),
    **_fd("fd_hessian", tree_out, torch.func.hessian, "_pytree_out"),
}


@DERIVS_ONLY
@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ORACLES)
def test_oracles(name: str, kind: str, argnums: Any) -> None:
    """Nested as torch.func nests, equal to the oracle on the flat leaves, close to torch.func."""
    oracle, func, transform = ORACLES[name]
    tree = KINDS[kind]()
    result = oracle(func, (tree, X), argnums)
    leaves, spec = tree_flatten(tree)
    n = len(leaves)
    nums = tuple(range(n)) + ((n,) if argnums != 0 else ())
    flat = oracle(_on_leaves(func, spec), (*leaves, X), nums)
    ref = transform(func, argnums)(tree, X)
    if isinstance(result, oracles.Estimate):
        # NOTE: finite differences measure their rounding noise per call (not bitwise
        # repeatable): the flat run agrees within both error estimates, torch.func within one.
        assert tree_structure(result.value) == tree_structure(ref)
        assert tree_structure(result.error) == tree_structure(ref)
        both = tree_map(torch.add, result.error, _nest_like(ref, flat.error))
        assert_close(result.value, _nest_like(ref, flat.value), error=both, context=name)
        assert_close(result.value, ref, error=result.error, context=name)
    else:
        _same(result, ref, _nest_like(ref, flat))


def _nest_like(ref: Any, flat: Any) -> Any:
    """The flat oracle's leaves, in their order, nested like ``ref`` (same leaf order)."""
    return tree_unflatten(tree_flatten(flat)[0], tree_structure(ref))


@DERIVS_ONLY
@pytest.mark.parametrize("output", ["tensor", "pytree"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["loop_batch_jacobian", "loop_batch_hessian"])
def test_batch_oracles(name: str, kind: str, output: str) -> None:
    tree = KINDS[kind]()
    func = tree_out if output == "pytree" else vector if name == "loop_batch_jacobian" else scalar
    transform = torch.func.jacrev if name == "loop_batch_jacobian" else torch.func.hessian
    result = getattr(oracles, name)(func, (tree, XB), (0, 1), in_dims=(None, 0))
    ref = torch.func.vmap(transform(func, (0, 1)), in_dims=(None, 0))(tree, XB)
    op = derivs.batch_jacobian if name == "loop_batch_jacobian" else derivs.batch_hessian
    _same(result, ref, op(func, (0, 1), in_dims=(None, 0))(tree, XB), exact=False)


@DERIVS_ONLY
def test_oracle_leaf_named_by_path() -> None:
    with pytest.raises(TypeError, match=r"loop_hessian: args\[0\]\['b'\]\[0\] is int 3, not a"):
        oracles.loop_hessian(scalar, ({"w": X, "b": [3]}, X))
    with pytest.raises(TypeError, match=r"fd_jacobian: args\[1\]\[0\] has dtype torch\.int64"):
        oracles.fd_jacobian(vector, ({"w": X}, (torch.ones(2, dtype=torch.int64),)), 1)


# ----------------------------------------------------------------------------- assert_close


def _failure(actual: Any, expected: Any) -> str:
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected)
    return str(info.value)


@DERIVS_ONLY
def test_assert_close_names_the_worst_leaf_path() -> None:
    expected = {"0.weight": torch.arange(12.0).reshape(3, 4), "0.bias": torch.ones(3)}
    actual = tree_map(torch.clone, expected)
    actual["0.weight"][2, 1] += 1.0
    actual["0.bias"][0] += 1e-4  # out of tolerance too, but far less
    lines = _failure(actual, expected).splitlines()
    assert lines[0].startswith("values differ in block['0.weight'] (shape (3, 4)")
    assert lines[1].startswith("  worst at ['0.weight'][2, 1]: actual 10, expected 9")
    assert lines[-1] == "  (also failing: ['0.bias'])"
    nt = _failure(Pair(torch.ones(2), torch.zeros(())), Pair(torch.ones(2), torch.ones(())))
    assert "values differ in block.second (shape ()" in nt
    assert "worst at .second: actual 0, expected 1" in nt


@DERIVS_ONLY
def test_assert_close_names_the_structure_mismatch() -> None:
    x = torch.ones(2)
    message = _failure({"a": [x, {"b": x}]}, {"a": [x, {"c": x}]})
    assert (
        "structure mismatch: actual['a'][1] has keys ['b'], expected['a'][1] has keys ['c']"
        in message
    )
    message = _failure([Pair(x, x)], [(x, x)])
    assert "actual[0] is a Pair, expected[0] is a tuple" in message


# ----------------------------------------------------------------------------- check


def _model(batch_norm: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(3) if batch_norm else torch.nn.Identity()
    layers = [torch.nn.Linear(2, 3), norm, torch.nn.Tanh(), torch.nn.Linear(3, 2)]
    return torch.nn.Sequential(*layers).double()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _untouched(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Parameters and buffers (values, dtypes), and no gradient accumulated on them."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


XM = _t(4, 2, seed=15)
YM = torch.tensor([0, 1, 1, 0])


def _loss(func: Callable[..., Any]) -> Callable[..., torch.Tensor]:
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(func(params, x), y)

    return loss


@DERIVS_ONLY
@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm_train"])
def test_check_a_model_by_its_parameters(batch_norm: bool) -> None:
    """derivs.check over the parameter dict; the model's parameters and buffers untouched."""
    model = _model(batch_norm)
    before = _state(model)
    func, params = derivs.functional_model(model)
    assert params.keys() == dict(model.named_parameters()).keys()
    # NOTE: order 2 through a train-mode BatchNorm is wrong under vmap in torch 2.13 (see
    # docs/guide/check.md); first order there, both orders without it.
    report = derivs.check(_loss(func), params, XM, YM, order=1 if batch_norm else 2)
    assert report.passed, report
    assert report.argnums == 0
    assert "{'0.weight': float64[3, 2], '0.bias': float64[3]" in report.inputs
    assert report.notes[-1].endswith(
        "args[0] is args[0]['0.weight'], args[1] is args[0]['0.bias'], "
        + ("args[2] is args[0]['1.weight'], args[3] is args[0]['1.bias'], " if batch_norm else "")
        + f"args[{2 + 2 * batch_norm}] is args[0]['3.weight'], "
        f"args[{3 + 2 * batch_norm}] is args[0]['3.bias']"
    )
    _untouched(model, before)


@DERIVS_ONLY
def test_functional_model_is_the_model() -> None:
    """func(params, x) is model(x); the operators over params agree with torch.func's."""
    model = _model(batch_norm=True)
    func, params = derivs.functional_model(model)
    expected = model(XM)  # NOTE: this call updates the model's running statistics
    after_call = _state(model)
    assert torch.equal(func(params, XM), expected)
    _untouched(model, after_call)
    loss = _loss(func)
    grads = derivs.jacobian(loss)(params, XM, YM)
    _same(
        grads,
        torch.func.grad(loss)(params, XM, YM),
        derivs.jacobian(loss, method="rev")(params, XM, YM),
        exact=False,
    )
    _untouched(model, after_call)


@DERIVS_ONLY
def test_check_pytree_failure_is_raised_with_the_report() -> None:
    """A wrong derivative inside a pytree argument fails the check like a tensor's would."""

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            return g * 2 * torch.cos(ctx.saved_tensors[0])

    def func(p: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = Wrong.apply(p["a"]) * p["b"]  # type: ignore[no-untyped-call]
        return out

    with pytest.raises(derivs.CheckFailure) as info:
        derivs.check(func, {"a": _t(3, seed=16), "b": _t(3, seed=17)}, order=1)
    report = info.value.report
    assert report.status == "failed" and "args[0] is args[0]['a']" in report.notes[-1]


@DERIVS_ONLY
def test_check_refuses_bad_leaves_by_path() -> None:
    with pytest.raises(TypeError, match=r"derivs\.check: args\[0\]\['n'\] is an int, not a"):
        derivs.check(lambda p: p["x"].sum(), {"x": _t(2, seed=18), "n": 3})


@DERIVS_ONLY
def test_functional_model_refuses_a_non_module() -> None:
    with pytest.raises(
        TypeError, match=r"derivs\.functional_model: model must be a torch\.nn\.Module"
    ):
        derivs.functional_model(lambda x: x)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties
# Any implementation declaring `pytrees`: drawn functions whose arguments come packed in
# pytrees (derivs.strategies.pytree_problems), against the naive-loop oracles on the same
# pytrees (they nest as torch.func does: test_oracles above) and the dense Hessian.

SMALL = 8  # NOTE: the references are loop oracles: n_in * (1 + n_in) gradients for a Hessian.


def _problem(
    data: st.DataObject, device: str, dtype: torch.dtype, *, scalar: bool | None, outputs: Any
) -> ds.PytreeProblem:
    func = ds.functions(scalar_output=scalar, max_elements=SMALL)
    problem = ds.problems(func, device=device, dtype=dtype)
    return data.draw(ds.pytree_problems(problem, outputs=outputs), label="pytree problem")


def _compare(result: Any, expected: Any, p: ds.PytreeProblem, context: str) -> None:
    assert tree_structure(result) == tree_structure(expected), context
    values = (p.flat.args, p.func(*p.args))
    assert_close_scaled(result, expected, values=values, context=context)


@pytest.mark.parametrize("method", IMPL.params("jacobian", "pytrees"))
@given(data=st.data())
def test_jacobian_of_pytrees(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Pytree arguments and outputs: nested as torch.func nests, equal to the loop oracle."""
    p = _problem(data, device, dtype, scalar=None, outputs=ds.OUTPUT_KINDS)
    snap = Snapshot(p.flat.args)
    result = IMPL.jacobian(p.func, p.argnums, method=method)(*p.args)
    snap.check(f"jacobian(method={method!r})")
    expected = oracles.loop_jacobian(p.func, p.args, p.argnums)
    _compare(result, expected, p, f"jacobian({p.func!r}, {p.argnums}, method={method!r})")


@pytest.mark.parametrize("method", IMPL.params("hessian", "pytrees"))
@given(data=st.data())
def test_hessian_of_pytrees(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """The output's structure outside, the argument's twice inside, equal to the loop
    oracle; a pytree output's Hessian is each output leaf's alone, nested."""
    scalar = None if IMPL.supports("vector_hessians", "hessian", method) else True
    p = _problem(data, device, dtype, scalar=scalar, outputs=ds.OUTPUT_KINDS)
    context = f"hessian({p.func!r}, {p.argnums}, method={method!r})"
    result = IMPL.hessian(p.func, p.argnums, method=method)(*p.args)
    expected = oracles.loop_hessian(p.func, p.args, p.argnums)
    _compare(result, expected, p, context)
    if p.func.spec is not None:
        per_leaf = _per_output_leaf(
            lambda f: IMPL.hessian(f, p.argnums, method=method), _leaves_of(p), p.func.spec, *p.args
        )
        _compare(result, per_leaf, p, context)


def _leaves_of(p: ds.PytreeProblem) -> list[Callable[..., torch.Tensor]]:
    """The functions giving each leaf of ``p``'s pytree output alone, in order."""
    return [p.func.leaf(k) for k in range(p.func.n_outputs)]


@pytest.mark.parametrize(("api", "method"), IMPL.api_params(["hvp", "vhp"], "pytrees"))
@given(data=st.data())
def test_products_of_pytrees(
    device: str, dtype: torch.dtype, api: str, method: str, data: st.DataObject
) -> None:
    """hvp/vhp shaped like the primals, equal to the dense Hessian (of the flat problem)
    contracted with the vectors."""
    p = _problem(data, device, dtype, scalar=True, outputs=("tensor",))
    flat_v = data.draw(ds.tangents_like(p.flat.args), label="vectors")
    v = p.pack(flat_v)
    result = getattr(IMPL, api)(p.func, p.args, v, method=method)
    expected = p.pack(oracle_result(api, p.flat.func, p.flat.args, None, flat_v))
    _compare(result, expected, p, f"{api}({p.func!r}, method={method!r})")


def _batch_methods(api: str) -> list[Any]:
    """The methods of ``api`` with pytrees, but not those handed the whole-batch function."""
    return IMPL.params(api, "pytrees", exclude=IMPL.methods(api, "whole_batch"))


@pytest.mark.parametrize("method", _batch_methods("batch_jacobian"))
@given(data=st.data())
def test_batch_jacobian_of_pytrees(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    _batch_property("batch_jacobian", device, dtype, method, data)


@pytest.mark.parametrize("method", _batch_methods("batch_hessian"))
@given(data=st.data())
def test_batch_hessian_of_pytrees(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    _batch_property("batch_hessian", device, dtype, method, data)


def _batch_property(
    api: str, device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Per-sample derivatives over pytrees (arguments and outputs), in_dims packed like the
    arguments (a pytree of ints and None, as vmap takes them), equal to the per-sample loop
    oracle and, for a pytree output, to each output leaf's alone."""
    hessian = api == "batch_hessian"
    scalar = True if hessian and not IMPL.supports("vector_hessians", api, method) else None
    func = ds.functions(scalar_output=scalar, max_elements=SMALL, batch_polymorphic=True)
    in_dims = None if IMPL.supports("in_dims", api, method) else 0
    problem = ds.batched_problems(func, device=device, dtype=dtype, in_dims=in_dims)
    p = data.draw(
        ds.batched_pytree_problems(problem, outputs=ds.OUTPUT_KINDS), label="batched pytree problem"
    )
    given_dims = p.in_dims if in_dims is None else 0
    op = getattr(IMPL, api)
    result = op(p.func, p.argnums, in_dims=given_dims, method=method)(*p.args)
    oracle = oracles.loop_batch_hessian if hessian else oracles.loop_batch_jacobian
    expected = oracle(p.func, p.args, p.argnums, in_dims=given_dims)
    context = f"{api}({p.func!r}, {p.argnums}, in_dims={given_dims}, method={method!r})"
    references = [expected]
    if p.func.spec is not None:
        derivative = lambda f: op(f, p.argnums, in_dims=given_dims, method=method)  # noqa: E731
        references.append(_per_output_leaf(derivative, _leaves_of(p), p.func.spec, *p.args))
    for reference in references:
        assert tree_structure(result) == tree_structure(reference), context
        assert_close_scaled(result, reference, values=(p.flat.args,), context=context)
