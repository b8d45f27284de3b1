"""The prepared plan: pattern, colouring, seeds and recovery for one input signature.

Detection and colouring are the expensive part and depend only on the function and the
shapes (for a global or given pattern), so a plan is made once per input signature and
evaluated at every point of it: the compressed products, one gather, the layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from derivs import _validate
from derivs.sparse import _eval
from derivs.sparse._coloring import Coloring, recovery_index
from derivs.sparse._pattern import Shape, SparsityPattern
from derivs.sparse._recover import Recovery
from derivs.sparse._verify import ProductCheck, guard_vector

_GUARD_SEEDS = itertools.count(0)


def signature(args: Sequence[Any], argnums: tuple[int, ...]) -> tuple[Any, ...] | None:
    """What a plan depends on besides the function: argnums, tensor shapes, dtypes, devices,
    the other arguments' values. None when an argument is not hashable (no reuse)."""
    parts: list[Any] = [argnums]
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append((tuple(a.shape), a.dtype, a.device, a.layout))
            continue
        try:
            hash(a)
        except TypeError:
            return None
        parts.append((type(a), a))
    return tuple(parts)


class _Route:
    """One way to evaluate a plan: a colouring, its seeds, its gather index and its guard."""

    def __init__(
        self,
        api: str,
        coloring: Coloring,
        diff: Sequence[torch.Tensor],
        *,
        hessian: bool,
        out_shape: Shape,
        out_dtype: torch.dtype,
        guard: bool,
    ) -> None:
        self.coloring = coloring
        self.hessian = hessian
        self.reverse = coloring.mode == "row"
        device = diff[0].device
        pattern = coloring.pattern
        self.index = recovery_index(coloring).to(device)
        seed_dtype = out_dtype if self.reverse else diff[0].dtype
        seed = coloring.seed(dtype=seed_dtype, device=device)
        self.check: ProductCheck | None = None
        if guard and pattern.shape[0] * pattern.shape[1]:
            vec = guard_vector(seed.shape[1], next(_GUARD_SEEDS), seed_dtype, device)
            self.check = ProductCheck(api, coloring, hessian, vec, out_shape)
            seed = torch.cat([seed, vec[None]])
        self.k = seed.shape[0]
        length = pattern.shape[1] if (self.reverse or hessian) else pattern.shape[0]
        _validate.check_size(
            api,
            "the compressed matrix",
            self.k * length,
            seed.element_size(),
            "the Jacobian is too dense for this budget",
        )
        if self.reverse:
            self.seeds = [seed.reshape(self.k, *out_shape)]
        else:
            sizes = [x.numel() for x in diff]
            self.seeds = [
                piece.reshape(self.k, *x.shape).to(x.dtype).contiguous()
                for piece, x in zip(seed.split(sizes, 1), diff, strict=True)  # type: ignore[no-untyped-call]
            ]

    def compressed(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
        chunk_size: int | None,
    ) -> torch.Tensor:
        """The compressed matrix at ``args``: one product per seed, seeds first, ``(k, L)``."""
        if self.reverse:
            return _eval.vjp_rows(func, args, argnums, self.seeds[0], chunk_size)
        if self.hessian:
            return _eval.hvp_rows(func, args, argnums, self.seeds, chunk_size)
        return _eval.jvp_rows(func, args, argnums, self.seeds, chunk_size)


