"""Independent oracles: naive autograd loops and finite differences with error estimates.

These are the ground truth the verification suite checks ``derivs`` against, and they are
public so users can check their own derivatives. They share no code path with the operators
they check: this module imports only ``torch``, the standard library and ``typing``, and is
built from ``torch.autograd.grad`` (one scalar at a time) and plain arithmetic. It never
touches ``torch.func``.

Two families:

* naive loops, exact up to rounding: :func:`loop_jacobian` (one ``torch.autograd.grad`` per
  output element, the tutorial's loop), :func:`loop_hessian` (then one per gradient entry),
  and the per-sample loops :func:`loop_batch_jacobian` and :func:`loop_batch_hessian`;
* finite differences that return an :class:`Estimate` ``(value, error)``, ``error`` being an
  elementwise estimate of the absolute error of ``value``: :func:`fd_jacobian` and
  :func:`fd_hessian`, with the schemes ``"central"``, ``"richardson"`` and ``"complex_step"``.

Conventions shared by every oracle: ``args`` is the tuple of positional arguments of
``func``; ``argnums`` (an int or a tuple of ints, negative ones allowed) says which are
differentiated; a Jacobian block has shape ``(*out_shape, *in_shape)`` and the dtype and
device of the differentiated argument; a tuple ``argnums`` gives one block per argnum, in
``argnums`` order; a Hessian block ``H[i][j]`` has shape ``(*out_shape, *in_i, *in_j)`` and is
``d/dx_j (d out / d x_i)``. No oracle mutates its arguments or their ``requires_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "SCHEMES",
    "Estimate",
    "fd_hessian",
    "fd_jacobian",
    "loop_batch_hessian",
    "loop_batch_jacobian",
    "loop_hessian",
    "loop_jacobian",
]

Tensor = torch.Tensor

SCHEMES = ("central", "richardson", "complex_step")

# NOTE: finite-difference constants. The figures in the README (Oracles and tolerances) were measured with
# these values (tools/oracle_accuracy.py); change them only together with that table.
#
# central: the step eps**(1/3) * max(|x|, 1) balances the truncation error h**2 |f'''| / 6
# against the rounding error eps |f| / h. The error is estimated from a second difference
# at 2h: |D(2h) - D(h)| is 3 times D(h)'s truncation error (3 h**2 |f'''| / 6) and, when
# rounding dominates, about the size of D(h)'s noise; not dividing it by 3 keeps the
# estimate honest when f is noisier than the rounding model below assumes.
_CENTRAL_EXPONENT = 1.0 / 3.0
# richardson: steps h_k = h_0 * 2**-k, k = 0..5 (12 evaluations per column); every window of
# three consecutive steps is extrapolated twice (truncation O(h**6)); each window's error
# is the larger of |R2 - R1| (the last correction) and the spread to the neighbouring
# window, plus the propagated rounding; per element the window with the smallest error
# wins. h_0 = 8 * eps**(1/7) * max(|x|, 1) puts the optimum for an O(h**6) rule
# (about eps**(1/7)) in the middle of the candidate windows.
_RICHARDSON_STEPS = 6
_RICHARDSON_BASE = 8.0
_RICHARDSON_EXPONENT = 1.0 / 7.0
# Rounding model: one evaluation of f is taken to be off by _ROUNDING * eps * max|f| (the
# max over the output leaf), so a difference quotient with span d is off by
# 2 * _ROUNDING * eps * max|f| / d. Functions that cancel heavily are off by more; the
# empirical spread terms above and the floor below catch most of that.
_ROUNDING = 4.0
# complex step: Im f(x + ih) / h has no subtractive cancellation, so h can be tiny; the
# truncation error h**2 |f'''| / 6 vanishes. Its rounding is that of forward-mode AD, a
# few eps relative to the magnitudes involved.
# NOTE: not smaller: Im f(x + ih) is about h * f'(x), which must stay a normal float even
# when f' is tiny (h = 1e-100 underflowed to 0 for a derivative of 1e-241).
_COMPLEX_STEP = {torch.float64: 1e-20, torch.float32: 1e-10}
_COMPLEX_ROUNDING = 16.0
# Norm-wise floor: every element's error estimate is raised by _FLOOR times the largest
# estimate in its block. Rounding noise in f is set by the magnitudes of f's intermediate
# values, which an element made small by cancellation (1 - tanh**2 near saturation, a
# sum of large terms) does not show; the floor carries the block's noise level to it.
_FLOOR = 0.25
# mps has no float64, so the oracles compute in float32 there; Metal's fast-math
# transcendental functions are also less accurate than CPU/CUDA libm, so the rounding term
# is widened by this factor on mps (on top of float32's larger eps).
_MPS_WIDENING = 4.0


class Estimate(NamedTuple):
    """A finite-difference result: ``value`` and an elementwise estimate of its abs. error.

    Both have the same structure (a tensor, or tuples of tensors following the oracle's
    ``argnums`` convention), shapes, dtype and device.
    """

    value: Any
    error: Any


# ----------------------------------------------------------------------------- validation


def _check_func(api: str, func: object) -> None:
    if not callable(func):
        raise TypeError(f"{api}: func must be callable, got {type(func).__name__}")


def _check_args(api: str, args: object) -> tuple[Any, ...]:
    if not isinstance(args, tuple):
        raise TypeError(
            f"{api}: args must be a tuple of positional arguments, got {type(args).__name__}"
            " (wrap a single tensor as (x,))"
        )
    return args


def _normalize_argnums(api: str, argnums: object, nargs: int) -> tuple[tuple[int, ...], bool]:
    """``argnums`` as non-negative ints, and whether it was a single int."""
    single = isinstance(argnums, int) and not isinstance(argnums, bool)
    if single:
        raw: tuple[object, ...] = (argnums,)
    elif isinstance(argnums, tuple):
        raw = argnums
        if not raw:
            raise ValueError(f"{api}: argnums=() is empty; give at least one argument index")
    else:
        raise TypeError(
            f"{api}: argnums must be an int or a tuple of ints, got {type(argnums).__name__}"
        )
    out: list[int] = []
    for a in raw:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{api}: argnums={argnums!r} holds {a!r}, which is not an int")
        if not -nargs <= a < nargs:
            raise ValueError(
                f"{api}: argnums={argnums!r} is out of range for {nargs} positional"
                f" argument(s) (valid indices: {-nargs}..{nargs - 1})"
                if nargs
                else f"{api}: argnums={argnums!r} is out of range: args is empty"
            )
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{api}: argnums={argnums!r} refers to the same argument twice")
    return tuple(out), single


def _check_diff_arg(api: str, args: tuple[Any, ...], a: int) -> Tensor:
    x = args[a]
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{api}: args[{a}] is a {type(x).__name__}; only tensors can be differentiated"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{api}: args[{a}] has dtype {x.dtype}; only floating-point tensors can be"
            " differentiated (cast it first, e.g. x.double())"
        )
    return x


def _prepare(
    api: str, func: object, args: object, argnums: object
) -> tuple[tuple[Any, ...], tuple[int, ...], bool]:
    _check_func(api, func)
    targs = _check_args(api, args)
    nums, single = _normalize_argnums(api, argnums, len(targs))
    for a in nums:
        _check_diff_arg(api, targs, a)
    return targs, nums, single


def _check_out_leaf(api: str, leaf: object, where: str) -> Tensor:
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(
            f"{api}: func must return a tensor or a tuple/list/dict of tensors, but output"
            f"{where} is a {type(leaf).__name__}"
        )
    if leaf.is_complex():
        raise TypeError(
            f"{api}: output{where} is complex ({leaf.dtype}); the oracles differentiate"
            " real-valued functions only"
        )
    return leaf


# ----------------------------------------------------------------------------- pytrees
# A tiny pytree: tensors (or anything else) at the leaves, tuples, lists, NamedTuples and
# dicts as nodes. Enough for function outputs and for the oracles' own nested tuples.

_Spec = Any  # None for a leaf, else (kind, type, keys, children)


def _flatten(tree: Any) -> tuple[list[Any], _Spec]:
    leaves: list[Any] = []

    def go(node: Any) -> _Spec:
        if isinstance(node, (tuple, list)):
            return ("seq", type(node), None, [go(c) for c in node])
        if isinstance(node, dict):
            keys = list(node)
            return ("dict", type(node), keys, [go(node[k]) for k in keys])
        leaves.append(node)
        return None

    return leaves, go(tree)


def _unflatten(spec: _Spec, leaves: Sequence[Any]) -> Any:
    it: Iterator[Any] = iter(leaves)

    def go(s: _Spec) -> Any:
        if s is None:
            return next(it)
        kind, typ, keys, children = s
        built = [go(c) for c in children]
        if kind == "dict":
            return typ(zip(keys, built, strict=True))
        if typ is tuple or typ is list:
            return typ(built)
        if hasattr(typ, "_fields"):  # NamedTuple
            return typ(*built)
        return typ(built)

    return go(spec)


def _leaf_path(spec: _Spec, index: int) -> str:
    """The ``[i]['k']`` path of leaf number ``index`` (for error messages)."""
    paths: list[str] = []

    def go(s: _Spec, prefix: str) -> None:
        if s is None:
            paths.append(prefix)
            return
        kind, _, keys, children = s
        for pos, c in enumerate(children):
            go(c, prefix + (f"[{keys[pos]!r}]" if kind == "dict" else f"[{pos}]"))

    go(spec, "")
    return paths[index]


# ----------------------------------------------------------------------------- loops


def _grad_copies(args: tuple[Any, ...], nums: tuple[int, ...]) -> tuple[list[Any], list[Tensor]]:
    """``args`` with the differentiated ones replaced by fresh leaves that require grad."""
    call = list(args)
    xs = []
    for a in nums:
        x = args[a].detach().requires_grad_()
        call[a] = x
        xs.append(x)
    return call, xs


def _loop_jacobian(
    api: str, func: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...], single: bool
) -> Any:
    with torch.enable_grad():
        call, xs = _grad_copies(args, nums)
        leaves, spec = _flatten(func(*call))
        per_leaf = []
        for index, raw in enumerate(leaves):
            leaf = _check_out_leaf(api, raw, _leaf_path(spec, index))
            rows = [x.new_zeros((leaf.numel(), *x.shape)) for x in xs]
            if leaf.requires_grad:
                flat = leaf.reshape(-1)
                for i in range(flat.numel()):
                    grads = torch.autograd.grad(flat[i], xs, retain_graph=True, allow_unused=True)
                    for row, g in zip(rows, grads, strict=True):
                        if g is not None:
                            row[i] = g
            blocks = tuple(
                r.reshape((*leaf.shape, *x.shape)) for r, x in zip(rows, xs, strict=True)
            )
            per_leaf.append(blocks[0] if single else blocks)
    return _unflatten(spec, per_leaf)


def loop_jacobian(
    func: Callable[..., Any], args: tuple[Any, ...], argnums: int | tuple[int, ...] = 0
) -> Any:
    """The Jacobian of ``func`` at ``args``, one ``torch.autograd.grad`` per output element.

    This is the tutorial's naive loop: exact up to rounding, slow for large outputs.

    Args:
        func: called as ``func(*args)``; returns a tensor or a tuple/list/dict of tensors.
        args: the positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.

    Returns:
        ``func``'s output structure with each output leaf of shape ``out_shape`` replaced by
        its Jacobian block of shape ``(*out_shape, *args[a].shape)`` (int ``argnums``) or by a
        tuple of such blocks, one per argnum (tuple ``argnums``). Blocks have the dtype and
        device of ``args[a]``; they are zero where the output does not depend on the input.

    Raises:
        TypeError, ValueError: bad ``func``, ``args`` or ``argnums``, or a non-float input.

    >>> x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    >>> loop_jacobian(torch.sin, (x,))
    tensor([[1.0000, 0.0000],
            [0.0000, 0.5403]], dtype=torch.float64)
    """
    api = "derivs.oracles.loop_jacobian"
    targs, nums, single = _prepare(api, func, args, argnums)
    return _loop_jacobian(api, func, targs, nums, single)


def _loop_hessian(
    api: str, func: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...], single: bool
) -> Any:
    with torch.enable_grad():
        call, xs = _grad_copies(args, nums)
        out = _check_out_leaf(api, func(*call), "")
        n_out = out.numel()
        rows = [[xj.new_zeros((n_out, xi.numel(), *xj.shape)) for xj in xs] for xi in xs]
        if out.requires_grad:
            flat = out.reshape(-1)
            for k in range(n_out):
                grads = torch.autograd.grad(
                    flat[k], xs, retain_graph=True, create_graph=True, allow_unused=True
                )
                for i, g in enumerate(grads):
                    if g is None or not g.requires_grad:
                        continue  # the gradient is constant: its derivative is zero
                    gflat = g.reshape(-1)
                    for m in range(gflat.numel()):
                        second = torch.autograd.grad(
                            gflat[m], xs, retain_graph=True, allow_unused=True
                        )
                        for j, s in enumerate(second):
                            if s is not None:
                                rows[i][j][k, m] = s
        blocks = tuple(
            tuple(
                rows[i][j].reshape((*out.shape, *xs[i].shape, *xs[j].shape)) for j in range(len(xs))
            )
            for i in range(len(xs))
        )
    return blocks[0][0] if single else blocks


def loop_hessian(
    func: Callable[..., Any], args: tuple[Any, ...], argnums: int | tuple[int, ...] = 0
) -> Any:
    """The Hessian of ``func`` at ``args`` by looping over outputs, then gradient entries.

    Each gradient is taken with ``create_graph=True`` and each of its entries differentiated
    again with ``torch.autograd.grad``: exact up to rounding.

    Args:
        func: called as ``func(*args)``; returns a tensor of any shape (a vector-valued
            ``func`` gives one Hessian per output element).
        args: the positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.

    Returns:
        For int ``argnums``, a tensor of shape ``(*out_shape, *in_shape, *in_shape)``; for a
        tuple, nested tuples ``H[i][j] = d/dx_j (d out / d x_i)`` of shape
        ``(*out_shape, *in_i, *in_j)``, with the dtype and device of ``x_j``.

    Raises:
        TypeError, ValueError: bad ``func``, ``args`` or ``argnums``, or a non-float input.

    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> loop_hessian(lambda x: (x**3).sum(), (x,))
    tensor([[ 6.,  0.],
            [ 0., 12.]], dtype=torch.float64)
    """
    api = "derivs.oracles.loop_hessian"
    targs, nums, single = _prepare(api, func, args, argnums)
    return _loop_hessian(api, func, targs, nums, single)


def _normalize_in_dims(
    api: str, in_dims: object, args: tuple[Any, ...]
) -> tuple[list[int | None], int]:
    """Per-argument batch dims (non-negative or None) and the batch size."""
    if isinstance(in_dims, int) and not isinstance(in_dims, bool):
        dims: list[object] = [in_dims] * len(args)
    elif isinstance(in_dims, tuple):
        if len(in_dims) != len(args):
            raise ValueError(
                f"{api}: in_dims={in_dims!r} has {len(in_dims)} entries but there are"
                f" {len(args)} positional arguments"
            )
        dims = list(in_dims)
    else:
        raise TypeError(
            f"{api}: in_dims must be an int or a tuple of ints/None, got {type(in_dims).__name__}"
        )
    out: list[int | None] = []
    sizes: dict[int, int] = {}
    for pos, (d, arg) in enumerate(zip(dims, args, strict=True)):
        if d is None:
            out.append(None)
            continue
        if not isinstance(d, int) or isinstance(d, bool):
            raise TypeError(f"{api}: in_dims[{pos}]={d!r} is neither an int nor None")
        if not isinstance(arg, torch.Tensor):
            raise TypeError(
                f"{api}: in_dims[{pos}]={d} batches args[{pos}], which is a"
                f" {type(arg).__name__}, not a tensor (use None for unbatched arguments)"
            )
        if not -arg.dim() <= d < max(arg.dim(), 1) or arg.dim() == 0:
            raise ValueError(
                f"{api}: in_dims[{pos}]={d} is out of range for args[{pos}] of shape"
                f" {tuple(arg.shape)}"
            )
        nd = d % arg.dim()
        out.append(nd)
        sizes[pos] = arg.shape[nd]
    if not sizes:
        raise ValueError(f"{api}: in_dims={in_dims!r} batches no argument")
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"args[{p}]: {n}" for p, n in sizes.items())
        raise ValueError(f"{api}: batched arguments have different batch sizes ({detail})")
    return out, next(iter(sizes.values()))


def _loop_batch(
    api: str,
    per_sample: Callable[[tuple[Any, ...]], Any],
    args: tuple[Any, ...],
    in_dims: object,
) -> Any:
    dims, size = _normalize_in_dims(api, in_dims, args)

    def sample(b: int | None) -> tuple[Any, ...]:
        picked = []
        for arg, d in zip(args, dims, strict=True):
            if d is None:
                picked.append(arg)
            elif b is None:
                # NOTE: an empty batch still needs the per-sample output shape; evaluate one
                # zero-filled sample to learn it and return its blocks with batch size 0.
                shape = arg.shape[:d] + arg.shape[d + 1 :]
                picked.append(arg.new_zeros(shape))
            else:
                picked.append(arg.select(d, b))
        return tuple(picked)

    if size == 0:
        leaves, spec = _flatten(per_sample(sample(None)))
        return _unflatten(spec, [leaf.unsqueeze(0)[:0] for leaf in leaves])
    results = [_flatten(per_sample(sample(b))) for b in range(size)]
    spec = results[0][1]
    stacked = [
        torch.stack(column) for column in zip(*(leaves for leaves, _ in results), strict=True)
    ]
    return _unflatten(spec, stacked)


def loop_batch_jacobian(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...] = 0,
    in_dims: int | tuple[int | None, ...] = 0,
) -> Any:
    """Per-sample Jacobians by a Python loop over the batch, stacked along a new dim 0.

    Args:
        func: the per-sample function, called as ``func(*sample_args)``.
        args: the batched positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.
        in_dims: as in ``torch.vmap``: an int (every argument batched along that dim) or a
            tuple with an int (negative allowed) or ``None`` (not batched) per argument.

    Returns:
        As :func:`loop_jacobian` for one sample, each block stacked to shape
        ``(B, *out_shape, *in_shape)``.

    >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    >>> loop_batch_jacobian(lambda v: v.pow(2).sum(), (x,)).tolist()
    [[0.0, 2.0], [4.0, 6.0]]
    """
    api = "derivs.oracles.loop_batch_jacobian"
    targs, nums, single = _prepare(api, func, args, argnums)
    return _loop_batch(api, lambda s: _loop_jacobian(api, func, s, nums, single), targs, in_dims)


def loop_batch_hessian(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...] = 0,
    in_dims: int | tuple[int | None, ...] = 0,
) -> Any:
    """Per-sample Hessians by a Python loop over the batch, stacked along a new dim 0.

    Args:
        func: the per-sample function (tensor-valued), called as ``func(*sample_args)``.
        args: the batched positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.
        in_dims: as in ``torch.vmap`` (see :func:`loop_batch_jacobian`).

    Returns:
        As :func:`loop_hessian` for one sample, each block stacked to shape
        ``(B, *out_shape, *in_i, *in_j)``.

    >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    >>> loop_batch_hessian(lambda v: v.pow(3).sum(), (x,)).tolist()
    [[[6.0]], [[12.0]]]
    """
    api = "derivs.oracles.loop_batch_hessian"
    targs, nums, single = _prepare(api, func, args, argnums)
    return _loop_batch(api, lambda s: _loop_hessian(api, func, s, nums, single), targs, in_dims)


# ----------------------------------------------------------------------------- finite differences


def _check_scheme(api: str, scheme: object, step: object) -> float | None:
    if scheme not in SCHEMES:
        raise ValueError(
            f"{api}: scheme={scheme!r} is not one of 'central', 'richardson', 'complex_step'"
            " (richardson: most accurate for any smooth function; central: cheapest;"
            " complex_step: exact to rounding, for functions that accept complex input)"
        )
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"{api}: step must be a positive float or None, got {type(step).__name__}")
    if not math.isfinite(step) or step <= 0:
        raise ValueError(f"{api}: step={step!r} must be positive and finite (or None)")
    return float(step)


def _compute_dtype(api: str, xs: Sequence[Tensor], requested: object) -> torch.dtype:
    if requested is not None:
        if not isinstance(requested, torch.dtype) or not requested.is_floating_point:
            raise TypeError(
                f"{api}: compute_dtype must be a floating torch.dtype or None, got {requested!r}"
            )
        return requested
    # NOTE: float64 everywhere except mps, which has none (there: float32, wider errors).
    return torch.float32 if any(x.device.type == "mps" for x in xs) else torch.float64


class _Line(NamedTuple):
    """One coordinate (or direction) to differentiate along: ``point(t)`` -> inputs."""

    point: Callable[[complex], list[Tensor]]
    span: Callable[[float], float]  # the representable (x + h) - (x - h)
    scale: float  # the default steps are relative to max(|x|, 1) along the line


def _column_line(base: list[Tensor], cbase: list[Tensor] | None, p: int, c: int) -> _Line:
    xc = base[p].reshape(-1)[c]

    def point(t: complex) -> list[Tensor]:
        src = base if isinstance(t, float) else cbase
        assert src is not None
        pts = list(src)
        x = src[p].clone()
        x.view(-1)[c] += t
        pts[p] = x
        return pts

    def span(h: float) -> float:
        return float((xc + h) - (xc - h))

    return _Line(point, span, max(abs(float(xc)), 1.0))


def _direction_line(base: list[Tensor], cbase: list[Tensor] | None, vs: list[Tensor]) -> _Line:
    def point(t: complex) -> list[Tensor]:
        src = base if isinstance(t, float) else cbase
        assert src is not None
        return [x + t * v for x, v in zip(src, vs, strict=True)]

    biggest = max((float(x.abs().max()) for x in base if x.numel()), default=0.0)
    return _Line(point, lambda h: 2.0 * h, max(biggest, 1.0))


_Eval = Callable[[list[Tensor]], list[Tensor]]


def _difference_quotients(
    evaluate: _Eval, line: _Line, h: float
) -> tuple[list[Tensor], list[Tensor], float]:
    """Central differences along ``line`` at step ``h``: quotients, max |f|, and the span.

    NOTE: max |f| is taken over the whole output leaf (norm-wise), not per element: the
    rounding error of an output element is set by the magnitudes that were summed into it,
    which an element made small by cancellation does not show.
    """
    fp = evaluate(line.point(h))
    fm = evaluate(line.point(-h))
    d = line.span(h)
    quotients = [(a - b) / d for a, b in zip(fp, fm, strict=True)]
    magnitudes = [torch.maximum(_scale(a), _scale(b)) for a, b in zip(fp, fm, strict=True)]
    return quotients, magnitudes, d


def _scale(t: Tensor) -> Tensor:
    """The largest finite magnitude in ``t``, as a 0-d tensor (0 when there is none)."""
    finite = torch.where(torch.isfinite(t), t.abs(), torch.zeros_like(t))
    return finite.amax() if t.numel() else t.new_zeros(())


def _nan_to_inf(t: Tensor) -> Tensor:
    return torch.where(torch.isnan(t), torch.full_like(t, math.inf), t)


def _central(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], rounding: float
) -> tuple[list[Tensor], list[Tensor]]:
    h = step if step is not None else line.scale * eps[0] ** _CENTRAL_EXPONENT
    d1, m1, s1 = _difference_quotients(evaluate, line, h)
    d2, m2, _ = _difference_quotients(evaluate, line, 2 * h)
    values, errors = [], []
    for q1, q2, a, b, e in zip(d1, d2, m1, m2, eps, strict=True):
        truncation = (q2 - q1).abs()
        magnitude = torch.maximum(a, b)
        values.append(q1)
        errors.append(truncation + 2 * rounding * e * magnitude / s1)
    return values, errors


def _richardson(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], rounding: float
) -> tuple[list[Tensor], list[Tensor]]:
    h0 = (
        step if step is not None else line.scale * _RICHARDSON_BASE * eps[0] ** _RICHARDSON_EXPONENT
    )
    quotients, spans, magnitudes = [], [], []
    for k in range(_RICHARDSON_STEPS):
        q, m, s = _difference_quotients(evaluate, line, h0 * 2.0**-k)
        quotients.append(q)
        magnitudes.append(m)
        spans.append(s)
    values, errors = [], []
    for leaf, e in enumerate(eps):
        d = [q[leaf] for q in quotients]
        magnitude = torch.stack([m[leaf] for m in magnitudes]).amax(dim=0)
        # r1[k] and r2[k] end at step k; entries before the first full window are unused
        r1 = [d[0]] + [(4 * d[k] - d[k - 1]) / 3 for k in range(1, len(d))]
        r2 = r1[:2] + [(16 * r1[k] - r1[k - 1]) / 15 for k in range(2, len(d))]
        windows = list(range(2, len(d)))
        best_value, best_error = r2[windows[0]], torch.full_like(r2[windows[0]], math.inf)
        for pos, k in enumerate(windows):
            neighbour = windows[pos + 1] if pos + 1 < len(windows) else windows[pos - 1]
            truncation = torch.maximum((r2[k] - r1[k]).abs(), (r2[k] - r2[neighbour]).abs())
            # R2_k = (64 D_k - 20 D_{k-1} + D_{k-2}) / 45, and |rounding of D_k| <= 2 delta / span_k
            amplification = (64 / spans[k] + 20 / spans[k - 1] + 1 / spans[k - 2]) * 2 / 45
            err = _nan_to_inf(truncation + rounding * e * magnitude * amplification)
            better = err < best_error
            best_value = torch.where(better, r2[k], best_value)
            best_error = torch.where(better, err, best_error)
        values.append(best_value)
        errors.append(best_error)
    return values, errors


def _complex_step(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], cdtype: torch.dtype
) -> tuple[list[Tensor], list[Tensor]]:
    h = step if step is not None else _COMPLEX_STEP[cdtype]
    outs = evaluate(line.point(1j * h))
    values = [o.imag / h for o in outs]
    errors = [_COMPLEX_ROUNDING * e * v.abs() for v, e in zip(values, eps, strict=True)]
    return values, errors


def _with_floor(error: Tensor) -> Tensor:
    """Add the norm-wise floor _FLOOR * max(error) to an error block (NaN/inf kept)."""
    return error + _FLOOR * _scale(error)


def _fd_blocks(
    api: str,
    evaluate: _Eval,
    cevaluate: _Eval | None,
    base: list[Tensor],
    cbase: list[Tensor] | None,
    leaves: list[Tensor],
    scheme: str,
    step: float | None,
    cdtype: torch.dtype,
) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """``[leaf][p]`` value and error blocks of shape ``(*leaf.shape, *base[p].shape)``."""
    eps = [
        max(torch.finfo(cdtype).eps, torch.finfo(o.dtype).eps if o.is_floating_point() else 0.0)
        for o in leaves
    ]
    rounding = _ROUNDING * (_MPS_WIDENING if base[0].device.type == "mps" else 1.0)
    values = [
        [leaf.new_zeros((leaf.numel(), x.numel()), dtype=cdtype) for x in base] for leaf in leaves
    ]
    errors = [[v.clone() for v in row] for row in values]
    for p, x in enumerate(base):
        for c in range(x.numel()):
            line = _column_line(base, cbase, p, c)
            if scheme == "central":
                vals, errs = _central(evaluate, line, step, eps, rounding)
            elif scheme == "richardson":
                vals, errs = _richardson(evaluate, line, step, eps, rounding)
            else:
                assert cevaluate is not None
                vals, errs = _complex_step(cevaluate, line, step, eps, cdtype)
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
    if scheme == "complex_step":
        assert cevaluate is not None
        _guard_complex_step(api, evaluate, base, cbase, shaped_v, shaped_e, eps, rounding)
    return shaped_v, shaped_e


def _guard_complex_step(
    api: str,
    evaluate: _Eval,
    base: list[Tensor],
    cbase: list[Tensor] | None,
    values: list[list[Tensor]],
    errors: list[list[Tensor]],
    eps: list[float],
    rounding: float,
) -> None:
    """Cross-check the complex-step columns against Richardson along a random direction.

    A function built from non-holomorphic operations (abs, conj, norm, real/imag, ...) runs
    on complex input yet gives a wrong complex step; this catches it with probability one
    unless the wrong part is below the tolerance.

    NOTE: Richardson runs twice, from base steps h_0 and 0.7 h_0; their difference is an
    empirical measure of f's noise, which near saturation (1 - tanh**2 computed from
    tanh ~ 1) far exceeds the rounding model, above all when computing in float32. Without
    it the guard raised on correct, merely noisy functions. 26 evaluations in all.
    """
    if not any(x.numel() for x in base):
        return
    gen = torch.Generator().manual_seed(20240531)
    vs = [torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device) + 0.5 for x in base]
    line = _direction_line(base, cbase, vs)
    h0 = line.scale * _RICHARDSON_BASE * eps[0] ** _RICHARDSON_EXPONENT
    ref, ref_err = _richardson(evaluate, line, h0, eps, rounding)
    alt, alt_err = _richardson(evaluate, line, 0.7 * h0, eps, rounding)
    for leaf, (r, re) in enumerate(zip(ref, ref_err, strict=True)):
        re = re + alt_err[leaf] + (alt[leaf] - r).abs()
        along = torch.zeros_like(r)
        along_err = torch.zeros_like(r)
        for p, v in enumerate(vs):
            nd = v.dim()
            dims = (list(range(r.dim(), r.dim() + nd)), list(range(nd)))
            along = along + torch.tensordot(values[leaf][p], v, dims=dims)
            along_err = along_err + torch.tensordot(errors[leaf][p], v, dims=dims)
        diff = (along - r).abs()
        scale = float(torch.maximum(along.abs(), r.abs()).max()) if r.numel() else 0.0
        tol = 8 * (re + along_err) + eps[leaf] ** _CENTRAL_EXPONENT * scale
        bad = ~(diff <= tol)
        if bool(bad.any()):
            worst = int(torch.argmax(torch.where(bad, diff, torch.zeros_like(diff)).reshape(-1)))
            raise ValueError(
                f"{api}: scheme='complex_step' disagrees with finite differences along a"
                f" random direction (output leaf {leaf}, flat index {worst}: complex step"
                f" {float(along.reshape(-1)[worst]):.6g}, richardson"
                f" {float(r.reshape(-1)[worst]):.6g}). func runs on complex input but is"
                " not holomorphic there (abs, conj, norm, angle, real/imag and the like break"
                " the complex step); use scheme='richardson'"
            )


def _cast_args(args: tuple[Any, ...], dtype: torch.dtype) -> list[Any]:
    """Every floating tensor argument detached and cast (exactly) to ``dtype``."""
    return [
        a.detach().to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    ]


def _complexify(base: list[Any], cdtype: torch.dtype) -> list[Any]:
    ctype = torch.complex128 if cdtype == torch.float64 else torch.complex64
    return [
        a.to(ctype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in base
    ]


def _call_complex(api: str, scheme: str, thunk: Callable[[], Any]) -> Any:
    try:
        return thunk()
    except Exception as exc:  # what torch raises for unsupported complex ops varies
        raise TypeError(
            f"{api}: scheme={scheme!r} needs func to accept complex input, but it raised"
            f" {type(exc).__name__}: {exc} (use scheme='richardson' for this function)"
        ) from exc


def _check_complex_out(api: str, scheme: str, outs: list[Any], reals: list[Tensor]) -> None:
    for o, r in zip(outs, reals, strict=True):
        if not isinstance(o, torch.Tensor) or not o.is_complex():
            kind = o.dtype if isinstance(o, torch.Tensor) else type(o).__name__
            raise ValueError(
                f"{api}: scheme={scheme!r} needs a real-analytic func that maps complex input"
                f" to complex output, but it returned {kind}; a real result from complex input"
                " means a non-holomorphic step (abs, norm, .real, casts) drops the imaginary"
                " part. Use scheme='richardson'"
            )
        if o.shape != r.shape:
            raise ValueError(
                f"{api}: scheme={scheme!r}: func returned shape {tuple(o.shape)} for complex"
                f" input but {tuple(r.shape)} for real input"
            )
        slack = 8 * torch.finfo(r.dtype).eps * (r.abs() + o.real.abs())
        if bool((o.imag.abs() > slack).any()):
            raise ValueError(
                f"{api}: scheme={scheme!r} needs a real function: given real values as complex"
                " input, func returned non-zero imaginary parts. Use scheme='richardson'"
            )


def _finish(values: Tensor, errors: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Cast a block to ``like``'s dtype and device; the error stays an upper bound.

    Going to a less precise dtype adds the cast's own rounding (computed exactly) to the
    error, and the error itself is rounded up: scaled by 1 + 2 eps and raised by the
    smallest subnormal, so neither rounding to nearest nor underflow can shrink it.
    """
    low = like.dtype
    if torch.finfo(low).eps > torch.finfo(values.dtype).eps:
        cast = values.to(low)
        errors = errors + (values - cast.to(values.dtype)).abs()
        info = torch.finfo(low)
        errors = errors * (1 + 2 * info.eps) + info.tiny * info.eps
        values = cast
    return values.to(low).to(like.device), errors.to(low).to(like.device)


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
      real-analytic functions that accept complex input. 1 evaluation, plus 24 in total
      for a guard that checks the result against Richardson along a random direction (a
      non-holomorphic op such as ``abs`` or ``conj`` raises instead of giving a wrong
      answer), and 2 that check func maps real values to real values.

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
    targs, nums, single = _prepare(api, func, args, argnums)
    h = _check_scheme(api, scheme, step)
    originals = [targs[a] for a in nums]
    cdtype = _compute_dtype(api, originals, compute_dtype)
    cargs = _cast_args(targs, cdtype)
    base = [cargs[a].contiguous() for a in nums]

    def run(points: list[Tensor], call_args: list[Any]) -> Any:
        call = list(call_args)
        for a, x in zip(nums, points, strict=True):
            call[a] = x
        return func(*call)

    reference, spec = _flatten(run(base, cargs))
    leaves = [_check_out_leaf(api, o, _leaf_path(spec, i)) for i, o in enumerate(reference)]

    def evaluate(points: list[Tensor]) -> list[Tensor]:
        outs, _ = _flatten(run(points, cargs))
        return [o.detach().to(cdtype) for o in outs]

    cevaluate: _Eval | None = None
    cbase: list[Tensor] | None = None
    if scheme == "complex_step":
        ccargs = _complexify(cargs, cdtype)
        cbase = [ccargs[a].contiguous() for a in nums]
        probe, _ = _flatten(_call_complex(api, scheme, lambda: run(cbase or [], ccargs)))
        _check_complex_out(api, scheme, probe, leaves)

        def cevaluate(points: list[Tensor]) -> list[Tensor]:
            outs, _ = _flatten(run(points, ccargs))
            return [o.detach() for o in outs]

    values, errors = _fd_blocks(api, evaluate, cevaluate, base, cbase, leaves, scheme, h, cdtype)
    out_v, out_e = [], []
    for vrow, erow in zip(values, errors, strict=True):
        pairs = [_finish(v, e, x) for v, e, x in zip(vrow, erow, originals, strict=True)]
        out_v.append(pairs[0][0] if single else tuple(v for v, _ in pairs))
        out_e.append(pairs[0][1] if single else tuple(e for _, e in pairs))
    return Estimate(_unflatten(spec, out_v), _unflatten(spec, out_e))


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
    exact to rounding, one gradient per input element, plus the same Richardson guard as
    :func:`fd_jacobian`.

    Args:
        func: called as ``func(*args)``; returns a real tensor of any shape.
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
    targs, nums, single = _prepare(api, func, args, argnums)
    h = _check_scheme(api, scheme, step)
    originals = [targs[a] for a in nums]
    cdtype = _compute_dtype(api, originals, compute_dtype)
    cargs = _cast_args(targs, cdtype)
    base = [cargs[a].contiguous() for a in nums]

    def gradients(points: list[Tensor], call_args: list[Any], real: bool = True) -> list[Tensor]:
        with torch.enable_grad():
            call = list(call_args)
            xs = []
            for a, x in zip(nums, points, strict=True):
                xs.append(x.detach().requires_grad_())
                call[a] = xs[-1]
            out = func(*call)
            if real:
                _check_out_leaf(api, out, "")
            elif not isinstance(out, torch.Tensor):
                raise TypeError(f"{api}: func must return a tensor, got {type(out).__name__}")
            flat = out.reshape(-1)
            grads = [x.new_zeros((flat.numel(), *x.shape)) for x in xs]
            if out.requires_grad:
                for k in range(flat.numel()):
                    one = torch.ones_like(flat[k])
                    gs = torch.autograd.grad(
                        flat[k], xs, grad_outputs=one, retain_graph=True, allow_unused=True
                    )
                    for row, g in zip(grads, gs, strict=True):
                        if g is not None:
                            # autograd gives conj(f'(z)) for holomorphic f; undo it
                            row[k] = g.conj() if g.is_complex() else g
            return [
                g.reshape((*out.shape, *x.shape)).detach() for g, x in zip(grads, xs, strict=True)
            ]

    leaves = gradients(base, cargs)

    cevaluate: _Eval | None = None
    cbase: list[Tensor] | None = None
    if scheme == "complex_step":
        ccargs = _complexify(cargs, cdtype)
        cbase = [ccargs[a].contiguous() for a in nums]
        probe = _call_complex(api, scheme, lambda: gradients(cbase or [], ccargs, False))
        _check_complex_out(api, scheme, probe, leaves)

        def cevaluate(points: list[Tensor]) -> list[Tensor]:
            return gradients(points, ccargs, False)

    values, errors = _fd_blocks(
        api,
        lambda pts: gradients(pts, cargs),
        cevaluate,
        base,
        cbase,
        leaves,
        scheme,
        h,
        cdtype,
    )
    blocks_v, blocks_e = [], []
    for vrow, erow in zip(values, errors, strict=True):
        pairs = [_finish(v, e, x) for v, e, x in zip(vrow, erow, originals, strict=True)]
        blocks_v.append(tuple(v for v, _ in pairs))
        blocks_e.append(tuple(e for _, e in pairs))
    if single:
        return Estimate(blocks_v[0][0], blocks_e[0][0])
    return Estimate(tuple(blocks_v), tuple(blocks_e))
