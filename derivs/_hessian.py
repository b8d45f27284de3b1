"""Full Hessians: the Jacobian of the Jacobian, by any pairing of forward and reverse mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs import _memory, _validate, oracles
from derivs._jacobian import jacobian_blocks
from derivs._pytree import Flat
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


def hessian_blocks(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    *,
    chunk_size: int | None = None,
    api: str = API,
) -> Nested:
    """``H[i][j]`` of shape ``(*out, *in_i, *in_j)`` for a checked, tensor-valued ``func``."""
    if method == "loop":
        res = oracles.loop_hessian(func, tuple(args), argnums)
        return [list(row) for row in res]
    outer, inner = COMPOSITIONS[method]

    def gradient(*a: Any) -> tuple[torch.Tensor, ...]:
        blocks, _, _ = jacobian_blocks(func, a, argnums, inner, chunk_size=chunk_size, api=api)
        return tuple(blocks[0])

    blocks, _, _ = jacobian_blocks(gradient, args, argnums, outer, chunk_size=chunk_size, api=api)
    return blocks


def nest(blocks: Nested, single: bool) -> Any:
    return blocks[0][0] if single else tuple(tuple(row) for row in blocks)


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
        argument ``j``'s structure), each leaf a block ``(*out, *leaf_a, *leaf_b)``.

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
        blocks = hessian_blocks(checked, flat.args, flat.nums, method, chunk_size=chunk_size)
        return nest(blocks, single) if flat.trivial else flat.hessian(blocks, single)

    hessian_fn.__name__ = _validate.transform_name("hessian", func, argnums)
    hessian_fn.__doc__ = (
        f"Hessian of {_validate.func_name(func)} with respect to argnums={argnums!r} "
        f"(method={method!r})."
    )
    return hessian_fn
