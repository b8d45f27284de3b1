"""``derivs.check`` over pytree arguments: a model's parameter dict, a list or tuple of tensors.

The check runs on the flat problem: ``func`` as a function of the leaves, ``argnums`` over
them (``derivs._pytree.Flat``, the operators' own flattening), ``batched`` and ``reference``
carried over. Its report is the flat report with the original ``argnums`` and a note
naming the leaf each flat argument is (``args[1] is args[0]['0.weight']``), so a row's block
index reads back to a parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_map

from derivs import _validate
from derivs._check._report import CheckReport
from derivs._check._setup import API
from derivs._pytree import Flat, batched_positions, is_pytree, paths


def has_pytrees(args: tuple[Any, ...], argnums: object, batched: object) -> bool:
    """Whether an argument to differentiate (or a batched one) is a pytree; False for
    ``argnums`` or ``batched`` that ``check`` refuses (it explains why)."""
    n = len(args)
    if isinstance(argnums, bool) or not isinstance(argnums, int | tuple):
        return False
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    if not all(isinstance(a, int) and not isinstance(a, bool) and -n <= a < n for a in nums):
        return False
    positions = {a % n for a in nums} | set(batched_positions(batched, n))
    return any(is_pytree(args[k]) for k in positions)


class FlatCheck:
    """The flat problem of a check whose differentiated arguments include pytrees."""

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        argnums: _validate.Argnums,
        batched: Any,
        reference: Callable[..., Any] | None,
    ) -> None:
        self.argnums = argnums
        self.given = args
        self.original = _validate.normalize_argnums(API, argnums, len(args))
        also = batched_positions(batched, len(args))
        self.flat = Flat(API, args, self.original, also=also)
        self.func = self.flat.wrap(func)
        self.args = self.flat.args
        self.nums = self.flat.nums
        self.batched = None if batched is None else self.flat.in_dims(API, batched, len(args))
        self.reference = None if reference is None else self.flat.wrap(reference)

    @property
    def trivial(self) -> bool:
        return self.flat.trivial

    def note(self) -> str:
        """Which leaf each flat argument is."""
        names = []
        for a, spec, (start, stop) in zip(
            self.original, self.flat.specs, self.flat.groups, strict=True
        ):
            if spec is None:
                names.append(f"args[{self.nums[start]}] is args[{a}]")
            else:
                names += [
                    f"args[{n}] is args[{a}]{path}"
                    for n, path in zip(self.nums[start:stop], paths(spec), strict=True)
                ]
        return (
            f"pytree arguments are checked by their leaves, as separate arguments "
            f"(argnums={self.nums}): " + ", ".join(names)
        )

    def report(self, flat: CheckReport) -> CheckReport:
        """The flat report, for the original arguments."""
        return dataclasses.replace(
            flat,
            inputs=self.inputs(flat.inputs),
            argnums=self.argnums,
            notes=(*flat.notes, self.note()),
        )

    def inputs(self, flat: str) -> str:
        """``f({'w': float64[2, 3], 'b': float64[2]}*, float64[4, 3])``, from the flat one's name."""
        args = self.flat.rebuild(self.args) if self.batched is None else self.given
        parts = [
            str(tree_map(_Shape.of, a)) + ("*" if k in self.original else "")
            for k, a in enumerate(args)
        ]
        return f"{flat.split('(', 1)[0]}({', '.join(parts)})"


class _Shape:
    """A leaf as the report's header writes it: ``float64[2, 3]``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    @classmethod
    def of(cls, leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return cls(type(leaf).__name__)
        return cls(f"{str(leaf.dtype).removeprefix('torch.')}[{', '.join(map(str, leaf.shape))}]")
