"""Hessian-vector (``hvp``) and vector-Hessian (``vhp``) products, without forming the Hessian."""

from __future__ import annotations

from collections.abc import Callable

import torch

from derivs import _validate
from derivs.hessian import checked_for_hessian, hessian_blocks

HVP_METHODS = {
    "fwd_rev": "jvp of grad: forward over reverse; the least memory (no second backward graph)",
    "rev_rev": "vjp of grad: reverse over reverse; works where forward-mode AD is missing",
    "dense": "materialise the Hessian and multiply; only for small inputs (a reference)",
}
VHP_METHODS = {
    "rev_rev": "vjp of grad: reverse over reverse",
    "dense": "materialise the Hessian and multiply; only for small inputs (a reference)",
}


def _prepare(
    api: str,
    func: object,
    primals: object,
    vectors: object,
    name: str,
    method: object,
    methods: dict[str, str],
) -> tuple[
    _validate.CheckedFunc, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[int, ...]
]:
    _validate.check_callable(api, func)
    _validate.check_method(api, method, methods)
    ps, vs = _validate.check_primals_tangents(api, primals, vectors, name)
    assert callable(func)
    if method == "dense":
        checked = checked_for_hessian(func, api, ps, scalar=True)
    else:
        checked = _validate.CheckedFunc(func, api, allow_pytree=False, scalar=True)
    return checked, ps, vs, tuple(range(len(ps)))


def hvp(
    func: Callable[..., torch.Tensor],
    primals: tuple[torch.Tensor, ...],
    tangents: tuple[torch.Tensor, ...],
    *,
    method: str = "fwd_rev",
) -> tuple[torch.Tensor, ...]:
    """Hessian-vector product ``H @ v`` of a scalar function at ``primals``.

    Args:
        func: a scalar-valued (0-d) function of ``len(primals)`` tensors.
        primals: a tuple of tensors, the point where the Hessian is taken.
        tangents: a tuple of tensors ``v``, one per primal, each of the same shape and dtype.
        method: ``"fwd_rev"`` (jvp of grad), ``"rev_rev"`` (vjp of grad) or ``"dense"``.

    Returns:
        A tuple shaped like ``primals``: entry ``i`` is ``sum_j H[i][j] @ tangents[j]``, the
        mixed blocks included, where ``H[i][j] = d^2 func / d primals[i] d primals[j]``.

    Raises:
        TypeError, ValueError: bad arguments (naming the entry), or a non-scalar ``func``.

    >>> import torch, derivs
    >>> derivs.hvp(lambda x: (x ** 3).sum(), (torch.tensor([1.0, 2.0]),), (torch.ones(2),))
    (tensor([ 6., 12.]),)
    """
    api = "derivs.hvp"
    checked, ps, ts, nums = _prepare(api, func, primals, tangents, "tangents", method, HVP_METHODS)
    if method == "fwd_rev":
        dense = tuple(_validate.without_overlap(p) for p in ps)
        out = torch.func.jvp(torch.func.grad(checked, argnums=nums), dense, ts)[1]
        return tuple(out)
    if method == "rev_rev":
        # NOTE: vjp of grad gives v^T H, which is H v because H is symmetric for functions
        # that are twice continuously differentiable.
        vjp_fn = torch.func.vjp(torch.func.grad(checked, argnums=nums), *ps)[1]
        return tuple(vjp_fn(ts))
    H = hessian_blocks(checked, ps, nums, "auto", api=api)
    return tuple(
        sum(
            (torch.tensordot(H[i][j], t, dims=t.dim()) for j, t in enumerate(ts)),
            torch.zeros_like(p),
        )
        for i, p in enumerate(ps)
    )


def vhp(
    func: Callable[..., torch.Tensor],
    primals: tuple[torch.Tensor, ...],
    cotangents: tuple[torch.Tensor, ...],
    *,
    method: str = "rev_rev",
) -> tuple[torch.Tensor, ...]:
    """Vector-Hessian product ``v @ H`` of a scalar function at ``primals``.

    Args:
        func: a scalar-valued (0-d) function of ``len(primals)`` tensors.
        primals: a tuple of tensors, the point where the Hessian is taken.
        cotangents: a tuple of tensors ``v``, one per primal, each of the same shape and dtype.
        method: ``"rev_rev"`` (vjp of grad) or ``"dense"``.

    Returns:
        A tuple shaped like ``primals``: entry ``j`` is ``sum_i cotangents[i] @ H[i][j]``.

    Raises:
        TypeError, ValueError: bad arguments (naming the entry), or a non-scalar ``func``.

    >>> import torch, derivs
    >>> derivs.vhp(lambda x: x.prod(), (torch.tensor([2.0, 3.0]),), (torch.tensor([1.0, 0.0]),))
    (tensor([0., 1.]),)
    """
    api = "derivs.vhp"
    checked, ps, vs, nums = _prepare(
        api, func, primals, cotangents, "cotangents", method, VHP_METHODS
    )
    if method == "rev_rev":
        vjp_fn = torch.func.vjp(torch.func.grad(checked, argnums=nums), *ps)[1]
        return tuple(vjp_fn(vs))
    H = hessian_blocks(checked, ps, nums, "auto", api=api)
    return tuple(
        sum(
            (torch.tensordot(v, H[i][j], dims=v.dim()) for i, v in enumerate(vs)),
            torch.zeros_like(p),
        )
        for j, p in enumerate(ps)
    )
