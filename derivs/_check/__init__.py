"""``derivs.check`` (this package is ``derivs._check``): verify a user's own function with every operator, method and oracle.

``torch.autograd.gradcheck`` checks first derivatives of one function against fixed finite
differences. ``check`` computes every applicable operator (full Jacobian; with ``order=2``
also the Hessian, ``hvp``/``vhp`` for scalar functions, and the batch forms) by every
method of ``derivs``, compares each with independent oracles, and explains a mismatch.

How the verdict is reached. Every result (a method's or an oracle's) rests on some of the
function's derivative rules: rev-mode methods and the loop oracle on its backward (vjp),
forward-mode methods on its jvp, vmapped ones on its batching rule, second-order ones on
differentiating those rules again; finite differences of values (``fd``) and the complex
step (``cs``) on nothing but evaluations of the function. The value-based oracle is the
arbiter: the results that disagree with it are the outliers, and the derivative rule that
every outlier uses and no agreeing result uses is named as the culprit. Second-order
finite differences difference the autograd gradient (``fd(grad)``), so once the backward is
found wrong they stop arbitrating; the report marks every comparison against such a
reference with ``*``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from derivs import _validate
from derivs._batch import batch_hessian, batch_jacobian
from derivs._check import _judge, _limits, _methods, _projected, _setup
from derivs._check._references import References
from derivs._check._report import CheckFailure, CheckReport, CheckRow
from derivs._check._setup import OPERATORS, ORACLES, REFERENCE_K
from derivs._check._trees import FlatCheck, has_pytrees
from derivs._config import get_memory_budget
from derivs._hessian import hessian
from derivs._jacobian import jacobian
from derivs._products import hvp, vhp

__all__ = ["OPERATORS", "ORACLES", "CheckFailure", "CheckReport", "CheckRow", "check"]

# NOTE: the public classes name the module they are public in (tracebacks print
# derivs.CheckFailure, and pickles and the API reference find them there).
for _cls in (CheckFailure, CheckReport, CheckRow):
    _cls.__module__ = "derivs"
del _cls


def check(
    func: Callable[..., Any],
    *args: Any,
    argnums: _validate.Argnums = 0,
    order: int = 2,
    methods: str | Iterable[str] = "all",
    oracles: str | Iterable[str] = ("loop", "fd"),
    batched: int | tuple[int | None, ...] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    raise_exception: bool = True,
    mode: str = "auto",
    reference: Callable[..., Any] | None = None,
    reference_k: float = REFERENCE_K,
) -> CheckReport:
    """Check every derivative operator of ``func`` at ``args`` by every method and oracle.

    Operators: the Jacobian (``order >= 1``); with ``order=2`` also the Hessian, and
    ``hvp``/``vhp`` (with a random tangent/cotangent) when ``func`` is scalar-valued. With
    ``batched`` the batch forms too (``batch_jacobian``, and ``batch_hessian`` at order 2,
    by ``vmap``, ``loop`` and the sum trick), and the report says whether the sum trick is
    valid for ``func``.

    Every method's result is compared with every oracle, and the oracles with each other:
    ``loop`` (naive ``torch.autograd.grad`` loops; it shares the function's backward with the
    rev-mode methods, so it cannot catch a wrong backward on its own) and ``fd`` (Richardson
    finite differences with an error estimate, plus the complex step where ``func`` accepts
    complex input; at first order they use only evaluations of ``func``, so they arbitrate).
    The verdict names the outliers and the derivative rule they share, e.g. "rev-mode
    methods (...) disagree with fwd, fd and cs: the backward (vjp) of this function is wrong".

    Args:
        func: the function to check; returns a real floating-point tensor.
        *args: its positional arguments (with ``batched``: the batched arguments).
        argnums: which arguments to differentiate, an int or a tuple of ints. A
            differentiated argument may be a pytree of tensors: a model's parameters are
            checked as ``check(loss, params, x, y)`` with ``func, params =
            derivs.functional_model(model)`` and ``loss(params, x, y)`` calling
            ``func(params, x)``. Pytrees are checked by their leaves, as separate arguments;
            a note in the report says which leaf each is (``args[1] is args[0]['0.bias']``).
        order: 1 (Jacobians) or 2 (also Hessians, hvp/vhp and batch Hessians).
        methods: ``"all"``, or names: a method name applies to every operator that has it
            (``"loop"``), ``"operator:method"`` to one (``"hessian:fwd_rev"``), an operator
            name (``"hessian"``) selects all of its methods. Operators with no selected
            method are not checked.
        oracles: a subset of ``("loop", "fd")``; with none, methods are compared with the
            operator's first method and the verdict goes by majority.
        batched: ``None`` (no batch forms), or the ``in_dims`` of ``args`` as in
            ``torch.vmap`` (``0``, or e.g. ``(None, None, 0)`` for ``predict(w, b, x)``):
            ``func`` is then the per-sample function, the batch forms are checked over the
            whole batch, and the other operators at the first sample. The sum trick calls
            ``func`` on the whole batch; if ``func`` refuses (raises, or couples samples), the
            report says the sum trick is not valid for it, and that is not a failure.
        rtol, atol: replace the derived tolerances (``derivs.testing.tolerance``: ``8 eps``
            relative and ``32 eps sqrt(numel) max|value|`` absolute per block, plus twice the
            finite-difference error estimate).
        raise_exception: raise :class:`CheckFailure` (an ``AssertionError`` carrying the
            report) when a row fails or errors, instead of returning the report.
        mode: ``"dense"`` (full Jacobians and Hessians, as above), ``"projected"`` (products
            along seeded random directions, for large inputs: ``jvp`` rows compare ``J u``
            with finite differences of ``t -> func(x + t u)``, ``vjp`` rows ``<J^T w, u>``
            with ``<w, J u>`` and those differences, ``hvp`` rows ``H u`` with differences of
            the gradient, ``uHv`` rows ``<u_i, H u_j>``; the batch forms are not checked) or
            ``"auto"``: projected past ``DENSE_MAX_INPUTS`` (512) differentiated elements or
            when the dense Jacobian/Hessian would exceed the memory budget.
            ``report.mode`` says which ran, a note how the directions were drawn.
        reference: for a low-precision kernel (bfloat16, float16: a fused or Triton
            kernel), a plain-PyTorch version of ``func`` (same arguments, same output).
            ``func``'s derivatives, computed in its dtype by every method, are compared
            with ``reference``'s float64 derivatives (autograd, every tensor it uses raised
            to float64), and a block passes when ``max|d_func - d_ref64| <= reference_k *
            (max|d_ref_low - d_ref64| + max|round(d_ref64) - d_ref64|)``: ``d_ref_low`` is
            ``reference`` differentiated in ``func``'s dtype (every more precise tensor it
            uses lowered), the rounding term what storing the exact answer in that dtype
            costs. It is the rule of flash-attention's and PyTorch's SDPA tests. The fd and
            cs oracles are not run on ``func`` then; the dense mode is used.
        reference_k: the ``k`` of that rule (default 2, as those tests use; 3 is looser).
            The notes give both errors, the rows the tolerance.

    Returns:
        A :class:`CheckReport`: ``print(report)`` gives the table and the verdict,
        ``report.passed`` the outcome, ``report.to_dict()`` everything for logs.

    Raises:
        TypeError, ValueError: bad arguments, naming ``derivs.check`` and the argument.
        CheckFailure: a mismatch, with ``raise_exception=True``.
        Exception: whatever ``func`` raises when called once at ``args``, unchanged.
            Failures later, under a transform or at a perturbed point, become ``error``
            rows instead.

    >>> import torch, derivs
    >>> report = derivs.check(torch.sin, torch.tensor([0.5, 1.0], dtype=torch.float64))
    >>> report.passed
    True
    """
    if has_pytrees(args, argnums, batched):
        _validate.check_callable(_setup.API, func)
        _validate.check_bool(_setup.API, "raise_exception", raise_exception)
        tree = FlatCheck(func, args, argnums, batched, reference)
        if not tree.trivial:
            flat = check(
                tree.func,
                *tree.args,
                argnums=tree.nums,
                order=order,
                methods=methods,
                oracles=oracles,
                batched=tree.batched,
                rtol=rtol,
                atol=atol,
                raise_exception=False,
                mode=mode,
                reference=tree.reference,
                reference_k=reference_k,
            )
            report = tree.report(flat)
            if raise_exception and not report.passed:
                raise CheckFailure(report)
            return report
    started = time.perf_counter()
    opts = _setup.parse(
        func,
        args,
        argnums=argnums,
        order=order,
        methods=methods,
        oracles=oracles,
        batched=batched,
        rtol=rtol,
        atol=atol,
        raise_exception=raise_exception,
        mode=mode,
        reference=reference,
        reference_k=reference_k,
    )
    case = _setup.evaluate(func, args, opts)
    mode_used = (
        "dense"
        if opts.reference is not None
        else _projected.resolve(opts.mode, case, get_memory_budget())
    )
    # NOTE: the operators are this module's globals, read at each call, so a test can plant
    # a bug in one (monkeypatch derivs._check's jacobian) and see check blame it.
    if mode_used == "projected":
        operators, notes = _projected.projected_sources(case, hvp)
    else:
        refs = References(func, argnums, opts.oracles, opts.reference, opts.reference_k)
        operators = {
            **_methods.jacobian_sources(case, refs, jacobian),
            **_methods.hessian_sources(case, refs, hessian),
            **_methods.product_sources(case, refs, hvp, vhp),
            **_methods.batch_sources(case, refs, batch_jacobian, batch_hessian),
        }
        notes = {**_methods.unchecked_notes(case), **refs.notes}
    _limits.Limits(_limits.custom_functions(func, case.point, opts.nums)).apply(operators)
    judged = _judge.judge(operators, opts.rtol, opts.atol, case.value_scale, case)
    report = _judge.build_report(case, operators, judged, notes, started)
    report = dataclasses.replace(report, mode=mode_used)
    if raise_exception and not report.passed:
        raise CheckFailure(report)
    return report
