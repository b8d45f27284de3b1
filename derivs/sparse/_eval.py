"""Compressed evaluation: one Jacobian-vector, vector-Jacobian or Hessian-vector product per
colour, batched over the seed matrix.

* ``jvp_rows``: ``J @ s_k`` for each seed ``s_k`` (forward mode, column colourings);
* ``vjp_rows``: ``s_k^T @ J`` (reverse mode, row colourings);
* ``hvp_rows``: ``H @ s_k`` (Hessians).

Each returns the products stacked, seeds first: ``(k, m)`` or ``(k, n)``.

In plain eager code the products come from one autograd graph of ``func``, batched over the
seeds by ``torch.func.vmap`` over ``torch.autograd.grad`` (the graph ``derivs.jacobian``'s
``auto`` records: ``derivs._eager.EagerGraph``): forward mode by the double-vjp, Hessians
by reverse over reverse. That skips the fixed cost torch.func pays to enter ``jvp``/``vjp``
on every call, most of the time of a compressed evaluation with few colours. Wherever that
graph cannot give torch.func's result (inside another transform, under ``torch.compile``, an
input requiring grad, a custom ``autograd.Function`` in forward mode, ...), the products come
from ``torch.func`` (``vmap`` over ``jvp``, ``vjp``, ``jvp`` of ``grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs import _validate
from derivs._blocks import with_diff
from derivs._eager import EagerGraph, UseTorchFunc, allowed

Func = Callable[..., Any]


def eager_allowed(args: Sequence[Any]) -> bool:
    """Whether the products may come from one autograd graph (``derivs.jacobian``'s rule)."""
    return allowed(args)


def _split(seeds: Sequence[torch.Tensor], chunk_size: int | None) -> list[list[torch.Tensor]]:
    """The seeds (batch dim first) in chunks of ``chunk_size`` rows."""
    k = seeds[0].shape[0]
    step = k if chunk_size is None else chunk_size
    return [[s[lo : lo + step] for s in seeds] for lo in range(0, k, max(step, 1))]


def _flat_cat(parts: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Per-input results ``(k, *in_i)`` as one ``(k, n)`` matrix."""
    flat = [p.reshape(k, -1) for p in parts]
    return flat[0] if len(flat) == 1 else torch.cat(flat, 1)


def _rows(chunks: list[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _gradient(func: Func, argnums: tuple[int, ...]) -> Func:
    """``func``'s gradient with respect to ``args[argnums]``, differentiable again (eager)."""

    def gradient(*args: Any) -> tuple[torch.Tensor, ...]:
        out = func(*args)
        xs = [args[a] for a in argnums]
        if not out.requires_grad:
            return tuple(torch.zeros_like(x) for x in xs)
        grads = torch.autograd.grad(out, xs, create_graph=True, allow_unused=True)
        return tuple(
            torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads, strict=True)
        )

    return gradient


def jvp_rows(
    func: Func,
    args: Sequence[Any],
    argnums: tuple[int, ...],
    tangents: Sequence[torch.Tensor],
    chunk_size: int | None,
) -> torch.Tensor:
    """``J @ t`` for each row ``t`` of ``tangents`` (one tensor per argnum, ``(k, *in_i)``)."""
    k = tangents[0].shape[0]
    if allowed(args):
        try:
            graph = EagerGraph(func, args, argnums, False)
            chunks = [graph.push(list(c))[0] for c in _split(tangents, chunk_size)]
            return _rows([c.reshape(c.shape[0], -1) for c in chunks])
        except UseTorchFunc:
            pass
    g = with_diff(func, args, argnums)
    diff = tuple(_validate.without_overlap(args[a]) for a in argnums)

    def push(*t: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(g, diff, t)[1]  # type: ignore[no-any-return]

    out = torch.func.vmap(push, chunk_size=chunk_size)(*tangents)
    return out.reshape(k, -1)


def vjp_rows(
    func: Func,
    args: Sequence[Any],
    argnums: tuple[int, ...],
    cotangents: torch.Tensor,
    chunk_size: int | None,
) -> torch.Tensor:
    """``c^T J`` for each row ``c`` of ``cotangents`` (``(k, *out)``), as ``(k, n)``."""
    k = cotangents.shape[0]
    if allowed(args):
        try:
            graph = EagerGraph(func, args, argnums, False)
            chunks = [graph.pull(c) for c in _split([cotangents], chunk_size)]
            return _rows([_flat_cat(c, c[0].shape[0]) for c in chunks])
        except UseTorchFunc:
            pass
    g = with_diff(func, args, argnums)
    diff = [args[a] for a in argnums]
    vjp_fn = torch.func.vjp(g, *diff)[1]
    return _flat_cat(torch.func.vmap(vjp_fn, chunk_size=chunk_size)(cotangents), k)


def hvp_rows(
    func: Func,
    args: Sequence[Any],
    argnums: tuple[int, ...],
    tangents: Sequence[torch.Tensor],
    chunk_size: int | None,
) -> torch.Tensor:
    """``H @ t`` for each row ``t`` of ``tangents`` (one tensor per argnum), as ``(k, n)``.

    Eager: rows of the Jacobian of the gradient (reverse over reverse; ``t^T H = (H t)^T``
    for a symmetric ``H``). torch.func: ``jvp`` of ``grad`` (forward over reverse).
    """
    k = tangents[0].shape[0]
    if allowed(args):
        try:
            graph = EagerGraph(_gradient(func, argnums), args, argnums, False)
            chunks = [graph.pull(list(c)) for c in _split(tangents, chunk_size)]
            return _rows([_flat_cat(c, c[0].shape[0]) for c in chunks])
        except UseTorchFunc:
            pass
    g = with_diff(func, args, argnums)
    diff = tuple(_validate.without_overlap(args[a]) for a in argnums)
    grad = torch.func.grad(g, argnums=tuple(range(len(diff))))

    def push(*t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.func.jvp(grad, diff, t)[1]  # type: ignore[no-any-return]

    return _flat_cat(torch.func.vmap(push, chunk_size=chunk_size)(*tangents), k)
