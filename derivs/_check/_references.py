"""The oracles' side of a check: loop, fd and cs, first or second order, at one point or at
every sample of a batch, and their Hessians contracted into hvp/vhp references."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from derivs import _validate
from derivs import oracles as _oracles
from derivs._check._compare import BOUND
from derivs._check._setup import REFERENCE_K, InDims
from derivs._check._sources import Source, leaves, run

Tensor = torch.Tensor


class References:
    """The oracles of one check, computed once per order and point.

    The complex step is tried once per order; a function that rejects complex input (or is
    not holomorphic) is noted and the complex step is not tried again for that order.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        argnums: _validate.Argnums,
        chosen: tuple[str, ...],
        reference: Callable[..., Any] | None = None,
        k: float = REFERENCE_K,
    ) -> None:
        self.func, self.argnums = func, argnums
        self.loop, self.fd = "loop" in chosen, "fd" in chosen
        self.cs = {False: True, True: True}
        self.reference, self.k = reference, k
        self._evaluated = False
        self.notes: dict[str, str] = {}
        self._cache: dict[tuple[bool, int], list[Source]] = {}

    def at(
        self,
        grad: bool,
        points: list[tuple[Any, ...]],
        *,
        batched: InDims | None = None,
        full: tuple[Any, ...] = (),
    ) -> list[Source]:
        """The oracles at ``points``: one point, or every sample of a batch (stacked).

        ``grad``: second order (Hessians); ``batched`` and ``full``: the in_dims and the
        whole batch, for the loop oracle's batch forms.
        """
        key = (grad, len(points) if batched is None else -1)
        if batched is None and key in self._cache:
            return self._cache[key]
        found: list[Source] = []
        if self.loop:
            found.append(self._loop(grad, points[0], batched, full))
        if self.reference is not None:
            found.append(self._reference(self.reference, grad, points, batched is not None))
        elif self.fd:
            self._note_evaluation(points[0])
            estimate = partial(self._estimate, grad, points, batched is not None)
            if self.cs[grad]:
                found += self._complex_step(grad, estimate)
            base = {"vjp"} if grad else {"eval"}
            suffix = "(grad)" if grad else ""
            fd = run(
                f"fd{suffix}", True, base | {"o:fd"}, partial(estimate, "richardson"), estimate=True
            )
            found.append(fd)
        if batched is None:
            self._cache[key] = found
        return found

    def _note_evaluation(self, point: tuple[Any, ...]) -> None:
        """Say in the notes how fd and cs evaluate func, when they raise anything."""
        if self._evaluated:
            return
        self._evaluated = True
        try:
            summary = _oracles.evaluation(self.func, point, self.argnums).summary()
        except Exception:  # NOTE: func fails under the oracles: their rows say how
            return
        if summary:
            self.notes["evaluation"] = f"fd, cs: {summary}"

    def _reference(
        self,
        reference: Callable[..., Any],
        grad: bool,
        points: list[tuple[Any, ...]],
        stacked: bool,
    ) -> Source:
        """``reference``'s derivatives in float64, each block's error bound by the k-rule."""
        ref = _KRule(reference, self.argnums, self.k, grad)
        src = run("ref", True, {BOUND}, partial(ref.bounds, points, stacked), estimate=True)
        if src.status == "ok":
            self.notes.setdefault(f"reference{'(grad)' * grad}", ref.note())
        return src

    def _loop(
        self, grad: bool, point: tuple[Any, ...], batched: InDims | None, full: tuple[Any, ...]
    ) -> Source:
        tags = {"vjp", "d_vjp", "d_vjp_rev", "o:loop"} if grad else {"vjp", "o:loop"}
        if batched is None:
            loop = _oracles.loop_hessian if grad else _oracles.loop_jacobian
            return run("loop", True, tags, partial(loop, self.func, point, self.argnums))
        loop_b = _oracles.loop_batch_hessian if grad else _oracles.loop_batch_jacobian
        return run("loop", True, tags, partial(loop_b, self.func, full, self.argnums, batched))

    def _estimate(
        self, grad: bool, points: list[tuple[Any, ...]], stacked: bool, scheme: str
    ) -> Any:
        fd = _oracles.fd_hessian if grad else _oracles.fd_jacobian
        results = [fd(self.func, p, self.argnums, scheme=scheme) for p in points]
        return _stack_estimates(results) if stacked else results[0]

    def _complex_step(self, grad: bool, estimate: Callable[[str], Any]) -> list[Source]:
        """The complex step, or nothing (and a note) when func does not take it."""
        base = {"vjp"} if grad else {"eval"}
        cs = run(
            "cs(grad)" if grad else "cs",
            True,
            base | {"complex", "o:cs"},
            partial(estimate, "complex_step"),
            estimate=True,
            skip=(TypeError, ValueError),
        )
        if cs.status != "skip":
            return [cs]
        self.cs[grad] = False
        if not grad:
            self.cs[True] = False
        what = (
            "the complex step of the gradient (it needs a backward that is "
            "correct for complex input)"
            if grad
            else "the complex step"
        )
        self.notes.setdefault(cs.name, f"{what} does not apply here: {cs.note}")
        return []


