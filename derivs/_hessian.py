"""Full Hessians: the Jacobian of the Jacobian, by any pairing of forward and reverse mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs import _config, _memory, _validate, oracles
from derivs._jacobian import jacobian_blocks, prefers_forward
from derivs._registry import OPERATORS
from derivs._validate import Argnums

API = "derivs.hessian"

METHODS = OPERATORS["hessian"]

# method -> (outer, inner) jacobian methods; the outer one differentiates the inner Jacobian.
# NOTE: 'auto' keeps the outer mode forward: the inner Jacobian has out*N elements for N
# inputs, never fewer than N, so forward mode never loses there (and fwd-over-rev is the
# well-known best pairing for scalar functions).
_COMPOSITIONS = {
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
    outer, inner = _COMPOSITIONS[method]

    def gradient(*a: Any) -> tuple[torch.Tensor, ...]:
        blocks, _, _ = jacobian_blocks(func, a, argnums, inner, chunk_size=chunk_size, api=api)
        return tuple(blocks[0])

    blocks, _, _ = jacobian_blocks(gradient, args, argnums, outer, chunk_size=chunk_size, api=api)
    return blocks


def composition(method: str, out_numel: int, in_numel: int, device: torch.device) -> str:
    """The composed method ``method`` runs: ``auto`` is forward over what jacobian's auto picks."""
    if method != "auto":
        return method
    return "fwd_fwd" if prefers_forward(out_numel, in_numel, device) else "fwd_rev"


def check_peak(api: str, method: str, sizes: _memory.Sizes, device: torch.device) -> None:
    """Refuse ``method`` where ``_memory.hessian_peak`` predicts a peak above the budget.

    The message gives the predicted size and what fits instead: another method, a
    ``chunk_size``, or Hessian-vector products.
    """
    resolved = composition(method, sizes.m, sizes.n, device)
    need = _memory.hessian_peak(resolved, sizes)
    budget = _config.get_memory_budget()
    if need <= budget:
        return
    fmt = _validate.fmt_bytes
    hints = []
    # NOTE: the other methods by the screen: their second-order passes were not probed.
    screened = sizes._replace(d=0)
    others = sorted(
        (_memory.hessian_peak(m, screened), m) for m in _COMPOSITIONS if m not in ("auto", resolved)
    )
    fits = [(peak, m) for peak, m in others if peak <= budget]
    if fits:
        hints.append(f"method={fits[0][1]!r} would need about {fmt(fits[0][0])}")
    chunk = _largest_chunk(resolved, sizes, budget) if method != "loop" else None
    if chunk is not None:
        peak = _memory.hessian_peak(resolved, sizes._replace(chunk_size=chunk))
        hints.append(f"chunk_size={chunk} about {fmt(peak)}")
    if not fits and _memory.hessian_peak("loop", screened) <= budget:
        hints.append("method='loop' (slow) fits")
    hints.append("derivs.hvp/derivs.vhp give Hessian-vector products without the matrix")
    what = f"hessian(method={method!r})" + (
        f", which runs {resolved!r}," if method == "auto" else ""
    )
    _validate.check_peak(api, what, need, "; ".join(hints))


def _largest_chunk(method: str, sizes: _memory.Sizes, budget: int) -> int | None:
    """The largest power-of-two ``chunk_size`` under which ``method`` fits, if any does."""
    top = max(sizes.m * sizes.n, sizes.n)
    if sizes.chunk_size is not None:
        top = min(top, sizes.chunk_size - 1)
    chunk = 1 << max(top.bit_length() - 1, 0)
    while chunk >= 1:
        if _memory.hessian_peak(method, sizes._replace(chunk_size=chunk)) <= budget:
            return chunk
        chunk //= 2
    return None


def checked_for_hessian(
    func: Callable[..., Any],
    api: str,
    diff: Sequence[torch.Tensor],
    *,
    n: int | None = None,
    factor: int = 1,
    scalar: bool = False,
    on_output: Callable[[int], None] | None = None,
) -> _validate.CheckedFunc:
    """``func`` checked to return a tensor whose Hessian (``n`` inputs, ``factor`` copies) fits.

    ``on_output(output elements)`` runs after that check, at every evaluation.
    """
    n = sum(x.numel() for x in diff) if n is None else n
    return _validate.CheckedFunc(
        func,
        api,
        allow_pytree=False,
        scalar=scalar,
        factor=factor * n * n,
        itemsize=_validate.itemsize_of(diff),
        what="the Hessian",
        hint="use derivs.hvp/derivs.vhp for Hessian-vector products, which never form the matrix",
        on_output=on_output,
    )


