"""The complex step: ``Im f(x + ih) / h``, with its guards and the real-operand promotion.

For a real-analytic ``f`` evaluated in complex arithmetic, ``f(x + ih) = f(x) + ih f'(x) +
O(h**2)`` with no subtractive cancellation, so ``h`` can be tiny and the derivative is exact
to rounding. Three things make it safe to offer as an oracle:

* the closed-over real tensors of ``func`` (a weight ``W`` in ``tanh(W @ x)``) meet the
  complex input in ops that refuse to mix dtypes (matmul, linear, conv, einsum, ...);
  :func:`promoting_real_operands` casts them to the complex dtype in exactly those ops,
  which are multilinear and therefore holomorphic in every operand (convolutions are
  computed from real ones instead: torch's complex convolution loses the step);
* a ``func`` that is not complex-capable (relu, comparisons, sort, ``where`` on a
  comparison) raises on complex input: :func:`call_complex` turns that into a clear
  ``TypeError``; one that runs but drops the imaginary part (abs, ``.real``) is refused by
  :func:`check_complex_out`;
* one that runs on complex input yet is not holomorphic (``conj``, ``abs`` in the middle)
  gives a plausible wrong answer: :func:`guard_complex_step` cross-checks it against
  Richardson along a random direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from derivs.oracles._common import Tensor
from derivs.oracles._differences import (
    _CENTRAL_EXPONENT,
    _RICHARDSON_BASE,
    _RICHARDSON_EXPONENT,
    _direction_line,
    _Eval,
    _Line,
    _richardson,
    _Rounding,
)

# complex step: Im f(x + ih) / h has no subtractive cancellation, so h can be tiny; the
# truncation error h**2 |f'''| / 6 vanishes. Its rounding is that of forward-mode AD, a
# few eps relative to the magnitudes involved.
# NOTE: not smaller: Im f(x + ih) is about h * f'(x), which must stay a normal float even
# when f' is tiny (h = 1e-100 underflowed to 0 for a derivative of 1e-241).
_COMPLEX_STEP = {torch.float64: 1e-20, torch.float32: 1e-10}
_COMPLEX_ROUNDING = 16.0
_TRUNCATION_SAFETY = 2.0

# ----------------------------------------------------------------------------- promotion

_F = torch.nn.functional
# NOTE: the ops that refuse a real operand next to a complex one (torch 2.5-2.13: "expected
# m1 and m2 to have the same dtype", "addmv input tensors must have the same dtype", ...),
# and of those only the ones multilinear in their tensor operands, hence holomorphic in
# each: promoting their real operands to complex computes the same complex extension of f
# that the elementwise ops (which promote by themselves) already compute. Ops that
# conjugate (vdot, linalg.vecdot), take magnitudes (cdist, norms, layer_norm) or are
# piecewise (prelu) are left out on purpose: they are not holomorphic, and their dtype
# error keeps refusing them. Out-of-place forms only: an in-place op cannot turn its real
# self complex.
_MULTILINEAR = frozenset(
    {
        torch.matmul,
        torch.mm,
        torch.mv,
        torch.bmm,
        torch.addmv,
        torch.addmm,
        torch.addbmm,
        torch.baddbmm,
        torch.dot,
        torch.inner,
        torch.tensordot,
        torch.einsum,
        torch.chain_matmul,
        torch.linalg.matmul,
        torch.linalg.multi_dot,
        torch.linalg.cross,
        torch.cross,
        torch.bilinear,
        torch.lerp,
        torch.index_add,
        _F.linear,
        _F.bilinear,
        Tensor.matmul,
        Tensor.__matmul__,
        Tensor.__rmatmul__,
        Tensor.mm,
        Tensor.mv,
        Tensor.bmm,
        Tensor.addmv,
        Tensor.addmm,
        Tensor.addbmm,
        Tensor.baddbmm,
        Tensor.dot,
        Tensor.inner,
        Tensor.cross,
        Tensor.lerp,
        Tensor.index_add,
    }
)


# NOTE: convolutions are multilinear too, but torch computes a complex convolution with
# three real ones (Gauss's trick: Im = (a + b)(c + d) - ac - bd), which cancels the tiny
# imaginary part of x + ih to nothing (measured: the complex step of conv1d came out 0).
# So they are not promoted but split: conv(xr + i xi, wr + i wi) = conv(xr, wr) -
# conv(xi, wi) + i (conv(xr, wi) + conv(xi, wr)), four real convolutions, each exact to
# rounding; matmul & co. use complex BLAS and keep the imaginary part (measured: within
# the rounding of a central difference of the real part).
_CONVOLUTIONS = frozenset(
    {
        _F.conv1d,
        _F.conv2d,
        _F.conv3d,
        _F.conv_transpose1d,
        _F.conv_transpose2d,
        _F.conv_transpose3d,
    }
)


def _complex_dtype(tree: Any) -> torch.dtype | None:
    """The widest complex dtype among the tensors in ``tree`` (None when there is none)."""
    found: torch.dtype | None = None
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, torch.Tensor):
            if node.is_complex() and (found is None or node.itemsize > found.itemsize):
                found = node.dtype
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
    return found


def _promote(tree: Any, dtype: torch.dtype) -> Any:
    """``tree`` with every real floating tensor cast (exactly) to the complex ``dtype``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() else tree
    if isinstance(tree, (tuple, list)):
        return type(tree)(_promote(t, dtype) for t in tree)
    if isinstance(tree, dict):
        return {k: _promote(v, dtype) for k, v in tree.items()}
    return tree


