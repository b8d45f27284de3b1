"""A catalogue of planted adapter bugs: a correct adapter with one classic bug, chosen by name.

The conformance suite's worth for a user is whether one run of the README's command catches
a wrong implementation. Each entry of ``CATALOGUE`` wraps a correct adapter (torch.func's, the
README's example) and plants one bug of the kind hand-written derivative code gets wrong;
each bug keeps every shape right, so only values show it, and only on draws that make it
visible (equal shapes, a remainder after chunking, a batch as large as an output axis, a
non-symmetric coupling). Run one::

    pytest -n auto --impl examples.planted_adapters:transposed_mixed_block \\
        --expected-failures derivs/conformance/expected_failures/torch.func.txt

``python -m tools.adapter_bugs`` runs every entry over random seeds and prints the kill-rate
table (docs/suite/conformance.md, "Planted adapter bugs").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from derivs.conformance import load
from derivs.conformance._common import of_selected, positions

Func = Callable[..., Any]


def _nums(argnums: Any, n_args: int) -> tuple[tuple[int, ...], bool]:
    return positions(argnums if isinstance(argnums, int) else tuple(argnums), n_args)


def _batched_shape(arg: torch.Tensor, in_dims: Any, k: int) -> tuple[int, ...]:
    """One sample's shape of argument ``k`` (its batch axis, if any, removed)."""
    dim = in_dims if not isinstance(in_dims, tuple) else in_dims[k]
    if dim is None:
        return tuple(arg.shape)
    shape = list(arg.shape)
    del shape[dim % arg.dim()]
    return tuple(shape)


# fix(block, shape_i, shape_j, mixed): the shapes of the block's arguments (one sample's, for
# the batch operators); a Jacobian block has shape_j == shape_i and mixed False
Fix = Callable[[torch.Tensor, tuple[int, ...], tuple[int, ...], bool], torch.Tensor]


def _blockwise(
    transform: Func, argnums: Any, fix: Fix, *, hessian: bool, in_dims: Any = None
) -> Func:
    """``transform`` with ``fix`` applied to each block of its result.

    ``in_dims`` (the batch operators'): the shapes given to ``fix`` are one sample's.
    """

    def fixed(*args: Any) -> Any:
        nums, single = _nums(argnums, len(args))
        shapes = [
            tuple(args[k].shape) if in_dims is None else _batched_shape(args[k], in_dims, k)
            for k in nums
        ]
        result = transform(*args)
        if not hessian:
            blocks = (result,) if single else result
            fixed_blocks = tuple(fix(b, shapes[i], shapes[i], False) for i, b in enumerate(blocks))
            return fixed_blocks[0] if single else fixed_blocks
        rows = ((result,),) if single else result
        fixed_rows = tuple(
            tuple(fix(b, shapes[i], shapes[j], i != j) for j, b in enumerate(row))
            for i, row in enumerate(rows)
        )
        return fixed_rows[0][0] if single else fixed_rows

    return fixed


