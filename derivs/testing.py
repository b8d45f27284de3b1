"""The one comparison helper of the derivs suite: :func:`assert_close`.

It checks structure, then shape, dtype and device, then values, against a tolerance
derived from the dtype's machine epsilon, the size of the block and, for comparisons with a
finite-difference oracle, the oracle's own error estimate. A failure names the block, the
worst element, both values there, the tolerance and how it was derived, and the call that
produced the values (``context``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from derivs import _validate

__all__ = ["ERROR_SAFETY", "Tolerance", "assert_close", "tolerance"]

Tensor = torch.Tensor

# NOTE: the tolerance formula. For a block with `numel` elements whose expected values have
# largest magnitude `scale`, with eps the machine epsilon of the less precise of the two
# dtypes, an element passes when
#
#     |actual - expected| <= atol + rtol * |expected| + ERROR_SAFETY * error
#
#     rtol = RTOL_FACTOR * eps                          (8 eps: a few roundings per element)
#     atol = ATOL_FACTOR * eps * sqrt(numel) * scale    (32 eps sqrt(n), norm-wise)
#
# The absolute part is norm-wise: it is relative to the largest expected value, not to
# each element, because the rounding error of a derivative entry is set by the magnitudes
# summed into it (of the order of the block's scale), not by the entry itself; a
# near-zero entry made by cancellation carries an absolute error of order eps * scale.
# The sqrt(numel) factor grows with the sizes involved the way accumulated rounding does
# (randomly signed errors add like a random walk). For a block of 64 elements in float32
# this allows 256 eps = 3e-5 of the scale: enough for forward- vs reverse-mode rounding on
# smooth random functions of that size, far below any real bug. In float64 the same
# formula allows 256 eps = 6e-14: a relative error of 1e-6 fails by eight orders of
# magnitude. ERROR_SAFETY = 2 multiplies the oracle's own error estimate: the estimates
# of derivs.oracles are built conservative (median 15-50x the true error) and, with the
# rounding noise measured, central and Richardson covered every draw measured
# (docs/oracles.md); the complex step's can undershoot at elements far below the block's
# largest, which the eps-based atol above covers, and the factor 2 is margin on the rest.
#
# NOTE: the underflow floor. The model above, "a rounding is off by eps/2 of the value it
# rounds", fails below the smallest normal number tiny: there the floats are evenly spaced
# by the smallest subnormal, eps * tiny (2**-149 = 1.4e-45 in float32, 4.9e-324 in float64),
# and a rounding is off by up to half of that whatever the value. So every rounding is off
# by at most eps/2 * max(|value|, tiny), and the same norm-wise count of roundings
# (ATOL_FACTOR * sqrt(numel)) gives
#
#     atol = ATOL_FACTOR * eps * sqrt(numel) * max(scale, tiny)
#
# i.e. a block whose expected values are all below tiny is allowed 32 sqrt(numel) subnormal
# spacings (float32, one element: 4.5e-44). Without it a correct x @ S @ x with S = 1.4e-45,
# x = 1.5 (loop Jacobian 4 spacings, closed form 3) failed against atol = 2e-50, far below
# the spacing of the numbers themselves. The floor is invisible above tiny: it cannot hide
# a relative error in normal-range values (an error of 10 tiny in a float32 value of 1e-36
# still fails by a factor of 2e4); in float64 it is 1.6e-322. Like the formula above, it
# assumes that later steps do not amplify an underflowed rounding by more than the count
# allows (x @ S @ x multiplies the underflowed S x by x = 1.5: 1 spacing of the 32 allowed).
#
# NOTE: the count per entry (``terms``). sqrt(numel) counts the roundings of a whole block,
# but an entry of a derivative accumulates only the rounding of the terms summed into it:
# the chain rule's contractions, each over a dimension of an intermediate of the function
# (u @ W sums over W's rows, its vjp over W's columns, a reduction over the elements it
# reduces). A 32x32 Jacobian of tanh(W @ x) sums 32 terms into each entry, not 1024; by the
# same random-walk count the entry's rounding grows like sqrt(terms), and a caller who can
# bound the sizes its function contracts over passes that bound as ``terms``:
#
#     atol = ATOL_FACTOR * eps * sqrt(terms) * max(scale, tiny)
#
# The default cannot: assert_close compares the results of an arbitrary user function whose
# intermediates it never sees (a 4x4 Jacobian may come through a 10**4-wide hidden layer),
# so without ``terms`` the count stays the block's numel, as before. The suite derives its
# count in tests/suite_helpers.assert_close_scaled, where the functions' sizes are bounded.
RTOL_FACTOR = 8.0
ATOL_FACTOR = 32.0
ERROR_SAFETY = 2.0


@dataclass(frozen=True)
class Tolerance:
    """The default tolerance for one block, and how it was derived."""

    rtol: float
    atol: float
    eps: float
    dtype: torch.dtype
    numel: int
    scale: float
    tiny: float = 0.0
    terms: int | None = None  # the roundings counted per entry, if not the block's numel

    def describe(self) -> str:
        name = str(self.dtype).removeprefix("torch.")
        count, n = ("numel", self.numel) if self.terms is None else ("terms", self.terms)
        if self.scale >= self.tiny:
            formula = f"{ATOL_FACTOR:g}*eps*sqrt({count})*max|expected|"
            scale = f"{self.scale:.3g}"
        else:
            formula = f"{ATOL_FACTOR:g}*eps*sqrt({count})*tiny, the underflow floor"
            scale = f"{self.tiny:.3g} (max|expected| {self.scale:.3g} < tiny)"
        return (
            f"atol={self.atol:.3g} ({formula}"
            f" = {ATOL_FACTOR:g}*{self.eps:.3g}*sqrt({n})*{scale}),"
            f" rtol={self.rtol:.3g} ({RTOL_FACTOR:g}*eps), eps of {name}"
        )


def _eps(dtype: torch.dtype) -> float:
    if dtype.is_floating_point or dtype.is_complex:
        return torch.finfo(dtype).eps  # finfo of a complex dtype is that of its parts
    return 0.0  # integers and bools compare exactly


def _tiny(dtype: torch.dtype) -> float:
    """The smallest normal number of ``dtype`` (0 for integers and bools)."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.finfo(dtype).tiny
    return 0.0