def _sizes(
    args: Sequence[Any],
    argnums: tuple[int, ...],
    chunk_size: int | None,
    m: int,
    a: int,
    d: int,
) -> _memory.Sizes:
    diff = [args[i] for i in argnums]
    other = sum(
        t.numel() for i, t in enumerate(args) if isinstance(t, torch.Tensor) and i not in argnums
    )
    n = sum(x.numel() for x in diff)
    return _memory.Sizes(m, n, a, d, other, _validate.itemsize_of(diff), chunk_size)


def predicted_peak(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    chunk_size: int | None = None,
) -> int | None:
    """The model's peak bytes for ``hessian(func, argnums, method=method)``, fully probed.

    ``func`` is evaluated once, and its second-order pass once; ``None`` where it cannot be
    probed. The guard refuses by this number wherever the screen alone could not clear it.
    """
    probed = _memory.probe(func, args, argnums)
    if probed is None:
        return None
    s = _sizes(args, argnums, chunk_size, probed.m, probed.a, 0)
    resolved = composition(method, s.m, s.n, args[argnums[0]].device)
    if resolved in _memory.PROBED:
        s = s._replace(d=_memory.second_order(func, args, argnums, resolved))
    return _memory.hessian_peak(resolved, s)


def guarded(
    func: Callable[..., Any],
    api: str,
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    chunk_size: int | None,
    *,
    scalar: bool = False,
) -> _validate.CheckedFunc:
    """``func`` checked, its Hessian's size and predicted peak within the memory budget.

    At the top level of eager code ``func`` is evaluated once first (``_memory.probe``) and
    an oversized Hessian is refused before any transform runs; where the screen's estimate
    comes within ``SCREEN_MARGIN`` of the budget the method's second-order pass is probed too
    and the model decides. Elsewhere the refusal comes at the first evaluation inside the
    transforms, by the screen, assuming as many intermediates as inputs and outputs.
    """
    diff = [args[a] for a in argnums]
    device = diff[0].device
    checked = checked_for_hessian(func, api, diff, scalar=scalar)
    probed = _memory.probe(checked, args, argnums)
    if probed is not None:
        s = _sizes(args, argnums, chunk_size, probed.m, probed.a, 0)
        resolved = composition(method, s.m, s.n, device)
        screen = _memory.hessian_peak(resolved, s)
        near = screen * _memory.SCREEN_MARGIN > _config.get_memory_budget()
        if resolved in _memory.PROBED and near:
            s = s._replace(d=_memory.second_order(checked, args, argnums, resolved))
        check_peak(api, method, s, device)
        return checked
    n = sum(x.numel() for x in diff)

    def on_output(m: int) -> None:
        check_peak(api, method, _sizes(args, argnums, chunk_size, m, m + n, 0), device)

    checked.on_output = on_output
    return checked


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
        argnums: which positional argument(s) to differentiate; an int or a tuple of ints.
        method: ``"auto"``, ``"fwd_rev"``, ``"rev_rev"``, ``"fwd_fwd"``, ``"rev_fwd"`` or ``"loop"``.
        chunk_size: basis vectors pushed through at once by both Jacobians (memory, not values).

    Returns:
        A function of ``func``'s arguments. For an input of shape ``(in1, ...)`` and an output
        of shape ``(out1, ...)`` the Hessian has shape ``(out1, ..., in1, ..., in1, ...)``. A
        tuple ``argnums`` gives nested tuples ``H[i][j]`` of shape ``(*out, *in_i, *in_j)``:
        the derivative of ``d out / d args[argnums[i]]`` with respect to ``args[argnums[j]]``.

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
    _validate.check_method(API, method, METHODS)
    _validate.check_chunk_size(API, chunk_size)
    if method == "loop" and chunk_size is not None:
        raise ValueError(
            f"{API}: chunk_size={chunk_size} has no effect with method='loop', which computes one "
            f"entry at a time; drop chunk_size or choose a composed method"
        )

    def hessian_fn(*args: Any) -> Any:
        nums = _validate.normalize_argnums(API, argnums, len(args))
        diff = _validate.check_diff_args(API, args, nums)
        if method != "loop" and chunk_size is None:
            n = sum(x.numel() for x in diff)
            _validate.check_size(
                API,
                "the basis of unit vectors",
                n * n,
                _validate.itemsize_of(diff),
                "pass chunk_size, or use derivs.hvp/derivs.vhp",
            )
        checked = guarded(func, API, args, nums, method, chunk_size)
        blocks = hessian_blocks(checked, args, nums, method, chunk_size=chunk_size)
        return nest(blocks, not isinstance(argnums, tuple))

    hessian_fn.__name__ = _validate.transform_name("hessian", func, argnums)
    hessian_fn.__doc__ = (
        f"Hessian of {_validate.func_name(func)} with respect to argnums={argnums!r} "
        f"(method={method!r})."
    )
    return hessian_fn
