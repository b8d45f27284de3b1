"""Hessian-vector (``hvp``) and vector-Hessian (``vhp``) products, without forming the Hessian."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import TreeSpec, tree_unflatten

from derivs import _eager, _validate
from derivs._hessian import output_hessians
from derivs._memory import checked_for_hessian
from derivs._pytree import flatten_primals, on_leaves, paths
from derivs._registry import OPERATORS

HVP_METHODS = OPERATORS["hvp"]
VHP_METHODS = OPERATORS["vhp"]

# What hvp and vhp say when func returns a pytree (after naming its leaves).
PYTREE_HINT = (
    "Hessian-vector products need one scalar output, as torch.func's hvp does: reduce the "
    "outputs to a scalar, or use derivs.hessian, which takes pytree outputs"
)

Vectors = tuple[torch.Tensor, ...]


def _prepare(
    api: str,
    func: object,
    primals: object,
    vectors: object,
    name: str,
    method: object,
    methods: dict[str, str],
) -> tuple[_validate.CheckedFunc, Vectors, Vectors, tuple[int, ...], TreeSpec | None]:
    """The checked ``func`` of the primals' leaves, the leaves of primals and vectors, the
    argnums of the leaves and the primals' structure (``None`` for a tuple of tensors)."""
    _validate.check_callable(api, func)
    _validate.check_choice(api, "method", method, methods)
    primals, vectors, spec = flatten_primals(api, primals, vectors, name)
    labels = None if spec is None else paths(spec)
    ps, vs = _validate.check_primals_tangents(api, primals, vectors, name, labels)
    assert callable(func)
    if spec is not None:
        func = on_leaves(func, spec)
    if method == "dense":
        checked = checked_for_hessian(func, api, ps, scalar=True, pytree_hint=PYTREE_HINT)
    else:
        checked = _validate.CheckedFunc(
            func, api, allow_pytree=False, scalar=True, pytree_hint=PYTREE_HINT
        )
    return checked, ps, vs, tuple(range(len(ps))), spec


def _nested(result: Vectors, spec: TreeSpec | None) -> Any:
    """A product shaped like primals: the leaves' products nested like them."""
    return result if spec is None else tree_unflatten(list(result), spec)


def _rev_rev(
    checked: _validate.CheckedFunc, ps: Vectors, vs: Vectors, nums: tuple[int, ...]
) -> Vectors:
    """``v^T H`` by torch.func: the vjp of the gradient."""
    vjp_fn = torch.func.vjp(torch.func.grad(checked, argnums=nums), *ps)[1]
    return tuple(vjp_fn(vs))


def _eager_rev_rev(func: Callable[..., torch.Tensor], ps: Vectors, vs: Vectors) -> Vectors:
    """``v^T H`` by torch.autograd: the vector-Jacobian product of the gradient with ``v``.

    Against torch.func's vjp of grad this skips the transforms' fixed cost, and the gradient
    itself is freed before the second backward pass, which starts from the gradient's place
    in the graph (a ``GradientEdge``) rather than from the tensor: one gradient's worth of
    memory less at the peak. Raises ``UseTorchFunc`` where autograd refuses.
    """
    outer_grad = torch.is_grad_enabled()
    xs = [p.detach().requires_grad_() for p in ps]
    with torch.enable_grad():
        out = func(*xs)
        _, other, _ = _eager.walk([out], xs)
        # NOTE: a tensor func closes over that requires grad (a module's parameters) wants a
        # product the caller can differentiate further, which only torch.func's result gives.
        if outer_grad and other:
            raise _eager.UseTorchFunc
        grads = _grad([out], xs, None, create_graph=True)
        del out
        live = [
            (get_gradient_edge(g), v)
            for g, v in zip(grads, vs, strict=True)
            if g is not None and g.requires_grad
        ]
        del grads
    if not live:  # the gradient does not depend on the inputs: H = 0
        return tuple(torch.zeros_like(p) for p in ps)
    res = _grad([e for e, _ in live], xs, [v for _, v in live], create_graph=False)
    return tuple(torch.zeros_like(p) if r is None else r for r, p in zip(res, ps, strict=True))


def _grad(
    outputs: Sequence[Any],
    xs: Sequence[torch.Tensor],
    cotangents: Sequence[torch.Tensor] | None,
    *,
    create_graph: bool,
) -> Sequence[torch.Tensor | None]:
    if isinstance(outputs[0], torch.Tensor) and not outputs[0].requires_grad:
        return [None] * len(xs)
    try:
        return torch.autograd.grad(
            outputs, xs, cotangents, create_graph=create_graph, allow_unused=True
        )
    except (RuntimeError, NotImplementedError) as e:  # e.g. a backward marked once_differentiable
        raise _eager.UseTorchFunc from e


def _auto(
    checked: _validate.CheckedFunc, ps: Vectors, vs: Vectors, nums: tuple[int, ...]
) -> Vectors:
    if _eager.allowed(ps + vs):
        try:
            return _eager_rev_rev(checked, ps, vs)
        except _eager.UseTorchFunc:
            pass
    return _rev_rev(checked, ps, vs, nums)


