"""The pieces every sparse kind is built from: the source namespace, custom Functions, ``Spec``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from ._basic import Shape
from ._caps import MAX_SEED
from ._expr import randn


class SteRound(torch.autograd.Function):
    """``round`` forward, identity backward: a straight-through estimator (Jacobian I)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        return None

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        return t


class NeighbourSum(torch.autograd.Function):
    """``x + x.roll(1, -1)`` with a hand-written backward (``g + g.roll(-1, -1)``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x + x.roll(1, -1)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        return None

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g + g.roll(-1, -1)

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        return t + t.roll(1, -1)


def _tensor(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


#: Names a sparse function's formula and constants may use (besides its arguments).
NAMESPACE: dict[str, Any] = {
    "tanh": torch.tanh,
    "sin": torch.sin,
    "cos": torch.cos,
    "softplus": F.softplus,
    "softmax": torch.softmax,
    "where": torch.where,
    "stack": torch.stack,
    "pad": F.pad,
    "conv1d": F.conv1d,
    "conv2d": F.conv2d,
    "conv_transpose1d": F.conv_transpose1d,
    "conv_transpose2d": F.conv_transpose2d,
    "ste_round": SteRound.apply,
    "neighbour_sum": NeighbourSum.apply,
    "randn": randn,
    "tensor": _tensor,
}


@dataclass
class Spec:
    """What a builder draws: the source of a function and its structure."""

    name: str
    kind: str
    arg_names: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    body: str
    structure: torch.Tensor  # (m, n) Jacobian, or (n, n) Hessian for scalar kinds
    consts: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    local: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None


def pairs_to_bool(rows: int, cols: int, pairs: Any) -> torch.Tensor:
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for i, j in pairs:
        out[i, j] = True
    return out


def seed(draw: st.DrawFn, k: int) -> int:
    # NOTE: as in strategies._functions, the position is folded into the seed so two weights
    # differ even when Hypothesis draws the same seed for both.
    return draw(st.integers(0, MAX_SEED)) * 100 + k


def coef(draw: st.DrawFn) -> float:
    # NOTE: positive coefficients: aliased terms of a small periodic stencil never cancel.
    return draw(st.sampled_from([1.0, 2.0, 0.5, 3.0]))


def wrap(draw: st.DrawFn, text: str) -> str:
    fn = draw(st.sampled_from(["", "sin", "tanh", "softplus"]))
    return f"{fn}({text})" if fn else text