class _KRule:
    """``check(reference=)``: the float64 derivatives of ``reference`` and, per block, the
    bound ``k (max|d_ref_low - d_ref64| + max|round(d_ref64) - d_ref64|)``.

    ``d_ref_low`` is the reference differentiated in func's dtype (its arguments as given,
    every more precise tensor it uses lowered); the rounding term is the error of the
    float64 answer stored in func's dtype, which even an exact kernel has (the atol that
    flash-attention's tests take from ``ref + 0.3 - 0.3 - ref``).
    """

    def __init__(
        self, reference: Callable[..., Any], argnums: _validate.Argnums, k: float, grad: bool
    ) -> None:
        self.reference, self.argnums, self.k = reference, argnums, k
        self.loop = _oracles.loop_hessian if grad else _oracles.loop_jacobian
        self.what = "second" if grad else "first"
        self.low = torch.float64
        self.errors: list[float] = []
        self.rounding: list[float] = []

    def bounds(
        self, points: list[tuple[Any, ...]], stacked: bool
    ) -> tuple[list[Tensor], list[Tensor]]:
        results = [self._at(p) for p in points]
        values = [torch.stack(col) for col in zip(*(r[0] for r in results), strict=True)]
        bounds = [torch.stack(col) for col in zip(*(r[1] for r in results), strict=True)]
        if not stacked:
            values, bounds = [v[0] for v in values], [b[0] for b in bounds]
        return values, bounds

    def _at(self, point: tuple[Any, ...]) -> tuple[list[Tensor], list[Tensor]]:
        nums = _validate.normalize_argnums("derivs.check", self.argnums, len(point))
        self.low = min((point[a].dtype for a in nums), key=lambda d: -torch.finfo(d).eps)
        wide = tuple(_cast(a, torch.float64) for a in point)
        exact = leaves(
            self.loop(_oracles.cast_computation(self.reference, torch.float64), wide, self.argnums)
        )
        narrow = tuple(_cast(a, self.low) for a in point)
        low = leaves(
            self.loop(_oracles.cast_computation(self.reference, self.low), narrow, self.argnums)
        )
        bounds = []
        for e, lo in zip(exact, low, strict=True):
            error = float((lo.double() - e).abs().max()) if e.numel() else 0.0
            rounding = float((e.to(self.low).double() - e).abs().max()) if e.numel() else 0.0
            self.errors.append(error)
            self.rounding.append(rounding)
            bounds.append(torch.full_like(e, self.k * (error + rounding)))
        return exact, bounds

    def note(self) -> str:
        low = str(self.low).removeprefix("torch.")
        return (
            f"reference: func's {self.what} derivatives ({low}) are compared with reference's "
            f"float64 ones (autograd); each block passes when max|d_func - d_ref64| <= "
            f"{self.k:g} x (reference's own {low} error, max|d_ref_{low} - d_ref64| = "
            f"{max(self.errors, default=0.0):.3g} at most, + the rounding to {low}, "
            f"{max(self.rounding, default=0.0):.3g} at most); fd and cs are not run on func"
        )


def _cast(a: Any, dtype: torch.dtype) -> Any:
    return a.detach().to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a


def _stack_estimates(estimates: list[_oracles.Estimate]) -> tuple[list[Tensor], list[Tensor]]:
    values = [leaves(e.value) for e in estimates]
    errors = [leaves(e.error) for e in estimates]
    return (
        [torch.stack(col) for col in zip(*values, strict=True)],
        [torch.stack(col) for col in zip(*errors, strict=True)],
    )


def contracted(src: Source, vs: list[Tensor], left: bool) -> Source:
    """An oracle's Hessian turned into an hvp/vhp oracle (errors contracted with ``|v|``)."""
    out = Source(src.name, src.oracle, src.tags, status=src.status, note=src.note)
    if src.leaves is None:
        return out
    n = len(vs)
    out.leaves = _contract(_nested(src.leaves, n), vs, left)
    if src.errors is not None:
        out.errors = _contract(_nested(src.errors, n), [v.abs() for v in vs], left)
    return out


def _nested(flat: list[Tensor], n: int) -> list[list[Tensor]]:
    return [flat[i * n : (i + 1) * n] for i in range(n)]


def _contract(H: list[list[Tensor]], vs: list[Tensor], left: bool) -> list[Tensor]:
    """``sum_j H[i][j] @ v_j`` (hvp) or, with ``left``, ``sum_i v_i @ H[i][j]`` (vhp)."""
    n = len(vs)
    if left:
        return [
            sum(
                (torch.tensordot(vs[i], H[i][j], dims=vs[i].dim()) for i in range(n)),
                torch.zeros_like(vs[j]),
            )
            for j in range(n)
        ]
    return [
        sum(
            (torch.tensordot(H[i][j], vs[j], dims=vs[j].dim()) for j in range(n)),
            torch.zeros_like(vs[i]),
        )
        for i in range(n)
    ]
