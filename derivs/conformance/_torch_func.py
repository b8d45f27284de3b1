"""The torch.func adapter: jacrev, jacfwd, hessian, vmap, grad, jvp and vjp in derivs' conventions.

Each method is a direct spelling of torch.func (the tutorial's); the adapter adds nothing
but the argument order, so a failure is torch.func's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

from derivs.conformance._common import of_selected, positions
from derivs.conformance._features import Features

Func = Callable[..., Any]

JACOBIAN = ("jacrev", "jacfwd", "vjp_vmap")
HESSIAN = ("hessian", "jacrev_jacrev", "jacfwd_jacfwd", "jacrev_jacfwd")
Transform = Callable[..., Func]
_PAIRS: dict[str, tuple[Transform, Transform]] = {
    "hessian": (jacfwd, jacrev),
    "jacrev_jacrev": (jacrev, jacrev),
    "jacfwd_jacfwd": (jacfwd, jacfwd),
    "jacrev_jacfwd": (jacrev, jacfwd),
}

FEATURES = Features(
    methods={
        "jacobian": JACOBIAN,
        "hessian": HESSIAN,
        "batch_jacobian": ("vmap_jacrev", "vmap_jacfwd"),
        "batch_hessian": ("vmap_hessian",),
        "hvp": ("jvp_grad", "vjp_grad"),
        "vhp": ("vjp_grad",),
    },
    vmap=True,
    forward_mode={"jacobian": True},
    reverse_mode={"jacobian": True},
    has_aux={"jacobian": True},
    # jacrev and vmap take chunk_size; jacfwd and hessian do not
    chunk_size={"jacobian": ["jacrev", "vjp_vmap"], "batch_jacobian": True},
    in_dims={"batch_jacobian": True, "batch_hessian": True},
    whole_batch=False,
    vector_hessians={"hessian": True, "batch_hessian": True},
    # NOTE: the adapter's own vjp_vmap builds the basis from one output tensor and reshapes
    # one block per argument: tensors only.
    pytrees={
        "jacobian": ["jacrev", "jacfwd"],
        "hessian": True,
        "batch_jacobian": True,
        "batch_hessian": True,
        "hvp": True,
        "vhp": True,
    },
    devices=None,
    compositions={
        "hessian": ("jacfwd", "jacrev"),
        "jacrev_jacrev": ("jacrev", "jacrev"),
        "jacfwd_jacfwd": ("jacfwd", "jacfwd"),
        "jacrev_jacfwd": ("jacrev", "jacfwd"),
    },
)


def _vjp_vmap(func: Func, argnums: Any, has_aux: bool, chunk_size: int | None) -> Func:
    """The tutorial's ``vmap(vjp_fn)(unit_vectors)``, for any argnums."""

    def jacobian_fn(*args: Any) -> Any:
        nums, single = positions(argnums, len(args))
        out, pull, *aux = vjp(
            of_selected(func, args, nums), *[args[k] for k in nums], has_aux=has_aux
        )
        n = out.numel()
        basis = torch.eye(n, dtype=out.dtype, device=out.device).reshape((n, *out.shape))
        rows = vmap(pull, chunk_size=chunk_size)(basis)
        blocks = tuple(r.reshape((*out.shape, *r.shape[1:])) for r in rows)
        jac = blocks[0] if single else blocks
        return (jac, aux[0]) if has_aux else jac

    return jacobian_fn


class TorchFuncAdapter:
    """torch.func's transforms behind the contract's six operators."""

    name = "torch.func"
    version = torch.__version__
    features = FEATURES

    def jacobian(
        self,
        func: Func,
        argnums: Any = 0,
        *,
        method: str = "jacrev",
        has_aux: bool = False,
        chunk_size: int | None = None,
    ) -> Func:
        if method == "jacrev":
            return jacrev(func, argnums, has_aux=has_aux, chunk_size=chunk_size)
        if method == "jacfwd":
            return jacfwd(func, argnums, has_aux=has_aux)
        if method == "vjp_vmap":
            return _vjp_vmap(func, argnums, has_aux, chunk_size)
        raise ValueError(
            f"torch.func adapter: jacobian has no method {method!r}; one of {JACOBIAN}"
        )

    def hessian(self, func: Func, argnums: Any = 0, *, method: str = "hessian") -> Func:
        if method == "hessian":
            return hessian(func, argnums)
        if method not in _PAIRS:
            raise ValueError(
                f"torch.func adapter: hessian has no method {method!r}; one of {HESSIAN}"
            )
        outer, inner = _PAIRS[method]
        return outer(inner(func, argnums), argnums)

    def batch_jacobian(
        self,
        func: Func,
        argnums: Any = 0,
        *,
        in_dims: Any = 0,
        method: str = "vmap_jacrev",
        chunk_size: int | None = None,
    ) -> Func:
        inner = jacrev if method == "vmap_jacrev" else jacfwd
        return vmap(inner(func, argnums), in_dims=in_dims, chunk_size=chunk_size)

    def batch_hessian(
        self, func: Func, argnums: Any = 0, *, in_dims: Any = 0, method: str = "vmap_hessian"
    ) -> Func:
        if method != "vmap_hessian":
            raise ValueError(f"torch.func adapter: batch_hessian has no method {method!r}")
        return vmap(hessian(func, argnums), in_dims=in_dims)

    def hvp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        tangents: tuple[Any, ...],
        *,
        method: str = "jvp_grad",
    ) -> tuple[Any, ...]:
        gradient = grad(func, argnums=tuple(range(len(primals))))
        if method == "jvp_grad":
            return tuple(jvp(gradient, primals, tangents)[1])
        if method == "vjp_grad":
            return tuple(vjp(gradient, *primals)[1](tangents))
        raise ValueError(f"torch.func adapter: hvp has no method {method!r}")

    def vhp(
        self,
        func: Func,
        primals: tuple[Any, ...],
        cotangents: tuple[Any, ...],
        *,
        method: str = "vjp_grad",
    ) -> tuple[Any, ...]:
        if method != "vjp_grad":
            raise ValueError(f"torch.func adapter: vhp has no method {method!r}")
        gradient = grad(func, argnums=tuple(range(len(primals))))
        return tuple(vjp(gradient, *primals)[1](cotangents))


ADAPTER = TorchFuncAdapter()
