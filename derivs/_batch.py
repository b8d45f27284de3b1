"""Per-sample Jacobians and Hessians of a batch: by vmap, by a Python loop, or by the sum trick."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch.utils._pytree import (
    TreeSpec,
    keystr,
    tree_flatten,
    tree_flatten_with_path,
)

from derivs import _validate
from derivs._blocks import flatten, standard_basis, unflatten, with_diff
from derivs._hessian import PerLeaf, output_hessians
from derivs._jacobian import jacobian_blocks
from derivs._memory import checked_for_hessian
from derivs._pytree import Flat, batched_positions, chunked
from derivs._registry import OPERATORS

METHODS = OPERATORS["batch_jacobian"]

# NOTE: the coupling probe's tangent values come from a fixed generator so that a refusal is
# reproducible; their values are irrelevant as long as no entry is zero.
_PROBE_SEED = 20240521


def _sample(args: Sequence[Any], dims: Sequence[int | None], b: int) -> list[Any]:
    return [a if d is None else a.select(d, b) for a, d in zip(args, dims, strict=True)]


def _over_samples(
    per_sample: Callable[..., tuple[torch.Tensor, ...]],
    method: str,
    args: Sequence[Any],
    dims: tuple[int | None, ...],
    batch: int,
) -> Sequence[torch.Tensor]:
    """``per_sample``'s flat tuple of blocks for every sample, stacked: by vmap or a loop."""
    if method == "vmap":
        return cast("Sequence[torch.Tensor]", torch.func.vmap(per_sample, in_dims=dims)(*args))
    return _stack([per_sample(*_sample(args, dims, b)) for b in range(batch)])


