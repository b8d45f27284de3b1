"""The torch.autograd.functional adapter: jacobian, hessian, hvp and vhp in derivs' conventions.

torch.autograd.functional takes the inputs to differentiate as one tuple and evaluates
at once; the adapter turns that into derivs' ``transform(func, argnums)(*args)`` by holding
the other arguments fixed. It has no batch operators, no has_aux and no chunk_size, does
not run under torch.func transforms, and its ``hessian`` accepts scalar functions only
(its docstring: "func ... returns a Tensor with a single element").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.functional as AF

from derivs.conformance._common import of_selected, positions
from derivs.conformance._features import Features

Func = Callable[..., Any]
# NOTE: torch.autograd.functional is not annotated; typed handles keep mypy --strict useful.
_jacobian: Callable[..., Any] = AF.jacobian
_hessian: Callable[..., Any] = AF.hessian
_hvp: Callable[..., Any] = AF.hvp
_vhp: Callable[..., Any] = AF.vhp

# method -> torch.autograd.functional.jacobian keywords
JACOBIAN = {
    "reverse": {"vectorize": False, "strategy": "reverse-mode"},
    "reverse_vectorize": {"vectorize": True, "strategy": "reverse-mode"},
    "forward_vectorize": {"vectorize": True, "strategy": "forward-mode"},
}
# method -> torch.autograd.functional.hessian keywords
HESSIAN = {
    "reverse": {"vectorize": False, "outer_jacobian_strategy": "reverse-mode"},
    "reverse_vectorize": {"vectorize": True, "outer_jacobian_strategy": "reverse-mode"},
    "forward_vectorize": {"vectorize": True, "outer_jacobian_strategy": "forward-mode"},
}

FEATURES = Features(
    methods={
        "jacobian": tuple(JACOBIAN),
        "hessian": tuple(HESSIAN),
        "hvp": ("hvp",),
        "vhp": ("vhp",),
    },
    # create_graph=True keeps the graph to inputs that require grad; with the forward-mode
    # strategy it raises "create_graph=True and strategy="forward-mode" are not supported
    # together (yet)", so there results are detached and the feature is not declared.
    reverse_mode={"jacobian": ["reverse", "reverse_vectorize"]},
    vector_hessians=False,
    devices=None,
)


def _differentiable(args: tuple[Any, ...], forward: bool) -> bool:
    """create_graph=True only where the caller can use it (inputs that require grad), and
    never with the forward-mode strategy (torch.autograd.functional refuses the pair)."""
    return (
        not forward
        and torch.is_grad_enabled()
        and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    )


class AutogradFunctionalAdapter:
    """torch.autograd.functional behind the contract's jacobian, hessian, hvp and vhp."""

    name = "torch.autograd.functional"
    version = torch.__version__
    features = FEATURES

    def jacobian(self, func: Func, argnums: Any = 0, *, method: str = "reverse") -> Func:
        options = JACOBIAN[method]

        def jacobian_fn(*args: Any) -> Any:
            nums, single = positions(argnums, len(args))
            blocks = _jacobian(
                of_selected(func, args, nums),
                tuple(args[k] for k in nums),
                create_graph=_differentiable(args, options["strategy"] == "forward-mode"),
                **options,
            )
            return blocks[0] if single else tuple(blocks)

        return jacobian_fn

    def hessian(self, func: Func, argnums: Any = 0, *, method: str = "reverse") -> Func:
        options = HESSIAN[method]

        def hessian_fn(*args: Any) -> Any:
            nums, single = positions(argnums, len(args))
            blocks = _hessian(
                of_selected(func, args, nums),
                tuple(args[k] for k in nums),
                create_graph=_differentiable(
                    args, options["outer_jacobian_strategy"] == "forward-mode"
                ),
                **options,
            )
            return blocks[0][0] if single else tuple(tuple(row) for row in blocks)

        return hessian_fn

    def hvp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        tangents: tuple[Any, ...],
        *,
        method: str = "hvp",
    ) -> tuple[Any, ...]:
        return tuple(_hvp(func, primals, tangents)[1])

    def vhp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        cotangents: tuple[Any, ...],
        *,
        method: str = "vhp",
    ) -> tuple[Any, ...]:
        return tuple(_vhp(func, primals, cotangents)[1])


ADAPTER = AutogradFunctionalAdapter()
