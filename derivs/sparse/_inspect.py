"""The pieces of the sparse transforms on their own: ``jacobian_sparsity``,
``hessian_sparsity`` (detected patterns) and ``coloring`` (of any pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from derivs import _validate
from derivs._validate import Argnums
from derivs.sparse import _coloring, _detect
from derivs.sparse._api import JACOBIAN_MODES, PATTERNS, pytree_hint
from derivs.sparse._coloring import Coloring
from derivs.sparse._pattern import SparsityPattern, given_pattern

DETECTIONS = {k: v.split(";")[0] for k, v in PATTERNS.items()}
COLORING_MODES = {"auto": JACOBIAN_MODES["auto"], **_coloring.MODES}


def _sparsity(
    api: str, func: object, argnums: object, detection: object, hessian: bool
) -> Callable[..., SparsityPattern]:
    _validate.check_callable(api, func)
    _validate.check_argnums_spec(api, argnums)
    _validate.check_choice(api, "detection", detection, DETECTIONS)
    assert callable(func) and isinstance(detection, str)

    def sparsity(*args: Any) -> SparsityPattern:
        nums = _validate.normalize_argnums(api, argnums, len(args))  # type: ignore[arg-type]
        checked = _validate.CheckedFunc(
            func, api, allow_pytree=False, scalar=hessian, pytree_hint=pytree_hint(api, hessian)
        )
        detect = _detect.hessian_pattern if hessian else _detect.jacobian_pattern
        rows, cols, shape = detect(checked, args, nums, local=detection == "local", api=api)
        in_shapes = [tuple(args[a].shape) for a in nums]
        out_shape = (in_shapes[0] if len(nums) == 1 else (shape[0],)) if hessian else None
        if out_shape is None:
            out_shape = tuple(checked(*args).shape)
        return SparsityPattern(
            rows,
            cols,
            shape,
            out_shape=out_shape,
            in_shapes=in_shapes,
            kind=detection,
            symmetric=hessian,
        )

    sparsity.__name__ = f"{api.split('.')[-1]}_of_{_validate.func_name(func)}"
    return sparsity


def jacobian_sparsity(
    func: Callable[..., torch.Tensor], argnums: Argnums = 0, *, detection: str = "global"
) -> Callable[..., SparsityPattern]:
    """Return a function giving the sparsity pattern of ``func``'s Jacobian at its arguments.

    Args:
        func: a function of tensors returning one floating-point tensor.
        argnums: the positional argument(s) differentiated (columns concatenated in order).
        detection: ``"global"`` (valid for every input value: the derivative is traced and
            every op's dependence propagated; may overestimate, never misses a nonzero) or
            ``"local"`` (valid at these arguments only).

    Returns:
        A function of ``func``'s arguments returning a :class:`SparsityPattern` of shape
        ``(out numel, in numel)``.

    Raises:
        TypeError, ValueError: bad arguments; global detection of a ``func`` that branches
            on values (use ``detection="local"``).

    >>> import torch, derivs
    >>> p = derivs.jacobian_sparsity(lambda x: x[1:] - x[:-1])(torch.zeros(4))
    >>> p.rows.tolist(), p.cols.tolist()
    ([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 3])
    """
    return _sparsity("derivs.jacobian_sparsity", func, argnums, detection, hessian=False)


def hessian_sparsity(
    func: Callable[..., torch.Tensor], argnums: Argnums = 0, *, detection: str = "global"
) -> Callable[..., SparsityPattern]:
    """Return a function giving the (symmetric) Hessian sparsity pattern of a scalar ``func``.

    The arguments are those of :func:`jacobian_sparsity`; ``func`` returns a 0-d tensor.

    Returns:
        A function of ``func``'s arguments returning a symmetric :class:`SparsityPattern`
        of shape ``(n, n)``.

    >>> import torch, derivs
    >>> p = derivs.hessian_sparsity(lambda x: (x[1:] * x[:-1]).sum())(torch.zeros(3))
    >>> p.rows.tolist(), p.cols.tolist()
    ([0, 1, 1, 2], [1, 0, 2, 1])
    """
    return _sparsity("derivs.hessian_sparsity", func, argnums, detection, hessian=True)


def coloring(
    pattern: SparsityPattern | torch.Tensor, *, mode: str = "auto", order: str = "best"
) -> Coloring:
    """Colour a sparsity pattern for compressed evaluation.

    Args:
        pattern: a :class:`SparsityPattern`, or a 2-D bool tensor or torch sparse tensor.
        mode: ``"auto"`` (column or row, fewer colours), ``"column"``, ``"row"`` or
            ``"star"`` (a symmetric pattern; see ``derivs.sparse.MODES``).
        order: ``"best"`` or one vertex order (as for :func:`sparse_jacobian`).

    Returns:
        A :class:`Coloring`: ``colors`` (one per column, or per row for ``"row"``),
        ``num_colors``, the winning ``order`` and the colours each order gave (``tried``).

    Raises:
        TypeError, ValueError: a pattern that is not 2-D, bool or sparse; an unknown mode or
            order; ``"star"`` for a pattern that is not symmetric.

    >>> import torch, derivs
    >>> tridiagonal = (torch.arange(6)[:, None] - torch.arange(6)).abs() <= 1
    >>> derivs.coloring(tridiagonal, mode="column").num_colors
    3
    """
    api = "derivs.coloring"
    _validate.check_choice(api, "mode", mode, COLORING_MODES)
    _validate.check_choice(api, "order", order, _coloring.ORDER_CHOICES)
    if not isinstance(pattern, SparsityPattern):
        if not isinstance(pattern, torch.Tensor) or pattern.dim() != 2:
            raise TypeError(
                f"{api}: pattern must be a derivs.SparsityPattern or a 2-D bool or sparse "
                f"tensor, got {_validate.describe(pattern)}"
            )
        m, n = pattern.shape
        pattern = given_pattern(api, pattern, (m,), [(n,)])
    if mode == "star":
        m, n = pattern.shape
        if m != n or not (pattern.symmetric or pattern == pattern.transpose()):
            raise ValueError(
                f"{api}: mode='star' needs a symmetric pattern (a Hessian's), got {pattern!r}; "
                f"use derivs.hessian_sparsity, or mode='column'"
            )
    return _coloring.coloring_of(pattern, mode, order)
