"""Full Jacobians: ``jacobian(func, argnums)(*args)`` by reverse mode, forward mode or a loop."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch.utils._pytree import TreeSpec, tree_map

from derivs import _eager, _validate, oracles
from derivs._blocks import (
    Blocks,
    assemble,
    blocks_of,
    check_basis,
    chunks,
    columns_to_blocks,
    flatten,
    rows_to_blocks,
    split_aux,
    standard_basis,
    unflatten,
    with_diff,
)
from derivs._pytree import Flat
from derivs._registry import OPERATORS
from derivs._validate import Argnums

API = "derivs.jacobian"

METHODS = OPERATORS["jacobian"]


def prefers_forward(out_numel: int, in_numel: int, device: str | torch.device = "cpu") -> bool:
    """The ``method="auto"`` rule, measured per device type (``bench/auto_grid.py``).

    Forward mode pushes one tangent per input element and reverse mode one cotangent per
    output element, so the textbook rule is "forward iff outputs > inputs". Measured on the
    tutorial's ``F.linear(x, W, b).tanh()`` (``docs/bench/auto_grid.md``), forward mode costs
    more than that: a larger fixed cost per call and more per element at equal sizes, so it
    only wins once reverse mode's ``out x out`` basis of cotangents is big.

    * CPU (and any device other than CUDA): forward iff ``out > in`` and ``out >= 512``.
    * CUDA: forward iff ``out > in`` and ``out * max(in, 256) >= 2**22``: kernel launches cost
      either mode about the same, so reverse mode wins until its basis (``out**2`` elements)
      or its work (``out**2 * in``) is large.

    The grids, and how often each rule picks the faster mode on them: docs/benchmarks.md,
    "The rule from the grid".

    The grid's function is cheap; where evaluating ``func`` dominates, the ratio of outputs
    to inputs matters more than these thresholds.

    Args:
        out_numel: elements of the output (all output leaves together).
        in_numel: elements of the differentiated inputs (all argnums together).
        device: where the Jacobian is computed (a device or its type, e.g. ``"cuda"``).

    Returns:
        True to build the Jacobian by forward mode, False for reverse mode.

    >>> prefers_forward(2048, 32), prefers_forward(32, 2048), prefers_forward(256, 8)
    (True, False, False)
    >>> prefers_forward(2048, 32, "cuda"), prefers_forward(16384, 8, "cuda")
    (False, True)
    """
    if out_numel <= in_numel:
        return False
    if torch.device(device).type == "cuda":
        return out_numel * max(in_numel, 256) >= 2**22
    # NOTE: 512 sits between the grid's 256 (forward still slower for every input size) and
    # 512 (forward faster whenever there are fewer inputs than outputs).
    return out_numel >= 512


def _rev(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    captured: list[TreeSpec] = []

    def spy(*a: Any) -> Any:
        result = func(*a)
        captured.append(flatten(split_aux(result, has_aux)[0])[1])
        return result

    result = torch.func.jacrev(spy, argnums=argnums, has_aux=has_aux, chunk_size=chunk_size)(*args)
    jac, aux = split_aux(result, has_aux)
    return blocks_of(jac, len(argnums)), captured[0], aux


class _VjpStart:
    """The forward half of reverse mode: the output, its pullback and the aux, kept for ``auto``."""

    def __init__(self, func: Callable[..., Any], diff: list[torch.Tensor], has_aux: bool) -> None:
        res = torch.func.vjp(func, *diff, has_aux=has_aux)
        self.out, self.vjp_fn = res[0], res[1]
        # NOTE: torch.func.vjp is typed as a union of the 2- and 3-tuple; has_aux picks one.
        self.aux = cast("tuple[Any, Any, Any]", res)[2] if has_aux else None
        self.leaves, self.spec = flatten(self.out)

    def pull(self, cotangents: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Batched vector-Jacobian products: one cotangent per output leaf, batch dim first."""
        return cast(
            "Sequence[torch.Tensor]",
            torch.func.vmap(self.vjp_fn)(unflatten(cotangents, self.spec)),
        )


