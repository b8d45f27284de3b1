"""Shared pieces of the verification suite: contexts, snapshots, references."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from hypothesis import note

import derivs.strategies as ds
import pytest_derivs
from derivs import oracles
from derivs.oracles._noise import measured_noise
from derivs.testing import Tolerance, tolerance
from derivs.testing import assert_close as _assert_close

# The implementation under test (--impl; derivs by default): the suite calls the operators
# through it, e.g. IMPL.jacobian(func, argnums, method=m), and parametrises over its methods.
IMPL = pytest_derivs.impl()


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors of a nest of tuples, lists and dicts, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tensor_leaves(v)]
    if isinstance(tree, tuple | list):
        return [t for v in tree for t in tensor_leaves(v)]
    return []


def magnitude(*trees: Any) -> float:
    """The largest finite |value| among the tensors in ``trees`` (0 for meta or empty)."""
    best = 0.0
    for t in (t for tree in trees for t in tensor_leaves(tree)):
        if t.device.type != "meta" and t.numel() and t.dtype.is_floating_point:
            finite = t.detach()[torch.isfinite(t.detach())]
            if finite.numel():
                best = max(best, float(finite.abs().max()))
    return best


def assert_close_scaled(
    actual: Any,
    expected: Any,
    *,
    error: Any = None,
    context: str = "",
    values: tuple[Any, ...] = (),
    terms: int | None = None,
) -> None:
    """``derivs.testing.assert_close`` with the absolute tolerance scaled to the computation.

    NOTE: the rounding error of a derivative is relative to the magnitudes that flow through
    its computation, not to the derivative itself: d tanh(s)/ds = 1 - tanh(s)**2 near
    saturation is 1e-3 but carries an absolute error of eps * tanh(s)**2 ~ eps. So the
    norm-wise scale of the default tolerance is the largest of |expected| and the magnitude
    of ``values`` (the function's inputs and output, which bound its intermediates up to the
    generated functions' fixed weights). The relative part and the eps/sqrt(numel) factors
    are derivs.testing's defaults; in float64 this still fails a 1e-6 relative error unless
    the derivative is 1e7 times smaller than the values around it. The atol comes from
    ``derivs.testing.tolerance``, so it keeps that function's underflow floor (the scale is
    never taken below the dtype's smallest normal number: see the NOTE there).

    The count of roundings is per entry, not per block (:func:`entry_terms`): ``terms``
    where the caller knows the sizes its function contracts over, else derived from
    ``values``; never more than the largest block's numel, the count it replaces.
    """
    tol = scaled_tolerance(actual, expected, values, terms) if values else None
    atol = None if tol is None else tol.atol
    _assert_close(actual, expected, error=error, context=context, atol=atol)


def scaled_tolerance(
    actual: Any, expected: Any, values: tuple[Any, ...], terms: int | None = None
) -> Tolerance | None:
    """The tolerance :func:`assert_close_scaled` holds ``actual`` to (None without tensors):
    the less precise dtype, the largest block's numel, the scale max(|expected|, |values|)
    and the count per entry (``terms``, else :func:`entry_terms`, at most that numel)."""
    leaves = tensor_leaves(actual) + tensor_leaves(expected)
    if not leaves:
        return None
    low = max(
        (t.dtype for t in leaves if t.dtype.is_floating_point),
        key=lambda d: torch.finfo(d).eps,
        default=torch.float64,
    )
    numel = max(t.numel() for t in leaves)
    scale = max(magnitude(expected), magnitude(*values))
    count = min(numel, entry_terms(values) if terms is None else terms)
    return tolerance(low, numel, scale=scale, terms=count)


def entry_terms(values: tuple[Any, ...]) -> int:
    """The number of terms summed into one entry of a derivative of the suite's functions.

    NOTE: the count per entry. An entry of a Jacobian, Hessian or hvp accumulates the
    rounding of the terms summed into it: the chain rule's contractions, each over one
    intermediate of the function (``u @ W`` sums over W's rows and its vjp over W's
    columns, a reduction over the elements it reduces, a broadcast's vjp over the elements
    it made), so the count is bounded by the sizes the function contracts over, not by the
    block's rows x cols: a 32x32 Jacobian of ``tanh(W @ x)`` sums 32 terms into each entry,
    not 1024. For the suite's functions those sizes are bounded. A generated function's
    intermediates hold at most ``MAX_INTERMEDIATE`` = 64 elements per sample
    (strategies/_caps.py: every op that widens or joins checks it), so no contraction sums
    more; a closed-form test contracts over its arguments and output, which it passes in
    ``values`` (batched ones whole: B samples count as B times the elements, an over-count).
    So T = max(MAX_INTERMEDIATE, the largest tensor in ``values``), and assert_close_scaled
    takes sqrt(min(T, numel)) in place of sqrt(numel): never looser than the block's count.
    A chain of d contractions sums d such counts; the factor 32 of tolerance's formula was
    sized (by the false-alarm sweep) on blocks of up to 64 elements of these same functions,
    whose depths and intermediate widths do not depend on the block's size, so T = 64 gives
    each larger block the tolerance a 64-element block of the same functions already had.
    A float32 32x32 Jacobian is allowed 32 sqrt(64) eps = 3.1e-5 of its scale (was 1.2e-4),
    a (32, 32, 32) Hessian block the same (was 6.9e-4); the sweep's figures on the tightened
    properties are in docs/suite/trust.md. Rounding scales passed in ``values`` (shaped like
    the result: :func:`rounding_scale`) count their own size, so those comparisons, where
    two sides round differently, keep the block's count. Arbitrary user functions are not
    covered: derivs.testing.assert_close keeps sqrt(numel) by default.
    """
    sizes = [t.numel() for t in tensor_leaves(values)]
    return max([ds.MAX_INTERMEDIATE, *sizes])


# NOTE: the probe's step. A relative step h in float64 estimates |dR/d log t| with a
# truncation error of order h (relative) and a rounding error of order eps64 / h: 2**-26
# (1.5e-8) keeps both near 1e-8, far below the factor-of-a-few precision a scale needs.
SENSITIVITY_STEP = 2.0**-26


def sensitivity(run: Callable[..., Any], tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """How far ``run``'s result moves per unit relative change of its inputs: a rounding scale.

    NOTE: a computation whose two sides round their intermediates differently (views vs
    contiguous copies, vmap vs a per-sample loop, compiled vs eager code) differs by each
    intermediate's rounding, of the order of eps times that intermediate, carried to the
    result by the result's sensitivity to it. The magnitudes of the inputs and output bound
    that only for a well-conditioned function: tanh(sin(x.sum() * y.sum())) with the product
    near -2 pi moves its hvp by 100 eps (relative) for one eps of relative change in a sum,
    past the 32 eps sqrt(numel) the default allows (seed 343 of the false-alarm sweep, in
    float32). A relative change of an input moves the intermediates computed from it by a
    relative amount of the same order (exactly so for sums and products of it), so the
    result's change per unit relative change of each input, summed over the inputs,

        S = sum_k |R(t_k * (1 + h)) - R(t)| / h        (float64, on the CPU)

    is the magnitude its rounding is relative to: passed in ``values``, it takes the place of
    max|values| where it is larger, with the default's count of roundings unchanged. It is
    evaluated by ``run(*tensors64)``, a one-sided difference per input: 1 + len(tensors) calls.
    """
    base = [t.detach().to("cpu", torch.float64).contiguous() for t in tensors]
    ref = tensor_leaves(run(*base))
    total = [torch.zeros_like(r) for r in ref]
    for k in range(len(base)):
        bumped = [*base[:k], base[k] * (1 + SENSITIVITY_STEP), *base[k + 1 :]]
        for acc, r, b in zip(total, ref, tensor_leaves(run(*bumped)), strict=True):
            acc += (b - r).abs() / SENSITIVITY_STEP
    return total


def measured_rounding(
    run: Callable[..., Any], tensors: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The rounding of ``run``'s result, measured: a magnitude, per leaf (0-d tensors).

    NOTE: :func:`sensitivity` moves the inputs, so it misses an intermediate whose rounding
    is not induced by them: ``logsumexp`` of one element computes ``exp(x - x) = 1`` and a
    softmax of 1 whose second derivative ``1 - 1`` rounds relative to 1 whatever ``x`` is
    (seed 539; its figures are in docs/suite/trust.md). derivs.oracles measures a
    function's rounding noise by moving every operand of every operation one ulp
    (``measured_noise``, docs/oracles.md); that noise over eps is the magnitude the
    roundings are relative to. Float64, on the CPU: 5 calls of run.
    """
    base = [t.detach().to("cpu", torch.float64).contiguous() for t in tensors]
    evaluate = lambda points: tensor_leaves(run(*points))  # noqa: E731
    noise = measured_noise(evaluate, base, evaluate(base))
    return [n / torch.finfo(torch.float64).eps for n in noise]


def rounding_scale(run: Callable[..., Any], tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The magnitudes ``run``'s result rounds relative to where two sides of a comparison
    round differently: its :func:`sensitivity` to the inputs and its :func:`measured_rounding`
    (pass it in ``values``; the largest counts)."""
    return [*sensitivity(run, tensors), *measured_rounding(run, tensors)]


def call_repr(api: str, func: object, **kwargs: Any) -> str:
    """``jacobian(f, argnums=(0, 1), method='fwd')``: the call a failure message ends with."""
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{api}({getattr(func, '__name__', 'func')}, {shown})"


def tensors_in(args: Sequence[Any]) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor)]


class Snapshot:
    """Values, strides and autograd flags of the caller's tensors, to prove nothing changed."""

    def __init__(self, args: Sequence[Any]) -> None:
        self.tensors = tensors_in(args)
        self.state = [
            (t.detach().clone(), t.stride(), t.requires_grad, t.grad, t._version)
            for t in self.tensors
        ]

    def check(self, context: str) -> None:
        for k, (t, (value, stride, rg, grad, version)) in enumerate(
            zip(self.tensors, self.state, strict=True)
        ):
            where = f"[{context}] argument {k}"
            assert t.requires_grad == rg, (
                f"{where}: requires_grad changed from {rg} to {t.requires_grad}"
            )
            assert t.grad is grad, f"{where}: .grad was changed"
            assert t.stride() == stride, f"{where}: strides changed from {stride} to {t.stride()}"
            assert t._version == version, f"{where}: the tensor was modified in place"
            if t.device.type != "meta":
                assert torch.equal(t.detach(), value), f"{where}: values changed"


def fd_estimate(
    func: Callable[..., Any], args: Sequence[Any], argnums: Any, *, order: int, real_analytic: bool
) -> tuple[str, Any]:
    """The finite-difference oracle's estimate of the Jacobian (order 1) or Hessian (order 2),
    and its scheme: the complex step where it applies, else (or where it declines) Richardson."""
    fd = oracles.fd_jacobian if order == 1 else oracles.fd_hessian
    scheme = "complex_step" if real_analytic else "richardson"
    try:
        return scheme, fd(func, tuple(args), argnums, scheme=scheme)
    except ValueError as refused:
        # NOTE: the complex-step oracle refuses when its own cross-check against Richardson
        # fails, e.g. when h * f' underflows into subnormals for values near 1e-300. That is
        # the oracle declining, not derivs being wrong: fall back to Richardson, as it advises.
        if scheme != "complex_step":
            raise
        note(f"complex step refused ({refused}); using Richardson")
        return "richardson", fd(func, tuple(args), argnums, scheme="richardson")


def fd_check(
    actual: Any,
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: Any,
    *,
    order: int,
    real_analytic: bool,
    context: str,
) -> None:
    """Compare with the finite-difference oracle: complex step where it applies, else Richardson."""
    scheme, est = fd_estimate(func, args, argnums, order=order, real_analytic=real_analytic)
    note(f"FD oracle: scheme={scheme}")
    name = "fd_jacobian" if order == 1 else "fd_hessian"
    assert_close_scaled(
        actual,
        est.value,
        error=est.error,
        values=(args, func(*args)),
        context=f"{context} vs {name}({scheme})",
    )


def contract(H: Any, vs: Sequence[torch.Tensor], *, left: bool) -> tuple[torch.Tensor, ...]:
    """``H @ v`` (left=False) or ``v @ H`` (left=True) from nested blocks ``H[i][j]``."""
    n = len(vs)
    if left:
        return tuple(
            sum(torch.tensordot(vs[i], H[i][j], dims=vs[i].dim()) for i in range(n))
            for j in range(n)
        )
    return tuple(
        sum(torch.tensordot(H[i][j], vs[j], dims=vs[j].dim()) for j in range(n)) for i in range(n)
    )


def oracle_result(
    api: str, func: Callable[..., Any], args: tuple[Any, ...], argnums: Any, v: Any = None
) -> Any:
    """What ``api`` ("jacobian", "hessian", "hvp", "vhp") returns, by the naive-loop oracles:
    independent of the implementation under test (hvp/vhp: every argument, vectors ``v``)."""
    if api == "jacobian":
        return oracles.loop_jacobian(func, args, argnums)
    if api == "hessian":
        return oracles.loop_hessian(func, args, argnums)
    H = oracles.loop_hessian(func, args, tuple(range(len(args))))
    return contract(H, v, left=api == "vhp")


def oracle_run(
    api: str, func: Callable[..., Any], argnums: Any, v: Any = None
) -> Callable[..., Any]:
    """``args -> oracle_result(api, func, args, ...)``, for :func:`sensitivity` and
    :func:`rounding_scale`: the rounding scale of ``api``'s result where two sides round
    differently, taken from the oracle so that a wrong method cannot widen its own
    tolerance (the vectors ``v`` of hvp/vhp are held fixed, in float64)."""
    v64 = None if v is None else tuple(t.to("cpu", torch.float64) for t in v)
    return lambda *args: oracle_result(api, func, args, argnums, v64)


def batched_values(problem: Any, oracle: Callable[..., Any], argnums: Any) -> tuple[Any, ...]:
    """The magnitudes a batched result's rounding is relative to: the inputs, the outputs and,
    since vmap and the per-sample loop round differently, the loop oracle's rounding scale."""
    p = problem
    scale = rounding_scale(lambda *args: oracle(p.func, args, argnums, in_dims=p.in_dims), p.args)
    return (p.args, torch.func.vmap(p.func, in_dims=p.in_dims)(*p.args), scale)


def values_of(problem: Any) -> tuple[Any, ...]:
    """A problem's inputs and output: the magnitudes its derivatives' rounding is relative to."""
    return (problem.args, problem.func(*problem.args))


def asymmetric_coupling(
    data: Any, device: str, dtype: torch.dtype, max_elements: int
) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``f(x, y) = x^T W y + sum(x**3 y)`` on two arguments of one shape, its sides >= 2.

    Its mixed block ``H[0][1] = W + diag(3 x**2)`` (flattened) is not symmetric, so a
    mixed block returned transposed, a product that uses ``H[1][0]`` in its place, or one
    that drops it, keeps every shape and changes values. NOTE: W's strict upper triangle is
    raised by 1 on purpose, so W stays non-symmetric when the drawn values are all equal.
    Returns ``(f, (x, y), W)``.
    """
    shape = data.draw(ds.coincident_shape(max_elements=max_elements), label="shape")
    n = math.prod(shape)
    x = data.draw(ds.tensors(shape, dtype, device), label="x")
    y = data.draw(ds.tensors(shape, dtype, device, stream=1), label="y")
    drawn = data.draw(ds.tensors((n, n), dtype, device, stream=2), label="W")
    W = drawn + torch.ones(n, n, dtype=dtype, device=device).triu(1)

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.reshape(-1) @ W @ b.reshape(-1) + (a**3 * b).sum()

    return f, (x, y), W
