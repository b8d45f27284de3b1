"""The guard: one random product checked against the recovered matrix.

With ``guard=True`` the seed matrix gets one more row, a random vector ``v``, so the same
batched evaluation also returns the exact product (``J @ v``, ``u^T J`` or ``H @ v``). The
recovered matrix times ``v`` must agree with it to rounding; a nonzero the pattern missed
(a wrong given pattern, a local pattern used away from its point) shows up as a difference.
Only then are the flagged rows (columns, in reverse mode) computed exactly, one product
each, to name the entries missed: rounding alone never raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs._blocks import with_diff
from derivs._validate import without_overlap
from derivs.sparse._coloring import Coloring

# NOTE: how many flagged rows (columns) are computed exactly to name the missed entries, and
# how many entries the message lists.
_MAX_EXAMINED = 16
_MAX_LISTED = 8


class SparsityError(ValueError):
    """The guard found nonzeros outside the pattern (or recovered values that are wrong).

    Attributes:
        missed: ``[(row, col, value), ...]``: entries of the matrix ``(m, n)`` outside the
            pattern whose exact value is nonzero (the first few found).
        wrong: the same for entries inside the pattern recovered with a wrong value.
    """

    def __init__(
        self,
        message: str,
        missed: list[tuple[int, int, float]],
        wrong: list[tuple[int, int, float]],
    ) -> None:
        super().__init__(message)
        self.missed = missed
        self.wrong = wrong


def guard_vector(size: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Entries ``±U(1, 2)``: no entry small enough to hide a missed nonzero behind it."""
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (size,), generator=gen) * 2 - 1
    mag = 1 + torch.rand(size, generator=gen, dtype=torch.float64)
    return (sign * mag).to(dtype=dtype, device=device)


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _flagged(
    exact: torch.Tensor, recovered: torch.Tensor, bound: torch.Tensor, width: int
) -> torch.Tensor:
    """Positions where ``exact`` and ``recovered`` differ beyond rounding (norm-wise, as in
    ``derivs.testing``: 8 eps relative plus 32 eps sqrt(width) of the largest magnitude)."""
    eps = _eps(exact.dtype)
    scale = torch.maximum(bound.max(), exact.abs().max()) if bound.numel() else bound.sum()
    tol = 8 * eps * exact.abs() + 32 * eps * math.sqrt(max(width, 1)) * scale
    return (exact - recovered).abs() > tol


