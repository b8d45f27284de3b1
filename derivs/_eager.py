"""``method="auto"`` in plain eager code: ``torch.autograd.grad`` under vmap, not torch.func.

torch.func.vjp and torch.func.jvp pay ~0.2-0.5 ms per call to enter and leave their
transforms, most of the time of a small Jacobian. At the top level of eager code (no
enclosing torch.func transform, no torch.compile, no forward-AD level of the caller's,
nothing the caller's own autograd must differentiate through) auto records the function once
with autograd and takes the products from that graph, batched over the basis by
torch.func.vmap (whose batching rules cover every backward formula):
  reverse mode: rows J^T e_r = torch.autograd.grad(out, x, e_r);
  forward mode: columns J e_c by the double-vjp: g(u) = J^T u is linear in u, so
    torch.autograd.grad(g(u), u, e_c) = J e_c (every built-in backward formula is itself
    differentiable; a custom autograd.Function's backward need not be, so with one of those
    in the graph forward mode goes to torch.func.jvp, which uses its own jvp rule).
Where that is not possible, or autograd refuses, auto computes it with torch.func instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.autograd.forward_ad as fwAD
from torch.utils._pytree import TreeSpec, tree_map

from derivs import _validate
from derivs._blocks import (
    Blocks,
    check_basis,
    chunks,
    columns_to_blocks,
    flatten,
    rows_to_blocks,
    split_aux,
    standard_basis,
    with_diff,
)


class UseTorchFunc(Exception):
    """The eager path cannot give torch.func's result here: compute it with torch.func."""


def allowed(args: Sequence[Any]) -> bool:
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


def walk(tensors: list[Any], own: list[torch.Tensor]) -> tuple[list[int], bool, bool]:
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
        raise UseTorchFunc from e


class EagerGraph:
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
            result = with_diff(func, args, argnums)(*self.inputs)
        out, aux = split_aux(result, has_aux)
        self.leaves, self.spec = flatten(out)
        self.used, other, self.custom = walk(self.leaves, self.inputs)
        if outer_grad and (other or (has_aux and walk(flatten(aux)[0], self.inputs)[1])):
            raise UseTorchFunc
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
            raise UseTorchFunc
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
                    raise UseTorchFunc from e
            # NOTE: J^T u that does not depend on u comes from a backward autograd cannot
            # differentiate (or one that is zero, like floor's): torch.func.jvp decides.
            if not all(g.requires_grad for g in grads):
                raise UseTorchFunc
            reached = walk(list(grads), us)[0]
            self.linear = ([us[j] for j in reached], [self.active[j] for j in reached], list(grads))
        us, leaves, live = self.linear
        if us:
            cols = _batched_grad(live, us, [tangents[i] for i in self.used])
            for k, c in zip(leaves, cols, strict=True):
                res[k] = c
        return res


def eager_fwd(
    graph: EagerGraph, diff: list[torch.Tensor], chunk_size: int | None, api: str
) -> Blocks:
    total = sum(x.numel() for x in diff)
    check_basis(api, total, total, _validate.itemsize_of(diff), chunk_size)
    pieces = [graph.push(standard_basis(s, e, diff)) for s, e in chunks(total, chunk_size)]
    return columns_to_blocks(graph.leaves, pieces, diff)


def eager_jacobian(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    has_aux: bool,
    chunk_size: int | None,
    api: str,
    forward: Callable[[int, int, torch.device], bool],
) -> tuple[Blocks, TreeSpec, Any]:
    """``auto`` without torch.func; raises ``UseTorchFunc`` where it cannot give its result.

    ``forward(out_numel, in_numel, device)`` picks the mode once the output size is known
    (``derivs.prefers_forward``; ``bench/auto_grid.py`` forces each mode to time it).
    """
    diff = [args[a] for a in argnums]
    graph = EagerGraph(func, args, argnums, has_aux)
    out_numel = sum(o.numel() for o in graph.leaves)
    if forward(out_numel, sum(x.numel() for x in diff), diff[0].device):
        blocks = eager_fwd(graph, diff, chunk_size, api)
    else:
        blocks = rows_to_blocks(graph, diff, chunk_size, api)
    return blocks, graph.spec, graph.aux
