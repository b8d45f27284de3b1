"""Naive loops, exact up to rounding: one ``torch.autograd.grad`` per output element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from derivs.oracles._common import (
    Tensor,
    check_out_leaf,
    flatten,
    leaf_path,
    prepare,
    unflatten,
)
from derivs.oracles._trees import Leaves


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
        leaves, spec = flatten(func(*call))
        per_leaf = []
        for index, raw in enumerate(leaves):
            leaf = check_out_leaf(api, raw, leaf_path(spec, index))
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
    return unflatten(spec, per_leaf)


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
    tree = Leaves(api, func, args, argnums)
    targs, nums, _ = prepare(api, tree.func, tree.args, tree.nums)
    return tree.jacobian(_loop_jacobian(api, tree.func, targs, nums, tree.flat_single))


def _loop_hessian(
    api: str, func: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...], single: bool
) -> Any:
    """``func``'s output structure with each leaf replaced by its Hessian blocks."""
    with torch.enable_grad():
        call, xs = _grad_copies(args, nums)
        leaves, spec = flatten(func(*call))
        per_leaf = [
            _leaf_hessian(check_out_leaf(api, raw, leaf_path(spec, index)), xs, single)
            for index, raw in enumerate(leaves)
        ]
    return unflatten(spec, per_leaf)


def _leaf_hessian(out: Tensor, xs: list[Tensor], single: bool) -> Any:
    """The Hessian blocks of the output leaf ``out`` in ``xs`` (under ``enable_grad``)."""
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
                    second = torch.autograd.grad(gflat[m], xs, retain_graph=True, allow_unused=True)
                    for j, s in enumerate(second):
                        if s is not None:
                            rows[i][j][k, m] = s
    blocks = tuple(
        tuple(rows[i][j].reshape((*out.shape, *xs[i].shape, *xs[j].shape)) for j in range(len(xs)))
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
            ``func`` gives one Hessian per output element) or a tuple/list/dict of tensors.
        args: the positional arguments, a tuple.
        argnums: index or tuple of indices of the arguments to differentiate.

    Returns:
        For int ``argnums``, a tensor of shape ``(*out_shape, *in_shape, *in_shape)``; for a
        tuple, nested tuples ``H[i][j] = d/dx_j (d out / d x_i)`` of shape
        ``(*out_shape, *in_i, *in_j)``, with the dtype and device of ``x_j``. A pytree
        output gives its structure with each leaf replaced by that leaf's Hessian.

    Raises:
        TypeError, ValueError: bad ``func``, ``args`` or ``argnums``, or a non-float input.

    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> loop_hessian(lambda x: (x**3).sum(), (x,))
    tensor([[ 6.,  0.],
            [ 0., 12.]], dtype=torch.float64)
    """
    api = "derivs.oracles.loop_hessian"
    tree = Leaves(api, func, args, argnums)
    targs, nums, _ = prepare(api, tree.func, tree.args, tree.nums)
    return tree.hessian(_loop_hessian(api, tree.func, targs, nums, tree.flat_single))


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
        leaves, spec = flatten(per_sample(sample(None)))
        return unflatten(spec, [leaf.unsqueeze(0)[:0] for leaf in leaves])
    results = [flatten(per_sample(sample(b))) for b in range(size)]
    spec = results[0][1]
    stacked = [
        torch.stack(column) for column in zip(*(leaves for leaves, _ in results), strict=True)
    ]
    return unflatten(spec, stacked)


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
    tree = Leaves(api, func, args, argnums, in_dims)
    targs, nums, _ = prepare(api, tree.func, tree.args, tree.nums)

    def per_sample(s: tuple[Any, ...]) -> Any:
        return tree.jacobian(_loop_jacobian(api, tree.func, s, nums, tree.flat_single))

    return _loop_batch(api, per_sample, targs, tree.in_dims)


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
    tree = Leaves(api, func, args, argnums, in_dims)
    targs, nums, _ = prepare(api, tree.func, tree.args, tree.nums)

    def per_sample(s: tuple[Any, ...]) -> Any:
        return tree.hessian(_loop_hessian(api, tree.func, s, nums, tree.flat_single))

    return _loop_batch(api, per_sample, targs, tree.in_dims)