def _fwd_diff(
    g: Callable[..., Any], diff: list[torch.Tensor], has_aux: bool, chunk_size: int | None, api: str
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [_validate.without_overlap(x) for x in diff]
    total = sum(x.numel() for x in diff)
    check_basis(api, total, total, _validate.itemsize_of(diff), chunk_size)

    def push(*tangents: torch.Tensor) -> Any:
        return torch.func.jvp(g, tuple(diff), tangents, has_aux=has_aux)

    # NOTE: the primal output (and aux) do not depend on the tangent; vmap returns them
    # expanded along the basis (a view, not a copy) and row 0 is kept, so forward mode needs
    # no separate evaluation for them. (out_dims=None fails when this runs under an outer vmap.)
    pieces: list[list[torch.Tensor]] = []
    out = aux = None
    for s, e in chunks(total, chunk_size):
        res = torch.func.vmap(push)(*standard_basis(s, e, diff))
        pieces.append(flatten(res[1])[0])
        if out is None:
            out = tree_map(lambda t: t[0], res[0])
            aux = tree_map(lambda t: t[0], res[2]) if has_aux else None
    if out is None:  # no input elements: evaluate once for the output's shape
        out, aux = split_aux(g(*diff), has_aux)
    leaves, spec = flatten(out)
    return columns_to_blocks(leaves, pieces, diff), spec, aux


def _fwd(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [args[a] for a in argnums]
    return _fwd_diff(with_diff(func, args, argnums), diff, has_aux, chunk_size, api)


def _vjp_vmap(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [args[a] for a in argnums]
    start = _VjpStart(with_diff(func, args, argnums), diff, has_aux)
    return rows_to_blocks(start, diff, chunk_size, api), start.spec, start.aux


# NOTE: output sizes seen by method="auto", per user function (held weakly) and input
# signature. A stale entry could only make auto pick the slower mode, never a wrong value:
# both modes compute the same Jacobian.
_OUT_NUMEL: weakref.WeakKeyDictionary[Any, dict[Any, int]] = weakref.WeakKeyDictionary()
_MAX_SIGNATURES = 64


def _pick_key(func: Any, args: Sequence[Any], argnums: tuple[int, ...]) -> tuple[Any, Any]:
    user_func = getattr(func, "func", func)  # the user's function inside a CheckedFunc
    user_func = getattr(user_func, "__wrapped__", user_func)  # ... of pytrees (_pytree.Flat)
    parts: list[Any] = [argnums]
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append((tuple(a.shape), a.dtype, a.device.type))
        else:
            try:
                hash(a)
                parts.append(a)
            except TypeError:
                parts.append(type(a))
    return user_func, tuple(parts)


def _known_out_numel(user_func: Any, signature: Any) -> int | None:
    try:
        return _OUT_NUMEL.get(user_func, {}).get(signature)
    except TypeError:  # not weak-referenceable or not hashable: no memory
        return None


def _remember_out_numel(user_func: Any, signature: Any, out_numel: int) -> None:
    try:
        seen = _OUT_NUMEL.setdefault(user_func, {})
    except TypeError:
        return
    if len(seen) >= _MAX_SIGNATURES:
        seen.pop(next(iter(seen)))
    seen[signature] = out_numel


def _auto(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    if _eager.allowed(args):
        try:
            return _eager.eager_jacobian(
                func, args, argnums, has_aux, chunk_size, api, prefers_forward
            )
        except _eager.UseTorchFunc:
            pass
    if torch.compiler.is_compiling():
        return _auto_traced(func, args, argnums, has_aux, chunk_size, api)
    # NOTE: the rule needs the output size. The first call for a function and input signature
    # starts as reverse mode (whose forward pass gives it; when forward mode wins, that forward
    # pass is wasted) and remembers the size; later calls pick at once.
    diff = [args[a] for a in argnums]
    in_numel = sum(x.numel() for x in diff)
    user_func, signature = _pick_key(func, args, argnums)
    known = _known_out_numel(user_func, signature)
    if known is not None:
        impl = _fwd if prefers_forward(known, in_numel, diff[0].device) else _vjp_vmap
        return impl(func, args, argnums, has_aux, chunk_size, api)
    g = with_diff(func, args, argnums)
    start = _VjpStart(g, diff, has_aux)
    out_numel = sum(o.numel() for o in start.leaves)
    _remember_out_numel(user_func, signature, out_numel)
    if prefers_forward(out_numel, in_numel, diff[0].device):
        return _fwd_diff(g, diff, has_aux, chunk_size, api)
    return rows_to_blocks(start, diff, chunk_size, api), start.spec, start.aux


def _auto_traced(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    """``auto`` while torch.compile traces: the output size from a plain evaluation.

    The evaluation gives the size while tracing and, unused, is dead code in the graph, so
    it costs nothing at run time and adds no transform (each adds guards, checked on every
    call). Nothing is remembered: a store into the cache of sizes would be replayed after the
    graph and fail the guard on the cache's contents, recompiling on the next call.
    """
    diff = [args[a] for a in argnums]
    g = with_diff(func, args, argnums)
    out = split_aux(g(*diff), has_aux)[0]
    out_numel = sum(o.numel() for o in flatten(out)[0])
    if prefers_forward(out_numel, sum(x.numel() for x in diff), diff[0].device):
        return _fwd_diff(g, diff, has_aux, chunk_size, api)
    start = _VjpStart(g, diff, has_aux)
    return rows_to_blocks(start, diff, chunk_size, api), start.spec, start.aux


def _loop(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    kept: list[Any] = []

    def strip(*a: Any) -> Any:
        out, aux = split_aux(func(*a), has_aux)
        kept.append((flatten(out)[1], aux))
        return out

    jac = oracles.loop_jacobian(strip, tuple(args), argnums)
    spec, aux = kept[0]
    return blocks_of(jac, len(argnums)), spec, aux


IMPLS = {"auto": _auto, "rev": _rev, "fwd": _fwd, "vjp_vmap": _vjp_vmap, "loop": _loop}


def jacobian_blocks(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
    api: str = API,
) -> tuple[Blocks, TreeSpec, Any]:
    """The Jacobian as ``blocks[k][i]`` (output leaf k, argnum i), its output spec and the aux.

    ``func`` is expected to be checked already (see ``_validate.CheckedFunc``).
    """
    blocks, spec, aux = IMPLS[method](func, args, argnums, has_aux, chunk_size, api)
    # NOTE: the contract says results have the input's dtype; a func that computes in another
    # precision would otherwise give forward mode (output dtype) and reverse mode (input dtype)
    # results of different dtypes.
    dtypes = [args[a].dtype for a in argnums]
    blocks = [
        [b if b.dtype == dt else b.to(dt) for b, dt in zip(row, dtypes, strict=True)]
        for row in blocks
    ]
    return blocks, spec, aux


def jacobian(
    func: Callable[..., Any],
    argnums: Argnums = 0,
    *,
    method: str = "auto",
    has_aux: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Return a function computing the full Jacobian of ``func`` with respect to ``argnums``.

    Args:
        func: a function of tensors returning a tensor (or a tuple/list/dict of tensors).
        argnums: which positional argument(s) to differentiate; an int or a tuple of ints
            (negative indices count from the end). A differentiated argument may be a pytree
            of tensors (a dict such as ``dict(model.named_parameters())``, a list, a tuple or
            a namedtuple, nested); every leaf must be a floating-point tensor.
        method: ``"auto"``, ``"rev"``, ``"fwd"``, ``"vjp_vmap"`` or ``"loop"`` (see ``METHODS``).
            ``"auto"`` picks forward or reverse mode by ``prefers_forward``; at the top level
            of eager code it takes either from one autograd graph of ``func`` (vmap over
            ``torch.autograd.grad``), cheaper per call than torch.func, and uses torch.func
            wherever that graph could not give the same result (inside other transforms,
            under ``torch.compile``, when an input or a tensor ``func`` closes over requires
            grad, ...). ``func`` may then be evaluated more than once.
        has_aux: ``func`` returns ``(output, aux)``; ``aux`` is returned untouched.
        chunk_size: how many basis vectors to push through at once (memory, not values);
            ``None`` pushes them all at once. Not accepted by ``"loop"``, which pushes one.

    Returns:
        A function of the same arguments as ``func``. If the input has shape
        ``(in1, in2, ...)`` and the output has shape ``(out1, out2, ...)`` the Jacobian has
        shape ``(out1, out2, ..., in1, in2, ...)``, in the input's dtype and on its device. A
        tuple ``argnums`` gives a tuple of blocks, one per argnum; ``has_aux=True`` gives
        ``(jacobian, aux)``. Pytrees nest as in ``torch.func.jacrev``: ``func``'s output
        structure outside, the tuple over ``argnums`` (if any) next, each argument's
        structure inside.

    Raises:
        TypeError, ValueError: bad arguments, naming the argument (or the leaf's path in a
            pytree: ``args[0]['lr']``); a Jacobian above the memory budget
            (``derivs.set_memory_budget``).

    >>> import torch, derivs
    >>> W = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> derivs.jacobian(lambda x: W @ x, method="fwd")(torch.ones(2))
    tensor([[1., 2.],
            [3., 4.],
            [5., 6.]])
    """
    _validate.check_callable(API, func)
    _validate.check_argnums_spec(API, argnums)
    _validate.check_choice(API, "method", method, METHODS)
    _validate.check_bool(API, "has_aux", has_aux)
    _validate.check_chunk_size(API, chunk_size)
    if method == "loop" and chunk_size is not None:
        raise ValueError(
            f"{API}: chunk_size={chunk_size} has no effect with method='loop', which computes one "
            f"row at a time; drop chunk_size or use method='rev'/'fwd'/'vjp_vmap'"
        )

    def jacobian_fn(*args: Any) -> Any:
        nums = _validate.normalize_argnums(API, argnums, len(args))
        flat = Flat(API, args, nums)
        diff = _validate.check_diff_args(API, flat.args, flat.nums)
        checked = _validate.CheckedFunc(
            flat.wrap(func),
            API,
            has_aux=has_aux,
            factor=sum(x.numel() for x in diff),
            itemsize=_validate.itemsize_of(diff),
        )
        blocks, spec, aux = jacobian_blocks(
            checked, flat.args, flat.nums, method, has_aux=has_aux, chunk_size=chunk_size
        )
        single = not isinstance(argnums, tuple)
        if not flat.trivial:
            jac = flat.jacobian(blocks, spec, single)
        else:
            jac = unflatten([r[0] for r in blocks], spec) if single else assemble(blocks, spec)
        return (jac, aux) if has_aux else jac

    jacobian_fn.__name__ = _validate.transform_name("jacobian", func, argnums)
    jacobian_fn.__doc__ = (
        f"Jacobian of {_validate.func_name(func)} with respect to argnums={argnums!r} "
        f"(method={method!r})."
    )
    return jacobian_fn
