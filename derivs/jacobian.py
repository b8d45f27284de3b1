"""Full Jacobians: ``jacobian(func, argnums)(*args)`` by reverse mode, forward mode or a loop."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.autograd.forward_ad as fwAD
from torch.utils._pytree import TreeSpec, tree_flatten, tree_map, tree_unflatten

from derivs import _validate, oracles
from derivs._validate import Argnums

API = "derivs.jacobian"

METHODS = {
    "auto": "forward mode when the output has more elements than the differentiated inputs "
    "and enough of them (measured per device: see prefers_forward), else reverse; in plain "
    "eager code both come from one autograd graph (vmap over torch.autograd.grad), skipping "
    "torch.func's fixed cost per call",
    "rev": "torch.func.jacrev: one vector-Jacobian product per output element (wide functions)",
    "fwd": "vmap over torch.func.jvp: one Jacobian-vector product per input element (tall functions)",
    "vjp_vmap": "the tutorial's vmap(vjp_fn)(unit_vectors); reverse mode built by hand",
    "loop": "one torch.autograd.grad per output element; slow, not composable with vmap, "
    "but the simplest thing that can work",
}

Blocks = list[list[torch.Tensor]]  # blocks[k][i]: d out_leaf[k] / d args[argnums[i]]

_LEAF = tree_flatten(0)[1]


def _flatten(tree: Any) -> tuple[list[Any], TreeSpec]:
    """``tree_flatten``, without its cost for the common case of a single tensor."""
    return ([tree], _LEAF) if isinstance(tree, torch.Tensor) else tree_flatten(tree)


def _unflatten(leaves: list[Any], spec: TreeSpec) -> Any:
    return leaves[0] if spec.is_leaf() else tree_unflatten(leaves, spec)


def prefers_forward(out_numel: int, in_numel: int, device: str | torch.device = "cpu") -> bool:
    """The ``method="auto"`` rule, measured per device type (``tools/auto_grid.py``).

    Forward mode pushes one tangent per input element and reverse mode one cotangent per
    output element, so the textbook rule is "forward iff outputs > inputs". Measured on the
    tutorial's ``F.linear(x, W, b).tanh()`` (``docs/bench/auto_grid.md``), forward mode costs
    more than that: a larger fixed cost per call and more per element at equal sizes, so it
    only wins once reverse mode's ``out x out`` basis of cotangents is big.

    * CPU (and any device other than CUDA): forward iff ``out > in`` and ``out >= 512``.
      Grid of 8 to 2048 inputs and outputs, torch 2.13, one thread: right in 81 of 81 cells,
      for auto's eager modes and for the torch.func methods; the textbook rule in 66 of 81
      (8 -> 256 runs 1.2x slower forward).
    * CUDA: forward iff ``out > in`` and ``out * max(in, 256) >= 2**22``. An H100 launches
      kernels for either mode in about the same time, so reverse mode wins until its basis
      (``out**2`` elements) or its work (``out**2 * in``) is large: 8 -> 8192 still runs
      reverse faster, 512 -> 8192 and 8 -> 16384 forward. Grid of 8 to 16384 inputs and
      outputs, torch 2.11: right in 36 of 36 cells (the CPU rule: 29).

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