def tolerance(
    dtype: torch.dtype, numel: int, scale: float = 1.0, *, terms: int | None = None
) -> Tolerance:
    """The default tolerance :func:`assert_close` uses for a block.

    Args:
        dtype: the less precise dtype of the two compared.
        numel: the number of elements of the block.
        scale: the largest magnitude among the expected values.
        terms: the number of terms summed into one entry, where the caller can bound it
            (the sizes its function contracts over: a 32x32 Jacobian of ``tanh(W @ x)``
            sums 32); it replaces ``numel`` in the count of roundings. Default: ``numel``,
            the block's size, since an arbitrary function's intermediates are unknown.

    Returns:
        A :class:`Tolerance` with ``rtol = 8 eps`` and
        ``atol = 32 eps sqrt(terms or numel) max(scale, tiny)``, tiny being the dtype's
        smallest normal number (below it the floats are spaced by ``eps * tiny``: the
        underflow floor).

    Raises:
        ValueError: ``terms`` is not a positive int.

    >>> t = tolerance(torch.float64, 16, scale=2.0)
    >>> t.atol == 32 * torch.finfo(torch.float64).eps * 4 * 2.0
    True
    >>> tolerance(torch.float32, 1, scale=4.2e-45).atol == 32 * 2.0**-149
    True
    >>> tolerance(torch.float32, 1024, terms=64).atol == 32 * torch.finfo(torch.float32).eps * 8
    True
    """
    if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int) or terms < 1):
        raise ValueError(f"derivs.testing.tolerance: terms={terms!r} must be a positive int")
    eps, tiny = _eps(dtype), _tiny(dtype)
    count = numel if terms is None else terms
    return Tolerance(
        rtol=RTOL_FACTOR * eps,
        atol=ATOL_FACTOR * eps * math.sqrt(max(count, 1)) * max(scale, tiny),
        eps=eps,
        dtype=dtype,
        numel=numel,
        scale=scale,
        tiny=tiny,
        terms=terms,
    )


# ----------------------------------------------------------------------------- structure


def _kind(node: object) -> str:
    if isinstance(node, torch.Tensor):
        return "Tensor"
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node).__name__  # a namedtuple: its fields name the paths
    if isinstance(node, tuple):
        return "tuple"
    if isinstance(node, list):
        return "list"
    if isinstance(node, dict):
        return "dict"
    return type(node).__name__


def _pairs(
    actual: Any, expected: Any, error: Any, path: str, out: list[tuple[str, Tensor, Tensor, Any]]
) -> str | None:
    """Collect matching leaves; return a description of the first structure mismatch."""
    ka, ke = _kind(actual), _kind(expected)
    if ka != ke:
        return f"actual{path} is a {ka}, expected{path} is a {ke}"
    if ka == "Tensor":
        out.append((path, actual, expected, error))
        return None
    if ka in ("tuple", "list"):
        if len(actual) != len(expected):
            return (
                f"actual{path} is a {ka} of length {len(actual)},"
                f" expected{path} has length {len(expected)}"
            )
        if error is not None and (_kind(error) != ka or len(error) != len(expected)):
            return f"error{path} does not have the structure of expected{path}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            sub = None if error is None else error[i]
            found = _pairs(a, e, sub, f"{path}[{i}]", out)
            if found:
                return found
        return None
    if hasattr(expected, "_fields"):  # a namedtuple (the same type: its kind is its name)
        for field in expected._fields:
            sub = None if error is None else getattr(error, field, None)
            found = _pairs(
                getattr(actual, field), getattr(expected, field), sub, f"{path}.{field}", out
            )
            if found:
                return found
        return None
    if ka == "dict":
        if list(actual) != list(expected):
            return (
                f"actual{path} has keys {list(actual)!r}, expected{path} has keys"
                f" {list(expected)!r}"
            )
        for k in expected:
            sub = None if error is None else error[k]
            found = _pairs(actual[k], expected[k], sub, f"{path}[{k!r}]", out)
            if found:
                return found
        return None
    if actual is None and expected is None:
        return None
    return f"actual{path} and expected{path} are {ka} (only tensors and tuples of them compare)"