class PlantedAdapter:
    """A correct adapter, forwarded unchanged; each bug overrides the operator it breaks."""

    bug = "none"
    description = "no bug: the base adapter unchanged"

    def __init__(self, base: str = "torch.func") -> None:
        self.base = load(base)
        self.name = f"{self.base.name}+{self.bug}"
        self.version = self.base.version
        self.features = self.base.features

    def jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self.base.jacobian(func, argnums, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self.base.hessian(func, argnums, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def batch_jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self.base.batch_jacobian(func, argnums, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def batch_hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self.base.batch_hessian(func, argnums, **kwargs)  # type: ignore[attr-defined,no-any-return]

    def hvp(self, func: Func, primals: Any, tangents: Any, **kwargs: Any) -> Any:
        return self.base.hvp(func, primals, tangents, **kwargs)  # type: ignore[attr-defined]

    def vhp(self, func: Func, primals: Any, cotangents: Any, **kwargs: Any) -> Any:
        return self.base.vhp(func, primals, cotangents, **kwargs)  # type: ignore[attr-defined]


class TransposedMixedBlock(PlantedAdapter):
    bug = "transposed_mixed_block"
    description = (
        "hessian: a mixed block H[i][j] of two equally shaped arguments returned with its two "
        "input axis groups swapped (right only where the block is symmetric)"
    )

    def hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return _blockwise(
            super().hessian(func, argnums, **kwargs), argnums, _swap_groups, hessian=True
        )


def _swap_groups(
    block: torch.Tensor, shape_i: tuple[int, ...], shape_j: tuple[int, ...], mixed: bool
) -> torch.Tensor:
    """A mixed block of two equally shaped arguments with its two input axis groups swapped."""
    if not mixed or shape_i != shape_j or not shape_i:
        return block
    d, lead = len(shape_i), block.dim() - 2 * len(shape_i)
    first, second = range(lead, lead + d), range(lead + d, lead + 2 * d)
    return block.permute(*range(lead), *second, *first)  # BUG


def _wrong_wrap(argnums: Any, n_args: int) -> Any:
    """A negative argnum wrapped off by one: -1 names the last-but-one argument."""

    def wrap(a: int) -> int:
        return a + n_args - 1 if a < 0 else a  # BUG: a + n_args

    return wrap(argnums) if isinstance(argnums, int) else tuple(wrap(a) for a in argnums)


class NegativeArgnums(PlantedAdapter):
    bug = "negative_argnums"
    description = (
        "every transform: a negative argnum wrapped as a + n - 1 instead of a + n "
        "(right for one argument only)"
    )

    def _deferred(self, operator: Callable[..., Func], func: Func, argnums: Any, **kw: Any) -> Func:
        def transformed(*args: Any) -> Any:
            return operator(func, _wrong_wrap(argnums, len(args)), **kw)(*args)

        return transformed

    def jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._deferred(super().jacobian, func, argnums, **kwargs)

    def hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._deferred(super().hessian, func, argnums, **kwargs)

    def batch_jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._deferred(super().batch_jacobian, func, argnums, **kwargs)

    def batch_hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._deferred(super().batch_hessian, func, argnums, **kwargs)


def _zero_tail(block: torch.Tensor, rows: int, chunk: int) -> torch.Tensor:
    """``block`` with the last ``rows % chunk`` of its ``rows`` leading rows zeroed."""
    rest = rows % chunk
    if not rest or not block.numel():
        return block
    flat = block.reshape(rows, -1).clone()
    flat[rows - rest :] = 0  # BUG: the partial chunk never written
    return flat.reshape(block.shape)


class DroppedLastChunk(PlantedAdapter):
    bug = "dropped_last_chunk"
    description = (
        "jacobian and batch_jacobian with chunk_size: the last, partial chunk of rows "
        "(output elements; samples) left at zero (right when chunk_size divides the work)"
    )

    def jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        chunk = kwargs.get("chunk_size")
        inner = super().jacobian(func, argnums, **kwargs)
        if not chunk or kwargs.get("has_aux"):
            return inner

        def fix(b: torch.Tensor, shape: tuple[int, ...], _: Any, __: bool) -> torch.Tensor:
            return _zero_tail(b, math.prod(b.shape[: b.dim() - len(shape)]), chunk)

        return _blockwise(inner, argnums, fix, hessian=False)

    def batch_jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        chunk = kwargs.get("chunk_size")
        inner = super().batch_jacobian(func, argnums, **kwargs)
        if not chunk:
            return inner
        return _blockwise(
            inner, argnums, lambda b, *_: _zero_tail(b, b.shape[0], chunk), hessian=False
        )


def _swap_batch(block: torch.Tensor, in_ndim: int) -> torch.Tensor:
    """The batch axis swapped with the first output axis, where both have the same size."""
    out_ndim = block.dim() - 1 - in_ndim
    if out_ndim >= 1 and block.shape[0] == block.shape[1]:
        return block.transpose(0, 1)  # BUG: a movedim forgotten
    return block


class BatchAxisSwapped(PlantedAdapter):
    bug = "batch_axis_swapped"
    description = (
        "batch_jacobian and batch_hessian: the batch axis swapped with the first output axis "
        "when both have the same size (the shape stays right)"
    )

    def batch_jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return _blockwise(
            super().batch_jacobian(func, argnums, **kwargs),
            argnums,
            lambda b, shape, _, __: _swap_batch(b, len(shape)),
            hessian=False,
            in_dims=kwargs.get("in_dims", 0),
        )

    def batch_hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return _blockwise(
            super().batch_hessian(func, argnums, **kwargs),
            argnums,
            lambda b, si, sj, _: _swap_batch(b, len(si) + len(sj)),
            hessian=True,
            in_dims=kwargs.get("in_dims", 0),
        )


def _summed(block: torch.Tensor, lead: int, out_ndim: int) -> torch.Tensor:
    """Every output's Hessian replaced by the Hessian of the outputs' sum."""
    if out_ndim == 0:
        return block
    axes = tuple(range(lead, lead + out_ndim))
    return block.sum(axes, keepdim=True).expand(block.shape).clone()  # BUG


class HessianSummedOverOutputs(PlantedAdapter):
    bug = "hessian_summed_over_outputs"
    description = (
        "hessian and batch_hessian of a vector-valued function: each output's Hessian is the "
        "Hessian of the outputs' sum (right for scalar functions)"
    )

    def hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return _blockwise(
            super().hessian(func, argnums, **kwargs),
            argnums,
            lambda b, si, sj, _: _summed(b, 0, b.dim() - len(si) - len(sj)),
            hessian=True,
        )

    def batch_hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return _blockwise(
            super().batch_hessian(func, argnums, **kwargs),
            argnums,
            lambda b, si, sj, _: _summed(b, 1, b.dim() - 1 - len(si) - len(sj)),
            hessian=True,
            in_dims=kwargs.get("in_dims", 0),
        )


class HvpIgnoresMixed(PlantedAdapter):
    bug = "hvp_ignores_mixed"
    description = (
        "hvp and vhp: each argument's product from its own diagonal block only, H[i][i] v[i], "
        "the mixed blocks H[i][j] v[j] dropped (right for one argument)"
    )

    def _diagonal(self, product: Func, func: Func, primals: Any, vectors: Any, **kw: Any) -> Any:
        nums = range(len(primals))
        return tuple(
            product(of_selected(func, primals, (k,)), (primals[k],), (vectors[k],), **kw)[0]
            for k in nums
        )

    def hvp(self, func: Func, primals: Any, tangents: Any, **kwargs: Any) -> Any:
        return self._diagonal(super().hvp, func, primals, tangents, **kwargs)

    def vhp(self, func: Func, primals: Any, cotangents: Any, **kwargs: Any) -> Any:
        return self._diagonal(super().vhp, func, primals, cotangents, **kwargs)


def _through_float32(tree: Any) -> Any:
    """Every floating tensor rounded to float32 and back: the dtype kept, the precision lost."""
    if isinstance(tree, torch.Tensor):
        if tree.dtype == torch.float64:
            return tree.to(torch.float32).to(tree.dtype)  # BUG
        return tree
    if isinstance(tree, tuple):
        return tuple(_through_float32(t) for t in tree)
    return tree


class DowncastFloat32(PlantedAdapter):
    bug = "downcast_float32"
    description = (
        "every operator: a float64 result computed through float32 (its dtype still float64; "
        "right in float32)"
    )

    def _rounded(self, transform: Func) -> Func:
        return lambda *args: _through_float32(transform(*args))

    def jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._rounded(super().jacobian(func, argnums, **kwargs))

    def hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._rounded(super().hessian(func, argnums, **kwargs))

    def batch_jacobian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._rounded(super().batch_jacobian(func, argnums, **kwargs))

    def batch_hessian(self, func: Func, argnums: Any = 0, **kwargs: Any) -> Func:
        return self._rounded(super().batch_hessian(func, argnums, **kwargs))

    def hvp(self, func: Func, primals: Any, tangents: Any, **kwargs: Any) -> Any:
        return _through_float32(super().hvp(func, primals, tangents, **kwargs))

    def vhp(self, func: Func, primals: Any, cotangents: Any, **kwargs: Any) -> Any:
        return _through_float32(super().vhp(func, primals, cotangents, **kwargs))


BUGS: tuple[type[PlantedAdapter], ...] = (
    TransposedMixedBlock,
    NegativeArgnums,
    DroppedLastChunk,
    BatchAxisSwapped,
    HessianSummedOverOutputs,
    HvpIgnoresMixed,
    DowncastFloat32,
)
#: bug name -> what is wrong
CATALOGUE = {cls.bug: cls.description for cls in BUGS}

# one adapter per bug, by its name (--impl examples.planted_adapters:<bug>), and the base
# adapter unchanged (--impl examples.planted_adapters:none), each over torch.func
none = PlantedAdapter()
transposed_mixed_block = TransposedMixedBlock()
negative_argnums = NegativeArgnums()
dropped_last_chunk = DroppedLastChunk()
batch_axis_swapped = BatchAxisSwapped()
hessian_summed_over_outputs = HessianSummedOverOutputs()
hvp_ignores_mixed = HvpIgnoresMixed()
downcast_float32 = DowncastFloat32()