def _per_sample_numel(
    args: Sequence[Any], dims: Sequence[int | None], nums: tuple[int, ...], batch: int
) -> int:
    return sum(args[a].numel() // (batch if dims[a] is not None else 1) for a in nums)


def _stack(per_sample: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Each sample's flat tuple of blocks, stacked block by block along a new dim 0."""
    return [torch.stack(column) for column in zip(*per_sample, strict=True)]


def _flat_jacobian(
    func: Callable[..., Any],
    nums: tuple[int, ...],
    chunk_size: int | None,
    api: str,
    specs: list[TreeSpec],
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """One sample's Jacobian blocks ``[k][i]`` (output leaf k, argnum i) as a flat tuple; the
    output's structure appended to ``specs``."""

    def per_sample(*a: Any) -> tuple[torch.Tensor, ...]:
        blocks, spec, _ = jacobian_blocks(func, a, nums, "auto", chunk_size=chunk_size, api=api)
        specs.append(spec)
        return tuple(b for row in blocks for b in row)

    return per_sample


def _flat_hessian(
    func: Callable[..., Any], nums: tuple[int, ...], api: str, specs: list[TreeSpec]
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """One sample's Hessian blocks ``[k][i][j]`` as a flat tuple; the output's structure
    appended to ``specs``."""

    def per_sample(*a: Any) -> tuple[torch.Tensor, ...]:
        per_leaf, spec = output_hessians(func, a, nums, "auto", api=api)
        specs.append(spec)
        return tuple(b for H in per_leaf for row in H for b in row)

    return per_sample


def _per_leaf_hessians(flat: Sequence[torch.Tensor], n: int) -> PerLeaf:
    """The flat ``[k][i][j]`` blocks (``n`` argnums) regrouped."""
    return chunked(chunked(flat, n), n)


def _check_independent(
    api: str,
    func: Callable[..., Any],
    args: Sequence[Any],
    nums: tuple[int, ...],
    dims: Sequence[int | None],
    batch: int,
) -> None:
    """Refuse the sum trick for a ``func`` that couples samples (one vmapped forward-mode probe).

    Two tangents, nonzero only on the first and on the last sample of every differentiated
    argument, are pushed through ``func`` applied to the whole batch; for a sample-independent
    ``func`` every other sample's output tangent is exactly zero. Cost: one ``vmap(jvp)`` of
    width two, about three evaluations of ``func``. Guarantee: any dependence of another
    sample's output on the first or last sample, at this point, is caught; a coupling that
    avoids both (and only appears elsewhere) is not.
    """
    for a in nums:
        if dims[a] is None:
            raise ValueError(
                f"{api}: method='sum' differentiates the batch-summed output, which cannot give "
                f"per-sample derivatives with respect to the unbatched args[{a}] (in_dims[{a}] is "
                f"None); use method='vmap'"
            )
    diff = [_validate.without_overlap(args[a]) for a in nums]
    probes = sorted({0, batch - 1})
    gen = torch.Generator().manual_seed(_PROBE_SEED)
    tangents = []
    for a, x in zip(nums, diff, strict=True):
        t = torch.zeros((len(probes), *x.shape), dtype=x.dtype, device=x.device)
        d = dims[a]
        assert d is not None
        for p, b in enumerate(probes):
            values = torch.rand(x.select(d, b).shape, generator=gen, dtype=torch.float64) + 0.5
            t[p].select(d, b).copy_(values)
        tangents.append(t)

    g = with_diff(func, args, nums)

    def push(*t: torch.Tensor) -> Any:
        return torch.func.jvp(g, tuple(diff), t)

    outs, tans = torch.func.vmap(push)(*tangents)
    for (path, out), tan in zip(
        tree_flatten_with_path(outs)[0], tree_flatten(tans)[0], strict=True
    ):
        _check_leaf_independent(api, out[0], tan, probes, batch, keystr(path))


def _check_leaf_independent(
    api: str, out: torch.Tensor, tan: torch.Tensor, probes: list[int], batch: int, where: str
) -> None:
    """One output leaf (at the path ``where``) of ``_check_independent``'s probe: batched
    along dim 0, each sample's tangent zero but the probed sample's."""
    if out.dim() == 0 or out.shape[0] != batch:
        at = f" at output{where}" if where else ""
        raise ValueError(
            f"{api}: method='sum' needs func to map the whole batch to outputs batched along "
            f"dim 0 (size {batch}), but func returned shape {tuple(out.shape)}{at}; use "
            f"method='vmap'"
        )
    if tan.device.type == "meta":
        return  # NOTE: meta tensors carry shapes only: there are no values to mix up.
    for p, b in enumerate(probes):
        leak = tan[p].clone()
        leak[b] = 0
        if not bool((leak == 0).all()):
            other = int(leak.reshape(batch, -1).abs().amax(1).argmax())
            raise ValueError(
                f"{api}: func couples samples: the output of sample {other} changes with the input "
                f"of sample {b}, so the sum trick would silently mix their derivatives; use "
                f"method='vmap' (or 'loop'), which differentiate each sample on its own"
            )


def _sum_jacobian_blocks(
    func: Callable[..., Any],
    args: Sequence[Any],
    nums: tuple[int, ...],
    dims: Sequence[int | None],
    chunk_size: int | None,
    method: str,
    api: str,
) -> tuple[list[list[torch.Tensor]], TreeSpec]:
    """Blocks ``[k][i]`` of d(sum_b out_b)/d x, output leaf k, argnum i, batch moved to dim 0:
    ``(B, *out_k, *in_i)``; and the output's structure."""
    captured: list[list[int]] = []

    def summed(*a: Any) -> Any:
        leaves, spec = flatten(func(*a))
        captured.append([leaf.dim() - 1 for leaf in leaves])
        return unflatten([leaf.sum(0) for leaf in leaves], spec)

    blocks, spec, _ = jacobian_blocks(summed, args, nums, method, chunk_size=chunk_size, api=api)
    # NOTE: _check_independent has already rejected unbatched (in_dims None) argnums.
    return [
        [blk.movedim(out_dims + cast(int, dims[a]), 0) for blk, a in zip(row, nums, strict=True)]
        for row, out_dims in zip(blocks, captured[0], strict=True)
    ], spec


def _prepare(
    api: str, func: object, argnums: object, method: object, chunk_size: object = None
) -> None:
    _validate.check_callable(api, func)
    _validate.check_argnums_spec(api, argnums)
    _validate.check_choice(api, "method", method, METHODS)
    _validate.check_chunk_size(api, chunk_size)


def _resolve(
    api: str, args: Sequence[Any], argnums: Any, in_dims: Any
) -> tuple[Flat, tuple[int | None, ...], int, list[torch.Tensor]]:
    """The arguments with their pytrees flattened (the differentiated ones and the batched
    ones), the batch dim of each flat argument, the batch size and the differentiated leaves."""
    nums = _validate.normalize_argnums(api, argnums, len(args))
    flat = Flat(api, args, nums, also=batched_positions(in_dims, len(args)))
    dims, batch = _validate.check_in_dims(api, flat.in_dims(api, in_dims, len(args)), flat.args)
    diff = _validate.check_diff_args(api, flat.args, flat.nums)
    if batch == 0:
        raise ValueError(
            f"{api}: the batch is empty (batch size 0); there are no samples to differentiate"
        )
    return flat, dims, batch, diff


def batch_jacobian(
    func: Callable[..., Any],
    argnums: _validate.Argnums = 0,
    *,
    in_dims: int | tuple[Any, ...] = 0,
    method: str = "vmap",
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Return a function computing the Jacobian of ``func`` for every sample of a batch.

    Args:
        func: the per-sample function, returning a tensor or a pytree of tensors (a dict,
            list, tuple or namedtuple, nested). With ``method="sum"`` it is called on the
            whole batch instead and must return the outputs batched along dim 0 (every leaf).
        argnums: which positional argument(s) to differentiate; an int or a tuple of ints.
        in_dims: as in ``torch.vmap``: the batch dim of each argument, ``None`` for an
            argument shared by all samples (e.g. ``(None, None, 0)`` for ``predict(w, b, x)``);
            for a pytree argument an int, ``None`` or a pytree of them shaped like it.
        method: ``"vmap"``, ``"loop"`` or ``"sum"`` (see ``METHODS``).
        chunk_size: basis vectors pushed through at once by each per-sample Jacobian.

    Returns:
        A function of the batched arguments giving shape ``(B, *out_shape, *in_shape)``, where
        ``out_shape`` and ``in_shape`` are per-sample; a tuple ``argnums`` gives a tuple. A
        pytree argument (a parameter dict, ...) gives its structure with a block per leaf, as
        ``torch.func.vmap(torch.func.jacrev(func))``; a pytree output puts its structure
        outside, as there.

    Raises:
        TypeError, ValueError: bad arguments; ``in_dims`` that do not match the arguments;
            different batch sizes; ``method="sum"`` with a ``func`` that couples samples or
            with an unbatched argument to differentiate.

    >>> import torch, derivs
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> derivs.batch_jacobian(lambda v: v ** 2, method="sum")(x)
    tensor([[[2., 0.],
             [0., 4.]],
    <BLANKLINE>
            [[6., 0.],
             [0., 8.]]])
    """
    api = "derivs.batch_jacobian"
    _prepare(api, func, argnums, method, chunk_size)
    single = not isinstance(argnums, tuple)

    def batch_jacobian_fn(*args: Any) -> Any:
        flat, dims, batch, diff = _resolve(api, args, argnums, in_dims)
        fargs, nums, user = flat.args, flat.nums, flat.wrap(func)
        n = _per_sample_numel(fargs, dims, nums, batch)
        if method == "sum":
            checked = _validate.CheckedFunc(
                user, api, factor=n, itemsize=_validate.itemsize_of(diff)
            )
            _check_independent(api, checked, fargs, nums, dims, batch)
            blocks, spec = _sum_jacobian_blocks(checked, fargs, nums, dims, chunk_size, "auto", api)
            return flat.jacobian(blocks, spec, single)
        checked = _validate.CheckedFunc(
            user, api, factor=batch * n, itemsize=_validate.itemsize_of(diff)
        )
        specs: list[TreeSpec] = []
        per_sample = _flat_jacobian(checked, nums, chunk_size, api, specs)
        result = _over_samples(per_sample, method, fargs, dims, batch)
        return flat.jacobian(chunked(result, len(nums)), specs[0], single)

    batch_jacobian_fn.__name__ = _validate.transform_name("batch_jacobian", func, argnums)
    return batch_jacobian_fn


def batch_hessian(
    func: Callable[..., Any],
    argnums: _validate.Argnums = 0,
    *,
    in_dims: int | tuple[Any, ...] = 0,
    method: str = "vmap",
) -> Callable[..., Any]:
    """Return a function computing the Hessian of ``func`` for every sample of a batch.

    Args:
        func: the per-sample function, returning a tensor (scalar or vector-valued) or a
            pytree of tensors. With ``method="sum"`` it is called on the whole batch and
            returns outputs along dim 0 (every leaf).
        argnums: which positional argument(s) to differentiate; an int or a tuple of ints.
        in_dims: as in ``torch.vmap`` (``None`` for arguments shared by all samples).
        method: ``"vmap"``, ``"loop"`` or ``"sum"`` (see ``METHODS``).

    Returns:
        A function of the batched arguments giving shape ``(B, *out_shape, *in_shape, *in_shape)``
        (per-sample shapes); a tuple ``argnums`` gives nested tuples ``H[i][j]``, each
        ``(B, *out, *in_i, *in_j)``. Pytrees (arguments and outputs) nest as in
        ``derivs.hessian``.

    Raises:
        TypeError, ValueError: as for ``batch_jacobian``.

    >>> import torch, derivs
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> derivs.batch_hessian(lambda v: (v ** 3).sum())(x)
    tensor([[[ 6.,  0.],
             [ 0., 12.]],
    <BLANKLINE>
            [[18.,  0.],
             [ 0., 24.]]])
    """
    api = "derivs.batch_hessian"
    _prepare(api, func, argnums, method)
    single = not isinstance(argnums, tuple)

    def batch_hessian_fn(*args: Any) -> Any:
        flat, dims, batch, diff = _resolve(api, args, argnums, in_dims)
        fargs, nums, user = flat.args, flat.nums, flat.wrap(func)
        n = _per_sample_numel(fargs, dims, nums, batch)

        if method == "sum":
            checked = checked_for_hessian(user, api, diff, n=n)
            _check_independent(api, checked, fargs, nums, dims, batch)
            per_leaf, spec = _sum_hessian_blocks(checked, fargs, nums, dims, batch, api)
            return flat.hessians(per_leaf, spec, single)
        checked = checked_for_hessian(user, api, diff, n=n, factor=batch)
        specs: list[TreeSpec] = []
        per_sample = _flat_hessian(checked, nums, api, specs)
        result = _over_samples(per_sample, method, fargs, dims, batch)
        return flat.hessians(_per_leaf_hessians(result, len(nums)), specs[0], single)

    batch_hessian_fn.__name__ = _validate.transform_name("batch_hessian", func, argnums)
    return batch_hessian_fn


def _sum_hessian_blocks(
    func: Callable[..., Any],
    args: Sequence[Any],
    nums: tuple[int, ...],
    dims: Sequence[int | None],
    batch: int,
    api: str,
) -> tuple[PerLeaf, TreeSpec]:
    """``H[k][i][j]`` of shape ``(B, *out_k, *in_i, *in_j)`` (output leaf k) by the sum trick,
    twice; and the output's structure.

    The per-sample gradients come from reverse mode on the batch-summed output. Their
    derivative is taken in forward mode with each per-sample unit tangent replicated across
    the batch: since samples are independent, sample ``b``'s output tangent is its own
    Hessian column. That is one tangent per per-sample input element (not per batch
    element), pushed through the whole batch at once.
    """
    diff = [_validate.without_overlap(args[a]) for a in nums]
    specs: list[TreeSpec] = []

    def gradients(*d: torch.Tensor) -> tuple[torch.Tensor, ...]:
        full = with_diff(lambda *a: a, args, nums)(*d)
        blocks, spec = _sum_jacobian_blocks(func, full, nums, dims, None, "rev", api)
        specs.append(spec)
        return tuple(b for row in blocks for b in row)  # each (B, *out_k, *in_i)

    per_sample = [x.select(cast(int, dims[a]), 0) for a, x in zip(nums, diff, strict=True)]
    rows = sum(p.numel() for p in per_sample)
    _validate.check_size(
        api,
        "the basis of unit vectors",
        rows * rows,
        _validate.itemsize_of(diff),
        "use derivs.hvp/derivs.vhp per sample instead",
    )
    basis = standard_basis(0, rows, per_sample)  # one (rows, *in_j) block per argnum
    batch_dims = [cast(int, dims[a]) for a in nums]  # the sum trick checked they are batched
    tangents = [
        b.unsqueeze(1 + d).expand(rows, *x.shape)
        for b, x, d in zip(basis, diff, batch_dims, strict=True)
    ]

    def push(*t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.func.jvp(gradients, tuple(diff), t)[1])

    columns = torch.func.vmap(push)(*tangents)  # per (k, i): (rows, B, *out_k, *in_i)
    sizes = [p.numel() for p in per_sample]
    H: list[list[torch.Tensor]] = []  # H[k * n + i][j]
    for col in columns:
        H.append(
            [
                c.movedim(0, -1).reshape((*c.shape[1:], *p.shape))
                # NOTE: Tensor.split is unannotated in torch/_tensor.py.
                for c, p in zip(col.split(sizes), per_sample, strict=True)  # type: ignore[no-untyped-call]
            ]
        )
    return chunked(H, len(nums)), specs[0]
