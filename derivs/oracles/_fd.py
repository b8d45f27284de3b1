"""Finite-difference Jacobians and Hessians with error estimates: :func:`fd_jacobian`, :func:`fd_hessian`.

Both perturb one input entry (a Jacobian column) at a time and apply a rule from
``_differences`` (central, Richardson) or ``_complex`` (the complex step) along it;
``fd_jacobian`` differences values of ``func``, ``fd_hessian`` its autograd gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from derivs.oracles._common import (
    Estimate,
    Spec,
    Tensor,
    check_out_leaf,
    flatten,
    leaf_path,
    prepare,
    unflatten,
)
from derivs.oracles._complex import (
    call_complex,
    check_complex_out,
    complex_step,
    complexify,
    guard_complex_step,
    promoting_real_operands,
)
from derivs.oracles._differences import (
    _MPS_WIDENING,
    _ROUNDING,
    _cast_args,
    _central,
    _check_scheme,
    _column_line,
    _compute_dtype,
    _Eval,
    _finish,
    _richardson,
    _Rounding,
    _with_floor,
)
from derivs.oracles._noise import measured_noise
from derivs.oracles._promote import Raising
from derivs.oracles._trees import Leaves

# Outputs at given points of the differentiated arguments, the others taken from call_args.
_Outputs = Callable[[list[Tensor], list[Any]], list[Tensor]]


class _Setup(NamedTuple):
    """What both oracles derive from their arguments before the first evaluation."""

    nums: tuple[int, ...]
    single: bool
    step: float | None
    originals: list[Tensor]  # the differentiated arguments as given
    cdtype: torch.dtype
    cargs: list[Any]  # every floating argument cast to cdtype
    base: list[Tensor]  # the differentiated ones among cargs, contiguous
    mode: Raising  # func's lower-precision tensors raised to cdtype while it runs


class _ComplexSide(NamedTuple):
    """The complex-step evaluation: ``evaluate`` at points built from ``base``."""

    evaluate: _Eval
    base: list[Tensor]


def _setup(
    api: str,
    func: object,
    args: object,
    argnums: object,
    scheme: object,
    step: object,
    compute_dtype: object,
) -> _Setup:
    targs, nums, single = prepare(api, func, args, argnums)
    h = _check_scheme(api, scheme, step)
    originals = [targs[a] for a in nums]
    cdtype = _compute_dtype(api, originals, compute_dtype)
    cargs = _cast_args(targs, cdtype)
    base = [cargs[a].contiguous() for a in nums]
    return _Setup(nums, single, h, originals, cdtype, cargs, base, Raising(cdtype))


def _substitute(call_args: list[Any], nums: tuple[int, ...], points: list[Tensor]) -> list[Any]:
    call = list(call_args)
    for a, x in zip(nums, points, strict=True):
        call[a] = x
    return call


def _outputs(func: Callable[..., Any], nums: tuple[int, ...]) -> _Outputs:
    """The output leaves of ``func`` with the differentiated arguments at ``points``."""
    return lambda points, call_args: flatten(func(*_substitute(call_args, nums, points)))[0]


def _complex_side(api: str, s: _Setup, outputs: _Outputs, reals: list[Tensor]) -> _ComplexSide:
    """Complexify the arguments, probe ``outputs`` once there, and check what it returns."""
    ccargs = complexify(s.cargs, s.cdtype)
    cbase = [ccargs[a].contiguous() for a in s.nums]
    probe = call_complex(api, "complex_step", lambda: outputs(cbase, ccargs))
    check_complex_out(api, "complex_step", probe, reals)

    def evaluate(points: list[Tensor]) -> list[Tensor]:
        return [o.detach() for o in outputs(points, ccargs)]

    return _ComplexSide(evaluate, cbase)


def _fd_blocks(
    api: str,
    scheme: str,
    evaluate: _Eval,
    side: _ComplexSide | None,
    s: _Setup,
    leaves: list[Tensor],
) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """``[leaf][p]`` value and error blocks of shape ``(*leaf.shape, *base[p].shape)``."""
    base, cdtype, step = s.base, s.cdtype, s.step
    eps = [
        max(torch.finfo(cdtype).eps, torch.finfo(o.dtype).eps if o.is_floating_point() else 0.0)
        for o in leaves
    ]
    factor = _ROUNDING * (_MPS_WIDENING if base[0].device.type == "mps" else 1.0)
    plain = [leaf.detach().to(cdtype) for leaf in leaves]  # evaluate(base), already run
    rounding = _Rounding(factor, measured_noise(evaluate, base, plain, varying_only=True))
    values = [
        [leaf.new_zeros((leaf.numel(), x.numel()), dtype=cdtype) for x in base] for leaf in leaves
    ]
    errors = [[v.clone() for v in row] for row in values]
    cbase = side.base if side is not None else None
    for p, x in enumerate(base):
        for c in range(x.numel()):
            line = _column_line(base, cbase, p, c)
            if side is not None:
                vals, errs = complex_step(side.evaluate, line, step, eps, cdtype)
            else:
                rule = _central if scheme == "central" else _richardson
                vals, errs = rule(evaluate, line, step, eps, rounding)
            for leaf, (v, e) in enumerate(zip(vals, errs, strict=True)):
                values[leaf][p][:, c] = v.reshape(-1)
                errors[leaf][p][:, c] = e.reshape(-1)
    shaped_v = [
        [values[i][p].reshape((*leaf.shape, *x.shape)) for p, x in enumerate(base)]
        for i, leaf in enumerate(leaves)
    ]
    shaped_e = [
        [_with_floor(errors[i][p]).reshape((*leaf.shape, *x.shape)) for p, x in enumerate(base)]
        for i, leaf in enumerate(leaves)
    ]
    if side is not None:
        guard_complex_step(api, evaluate, base, cbase, shaped_v, shaped_e, eps, rounding)
    return shaped_v, shaped_e


def _finish_rows(
    values: list[list[Tensor]], errors: list[list[Tensor]], originals: list[Tensor]
) -> tuple[list[tuple[Tensor, ...]], list[tuple[Tensor, ...]]]:
    """Every ``[leaf][p]`` block in the dtype and device of the argument it differentiates."""
    out_v, out_e = [], []
    for vrow, erow in zip(values, errors, strict=True):
        pairs = [_finish(v, e, x) for v, e, x in zip(vrow, erow, originals, strict=True)]
        out_v.append(tuple(v for v, _ in pairs))
        out_e.append(tuple(e for _, e in pairs))
    return out_v, out_e


def fd_jacobian(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...] = 0,
    *,
    scheme: str = "richardson",
    step: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Estimate:
    """The Jacobian of ``func`` at ``args`` by finite differences, with an error estimate.

    No autograd is involved: only evaluations of ``func``, one input entry perturbed at a
    time. Every floating-point tensor in ``args`` is cast to ``compute_dtype`` (default:
    float64, or float32 on mps, which has no float64) before ``func`` sees it, so ``func``
    must work in that dtype (pass parameters as arguments rather than closing over float32
    tensors). Evaluations with the given (lower precision) args are never made.

    Schemes (cost in evaluations of ``func`` per input element; the measured accuracy is in
    the documentation, ``docs/oracles.md``):

    * ``"central"``: ``(f(x+h) - f(x-h)) / 2h`` with ``h = eps**(1/3) * max(|x|, 1)``; error
      from a second difference at ``2h`` plus a rounding term. 4 evaluations.
    * ``"richardson"`` (default): central differences at six steps ``h_0 * 2**-k``,
      extrapolated twice over every window of three; per element the window with the
      smallest estimated error wins, the error being the spread of the last extrapolants
      plus the propagated rounding. 12 evaluations.
    * ``"complex_step"``: ``Im f(x + ih) / h`` with a tiny ``h``: exact to rounding for
      real-analytic functions that accept complex input. 2 evaluations (``h`` and ``2h``:
      their difference bounds the ``O(h**2)`` truncation, all there is where the
      derivative is exactly 0), plus 24 in total
      for a guard that checks the result against Richardson along a random direction (a
      non-holomorphic op such as ``abs`` or ``conj`` raises instead of giving a wrong
      answer), and 2 that check func maps real values to real values. Real tensors that
      ``func`` closes over may meet the complex input in matmul, linear, conv, einsum and
      the other multilinear ops that do not promote by themselves: while ``func`` runs on
      complex input, those ops cast their real operands to the complex dtype. A ``func``
      that is not complex-capable (relu, comparisons, sort) is refused with a ``TypeError``.

    The rounding term of central and Richardson takes each evaluation to be off by
    ``4 * max(eps * max|f|, noise)``, where ``noise`` is measured once per call: ``func``
    runs 4 more times with every floating operand of every aten operation that depends on
    the differentiated arguments (and every constant no larger than such an operand) moved
    one ulp up or down (a fixed pseudo-random draw), and ``noise`` is the largest deviation
    seen; the tensors ``func`` closes over are the same in every evaluation.
    It is the size of the roundings where ``f``'s terms cancel (``x @ S @ x`` summing terms
    of 5 to about 0), which ``|f|`` does not show. A ``func`` that cannot run under a
    ``TorchDispatchMode`` keeps the ``eps * max|f|`` model alone.

    Args:
        func: called as ``func(*args)``; returns a real tensor or a tuple/list/dict of them.
        args: the positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.
        scheme: ``"central"``, ``"richardson"`` or ``"complex_step"``.
        step: the (base) step, absolute; default chosen from ``compute_dtype`` and ``|x|``.
        compute_dtype: the dtype ``func`` is evaluated in (default float64; float32 on mps).

    Returns:
        ``Estimate(value, error)``. ``value`` has the structure of :func:`loop_jacobian`'s
        result (blocks of shape ``(*out_shape, *in_shape)``); ``error`` has the same
        structure and is an elementwise estimate of ``|value - true Jacobian|``. Both are
        computed in ``compute_dtype`` and returned in the dtype and device of the
        differentiated argument; the error includes the rounding of that final cast.

    Raises:
        TypeError, ValueError: bad arguments (messages start with
            ``derivs.oracles.fd_jacobian``), or ``scheme="complex_step"`` with a ``func``
            that cannot take complex input or is not holomorphic there.

    >>> x = torch.tensor([0.5, 1.0], dtype=torch.float64)
    >>> est = fd_jacobian(torch.sin, (x,))
    >>> bool(((est.value - torch.diag(torch.cos(x))).abs() <= est.error).all())
    True
    """
    api = "derivs.oracles.fd_jacobian"
    tree = Leaves(api, func, args, argnums)
    if not tree.trivial:
        est = fd_jacobian(
            tree.func, tree.args, tree.nums, scheme=scheme, step=step, compute_dtype=compute_dtype
        )
        return Estimate(tree.jacobian(est.value), tree.jacobian(est.error))
    s = _setup(api, func, args, argnums, scheme, step, compute_dtype)

    raised = s.mode.wrap(func)
    reference, spec = flatten(raised(*_substitute(s.cargs, s.nums, s.base)))
    leaves = [check_out_leaf(api, o, leaf_path(spec, i)) for i, o in enumerate(reference)]
    real = _outputs(raised, s.nums)

    def evaluate(points: list[Tensor]) -> list[Tensor]:
        return [o.detach().to(s.cdtype) for o in real(points, s.cargs)]

    side = None
    if scheme == "complex_step":
        promoted = s.mode.wrap(promoting_real_operands(func))
        side = _complex_side(api, s, _outputs(promoted, s.nums), leaves)
    values, errors = _finish_rows(*_fd_blocks(api, scheme, evaluate, side, s, leaves), s.originals)
    if s.single:
        return Estimate(
            unflatten(spec, [r[0] for r in values]), unflatten(spec, [r[0] for r in errors])
        )
    return Estimate(unflatten(spec, values), unflatten(spec, errors))


def _gradients(
    api: str,
    func: Callable[..., Any],
    nums: tuple[int, ...],
    points: list[Tensor],
    call_args: list[Any],
    real: bool,
    mode: Raising,
) -> tuple[list[Tensor], Spec]:
    """The autograd gradient of every element of every output leaf of ``func`` at ``points``,
    and the output's structure.

    One block per output leaf ``k`` and differentiated argument ``i``, at ``k * n + i``, of
    shape ``(*out_k.shape, *x_i.shape)``; at complex points (``real=False``) the conjugate
    autograd returns for holomorphic ``func`` is undone. ``func`` and its backward run under
    ``mode``, in one session.
    """
    with torch.enable_grad(), mode.session():
        xs = [x.detach().requires_grad_() for x in points]
        with mode:
            leaves, spec = flatten(func(*_substitute(call_args, nums, xs)))
        blocks: list[Tensor] = []
        for index, out in enumerate(leaves):
            where = leaf_path(spec, index)
            if real:
                check_out_leaf(api, out, where)
            elif not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"{api}: func must return a tensor or a tuple/list/dict of tensors, got "
                    f"{type(out).__name__} at output{where}"
                )
            blocks.extend(_leaf_gradients(out, xs, mode))
        return blocks, spec


def _leaf_gradients(out: Tensor, xs: list[Tensor], mode: Raising) -> list[Tensor]:
    """``d out / d x`` for each of ``xs`` (a graph of ``out`` built under ``mode``)."""
    flat = out.reshape(-1)
    grads = [x.new_zeros((flat.numel(), *x.shape)) for x in xs]
    if out.requires_grad:
        for k in range(flat.numel()):
            one = torch.ones_like(flat[k])
            with mode:
                gs = torch.autograd.grad(
                    flat[k], xs, grad_outputs=one, retain_graph=True, allow_unused=True
                )
            for row, g in zip(grads, gs, strict=True):
                if g is not None:
                    # autograd gives conj(f'(z)) for holomorphic f; undo it
                    row[k] = g.conj() if g.is_complex() else g
    return [g.reshape((*out.shape, *x.shape)).detach() for g, x in zip(grads, xs, strict=True)]


def fd_hessian(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...] = 0,
    *,
    scheme: str = "richardson",
    step: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Estimate:
    """The Hessian of ``func`` at ``args`` by finite differences of its autograd gradient.

    NOTE: the differences are taken of the first-order gradient (one
    ``torch.autograd.grad`` per output element, as in :func:`loop_jacobian`), not of the
    function value. Second differences of values lose twice as many digits to rounding
    (the error grows like eps / h**2: about 1e-7 relative at best in float64, 1e-2 in
    float32) and need a pair of evaluations per Hessian entry, O(n**2) of them;
    differences of the gradient keep first-difference accuracy (about 1e-11 in float64)
    and cost O(n) gradient evaluations. The gradient itself is checked separately (against
    :func:`fd_jacobian` of ``func``), and this oracle still shares no code with
    ``derivs``' operators, which compose ``torch.func`` transforms.

    With ``scheme="complex_step"`` the gradient is taken at the complex point
    ``x + ih e_j`` (``func`` must be holomorphic in complex torch arithmetic; autograd
    returns the conjugate derivative there, which is undone) and ``H[:, j] = Im g / h``:
    exact to rounding, two gradients per input element (at ``h`` and ``2h``, for the
    truncation bound), plus the same Richardson guard as
    :func:`fd_jacobian`. The rounding noise of central and Richardson is measured as there,
    on the gradient: the backward pass's operations are moved one ulp too.

    Args:
        func: called as ``func(*args)``; returns a real tensor of any shape, or a
            tuple/list/dict of them (a Hessian per output leaf, in the output's structure).
        args: the positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.
        scheme: ``"central"``, ``"richardson"`` or ``"complex_step"``.
        step: the (base) step, absolute; default chosen from ``compute_dtype`` and ``|x|``.
        compute_dtype: the dtype ``func`` is evaluated in (default float64; float32 on mps).

    Returns:
        ``Estimate(value, error)`` with the structure of :func:`loop_hessian`'s result
        (``H[i][j]`` of shape ``(*out_shape, *in_i, *in_j)`` for tuple ``argnums``), in the
        dtype and device of ``x_j``; ``error`` estimates ``|value - true Hessian|``.

    Raises:
        TypeError, ValueError: as :func:`fd_jacobian` (messages start with
            ``derivs.oracles.fd_hessian``).

    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> est = fd_hessian(lambda x: (x**3).sum(), (x,))
    >>> bool(((est.value - torch.diag(6 * x)).abs() <= est.error).all())
    True
    """
    api = "derivs.oracles.fd_hessian"
    tree = Leaves(api, func, args, argnums)
    if not tree.trivial:
        est = fd_hessian(
            tree.func, tree.args, tree.nums, scheme=scheme, step=step, compute_dtype=compute_dtype
        )
        return Estimate(tree.hessian(est.value), tree.hessian(est.error))
    s = _setup(api, func, args, argnums, scheme, step, compute_dtype)
    promoted = promoting_real_operands(func)

    def evaluate(points: list[Tensor]) -> list[Tensor]:
        return _gradients(api, func, s.nums, points, s.cargs, True, s.mode)[0]

    def evaluate_complex(points: list[Tensor], call_args: list[Any]) -> list[Tensor]:
        return _gradients(api, promoted, s.nums, points, call_args, False, s.mode)[0]

    leaves, spec = _gradients(api, func, s.nums, s.base, s.cargs, True, s.mode)
    side = None
    if scheme == "complex_step":
        side = _complex_side(api, s, evaluate_complex, leaves)
    values, errors = _finish_rows(*_fd_blocks(api, scheme, evaluate, side, s, leaves), s.originals)
    return Estimate(
        _per_output_leaf(values, spec, s.single), _per_output_leaf(errors, spec, s.single)
    )


def _per_output_leaf(rows: list[tuple[Tensor, ...]], spec: Spec, single: bool) -> Any:
    """Rows ``[k * n + i][j]`` (output leaf k) in the output's structure ``spec``, each leaf
    ``H[i][j]`` (or the one block for ``single``)."""
    n = len(rows[0])
    per_leaf = [tuple(rows[k : k + n]) for k in range(0, len(rows), n)]
    return unflatten(spec, [H[0][0] if single else H for H in per_leaf])
