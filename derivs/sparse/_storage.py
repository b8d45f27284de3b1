"""Storages and their elements: where the tracer keeps dependency rows.

Rows live on storages, not tensors: a tensor's elements are the storage elements its offset
and strides reach, so every view of a storage reads (and in-place ops write) the same rows.
"""

from __future__ import annotations

from typing import Any

import torch

from derivs.sparse._deps import Deps

_I64 = torch.int64


def key(t: torch.Tensor) -> int:
    """An identifier of ``t``'s storage, shared by all its views (sparse tensors: their own)."""
    if t.layout != torch.strided:
        return -id(t)
    return int(t.untyped_storage()._cdata)


def storage_numel(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes() // t.element_size()


def positions(t: torch.Tensor, numel: int) -> torch.Tensor | None:
    """The storage element of each element of ``t`` (row-major), or None when it is the identity."""
    if t.storage_offset() == 0 and t.numel() == numel and t.is_contiguous():
        return None
    pos = torch.tensor(t.storage_offset(), dtype=_I64)
    for size, stride in zip(t.shape, t.stride(), strict=True):
        pos = pos.unsqueeze(-1) + torch.arange(size) * stride
    return pos.reshape(-1)


def is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point or t.dtype.is_complex


def tensors_of(tree: Any) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts (ATen arguments and results)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    found: list[torch.Tensor] = []
    if isinstance(tree, tuple | list):
        for x in tree:
            if isinstance(x, torch.Tensor):
                found.append(x)
            elif isinstance(x, tuple | list | dict):
                found.extend(tensors_of(x))
    elif isinstance(tree, dict):
        found.extend(tensors_of(list(tree.values())))
    return found


class Storage:
    __slots__ = ("deps", "elem_size", "numel")

    def __init__(self, deps: Deps, elem_size: int, numel: int) -> None:
        self.deps = deps
        self.elem_size = elem_size
        self.numel = numel


def grow(st: Storage, t: torch.Tensor) -> None:
    """Empty rows for the elements a storage gained since (``resize_``)."""
    numel = t.untyped_storage().nbytes() // st.elem_size
    if numel > st.numel:
        ptr = st.deps.ptr
        ptr = torch.cat([ptr, ptr[-1:].expand(numel - st.numel)])
        st.deps = Deps(ptr, st.deps.seeds, st.deps.n_seeds)
        st.numel = numel
