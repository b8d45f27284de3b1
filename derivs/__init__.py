"""derivs: trustworthy Jacobians, Hessians, hvp and vhp for PyTorch.

Transforms return callables, like ``torch.func``::

    derivs.jacobian(f, argnums=0, method="auto")(*args)      # (*out, *in)
    derivs.hessian(f, argnums=0, method="auto")(*args)       # (*out, *in, *in)
    derivs.batch_jacobian(f, in_dims=0, method="vmap")(*args)  # (B, *out, *in)
    derivs.batch_hessian(f, in_dims=0, method="vmap")(*args)   # (B, *out, *in, *in)

Products are evaluated directly::

    derivs.hvp(f, primals, tangents)       # H @ v, a tuple shaped like primals
    derivs.vhp(f, primals, cotangents)     # v @ H

Sparse Jacobians and Hessians (detection, colouring, compressed evaluation)::

    derivs.sparse_jacobian(f, argnums=0)(*args)   # torch sparse COO (*out, *in)
    derivs.sparse_hessian(f, argnums=0)(*args)    # torch sparse COO (*in, *in)

``derivs.oracles`` holds independent ground truth (finite differences, complex step, naive
loops) and ``derivs.testing.assert_close`` the comparison helper the suite uses.
"""

from derivs import oracles, testing
from derivs import sparse as _sparse_mod
from derivs._batch import batch_hessian, batch_jacobian
from derivs._check import CheckFailure, CheckReport, CheckRow, check
from derivs._config import MemoryBudgetError, get_memory_budget, memory_budget, set_memory_budget
from derivs._hessian import hessian
from derivs._jacobian import jacobian, prefers_forward
from derivs._models import functional_model
from derivs._products import hvp, vhp
from derivs._registry import OPERATORS as _OPERATORS
from derivs.sparse import (
    Coloring,
    SparsePlan,
    SparsityError,
    SparsityPattern,
    coloring,
    hessian_sparsity,
    jacobian_sparsity,
    sparse_hessian,
    sparse_jacobian,
)

__version__ = "0.1.0"

#: operator -> its valid methods, in the order documented (the default first).
METHODS: dict[str, tuple[str, ...]] = {op: tuple(ms) for op, ms in _OPERATORS.items()}

# NOTE: the sparse transforms choose a colouring mode rather than a method.
SPARSE_MODES: dict[str, tuple[str, ...]] = {
    "sparse_jacobian": tuple(_sparse_mod.JACOBIAN_MODES),
    "sparse_hessian": tuple(_sparse_mod.HESSIAN_MODES),
    "coloring": tuple(_sparse_mod.COLORING_MODES),
}

__all__ = [
    "METHODS",
    "SPARSE_MODES",
    "CheckFailure",
    "CheckReport",
    "CheckRow",
    "Coloring",
    "MemoryBudgetError",
    "SparsePlan",
    "SparsityError",
    "SparsityPattern",
    "__version__",
    "batch_hessian",
    "batch_jacobian",
    "check",
    "coloring",
    "functional_model",
    "get_memory_budget",
    "hessian",
    "hessian_sparsity",
    "hvp",
    "jacobian",
    "jacobian_sparsity",
    "memory_budget",
    "oracles",
    "prefers_forward",
    "set_memory_budget",
    "sparse_hessian",
    "sparse_jacobian",
    "testing",
    "vhp",
]
