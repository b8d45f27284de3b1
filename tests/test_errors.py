"""Every bad input of the contract, in one table: a TypeError/ValueError naming the API and argument.

Each row is ``(id, call, exception type, regex the message must match)``. The regex always
starts with the API's name, so a message that forgets to say who raised it fails here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from suite_helpers import IMPL

import derivs
import derivs.conformance
import pytest_derivs._impl
from derivs import _hessian, _jacobian, _registry
from derivs._check import OPERATORS as CHECK_OPERATORS

pytestmark = pytest.mark.conformance

x3 = torch.ones(3)
x4 = torch.ones(4)
X = torch.ones(4, 3)


def scalar(x: torch.Tensor, *rest: Any) -> torch.Tensor:
    return (x**2).sum()


def vector(x: torch.Tensor, *rest: Any) -> torch.Tensor:
    return x.sin()


def two(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum()


TRANSFORMS = {
    "jacobian": derivs.jacobian,
    "hessian": derivs.hessian,
    "batch_jacobian": derivs.batch_jacobian,
    "batch_hessian": derivs.batch_hessian,
}
PRODUCTS = {"hvp": derivs.hvp, "vhp": derivs.vhp}
# The argument each transform's returned function is called with, batched for batch_*.
ARG = {"jacobian": x3, "hessian": x3, "batch_jacobian": X, "batch_hessian": X}

Case = tuple[str, Callable[[], Any], type[Exception], str]
CASES: list[Case] = []


def case(id: str, call: Callable[[], Any], exc: type[Exception], pattern: str) -> None:
    CASES.append((id, call, exc, pattern))


for name, T in TRANSFORMS.items():
    api = rf"derivs\.{name}: "
    a = ARG[name]
    case(f"{name}-func-not-callable", lambda T=T: T(3), TypeError, api + "func must be callable")
    case(
        f"{name}-func-none",
        lambda T=T: T(None),
        TypeError,
        api + "func must be callable, got NoneType",
    )
    case(
        f"{name}-method-unknown",
        lambda T=T: T(scalar, method="bogus"),
        ValueError,
        api + r"method='bogus' is not one of",
    )
    case(
        f"{name}-method-not-str",
        lambda T=T: T(scalar, method=1),
        ValueError,
        api + "method=1 is not one of",
    )
    case(
        f"{name}-argnums-float",
        lambda T=T: T(scalar, argnums=0.0),
        TypeError,
        api + "argnums must be an int",
    )
    case(
        f"{name}-argnums-bool",
        lambda T=T: T(scalar, argnums=True),
        TypeError,
        api + "argnums must be an int",
    )
    case(
        f"{name}-argnums-str",
        lambda T=T: T(scalar, argnums="0"),
        TypeError,
        api + "argnums must be an int",
    )
    case(
        f"{name}-argnums-list",
        lambda T=T: T(scalar, argnums=[0]),
        TypeError,
        api + "argnums must be an int",
    )
    case(
        f"{name}-argnums-empty",
        lambda T=T: T(scalar, argnums=()),
        ValueError,
        api + r"argnums=\(\) is empty",
    )
    case(
        f"{name}-argnums-tuple-of-float",
        lambda T=T: T(scalar, argnums=(0, 1.0)),
        TypeError,
        api + r"argnums\[1\] must be an int",
    )
    case(
        f"{name}-argnums-out-of-range",
        lambda T=T, a=a: T(scalar, argnums=1)(a),
        ValueError,
        api + "argnums=1 is out of range for 1 positional",
    )
    case(
        f"{name}-argnums-negative-out-of-range",
        lambda T=T, a=a: T(scalar, argnums=-2)(a),
        ValueError,
        api + "argnums=-2 is out of range",
    )
    case(
        f"{name}-argnums-duplicated",
        lambda T=T, a=a: T(two, argnums=(0, 0))(a, a),
        ValueError,
        api + r"argnums=\(0, 0\) names the same argument twice",
    )
    case(
        f"{name}-argnums-duplicated-negative",
        lambda T=T, a=a: T(two, argnums=(1, -1))(a, a),
        ValueError,
        api + r"argnums=\(1, -1\) names the same argument twice",
    )
    case(
        f"{name}-input-list",
        lambda T=T: T(scalar)([1.0, 2.0]),
        TypeError,
        api + r".*args\[0\].*(must be a floating-point tensor|not a tensor)",
    )
    case(
        f"{name}-input-float",
        lambda T=T: T(scalar)(1.5),
        TypeError,
        api
        + r".*args\[0\].*(must be a floating-point tensor to differentiate, got float 1.5|is float 1.5, not a tensor)",
    )
    case(
        f"{name}-input-int-tensor",
        lambda T=T, a=a: T(scalar)(a.long()),
        TypeError,
        api + r"args\[0\] .* is a int64 tensor .* only real floating-point",
    )
    case(
        f"{name}-input-bool-tensor",
        lambda T=T, a=a: T(scalar)(a.bool()),
        TypeError,
        api + r"args\[0\] .* is a bool tensor",
    )
    case(
        f"{name}-input-complex-tensor",
        lambda T=T, a=a: T(scalar)(a.to(torch.complex64)),
        TypeError,
        api + r"args\[0\] .* complex64",
    )
    case(
        f"{name}-second-input-int",
        lambda T=T, a=a: T(two, argnums=(0, 1))(a, a.int()),
        TypeError,
        api + r"args\[1\] \(argnums includes 1\)",
    )
    case(
        f"{name}-returns-list", lambda T=T, a=a: T(lambda x: [1.0, 2.0])(a), TypeError, api + "func"
    )
    case(
        f"{name}-returns-none",
        lambda T=T, a=a: T(lambda x: None)(a),
        TypeError,
        api + "func must return",
    )
    case(
        f"{name}-returns-float",
        lambda T=T, a=a: T(lambda x: 1.0)(a),
        TypeError,
        api + "func must return",
    )
    case(
        f"{name}-returns-int-tensor",
        lambda T=T, a=a: T(lambda x: torch.ones(2, dtype=torch.long))(a),
        TypeError,
        api + "func returned a int64 tensor",
    )

for name in ("jacobian", "hessian", "batch_jacobian"):
    T = TRANSFORMS[name]
    api = rf"derivs\.{name}: "
    case(
        f"{name}-chunk-size-zero",
        lambda T=T: T(scalar, chunk_size=0),
        ValueError,
        api + "chunk_size must be None or >= 1, got 0",
    )
    case(
        f"{name}-chunk-size-negative",
        lambda T=T: T(scalar, chunk_size=-3),
        ValueError,
        api + "chunk_size must be None or >= 1, got -3",
    )
    case(
        f"{name}-chunk-size-float",
        lambda T=T: T(scalar, chunk_size=2.0),
        TypeError,
        api + "chunk_size must be None or an int",
    )
    case(
        f"{name}-chunk-size-bool",
        lambda T=T: T(scalar, chunk_size=True),
        TypeError,
        api + "chunk_size must be None or an int",
    )
for name in ("jacobian", "hessian"):
    T = TRANSFORMS[name]
    case(
        f"{name}-chunk-size-with-loop",
        lambda T=T: T(scalar, method="loop", chunk_size=2),
        ValueError,
        rf"derivs\.{name}: chunk_size=2 has no effect with method='loop'",
    )

J = r"derivs\.jacobian: "
case(
    "jacobian-has-aux-not-bool",
    lambda: derivs.jacobian(vector, has_aux=1),
    TypeError,
    J + "has_aux must be True or False",
)
for m in derivs.METHODS["jacobian"]:
    case(
        f"jacobian-{m}-has-aux-returns-tensor",
        lambda m=m: derivs.jacobian(vector, has_aux=True, method=m)(x3),
        ValueError,
        J
        + r"has_aux=True but func returned a float32 tensor of shape \(3,\); expected an \(output, aux\) pair",
    )
    case(
        f"jacobian-{m}-has-aux-returns-triple",
        lambda m=m: derivs.jacobian(lambda x: (x, x, x), has_aux=True, method=m)(x3),
        ValueError,
        J + "has_aux=True but func returned tuple",
    )

for name in ("batch_jacobian", "batch_hessian"):
    T = TRANSFORMS[name]
    api = rf"derivs\.{name}: "
    case(
        f"{name}-in-dims-too-long",
        lambda T=T: T(scalar, in_dims=(0, 0))(X),
        ValueError,
        api + r"in_dims=\(0, 0\) has 2 entries but func was called with 1 argument",
    )
    case(
        f"{name}-in-dims-too-short",
        lambda T=T: T(two, in_dims=(0,))(X, X),
        ValueError,
        api + r"in_dims=\(0,\) has 1 entries but func was called with 2",
    )
    case(
        f"{name}-in-dims-out-of-range",
        lambda T=T: T(scalar, in_dims=2)(X),
        ValueError,
        api + r"in_dims\[0\]=2 is out of range for args\[0\] of shape \(4, 3\)",
    )
    case(
        f"{name}-in-dims-float",
        lambda T=T: T(scalar, in_dims=0.0)(X),
        TypeError,
        api + "in_dims must be an int or a tuple",
    )
    case(
        f"{name}-in-dims-entry-str",
        lambda T=T: T(two, in_dims=(0, "0"))(X, X),
        TypeError,
        api + r"in_dims\[1\] must be an int or None",
    )
    case(
        f"{name}-in-dims-all-none",
        lambda T=T: T(two, in_dims=(None, None))(x3, x3),
        ValueError,
        api + r"in_dims=\(None, None\) batches no argument",
    )
    case(
        f"{name}-in-dims-on-non-tensor",
        lambda T=T: T(lambda x, s: (x * s).sum(), in_dims=(0, 0))(X, 2.0),
        TypeError,
        api + r"in_dims\[1\]=0 but args\[1\] is float",
    )
    case(
        f"{name}-batch-size-mismatch",
        lambda T=T: T(two, argnums=(0, 1))(X, torch.ones(5, 3)),
        ValueError,
        api + r"batched arguments have different batch sizes \(args\[0\]: 4, args\[1\]: 5\)",
    )
    case(
        f"{name}-empty-batch",
        lambda T=T: T(scalar)(torch.ones(0, 3)),
        ValueError,
        api + "the batch is empty",
    )
    case(
        f"{name}-sum-coupled-mean",
        lambda T=T: T(lambda x: (x - x.mean(0)).sum(-1), method="sum")(X),
        ValueError,
        api + "func couples samples.*use method='vmap'",
    )
    case(
        f"{name}-sum-coupled-softmax",
        lambda T=T: T(lambda x: torch.softmax(x, 0).sum(-1), method="sum")(X),
        ValueError,
        api + "func couples samples",
    )
    case(
        f"{name}-sum-coupled-cumsum",
        lambda T=T: T(lambda x: x.cumsum(0).sum(-1), method="sum")(X),
        ValueError,
        api + "func couples samples",
    )
    case(
        f"{name}-sum-coupled-reverse-cumsum",
        lambda T=T: T(lambda x: x.flip(0).cumsum(0).flip(0).sum(-1), method="sum")(X),
        ValueError,
        api + "func couples samples",
    )
    case(
        f"{name}-sum-unbatched-argnum",
        lambda T=T: T(lambda w, x: (x @ w).sum(-1), in_dims=(None, 0), method="sum")(x3, X),
        ValueError,
        api + r"method='sum' .* unbatched args\[0\] \(in_dims\[0\] is None\); use method='vmap'",
    )
    case(
        f"{name}-sum-output-not-batched",
        lambda T=T: T(lambda x: (x**2).sum(), method="sum")(X),
        ValueError,
        api
        + r"method='sum' needs func to map the whole batch to outputs batched along dim 0 \(size 4\), but func returned shape \(\)",
    )

for name, P in PRODUCTS.items():
    api = rf"derivs\.{name}: "
    vec = "tangents" if name == "hvp" else "cotangents"
    case(
        f"{name}-func-not-callable",
        lambda P=P: P("f", (x3,), (x3,)),
        TypeError,
        api + "func must be callable",
    )
    case(
        f"{name}-method-unknown",
        lambda P=P: P(scalar, (x3,), (x3,), method="fwd_fwd"),
        ValueError,
        api + "method='fwd_fwd' is not one of",
    )
    case(
        f"{name}-primals-tensor",
        lambda P=P: P(scalar, x3, (x3,)),
        TypeError,
        api + r"primals must be a tuple of tensors, got a float32 tensor of shape \(3,\) \(wrap",
    )
    case(
        f"{name}-primals-list",
        lambda P=P: P(scalar, [x3], (x3,)),
        TypeError,
        api + "primals must be a tuple",
    )
    case(
        f"{name}-vectors-tensor",
        lambda P=P: P(scalar, (x3,), x3),
        TypeError,
        api + f"{vec} must be a tuple of tensors",
    )
    case(
        f"{name}-primals-empty",
        lambda P=P: P(scalar, (), ()),
        ValueError,
        api + r"primals=\(\) is empty",
    )
    case(
        f"{name}-length-mismatch",
        lambda P=P: P(two, (x3, x3), (x3,)),
        ValueError,
        api + f"{vec} has 1 entries, expected 2 like primals",
    )
    case(
        f"{name}-shape-mismatch",
        lambda P=P: P(scalar, (x3,), (x4,)),
        ValueError,
        api + rf"{vec}\[0\] has shape \(4,\), expected \(3,\) like primals\[0\]",
    )
    case(
        f"{name}-second-shape-mismatch",
        lambda P=P: P(two, (x3, x3), (x3, x4)),
        ValueError,
        api + rf"{vec}\[1\] has shape \(4,\), expected \(3,\) like primals\[1\]",
    )
    case(
        f"{name}-dtype-mismatch",
        lambda P=P: P(scalar, (x3,), (x3.double(),)),
        TypeError,
        api + rf"{vec}\[0\] has dtype torch.float64, expected torch.float32",
    )
    case(
        f"{name}-vector-not-tensor",
        lambda P=P: P(scalar, (x3,), ([1.0, 1.0, 1.0],)),
        TypeError,
        api + rf"{vec}\[0\] must be a tensor",
    )
    case(
        f"{name}-primal-int",
        lambda P=P: P(scalar, (x3.long(),), (x3,)),
        TypeError,
        api + r"primals\[0\] is a int64 tensor",
    )
    case(
        f"{name}-primal-not-tensor",
        lambda P=P: P(scalar, (1.0,), (x3,)),
        TypeError,
        api + r"primals\[0\] must be a floating-point tensor",
    )
    for m in derivs.METHODS[name]:
        case(
            f"{name}-{m}-non-scalar-func",
            lambda P=P, m=m: P(vector, (x3,), (x3,), method=m),
            ValueError,
            api + r"func must return a scalar \(0-d tensor\), got a float32 tensor of shape \(3,\)",
        )
        case(
            f"{name}-{m}-shape-1-output",
            lambda P=P, m=m: P(lambda x: x.sum().reshape(1), (x3,), (x3,), method=m),
            ValueError,
            api + r"func must return a scalar",
        )
        case(
            f"{name}-{m}-returns-tuple",
            lambda P=P, m=m: P(lambda x: (x.sum(),), (x3,), (x3,), method=m),
            TypeError,
            api + "func must return a Tensor, got tuple",
        )

H = r"derivs\.hessian: "


def _with_budget(nbytes: int, call: Callable[[], Any]) -> Any:
    with derivs.memory_budget(nbytes):
        return call()


def _over_budget(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with derivs.memory_budget(2**16):
            return call()

    return run


case(
    "hessian-over-budget",
    _over_budget(lambda: derivs.hessian(scalar, chunk_size=8)(torch.ones(200))),
    derivs.MemoryBudgetError,
    H
    + r"the Hessian would need 156\.2 KiB \(40,000 elements\), above the memory budget of 64\.0 KiB; use derivs\.hvp",
)
case(
    "hessian-basis-over-budget",
    _over_budget(lambda: derivs.hessian(scalar)(torch.ones(200))),
    derivs.MemoryBudgetError,
    H + r"the basis of unit vectors would need .* pass chunk_size",
)
case(
    "jacobian-over-budget",
    _over_budget(lambda: derivs.jacobian(lambda x: x.repeat(100), method="rev")(torch.ones(200))),
    derivs.MemoryBudgetError,
    J + r"the Jacobian would need 15\.3 MiB \(4,000,000 elements\)",
)
case(
    "hvp-dense-over-budget",
    _over_budget(
        lambda: derivs.hvp(scalar, (torch.ones(200),), (torch.ones(200),), method="dense")
    ),
    derivs.MemoryBudgetError,
    r"derivs\.hvp: the (Hessian|basis of unit vectors) would need",
)
case(
    "batch-hessian-over-budget",
    _over_budget(lambda: derivs.batch_hessian(scalar)(torch.ones(8, 60))),
    derivs.MemoryBudgetError,
    r"derivs\.batch_hessian: the Hessian would need 112\.5 KiB \(28,800 elements\)",
)
# NOTE: sizes in GiB and TiB: the need is n * n float32 elements (n = 2**14: 1 GiB; n = 2**20:
# 4 TiB), refused at the first evaluation, before anything of that size is allocated.
case(
    "jacobian-over-budget-gib",
    lambda: _with_budget(2**29, lambda: derivs.jacobian(vector)(torch.ones(2**14))),
    derivs.MemoryBudgetError,
    J + r"the Jacobian would need 1\.0 GiB \(268,435,456 elements\), above the memory budget"
    r" of 512\.0 MiB",
)
case(
    "jacobian-over-budget-tib",
    lambda: _with_budget(2**40, lambda: derivs.jacobian(vector)(torch.ones(2**20))),
    derivs.MemoryBudgetError,
    J + r"the Jacobian would need 4\.0 TiB \(1,099,511,627,776 elements\), above the memory"
    r" budget of 1\.0 TiB",
)
case(
    "hessian-peak-over-budget",
    _over_budget(lambda: derivs.hessian(scalar)(torch.ones(60))),
    derivs.MemoryBudgetError,
    H + r"hessian\(method='auto'\), which runs '\w+', would need about [0-9.]+ KiB at its peak"
    r" \(predicted\), above the memory budget of 64\.0 KiB; ",
)
case(
    "sparse-jacobian-pattern-shape",
    lambda: derivs.sparse_jacobian(vector, pattern=torch.ones(2, 5, dtype=torch.bool))(
        torch.ones(2, 3)
    ),
    ValueError,
    r"derivs\.sparse_jacobian: pattern has shape \(2, 5\), expected \(2, 3, 2, 3\) or \(6, 6\)",
)
# A pytree output refused by the sparse transforms and their patterns: the advice is theirs
# (the whole message, anchored; hvp's words about Hessian-vector products are not).
_ONE_SCALAR = (
    r"one scalar output, not a pytree: reduce the outputs to a scalar, or use derivs\.hessian"
)
_ONE_TENSOR = (
    r"one tensor output, not a pytree: concatenate the leaves \(torch\.cat of their "
    r"\.flatten\(\)\), or use derivs\.jacobian"
)
for name, takes in {
    "sparse_hessian": _ONE_SCALAR,
    "hessian_sparsity": _ONE_SCALAR,
    "sparse_jacobian": _ONE_TENSOR,
    "jacobian_sparsity": _ONE_TENSOR,
}.items():
    case(
        f"{name}-pytree-output",
        lambda name=name: getattr(derivs, name)(lambda x: {"a": (x**2).sum(), "b": [x]})(x3),
        TypeError,
        rf"^derivs\.{name}: func must return a Tensor, got dict \(leaves output\['a'\], "
        rf"output\['b'\]\[0\]\); derivs\.{name} takes {takes}, which takes pytree outputs "
        r"\(dense\)$",
    )
case(
    "set-memory-budget-zero",
    lambda: derivs.set_memory_budget(0),
    ValueError,
    r"derivs\.set_memory_budget: nbytes must be >= 1",
)
case(
    "set-memory-budget-float",
    lambda: derivs.set_memory_budget(1e9),
    TypeError,
    r"derivs\.set_memory_budget: nbytes must be an int",
)


@pytest.mark.derivs_only("errors naming the API and the argument")
@pytest.mark.parametrize(
    ("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_clear_error(
    call: Callable[[], Any], exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, (
        f"raised {type(info.value).__name__}, expected exactly {exc.__name__}"
    )
    assert re.search(pattern, str(info.value)), (
        f"message {str(info.value)!r} does not match {pattern!r}"
    )


@pytest.mark.derivs_only("derivs' own tables of methods")
def test_method_tables_match_the_registry() -> None:
    """Every list of operators and methods is the registry's, and each dispatch table holds
    exactly the registry's methods (hvp, vhp and the batch operators branch instead: their
    properties run every registry method through IMPL.methods)."""
    registry = {op: tuple(ms) for op, ms in _registry.OPERATORS.items()}
    assert registry == derivs.METHODS
    assert CHECK_OPERATORS == _registry.OPERATORS
    assert tuple(registry) == derivs.conformance.OPERATORS
    assert tuple(registry) == pytest_derivs._impl.OPERATORS
    assert tuple(_jacobian.IMPLS) == registry["jacobian"]
    composed = set(_hessian.COMPOSITIONS) | {"loop"}  # loop runs the oracle, not a composition
    assert composed == set(registry["hessian"])


@pytest.mark.derivs_only("the bad-input table itself")
def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


class UserError(Exception):
    """Raised by the user's own function: derivs must let it through untouched."""