class ProductCheck:
    """The check behind ``guard=True``: everything it needs of a plan, and the check itself."""

    def __init__(
        self,
        api: str,
        coloring: Coloring,
        hessian: bool,
        vector: torch.Tensor,
        out_shape: tuple[int, ...],
    ) -> None:
        self.api = api
        self.coloring = coloring
        self.hessian = hessian
        self.vector = vector
        self.out_shape = out_shape
        p = coloring.pattern
        self.reverse = coloring.mode == "row"
        dev = vector.device
        # NOTE: in reverse mode the product is u^T J: the roles of rows and columns swap.
        self.out_idx = (p.cols if self.reverse else p.rows).to(dev)
        self.in_idx = (p.rows if self.reverse else p.cols).to(dev)
        self.length = p.shape[1] if self.reverse else p.shape[0]
        self.width = p.max_per_col if self.reverse else p.max_per_row

    def check(
        self,
        exact: torch.Tensor,
        values: torch.Tensor,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
    ) -> None:
        """Raise ``SparsityError`` if ``exact`` (the product with ``vector``) betrays a miss."""
        v = self.vector[self.in_idx]
        recovered = exact.new_zeros(self.length).index_add(0, self.out_idx, values * v)
        bound = exact.new_zeros(self.length).index_add(0, self.out_idx, (values * v).abs())
        flagged = _flagged(exact.detach(), recovered.detach(), bound.detach(), self.width)
        if bool(flagged.any()):
            self._locate(flagged, exact - recovered, values, func, args, argnums)

    def _locate(
        self,
        flagged: torch.Tensor,
        diff: torch.Tensor,
        values: torch.Tensor,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
    ) -> None:
        lines = flagged.nonzero().reshape(-1)
        worst = torch.argsort(diff.detach().abs()[lines], descending=True)[:_MAX_EXAMINED]
        lines = lines[worst]
        exact = self._exact_lines(lines, func, args, argnums).detach()
        p = self.coloring.pattern
        slot = torch.full((self.length,), -1, dtype=torch.int64, device=lines.device)
        slot[lines] = torch.arange(lines.numel(), device=lines.device)
        mine = slot[self.out_idx] >= 0
        width = self.coloring.pattern.shape[0 if self.reverse else 1]
        recovered = exact.new_zeros(exact.shape)
        inside = torch.zeros(exact.shape, dtype=torch.bool, device=exact.device)
        at = (slot[self.out_idx][mine], self.in_idx[mine])
        recovered[at] = values.detach()[mine].to(exact.dtype)
        inside[at] = True
        missed = (exact != 0) & ~inside
        wrong = inside & _flagged(exact, recovered, recovered.abs(), width)
        if not bool(missed.any() or wrong.any()):
            return  # the single product's rounding, not a wrong entry
        raise self._error(lines, exact, recovered, missed, wrong, p.kind)

    def _exact_lines(
        self,
        lines: torch.Tensor,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
    ) -> torch.Tensor:
        """Rows ``lines`` of the matrix (its columns in reverse mode), ``(len(lines), width)``."""
        g = with_diff(func, args, argnums)
        diff = tuple(without_overlap(args[a]) for a in argnums)
        sizes = [x.numel() for x in diff]
        r = lines.numel()
        if self.reverse:  # columns J e_j
            basis = torch.zeros((r, sum(sizes)), dtype=diff[0].dtype, device=lines.device)
            basis[torch.arange(r), lines] = 1
            tangents = [
                piece.reshape(r, *x.shape)
                for piece, x in zip(basis.split(sizes, 1), diff, strict=True)  # type: ignore[no-untyped-call]
            ]

            def push(*t: torch.Tensor) -> torch.Tensor:
                return torch.func.jvp(g, diff, t)[1]  # type: ignore[no-any-return]

            return torch.func.vmap(push)(*tangents).reshape(r, -1)
        if self.hessian:  # rows of H: H e_i
            basis = torch.zeros((r, sum(sizes)), dtype=diff[0].dtype, device=lines.device)
            basis[torch.arange(r), lines] = 1
            tangents = [
                piece.reshape(r, *x.shape)
                for piece, x in zip(basis.split(sizes, 1), diff, strict=True)  # type: ignore[no-untyped-call]
            ]
            grad = torch.func.grad(g, argnums=tuple(range(len(diff))))

            def hvp(*t: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return torch.func.jvp(grad, diff, t)[1]  # type: ignore[no-any-return]

            parts = torch.func.vmap(hvp)(*tangents)
            return torch.cat([q.reshape(r, -1) for q in parts], 1)
        res = torch.func.vjp(g, *diff)
        out, vjp_fn = res[0], res[1]
        basis = torch.zeros((r, out.numel()), dtype=out.dtype, device=lines.device)
        basis[torch.arange(r), lines] = 1
        parts = torch.func.vmap(vjp_fn)(basis.reshape(r, *out.shape))
        return torch.cat([q.reshape(r, -1) for q in parts], 1)

    def _error(
        self,
        lines: torch.Tensor,
        exact: torch.Tensor,
        recovered: torch.Tensor,
        missed: torch.Tensor,
        wrong: torch.Tensor,
        kind: str,
    ) -> SparsityError:
        def entries(mask: torch.Tensor, source: torch.Tensor) -> list[tuple[int, int, float]]:
            found = mask.nonzero()[:_MAX_LISTED]
            out = []
            for slot, other in found.tolist():
                line = int(lines[slot])
                i, j = (other, line) if self.reverse else (line, other)
                out.append((i, j, float(source[slot, other])))
            return out

        missed_list = entries(missed, exact)
        wrong_list = entries(wrong, recovered)
        what = "Hessian" if self.hessian else "Jacobian"
        parts = []
        if missed_list:
            listed = ", ".join(f"({i}, {j}) = {v:.3g}" for i, j, v in missed_list)
            parts.append(
                f"the {kind} pattern misses {int(missed.sum())} nonzero(s) of the {what} "
                f"(at least; (row, col) of the {self.coloring.pattern.shape[0]} x "
                f"{self.coloring.pattern.shape[1]} matrix): {listed}"
            )
        if wrong_list:
            listed = ", ".join(f"({i}, {j}) recovered as {v:.3g}" for i, j, v in wrong_list)
            parts.append(f"{int(wrong.sum())} entries were recovered wrong: {listed}")
        hint = (
            "give a pattern that holds every nonzero, or use pattern='global'"
            if kind != "global"
            else "please report this: a global pattern must hold every nonzero"
        )
        return SparsityError(
            f"{self.api}: guard: {'; '.join(parts)}; {hint}", missed_list, wrong_list
        )
