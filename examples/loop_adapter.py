"""A user's own implementation under test: Jacobians, Hessians and products by hand-written loops.

Run derivs' properties against it::

    pytest --impl examples.loop_adapter:ADAPTER

It is built from ``torch.autograd.grad`` alone (one call per output element, one more per
gradient entry for Hessians), so it neither composes with vmap nor takes has_aux or
chunk_size: it declares none of those features, and the properties that need them are
skipped with that reason. It has no batch operators. ``examples/wrong_adapter.py`` plants
two bugs in it that the suite catches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs.conformance import Features

Func = Callable[..., Any]


def _positions(argnums: int | tuple[int, ...], n: int) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, int):
        return (argnums % n,), True
    return tuple(a % n for a in argnums), False


def _leaves(args: Sequence[Any], nums: tuple[int, ...]) -> tuple[list[Any], list[torch.Tensor]]:
    """Fresh leaves for the differentiated arguments: the caller's tensors are never touched."""
    full = list(args)
    diff = [full[k].detach().requires_grad_() for k in nums]
    for k, leaf in zip(nums, diff, strict=True):
        full[k] = leaf
    return full, diff


def _grads(out: torch.Tensor, diff: list[torch.Tensor], **kwargs: Any) -> list[torch.Tensor]:
    """d out / d diff, zeros where out does not depend on an input."""
    if not out.requires_grad:
        return [torch.zeros_like(d) for d in diff]
    grads = torch.autograd.grad(out, diff, allow_unused=True, **kwargs)
    return [torch.zeros_like(d) if g is None else g for d, g in zip(diff, grads, strict=True)]


def jacobian_rows(
    func: Func, args: Sequence[Any], nums: tuple[int, ...]
) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """The output and, per differentiated input, one gradient per output element."""
    full, diff = _leaves(args, nums)
    with torch.enable_grad():
        out = func(*full)
        rows: list[list[torch.Tensor]] = [[] for _ in diff]
        for element in out.reshape(-1):
            for row, g in zip(rows, _grads(element, diff, retain_graph=True), strict=True):
                row.append(g.detach())
    return out.detach(), rows


def _stack(
    rows: list[torch.Tensor], out: torch.Tensor, like: torch.Tensor, tail: tuple[int, ...]
) -> torch.Tensor:
    """Rows (one per output element) as one block of shape (*out.shape, *tail)."""
    if not rows:
        return torch.zeros((*out.shape, *tail), dtype=like.dtype, device=like.device)
    return torch.stack(rows).reshape((*out.shape, *tail))


def _hessian_blocks(
    func: Func, args: Sequence[Any], nums: tuple[int, ...]
) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """H[i][j]: every second derivative, one grad per output element and gradient entry."""
    full, diff = _leaves(args, nums)
    with torch.enable_grad():
        out = func(*full)
        per = [[[] for _ in diff] for _ in diff]  # per[i][j]: rows of H[i][j]
        for element in out.reshape(-1):
            for i, g in enumerate(_grads(element, diff, retain_graph=True, create_graph=True)):
                rows = [_grads(entry, diff, retain_graph=True) for entry in g.reshape(-1)]
                for j, d in enumerate(diff):
                    per[i][j].append(
                        torch.stack([r[j] for r in rows]).reshape((*g.shape, *d.shape))
                        if rows
                        else torch.zeros((*g.shape, *d.shape), dtype=d.dtype, device=d.device)
                    )
    blocks = [
        [_stack(per[i][j], out, di, (*di.shape, *dj.shape)).detach() for j, dj in enumerate(diff)]
        for i, di in enumerate(diff)
    ]
    return out.detach(), blocks


class LoopAdapter:
    """jacobian, hessian, hvp and vhp by loops over torch.autograd.grad."""

    name = "loop-example"
    version = "1.0"
    features = Features(
        methods={
            "jacobian": ["loop"],
            "hessian": ["loop"],
            "hvp": ["double_backward"],
            "vhp": ["double_backward"],
        },
        vector_hessians={"hessian": True},
    )

    def jacobian(self, func: Func, argnums: Any = 0, *, method: str = "loop") -> Func:
        def jacobian_fn(*args: Any) -> Any:
            nums, single = _positions(argnums, len(args))
            out, rows = jacobian_rows(func, args, nums)
            blocks = tuple(self.assemble(r, out, args[k]) for r, k in zip(rows, nums, strict=True))
            return blocks[0] if single else blocks

        return jacobian_fn

    def assemble(
        self, rows: list[torch.Tensor], out: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        """One Jacobian block, shape (*out.shape, *like.shape), from its rows."""
        return _stack(rows, out, like, tuple(like.shape))

    def hessian(self, func: Func, argnums: Any = 0, *, method: str = "loop") -> Func:
        def hessian_fn(*args: Any) -> Any:
            nums, single = _positions(argnums, len(args))
            _, blocks = _hessian_blocks(func, args, nums)
            blocks = self.mixed(blocks)
            return blocks[0][0] if single else tuple(tuple(row) for row in blocks)

        return hessian_fn

    def mixed(self, blocks: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        """The Hessian's blocks as computed (the wrong adapter overrides this)."""
        return blocks

    def hvp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        tangents: tuple[Any, ...],
        *,
        method: str = "double_backward",
    ) -> tuple[Any, ...]:
        """H v by differentiating <grad f, v> (the Hessian is symmetric)."""
        full, diff = _leaves(primals, tuple(range(len(primals))))
        with torch.enable_grad():
            grads = _grads(func(*full), diff, create_graph=True)
            inner = sum((g * v).sum() for g, v in zip(grads, tangents, strict=True))
            return tuple(g.detach() for g in _grads(inner, diff))  # type: ignore[arg-type]

    def vhp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        cotangents: tuple[Any, ...],
        *,
        method: str = "double_backward",
    ) -> tuple[Any, ...]:
        return self.hvp(func, primals, cotangents)


ADAPTER = LoopAdapter()