class SparsePlan:
    """Detection and colouring done for one input signature; call it to evaluate.

    Made by ``derivs.sparse_jacobian(...).prepare(*args)`` (or the Hessian's); every call of
    the transform with arguments of the same signature reuses it.

    Attributes:
        pattern: the :class:`SparsityPattern` (its ``kind`` says where it holds).
        coloring: the :class:`Coloring` whose colours are the products.
        num_colors: products per evaluation (plus one with ``guard=True``).
        mode: ``"fwd"`` or ``"rev"`` (Jacobians), ``"star"`` or ``"column"`` (Hessians);
            ``"fwd/rev"`` for ``mode="auto"`` on a structurally symmetric pattern, whose
            column and row colourings are the same: eager calls then take reverse mode (one
            batched backward, cheaper than forward mode's double-vjp) and calls inside
            torch.compile or other transforms forward mode (``jvp``, cheaper there).
    """

    def __init__(
        self,
        api: str,
        func: Callable[..., Any],
        args: Sequence[Any],
        argnums: tuple[int, ...],
        pattern: SparsityPattern,
        coloring: Coloring,
        *,
        hessian: bool,
        out_shape: Shape,
        out_dtype: torch.dtype,
        layout: str,
        nested: str,
        chunk_size: int | None,
        guard: bool,
        twin: Coloring | None = None,
    ) -> None:
        self.api = api
        self.pattern = pattern
        self.coloring = coloring
        self.num_colors = coloring.num_colors
        self.mode = {"column": "column" if hessian else "fwd", "row": "rev", "star": "star"}[
            coloring.mode
        ]
        self.layout = layout
        self.signature = signature(args, argnums)
        self._func = func
        self._argnums = argnums
        self._chunk_size = chunk_size
        diff = [args[a] for a in argnums]
        self._device = diff[0].device
        self._values_dtype = diff[0].dtype
        in_shapes = [tuple(x.shape) for x in diff]
        row_shapes: list[Shape] = list(in_shapes) if hessian else [out_shape]
        self._recovery = Recovery(
            api,
            pattern,
            row_shapes,
            in_shapes,
            [x.dtype for x in diff],
            layout,
            nested,
            self._device,
        )
        kw: dict[str, Any] = dict(
            hessian=hessian, out_shape=out_shape, out_dtype=out_dtype, guard=guard
        )
        self._route = _Route(api, coloring, diff, **kw)
        self._eager_route = self._route
        if twin is not None:
            self._eager_route = _Route(api, twin, diff, **kw)
            self.mode = "fwd/rev"

    def evaluate(self, args: Sequence[Any]) -> Any:
        """The sparse matrix at ``args`` (which must have this plan's signature)."""
        return self.assemble(self.values(args))

    def assemble(self, values: torch.Tensor) -> Any:
        """The result in the plan's layout from the nonzeros' ``values`` (pattern order).

        Under torch.compile the sparse layouts are built outside the graph (dynamo cannot
        trace their constructors); callers keep this call in their own frame, so that the
        graph break costs one resume, not one per nested frame.
        """
        return self._recovery.assemble(values)

    def values(self, args: Sequence[Any]) -> torch.Tensor:
        """The values of the pattern's nonzeros at ``args``, in pattern order."""
        route = self._route
        if route is not self._eager_route and _eval.eager_allowed(args):
            route = self._eager_route
        if route.k == 0:
            values = torch.zeros(0, dtype=self._values_dtype, device=self._device)
        else:
            comp = route.compressed(self._func, args, self._argnums, self._chunk_size)
            # NOTE: index_select on the flat view: 31 us for 53,792 nonzeros where take needs
            # 68 us and advanced indexing 96 us (eager CPU; compiled, all three ~40 us).
            values = comp.reshape(-1).index_select(0, route.index)
            if route.check is not None:
                _checked(route.check, comp[-1], values, self._func, args, self._argnums)
        return values

    def __call__(self, *args: Any) -> Any:
        found = signature(args, self._argnums)
        if found != self.signature:
            raise ValueError(
                f"{self.api}: this plan was prepared for arguments {_describe(self.signature)}, "
                f"got {_describe(found)}; prepare a plan for them (or call the transform, "
                f"which keeps one plan per signature)"
            )
        return self.assemble(self.values(args))

    def __repr__(self) -> str:
        return (
            f"SparsePlan({self.api}, mode={self.mode!r}, {self.num_colors} colours, "
            f"{self.pattern!r}, layout={self.layout!r})"
        )


@torch.compiler.disable  # type: ignore[untyped-decorator]
def _checked(check: ProductCheck, exact: torch.Tensor, values: torch.Tensor, *rest: Any) -> None:
    # NOTE: the check branches on values (and may compute exact rows): run it eagerly, so
    # that torch.compile compiles the evaluation and leaves the check out of the graph.
    check.check(exact, values, *rest)


def _describe(sig: tuple[Any, ...] | None) -> str:
    if sig is None:
        return "(some not hashable)"
    shown = []
    for part in sig[1:]:
        if isinstance(part, tuple) and len(part) == 4 and isinstance(part[1], torch.dtype):
            shown.append(f"{str(part[1]).removeprefix('torch.')}{list(part[0])} on {part[2]}")
        else:
            shown.append(repr(part[1]) if isinstance(part, tuple) else repr(part))
    return "(" + ", ".join(shown) + ")"