def standard_basis(start: int, stop: int, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Rows ``start:stop`` of the identity over the concatenated, flattened ``like`` tensors.

    Returns one tensor per entry of ``like``, shaped ``(stop - start, *like[k].shape)``, with
    ``like[k]``'s dtype and device. Only the requested rows are allocated.
    """
    rows = stop - start
    if len(like) == 1 and start == 0 and stop == like[0].numel():
        t = like[0]
        return [torch.eye(rows, dtype=t.dtype, device=t.device).reshape((rows, *t.shape))]
    pieces = []
    offset = 0
    for t in like:
        n = t.numel()
        piece = torch.zeros((rows, n), dtype=t.dtype, device=t.device)
        # NOTE: entry (r, c) is 1 where start + r == offset + c: one diagonal of the block.
        # (fill_ on a diagonal view, unlike index assignment, also traces under torch.compile.)
        piece.diagonal(start - offset).fill_(1)
        pieces.append(piece.reshape((rows, *t.shape)))
        offset += n
    return pieces


def _chunks(total: int, chunk_size: int | None) -> list[tuple[int, int]]:
    step = total if chunk_size is None else chunk_size
    return [(s, min(s + step, total)) for s in range(0, total, max(step, 1))]


def _concat(pieces: list[torch.Tensor]) -> torch.Tensor:
    # NOTE: without chunking there is one piece; torch.cat would copy it for nothing.
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _check_basis(api: str, rows: int, total: int, itemsize: int, chunk_size: int | None) -> None:
    if chunk_size is None:
        _validate.check_size(
            api,
            "the basis of unit vectors",
            rows * total,
            itemsize,
            "pass chunk_size to push the basis through in pieces",
        )


def _with_diff(
    func: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...]
) -> Callable[..., Any]:
    """``func`` as a function of the differentiated arguments only."""

    def g(*diff: torch.Tensor) -> Any:
        full = list(args)
        for a, x in zip(argnums, diff, strict=True):
            full[a] = x
        return func(*full)

    return g


def _split_aux(result: Any, has_aux: bool) -> tuple[Any, Any]:
    return (result[0], result[1]) if has_aux else (result, None)


def _assemble(blocks: Blocks, spec: TreeSpec) -> Any:
    return tree_unflatten([tuple(row) for row in blocks], spec)


def _blocks_of(result: Any, n: int) -> Blocks:
    leaves = _flatten(result)[0]
    return [leaves[k : k + n] for k in range(0, len(leaves), n)]


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
        captured.append(_flatten(_split_aux(result, has_aux)[0])[1])
        return result

    result = torch.func.jacrev(spy, argnums=argnums, has_aux=has_aux, chunk_size=chunk_size)(*args)
    jac, aux = _split_aux(result, has_aux)
    return _blocks_of(jac, len(argnums)), captured[0], aux


class _VjpStart:
    """The forward half of reverse mode: the output, its pullback and the aux, kept for ``auto``."""

    def __init__(self, func: Callable[..., Any], diff: list[torch.Tensor], has_aux: bool) -> None:
        res = torch.func.vjp(func, *diff, has_aux=has_aux)
        self.out, self.vjp_fn = res[0], res[1]
        # NOTE: torch.func.vjp is typed as a union of the 2- and 3-tuple; has_aux picks one.
        self.aux = cast("tuple[Any, Any, Any]", res)[2] if has_aux else None
        self.leaves, self.spec = _flatten(self.out)

    def pull(self, cotangents: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Batched vector-Jacobian products: one cotangent per output leaf, batch dim first."""
        return cast(
            "Sequence[torch.Tensor]",
            torch.func.vmap(self.vjp_fn)(_unflatten(cotangents, self.spec)),
        )


def _vjp_finish(
    start: _VjpStart | _EagerGraph, diff: list[torch.Tensor], chunk_size: int | None, api: str
) -> Blocks:
    leaves = start.leaves
    total = sum(o.numel() for o in leaves)
    _check_basis(api, total, total, _validate.itemsize_of(leaves), chunk_size)
    rows: list[list[torch.Tensor]] = [[] for _ in diff]
    for s, e in _chunks(total, chunk_size):
        for i, r in enumerate(start.pull(standard_basis(s, e, leaves))):
            rows[i].append(r)
    blocks: Blocks = [[] for _ in leaves]
    for i, x in enumerate(diff):
        full = _concat(rows[i]) if rows[i] else x.new_zeros((0, *x.shape))
        # NOTE: Tensor.split is unannotated in torch/_tensor.py.
        pieces = [full] if len(leaves) == 1 else full.split([o.numel() for o in leaves])  # type: ignore[no-untyped-call]
        for k, piece in enumerate(pieces):
            blocks[k].append(piece.reshape((*leaves[k].shape, *x.shape)))
    return blocks


def _fwd_diff(
    g: Callable[..., Any], diff: list[torch.Tensor], has_aux: bool, chunk_size: int | None, api: str
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [_validate.without_overlap(x) for x in diff]
    total = sum(x.numel() for x in diff)
    _check_basis(api, total, total, _validate.itemsize_of(diff), chunk_size)

    def push(*tangents: torch.Tensor) -> Any:
        return torch.func.jvp(g, tuple(diff), tangents, has_aux=has_aux)

    # NOTE: the primal output (and aux) do not depend on the tangent; vmap returns them
    # expanded along the basis (a view, not a copy) and row 0 is kept, so forward mode needs
    # no separate evaluation for them. (out_dims=None fails when this runs under an outer vmap.)
    pieces: list[list[torch.Tensor]] = []
    out = aux = None
    for s, e in _chunks(total, chunk_size):
        res = torch.func.vmap(push)(*standard_basis(s, e, diff))
        pieces.append(_flatten(res[1])[0])
        if out is None:
            out = tree_map(lambda t: t[0], res[0])
            aux = tree_map(lambda t: t[0], res[2]) if has_aux else None
    if out is None:  # no input elements: evaluate once for the output's shape
        out, aux = _split_aux(g(*diff), has_aux)
    leaves, spec = _flatten(out)
    return _fwd_blocks(leaves, pieces, diff), spec, aux


def _fwd_blocks(
    leaves: list[torch.Tensor], pieces: list[list[torch.Tensor]], diff: list[torch.Tensor]
) -> Blocks:
    """Blocks from forward mode's ``pieces[chunk][k]``: (chunk rows, *output leaf k's shape)."""
    blocks: Blocks = []
    for k, o in enumerate(leaves):
        cols = _concat([p[k] for p in pieces]) if pieces else o.new_zeros((0, *o.shape))
        blocks.append(
            [
                c.movedim(0, -1).reshape((*o.shape, *x.shape))
                # NOTE: Tensor.split is unannotated in torch/_tensor.py.
                for c, x in zip(cols.split([x.numel() for x in diff]), diff, strict=True)  # type: ignore[no-untyped-call]
            ]
        )
    return blocks


def _fwd(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [args[a] for a in argnums]
    return _fwd_diff(_with_diff(func, args, argnums), diff, has_aux, chunk_size, api)


def _vjp_vmap(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[Blocks, TreeSpec, Any]:
    diff = [args[a] for a in argnums]
    start = _VjpStart(_with_diff(func, args, argnums), diff, has_aux)
    return _vjp_finish(start, diff, chunk_size, api), start.spec, start.aux


# --- method="auto" in plain eager code: torch.autograd.grad under vmap, not torch.func's vjp/jvp
#
# torch.func.vjp and torch.func.jvp pay ~0.2-0.5 ms per call to enter and leave their
# transforms, most of the time of a small Jacobian. At the top level of eager code (no
# enclosing torch.func transform, no torch.compile, no forward-AD level of the caller's,
# nothing the caller's own autograd must differentiate through) auto records the function once
# with autograd and takes the products from that graph, batched over the basis by
# torch.func.vmap (whose batching rules cover every backward formula):
#   reverse mode: rows J^T e_r = torch.autograd.grad(out, x, e_r);
#   forward mode: columns J e_c by the double-vjp: g(u) = J^T u is linear in u, so
#     torch.autograd.grad(g(u), u, e_c) = J e_c (every built-in backward formula is itself
#     differentiable; a custom autograd.Function's backward need not be, so with one of those
#     in the graph forward mode goes to torch.func.jvp, which uses its own jvp rule).
# Where that is not possible, or autograd refuses, auto computes it with torch.func instead.


class _UseTorchFunc(Exception):
    """The eager path cannot give torch.func's result here: compute it with torch.func."""


def _eager_allowed(args: Sequence[Any]) -> bool:
    if torch.compiler.is_compiling() or torch.is_inference_mode_enabled():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None:  # inside a torch.func transform
        return False
    if getattr(fwAD, "_current_level", -1) >= 0:  # inside the caller's forward-AD level
        return False
    # NOTE: a caller's tensor that requires grad wants a Jacobian it can differentiate further,
    # which torch.func gives and the detached eager path would not; subclasses have their own
    # dispatch rules.
    return not any(
        isinstance(a, torch.Tensor) and (type(a) is not torch.Tensor or a.requires_grad)
        for a in args
    )


def _walk(tensors: list[Any], own: list[torch.Tensor]) -> tuple[list[int], bool, bool]:
    """What the autograd graph of ``tensors`` reaches: (indices of ``own`` leaves, another leaf
    requiring grad, a custom autograd.Function node).

    Another leaf (say an ``nn.Module`` parameter the function closes over) means the caller can
    differentiate the Jacobian with respect to it, which only torch.func's result supports.
    """
    stack = []
    reached: set[int] = set()
    other = custom = False

    def leaf(t: torch.Tensor) -> None:
        nonlocal other
        for i, x in enumerate(own):
            if t is x:
                reached.add(i)
                return
        other = True

    for t in tensors:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            if t.grad_fn is None:
                leaf(t)
            else:
                stack.append(t.grad_fn)
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            leaf(variable)
        custom = custom or isinstance(node, torch.autograd.function.BackwardCFunction)
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return sorted(reached), other, custom


def _detached(tree: Any) -> Any:
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def _batched_grad(
    outputs: list[torch.Tensor], inputs: list[torch.Tensor], cotangents: list[torch.Tensor]
) -> Sequence[torch.Tensor]:
    """``torch.autograd.grad(outputs, inputs, c)`` for each row ``c`` of ``cotangents``.

    Every input must be reached from the outputs (autograd refuses the others).
    """

    def vjp(*rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(outputs, inputs, rows, retain_graph=True)

    try:
        return cast("Sequence[torch.Tensor]", torch.func.vmap(vjp)(*cotangents))
    except (RuntimeError, NotImplementedError) as e:  # e.g. a backward with no batching rule
        raise _UseTorchFunc from e


class _EagerGraph:
    """``func`` recorded once by autograd; Jacobian rows (``pull``) and columns (``push``) from it."""

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
        has_aux: bool,
    ) -> None:
        outer_grad = torch.is_grad_enabled()
        self.inputs = [args[a].detach().requires_grad_() for a in argnums]
        with torch.enable_grad():
            result = _with_diff(func, args, argnums)(*self.inputs)
        out, aux = _split_aux(result, has_aux)
        self.leaves, self.spec = _flatten(out)
        self.used, other, self.custom = _walk(self.leaves, self.inputs)
        if outer_grad and (other or (has_aux and _walk(_flatten(aux)[0], self.inputs)[1])):
            raise _UseTorchFunc
        self.aux = _detached(aux) if has_aux else None
        self.active = [k for k, o in enumerate(self.leaves) if o.requires_grad]
        self.linear: tuple[list[torch.Tensor], list[int], list[torch.Tensor]] | None = None

    def pull(self, cotangents: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        """Rows of the Jacobian: one cotangent per output leaf, rows first."""
        grads = (
            _batched_grad(
                [self.leaves[k] for k in self.active],
                [self.inputs[i] for i in self.used],
                [cotangents[k] for k in self.active],
            )
            if self.used
            else []
        )
        if len(self.used) == len(self.inputs):  # the common case: every input reached
            return grads
        rows = cotangents[0].shape[0]
        res = [x.new_zeros((rows, *x.shape)) for x in self.inputs]
        for i, g in zip(self.used, grads, strict=True):
            res[i] = g
        return res

    def push(self, tangents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Columns of the Jacobian: one tangent per input, rows first; one result per leaf."""
        if self.custom:
            raise _UseTorchFunc
        rows = tangents[0].shape[0]
        res = [o.new_zeros((rows, *o.shape)) for o in self.leaves]
        if not self.used:
            return res
        if self.linear is None:
            us = [torch.zeros_like(self.leaves[k], requires_grad=True) for k in self.active]
            with torch.enable_grad():
                try:
                    grads = torch.autograd.grad(
                        [self.leaves[k] for k in self.active],
                        [self.inputs[i] for i in self.used],
                        us,
                        retain_graph=True,
                        create_graph=True,
                    )
                except (RuntimeError, NotImplementedError) as e:
                    raise _UseTorchFunc from e
            # NOTE: J^T u that does not depend on u comes from a backward autograd cannot
            # differentiate (or one that is zero, like floor's): torch.func.jvp decides.
            if not all(g.requires_grad for g in grads):
                raise _UseTorchFunc
            reached = _walk(list(grads), us)[0]
            self.linear = ([us[j] for j in reached], [self.active[j] for j in reached], list(grads))
        us, leaves, live = self.linear
        if us:
            cols = _batched_grad(live, us, [tangents[i] for i in self.used])
            for k, c in zip(leaves, cols, strict=True):
                res[k] = c
        return res


def _eager_fwd(
    graph: _EagerGraph, diff: list[torch.Tensor], chunk_size: int | None, api: str
) -> Blocks:
    total = sum(x.numel() for x in diff)
    _check_basis(api, total, total, _validate.itemsize_of(diff), chunk_size)
    pieces = [graph.push(standard_basis(s, e, diff)) for s, e in _chunks(total, chunk_size)]
    return _fwd_blocks(graph.leaves, pieces, diff)


def _eager_auto(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
    forward: bool | None = None,
) -> tuple[Blocks, TreeSpec, Any]:
    """``auto`` without torch.func (raises ``_UseTorchFunc`` where it cannot); ``forward``
    forces a mode (``tools/auto_grid.py`` times both) instead of ``prefers_forward``'s pick."""
    diff = [args[a] for a in argnums]
    graph = _EagerGraph(func, args, argnums, has_aux)
    if forward is None:
        forward = prefers_forward(
            sum(o.numel() for o in graph.leaves), sum(x.numel() for x in diff), diff[0].device
        )
    if forward:
        blocks = _eager_fwd(graph, diff, chunk_size, api)
    else:
        blocks = _vjp_finish(graph, diff, chunk_size, api)
    return blocks, graph.spec, graph.aux


# NOTE: output sizes seen by method="auto", per user function (held weakly) and input
# signature. A stale entry could only make auto pick the slower mode, never a wrong value:
# both modes compute the same Jacobian.
_OUT_NUMEL: weakref.WeakKeyDictionary[Any, dict[Any, int]] = weakref.WeakKeyDictionary()
_MAX_SIGNATURES = 64


def _pick_key(func: Any, args: Sequence[Any], argnums: tuple[int, ...]) -> tuple[Any, Any]:
    user_func = getattr(func, "func", func)  # the user's function inside a CheckedFunc
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
    if _eager_allowed(args):
        try:
            return _eager_auto(func, args, argnums, has_aux, chunk_size, api)
        except _UseTorchFunc:
            pass
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
    g = _with_diff(func, args, argnums)
    start = _VjpStart(g, diff, has_aux)
    out_numel = sum(o.numel() for o in start.leaves)
    _remember_out_numel(user_func, signature, out_numel)
    if prefers_forward(out_numel, in_numel, diff[0].device):
        return _fwd_diff(g, diff, has_aux, chunk_size, api)
    return _vjp_finish(start, diff, chunk_size, api), start.spec, start.aux


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
        out, aux = _split_aux(func(*a), has_aux)
        kept.append((_flatten(out)[1], aux))
        return out

    jac = oracles.loop_jacobian(strip, tuple(args), argnums)
    spec, aux = kept[0]
    return _blocks_of(jac, len(argnums)), spec, aux


_IMPLS = {"auto": _auto, "rev": _rev, "fwd": _fwd, "vjp_vmap": _vjp_vmap, "loop": _loop}


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
    blocks, spec, aux = _IMPLS[method](func, args, argnums, has_aux, chunk_size, api)
    # NOTE: the contract says results have the input's dtype; a func that computes in another
    # precision would otherwise give forward mode (output dtype) and reverse mode (input dtype)
    # results of different dtypes.
    dtypes = [args[a].dtype for a in argnums]
    blocks = [
        [b if b.dtype == dt else b.to(dt) for b, dt in zip(row, dtypes, strict=True)]
        for row in blocks
    ]
    return blocks, spec, aux


def _name(func: object) -> str:
    return getattr(func, "__name__", type(func).__name__)


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
            (negative indices count from the end).
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
        ``(jacobian, aux)``.

    Raises:
        TypeError, ValueError: bad arguments, naming the argument; a Jacobian above the
            memory budget (``derivs.set_memory_budget``).

    >>> import torch, derivs
    >>> W = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> derivs.jacobian(lambda x: W @ x, method="fwd")(torch.ones(2))
    tensor([[1., 2.],
            [3., 4.],
            [5., 6.]])
    """
    _validate.check_callable(API, func)
    _validate.check_argnums_spec(API, argnums)
    _validate.check_method(API, method, METHODS)
    _validate.check_bool(API, "has_aux", has_aux)
    _validate.check_chunk_size(API, chunk_size)
    if method == "loop" and chunk_size is not None:
        raise ValueError(
            f"{API}: chunk_size={chunk_size} has no effect with method='loop', which computes one "
            f"row at a time; drop chunk_size or use method='rev'/'fwd'/'vjp_vmap'"
        )

    def jacobian_fn(*args: Any) -> Any:
        nums = _validate.normalize_argnums(API, argnums, len(args))
        diff = _validate.check_diff_args(API, args, nums)
        checked = _validate.CheckedFunc(
            func,
            API,
            has_aux=has_aux,
            factor=sum(x.numel() for x in diff),
            itemsize=_validate.itemsize_of(diff),
        )
        blocks, spec, aux = jacobian_blocks(
            checked, args, nums, method, has_aux=has_aux, chunk_size=chunk_size
        )
        jac = (
            _assemble(blocks, spec)
            if isinstance(argnums, tuple)
            else _unflatten([r[0] for r in blocks], spec)
        )
        return (jac, aux) if has_aux else jac

    jacobian_fn.__name__ = f"jacobian_of_{_name(func)}_wrt_argnums_{argnums}".replace(" ", "")
    jacobian_fn.__doc__ = (
        f"Jacobian of {_name(func)} with respect to argnums={argnums!r} (method={method!r})."
    )
    return jacobian_fn
