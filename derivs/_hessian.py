"""Full Hessians: the Jacobian of the Jacobian, by any pairing of forward and reverse mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._pytree import TreeSpec, tree_flatten

from derivs import _memory, _validate, oracles
from derivs._jacobian import jacobian_blocks
from derivs._pytree import Flat, chunked
from derivs._registry import OPERATORS
from derivs._validate import Argnums

API = "derivs.hessian"

METHODS = OPERATORS["hessian"]

# method -> (outer, inner) jacobian methods; the outer one differentiates the inner Jacobian.
# NOTE: 'auto' keeps the outer mode forward: the inner Jacobian has out*N elements for N
# inputs, never fewer than N, so forward mode never loses there (and fwd-over-rev is the
# well-known best pairing for scalar functions).
COMPOSITIONS = {
    "auto": ("fwd", "auto"),
    "fwd_rev": ("fwd", "rev"),
    "rev_rev": ("rev", "rev"),
    "fwd_fwd": ("fwd", "fwd"),
    "rev_fwd": ("rev", "fwd"),
}

Nested = list[list[torch.Tensor]]  # H[i][j] = d/dx_j (d out / d x_i)
PerLeaf = list[Nested]  # H[k][i][j]: the Hessian blocks of output leaf k


def output_hessians(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    *,
    chunk_size: int | None = None,
    api: str = API,
) -> tuple[PerLeaf, TreeSpec]:
    """``H[k][i][j]`` of shape ``(*out_k, *in_i, *in_j)`` for each leaf ``k`` of the output
    of a checked ``func`` (a tensor: one leaf), and the output's structure.

    The inner Jacobian gives one block per output leaf and argnum; the outer one
    differentiates all of them at once, so a pytree output costs what the tensor of all its
    elements would.
    """
    specs: list[TreeSpec] = []
    if method == "loop":
        res = oracles.loop_hessian(_leaf_tuple(func, specs), tuple(args), argnums)
        per_leaf = [res] if specs[0].is_leaf() else list(res)
        return [[list(row) for row in H] for H in per_leaf], specs[0]
    outer, inner = COMPOSITIONS[method]

    def gradient(*a: Any) -> tuple[torch.Tensor, ...]:
        blocks, spec, _ = jacobian_blocks(func, a, argnums, inner, chunk_size=chunk_size, api=api)
        specs.append(spec)
        return tuple(b for row in blocks for b in row)  # output leaf k, argnum i: k * n + i

    rows, _, _ = jacobian_blocks(gradient, args, argnums, outer, chunk_size=chunk_size, api=api)
    return chunked(rows, len(argnums)), specs[0]


def _leaf_tuple(func: Callable[..., Any], specs: list[TreeSpec]) -> Callable[..., Any]:
    """``func`` returning its tensor, or the tuple of its output's leaves; the structure of
    its output appended to ``specs``."""

    def call(*a: Any) -> Any:
        out = func(*a)
        leaves, spec = tree_flatten(out)
        specs.append(spec)
        return out if spec.is_leaf() else tuple(leaves)

    return call


def hessian(
    func: Callable[..., Any],
    argnums: Argnums = 0,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Return a function computing the full Hessian of ``func`` with respect to ``argnums``.

    Args:
        func: a function of tensors returning a tensor; scalar-valued as usual, or
            vector-valued (one Hessian per output element, as in the tutorial's ``(32, 512, 512)``).
            It may return a pytree of tensors (a dict, list, tuple or namedtuple, nested).
        argnums: which positional argument(s) to differentiate; an int or a tuple of ints. A
            differentiated argument may be a pytree of floating-point tensors (a parameter
            dict, a list, a tuple, a namedtuple, nested).
        method: ``"auto"``, ``"fwd_rev"``, ``"rev_rev"``, ``"fwd_fwd"``, ``"rev_fwd"`` or ``"loop"``.
        chunk_size: basis vectors pushed through at once by both Jacobians (memory, not values).

    Returns:
        A function of ``func``'s arguments. For an input of shape ``(in1, ...)`` and an output
        of shape ``(out1, ...)`` the Hessian has shape ``(out1, ..., in1, ..., in1, ...)``. A
        tuple ``argnums`` gives nested tuples ``H[i][j]`` of shape ``(*out, *in_i, *in_j)``:
        the derivative of ``d out / d args[argnums[i]]`` with respect to ``args[argnums[j]]``.
        Pytrees nest as in ``torch.func.hessian``: the argument's structure twice (a tuple
        ``argnums``: the tuple over ``i``, argument ``i``'s structure, the tuple over ``j``,
        argument ``j``'s structure), each leaf a block ``(*out, *leaf_a, *leaf_b)``. A pytree
        output puts its structure outside all that, as ``torch.func.hessian`` does.

    Raises:
        TypeError, ValueError: bad arguments, naming the argument; a Hessian above the
            memory budget (``derivs.set_memory_budget``), with the size it would need.

    >>> import torch, derivs
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    >>> derivs.hessian(lambda x: x @ A @ x)(torch.ones(2))  # A + A.T
    tensor([[4., 1.],
            [1., 6.]])
    """
    _validate.check_callable(API, func)
    _validate.check_argnums_spec(API, argnums)
    _validate.check_choice(API, "method", method, METHODS)
    _validate.check_chunk_size(API, chunk_size)
    if method == "loop" and chunk_size is not None:
        raise ValueError(
            f"{API}: chunk_size={chunk_size} has no effect with method='loop', which computes one "
            f"entry at a time; drop chunk_size or choose a composed method"
        )

    single = not isinstance(argnums, tuple)

    def hessian_fn(*args: Any) -> Any:
        nums = _validate.normalize_argnums(API, argnums, len(args))
        flat = Flat(API, args, nums)
        diff = _validate.check_diff_args(API, flat.args, flat.nums)
        if method != "loop" and chunk_size is None:
            n = sum(x.numel() for x in diff)
            _validate.check_size(
                API,
                "the basis of unit vectors",
                n * n,
                _validate.itemsize_of(diff),
                "pass chunk_size, or use derivs.hvp/derivs.vhp",
            )
        checked = _memory.within_budget(
            flat.wrap(func), API, flat.args, flat.nums, method, chunk_size
        )
        per_leaf, spec = output_hessians(
            checked, flat.args, flat.nums, method, chunk_size=chunk_size
        )
        return flat.hessians(per_leaf, spec, single)

    hessian_fn.__name__ = _validate.transform_name("hessian", func, argnums)
    hessian_fn.__doc__ = (
        f"Hessian of {_validate.func_name(func)} with respect to argnums={argnums!r} "
        f"(method={method!r})."
    )
    return hessian_fn