def _parts(t: Tensor | None, real: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
    """The real and imaginary parts of ``t`` in the dtype ``real`` (zeros for a real ``t``)."""
    if t is None:
        return None, None
    if t.is_complex():
        return t.real.to(real), t.imag.to(real)
    return t.to(real), torch.zeros_like(t, dtype=real)


def _split_convolution(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], target: torch.dtype
) -> Tensor:
    """``func(x, w, bias, *rest)`` for complex operands, from four real convolutions."""
    x, w, *rest = args
    bias = rest.pop(0) if rest else kwargs.pop("bias", None)
    real = torch.empty((), dtype=target).real.dtype
    (xr, xi), (wr, wi), (br, bi) = _parts(x, real), _parts(w, real), _parts(bias, real)

    def conv(a: Tensor | None, b: Tensor | None, c: Tensor | None) -> Tensor:
        out: Tensor = func(a, b, c, *rest, **kwargs)
        return out

    return torch.complex(
        conv(xr, wr, br) - conv(xi, wi, None), conv(xr, wi, bi) + conv(xi, wr, None)
    )


class _PromoteRealOperands(TorchFunctionMode):
    """Inside: the ops of ``_MULTILINEAR`` promote real floating operands to complex, and
    complex convolutions are computed from real ones (see ``_CONVOLUTIONS``)."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _MULTILINEAR or func in _CONVOLUTIONS:
            target = _complex_dtype((args, kwargs))
            if target is not None and func in _CONVOLUTIONS and len(args) >= 2:
                return _split_convolution(func, args, kwargs, target)
            if target is not None:
                args, kwargs = _promote(args, target), _promote(kwargs, target)
        return func(*args, **kwargs)


def promoting_real_operands(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` run so that its closed-over real tensors can meet complex input in matmul & co.

    >>> W = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> z = torch.tensor([1.0, 1j], dtype=torch.complex128)
    >>> promoting_real_operands(lambda z: W @ z)(z)
    tensor([1.+2.j], dtype=torch.complex128)
    """

    def promoted(*args: Any) -> Any:
        with _PromoteRealOperands():
            return func(*args)

    return promoted


# ----------------------------------------------------------------------------- the step


def complex_step(
    evaluate: _Eval, line: _Line, step: float | None, eps: list[float], cdtype: torch.dtype
) -> tuple[list[Tensor], list[Tensor]]:
    """``Im f(x + ih) / h`` along ``line``, with its rounding and truncation estimates.

    NOTE: the truncation ``h**2 f3(x) / 6`` (``f3`` the third derivative) is negligible
    next to rounding wherever the derivative is not tiny, but where it is exactly 0 it is all
    there is (``x**4`` at 0: a Hessian of ``-4 h**2 = -4e-40`` against a rounding estimate of
    1e-54, so an exact 0 failed against it). A second step at ``2h`` measures it: the two
    estimates differ by ``3 c h**2`` when the first is off by ``c h**2``; twice a third of
    the difference is kept as the truncation bound (one more evaluation per column).
    """
    h = step if step is not None else _COMPLEX_STEP[cdtype]
    values = [o.imag / h for o in evaluate(line.point(1j * h))]
    doubled = [o.imag / (2 * h) for o in evaluate(line.point(2j * h))]
    errors = [
        _COMPLEX_ROUNDING * e * v.abs() + _TRUNCATION_SAFETY * (d - v).abs() / 3
        for v, d, e in zip(values, doubled, eps, strict=True)
    ]
    return values, errors


def guard_complex_step(
    api: str,
    evaluate: _Eval,
    base: list[Tensor],
    cbase: list[Tensor] | None,
    values: list[list[Tensor]],
    errors: list[list[Tensor]],
    eps: list[float],
    rounding: _Rounding,
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


def complexify(base: list[Any], cdtype: torch.dtype) -> list[Any]:
    ctype = torch.complex128 if cdtype == torch.float64 else torch.complex64
    return [
        a.to(ctype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in base
    ]


def call_complex(api: str, scheme: str, thunk: Callable[[], Any]) -> Any:
    try:
        return thunk()
    except Exception as exc:  # what torch raises for unsupported complex ops varies
        raise TypeError(
            f"{api}: scheme={scheme!r} needs func to accept complex input, but it raised"
            f" {type(exc).__name__}: {exc} (use scheme='richardson' for this function)"
        ) from exc


def check_complex_out(api: str, scheme: str, outs: list[Any], reals: list[Tensor]) -> None:
    if len(outs) != len(reals):
        raise ValueError(
            f"{api}: scheme={scheme!r}: func returned {len(outs)} output tensors for complex"
            f" input but {len(reals)} for real input"
        )
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