def hvp(
    func: Callable[..., torch.Tensor],
    primals: tuple[Any, ...],
    tangents: tuple[Any, ...],
    *,
    method: str = "auto",
) -> Any:
    """Hessian-vector product ``H @ v`` of a scalar function at ``primals``.

    Args:
        func: a scalar-valued (0-d) function of ``len(primals)`` arguments.
        primals: a tuple of tensors, the point where the Hessian is taken; an entry may be a
            pytree of tensors (a dict, list, tuple or namedtuple, nested), as in torch.func.
        tangents: a tuple of tensors ``v`` structured like ``primals``, each leaf of the same
            shape and dtype as the primal's.
        method: ``"auto"`` (reverse over reverse, the fastest measured: see
            ``docs/performance.md``; in plain eager code by torch.autograd, else torch.func),
            ``"fwd_rev"`` (jvp of grad), ``"rev_rev"`` (vjp of grad) or ``"dense"``.

    Returns:
        A tuple shaped like ``primals`` (pytrees included): entry ``i`` is
        ``sum_j H[i][j] @ tangents[j]``, the mixed blocks included, where
        ``H[i][j] = d^2 func / d primals[i] d primals[j]`` (over the leaves of pytrees).

    Raises:
        TypeError, ValueError: bad arguments (naming the entry or the leaf's path), tangents
            structured unlike primals (naming the first difference), or a non-scalar ``func``.

    >>> import torch, derivs
    >>> derivs.hvp(lambda x: (x ** 3).sum(), (torch.tensor([1.0, 2.0]),), (torch.ones(2),))
    (tensor([ 6., 12.]),)
    """
    api = "derivs.hvp"
    checked, ps, ts, nums, spec = _prepare(
        api, func, primals, tangents, "tangents", method, HVP_METHODS
    )
    return _nested(_hvp(api, checked, ps, ts, nums, method), spec)


def _hvp(
    api: str,
    checked: _validate.CheckedFunc,
    ps: Vectors,
    ts: Vectors,
    nums: tuple[int, ...],
    method: str,
) -> Vectors:
    # NOTE: auto, rev_rev: the reverse-over-reverse product is v^T H, which is H v because H
    # is symmetric for functions that are twice continuously differentiable.
    if method == "auto":
        return _auto(checked, ps, ts, nums)
    if method == "fwd_rev":
        dense = tuple(_validate.without_overlap(p) for p in ps)
        out = torch.func.jvp(torch.func.grad(checked, argnums=nums), dense, ts)[1]
        return tuple(out)
    if method == "rev_rev":
        return _rev_rev(checked, ps, ts, nums)
    H = output_hessians(checked, ps, nums, "auto", api=api)[0][0]
    return tuple(
        sum(
            (torch.tensordot(H[i][j], t, dims=t.dim()) for j, t in enumerate(ts)),
            torch.zeros_like(p),
        )
        for i, p in enumerate(ps)
    )


def vhp(
    func: Callable[..., torch.Tensor],
    primals: tuple[Any, ...],
    cotangents: tuple[Any, ...],
    *,
    method: str = "auto",
) -> Any:
    """Vector-Hessian product ``v @ H`` of a scalar function at ``primals``.

    Args:
        func: a scalar-valued (0-d) function of ``len(primals)`` arguments.
        primals: a tuple of tensors, the point where the Hessian is taken; an entry may be a
            pytree of tensors, as in ``hvp``.
        cotangents: a tuple of tensors ``v`` structured like ``primals``.
        method: ``"auto"`` (reverse over reverse; in plain eager code by torch.autograd, else
            torch.func), ``"rev_rev"`` (vjp of grad) or ``"dense"``.

    Returns:
        A tuple shaped like ``primals`` (pytrees included): entry ``j`` is
        ``sum_i cotangents[i] @ H[i][j]``.

    Raises:
        TypeError, ValueError: as for ``hvp``.

    >>> import torch, derivs
    >>> derivs.vhp(lambda x: x.prod(), (torch.tensor([2.0, 3.0]),), (torch.tensor([1.0, 0.0]),))
    (tensor([0., 1.]),)
    """
    api = "derivs.vhp"
    checked, ps, vs, nums, spec = _prepare(
        api, func, primals, cotangents, "cotangents", method, VHP_METHODS
    )
    return _nested(_vhp(api, checked, ps, vs, nums, method), spec)


def _vhp(
    api: str,
    checked: _validate.CheckedFunc,
    ps: Vectors,
    vs: Vectors,
    nums: tuple[int, ...],
    method: str,
) -> Vectors:
    if method == "auto":
        return _auto(checked, ps, vs, nums)
    if method == "rev_rev":
        return _rev_rev(checked, ps, vs, nums)
    H = output_hessians(checked, ps, nums, "auto", api=api)[0][0]
    return tuple(
        sum(
            (torch.tensordot(v, H[i][j], dims=v.dim()) for i, v in enumerate(vs)),
            torch.zeros_like(p),
        )
        for j, p in enumerate(ps)
    )