# ----------------------------------------------------------------------------- values


def _where(path: str) -> str:
    return f"block{path}" if path else "tensor"


def _check_meta(path: str, actual: Tensor, expected: Tensor, error: Any) -> str | None:
    """None when shape, dtype, device (and the error's shape) agree, else why not."""
    where = _where(path)
    if actual.shape != expected.shape:
        return (
            f"shape mismatch in {where}: actual {tuple(actual.shape)},"
            f" expected {tuple(expected.shape)}"
        )
    if actual.dtype != expected.dtype:
        return f"dtype mismatch in {where}: actual {actual.dtype}, expected {expected.dtype}"
    if actual.device != expected.device:
        return f"device mismatch in {where}: actual {actual.device}, expected {expected.device}"
    if error is not None:
        if not isinstance(error, torch.Tensor):
            return f"error{path} is a {type(error).__name__}, expected a Tensor"
        try:
            error.broadcast_to(expected.shape)
        except RuntimeError:
            return (
                f"error{path} has shape {tuple(error.shape)}, which does not broadcast to"
                f" {tuple(expected.shape)}"
            )
    return None


def _check_values(
    path: str,
    actual: Tensor,
    expected: Tensor,
    error: Tensor | None,
    rtol: float | None,
    atol: float | None,
) -> tuple[str, float] | None:
    """None when the block's values agree, else a multi-line description of the failure and
    how far out of tolerance its worst element is (``|diff| / tolerance``, inf if not finite)."""
    where = _where(path)
    if actual.device.type == "meta" or expected.numel() == 0:
        return None

    wide = torch.complex128 if (actual.is_complex() or expected.is_complex()) else torch.float64
    a = actual.detach().to("cpu", wide)
    e = expected.detach().to("cpu", wide)
    finite = torch.isfinite(e)
    scale = float(e.abs()[finite].max()) if bool(finite.any()) else 0.0
    lower = actual.dtype if _eps(actual.dtype) >= _eps(expected.dtype) else expected.dtype
    tol_info = tolerance(lower, expected.numel(), scale)
    r = tol_info.rtol if rtol is None else rtol
    t_abs = tol_info.atol if atol is None else atol
    allowed = t_abs + r * e.abs()
    err = None
    if error is not None:
        err = error.detach().to("cpu", torch.float64).abs().broadcast_to(expected.shape)
        allowed = allowed + ERROR_SAFETY * err
    diff = (a - e).abs()
    # NaN matches NaN and an infinity matches itself; everything else must be finite and close
    same_special = (torch.isnan(a) & torch.isnan(e)) | (torch.isinf(e) & (a == e))
    ok = same_special | (finite & (diff <= allowed))
    if bool(ok.all()):
        return None

    bad = ~ok
    nbad = int(bad.sum())
    # worst element: the largest |diff| / tolerance ratio; non-finite mismatches first
    ratio = torch.where(
        finite & torch.isfinite(a),
        diff / allowed.clamp_min(1e-300),
        torch.full_like(diff, math.inf),
    )
    ratio = torch.where(bad, ratio, torch.full_like(ratio, -1.0))
    worst = int(torch.argmax(ratio.reshape(-1)))
    shape = expected.shape
    safe = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
    max_abs = float(diff.max()) if bool(torch.isfinite(diff).all()) else math.inf
    rel = safe / e.abs().where(e != 0, torch.full_like(safe, math.nan))
    rel = torch.where(torch.isnan(rel), torch.zeros_like(rel), rel)
    rel_at = int(torch.argmax(rel.reshape(-1)))
    abs_at = int(torch.argmax(safe.reshape(-1)))
    av = a.reshape(-1)[worst].item()
    ev = e.reshape(-1)[worst].item()
    tol_there = float(allowed.reshape(-1)[worst])
    # NOTE: a block of a pytree names its worst element by the leaf's path: ['0.weight'][2, 1].
    index = _validate.fmt_index(worst, shape)
    at = f"index {index}" if not path else path + (f"[{index[1:-1].rstrip(',')}]" if shape else "")
    how = (
        (f"atol={t_abs:.3g} (given)" if atol is not None else "")
        + (", " if atol is not None and rtol is not None else "")
        + (f"rtol={r:.3g} (given)" if rtol is not None else "")
    )
    if rtol is None or atol is None:
        how = (how + "; default " if how else "") + tol_info.describe()
    if err is not None:
        how += f"; oracle error estimate here {float(err.reshape(-1)[worst]):.3g}"
    name = str(actual.dtype).removeprefix("torch.")
    lines = [
        f"values differ in {where} (shape {tuple(shape)}, {name}, {actual.device}):"
        f" {nbad} of {expected.numel()} elements out of tolerance",
        f"  worst at {at}: actual {_num(av)}, expected {_num(ev)},"
        f" |diff| {float(diff.reshape(-1)[worst]):.3g} > tolerance {tol_there:.3g}",
        f"  max abs error {max_abs:.3g} at {_validate.fmt_index(abs_at, shape)};"
        f" max rel error {float(rel.reshape(-1)[rel_at]):.3g} at {_validate.fmt_index(rel_at, shape)}",
        "  tolerance: |actual - expected| <= atol + rtol*|expected|"
        + (f" + {ERROR_SAFETY:g}*error" if error is not None else "")
        + f"; {how}",
    ]
    return "\n".join(lines), float(ratio.reshape(-1)[worst])