def boom(*args: Any) -> torch.Tensor:
    raise UserError("from the user's func")


# operator -> how to call it with boom; the operators' argument (batched for batch_*)
USER_CALLS: dict[str, Callable[[str], Any]] = {
    "jacobian": lambda m: IMPL.jacobian(boom, method=m)(x3),
    "hessian": lambda m: IMPL.hessian(boom, method=m)(x3),
    "hvp": lambda m: IMPL.hvp(boom, (x3,), (x3,), method=m),
    "vhp": lambda m: IMPL.vhp(boom, (x3,), (x3,), method=m),
    "batch_jacobian": lambda m: IMPL.batch_jacobian(boom, method=m)(X),
    "batch_hessian": lambda m: IMPL.batch_hessian(boom, method=m)(X),
}


@pytest.mark.parametrize(("api", "method"), IMPL.api_params(list(USER_CALLS)))
def test_user_exception_propagates_unchanged(api: str, method: str) -> None:
    with pytest.raises(UserError, match="from the user's func") as info:
        USER_CALLS[api](method)
    assert type(info.value) is UserError


@pytest.mark.derivs_only("the memory budget")
def test_failed_call_leaves_budget_and_inputs_alone() -> None:
    before = derivs.get_memory_budget()
    x = torch.ones(200, requires_grad=False)
    with pytest.raises(ValueError):
        _over_budget(lambda: derivs.hessian(scalar)(x))()
    assert derivs.get_memory_budget() == before
    assert not x.requires_grad and torch.equal(x, torch.ones(200))
