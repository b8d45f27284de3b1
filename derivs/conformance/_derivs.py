"""The derivs adapter: derivs itself, looked up at call time.

NOTE: every operator is looked up on the ``derivs`` package when called, not bound at import,
so a planted bug (tests/planted.py patches derivs' functions in place) reaches the suite.
"""

from __future__ import annotations

from typing import Any

import derivs
from derivs._hessian import COMPOSITIONS
from derivs.conformance._features import Features

_ALL_BUT_LOOP = {
    op: tuple(m for m in derivs.METHODS[op] if m != "loop") for op in ("jacobian", "hessian")
}

FEATURES = Features(
    methods=derivs.METHODS,
    # NOTE: 'loop' calls torch.autograd.grad on detached copies: it neither runs under
    # torch.func transforms nor keeps a graph to the inputs (measured; docs/contract.md says so).
    vmap=_ALL_BUT_LOOP,
    forward_mode={"jacobian": _ALL_BUT_LOOP["jacobian"]},
    reverse_mode={"jacobian": _ALL_BUT_LOOP["jacobian"]},
    has_aux={"jacobian": True},
    # NOTE: batch_jacobian's every method chunks its per-sample Jacobian (the contract's
    # signature); its 'loop' is a loop over samples, not the 'loop' Jacobian method.
    chunk_size={**_ALL_BUT_LOOP, "batch_jacobian": True},
    in_dims={"batch_jacobian": True, "batch_hessian": True},
    whole_batch={"batch_jacobian": ["sum"], "batch_hessian": ["sum"]},
    vector_hessians={"hessian": True, "batch_hessian": True},
    pytrees=True,
    devices=None,
    dtypes=("float32", "float64"),
    compositions={m: pair for m, pair in COMPOSITIONS.items() if m != "auto"},
)


class DerivsAdapter:
    """derivs' six operators, unchanged (the reference implementation of the contract)."""

    name = "derivs"
    version = derivs.__version__
    features = FEATURES

    def jacobian(self, func: Any, argnums: Any = 0, **kwargs: Any) -> Any:
        return derivs.jacobian(func, argnums, **kwargs)

    def hessian(self, func: Any, argnums: Any = 0, **kwargs: Any) -> Any:
        return derivs.hessian(func, argnums, **kwargs)

    def batch_jacobian(self, func: Any, argnums: Any = 0, **kwargs: Any) -> Any:
        return derivs.batch_jacobian(func, argnums, **kwargs)

    def batch_hessian(self, func: Any, argnums: Any = 0, **kwargs: Any) -> Any:
        return derivs.batch_hessian(func, argnums, **kwargs)

    def hvp(self, func: Any, primals: Any, tangents: Any, **kwargs: Any) -> Any:
        return derivs.hvp(func, primals, tangents, **kwargs)

    def vhp(self, func: Any, primals: Any, cotangents: Any, **kwargs: Any) -> Any:
        return derivs.vhp(func, primals, cotangents, **kwargs)


ADAPTER = DerivsAdapter()