def _num(v: complex | float | int | bool) -> str:
    if isinstance(v, complex):
        return f"{v.real:.10g}{v.imag:+.10g}j"
    return f"{v:.10g}"


def assert_close(
    actual: Any,
    expected: Any,
    *,
    error: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    context: str = "",
) -> None:
    """Assert that ``actual`` matches ``expected`` within a derived tolerance.

    Checks, in order: the structure (tensors and pytrees of them: nested tuples, lists,
    namedtuples and dicts; a mismatch is named by its path), then
    each block's shape, dtype and device, then its values, compared in float64 (complex128
    for complex blocks). An element passes when

        ``|actual - expected| <= atol + rtol * |expected| + 2 * error``

    with defaults ``rtol = 8 eps`` and ``atol = 32 eps sqrt(numel) max(max|expected|, tiny)``
    (eps and tiny, the smallest normal number, of the less precise dtype, numel of the block;
    see :func:`tolerance`). ``error`` is an
    oracle's elementwise error estimate (``derivs.oracles.fd_jacobian(...).error``), with
    the structure of ``expected``. NaN matches only NaN and an infinity only itself.

    Args:
        actual: the result under test.
        expected: the reference (an oracle's value or a closed form).
        error: the reference's elementwise absolute error estimate, or None.
        rtol: replaces the default relative tolerance.
        atol: replaces the default absolute tolerance.
        context: the call that produced ``actual``, e.g.
            ``"jacobian(method='fwd', argnums=(0, 1))"``; it starts the failure message.

    Raises:
        AssertionError: on the first structure, shape, dtype or device mismatch, or when
            values differ; the message names the block of the worst element first, by its
            path in the pytree (``['0.weight']``, ``[1][0]``, ``.first``), the worst element by
            its leaf path and index (``['0.weight'][2, 1]``), both values there, max abs and
            rel error, the tolerance with its derivation, and the other failing blocks.

    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> assert_close((x, x * 2), (x.clone(), x * 2))
    >>> assert_close(x * (1 + 1e-6), x, context="scaled")
    Traceback (most recent call last):
    ...
    AssertionError: [scaled] values differ in tensor (shape (2,), float64, cpu): 2 of 2 elements out of tolerance
    ...
    """
    prefix = f"[{context}] " if context else ""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
        ):
            raise ValueError(
                f"derivs.testing.assert_close: {name}={value!r} must be a non-negative number"
            )
    leaves: list[tuple[str, Tensor, Tensor, Any]] = []
    mismatch = _pairs(actual, expected, error, "", leaves)
    if mismatch:
        raise AssertionError(f"{prefix}structure mismatch: {mismatch}")
    for path, a, e, err in leaves:
        meta = _check_meta(path, a, e, err)
        if meta:
            raise AssertionError(prefix + meta)
    failures = []
    for path, a, e, err in leaves:
        found = _check_values(path, a, e, err, rtol, atol)
        if found:
            failures.append((path, *found))
    if not failures:
        return
    # NOTE: the block of the worst element first (the first such block on ties).
    failures.sort(key=lambda f: -f[2])
    path, message, _ = failures[0]
    others = [p or "tensor" for p, _, _ in failures[1:]]
    if others:
        message += f"\n  (also failing: {', '.join(others)})"
    raise AssertionError(prefix + message)
