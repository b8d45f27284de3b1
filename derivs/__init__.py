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

from derivs import batch as _batch_mod
from derivs import hessian as _hessian_mod
from derivs import jacobian as _jacobian_mod
from derivs import oracles, testing
from derivs import products as _products_mod
from derivs import sparse as _sparse_mod
from derivs._config import get_memory_budget, memory_budget, set_memory_budget
from derivs.batch import batch_hessian, batch_jacobian
from derivs.check import CheckFailure, CheckReport, check
from derivs.hessian import hessian
from derivs.jacobian import jacobian
from derivs.products import hvp, vhp
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

# NOTE: the modules derivs.jacobian and derivs.hessian are shadowed by the functions of the
# same name, so the valid methods of each API are gathered here, in the order documented.
METHODS: dict[str, tuple[str, ...]] = {
    "jacobian": tuple(_jacobian_mod.METHODS),
    "hessian": tuple(_hessian_mod.METHODS),
    "hvp": tuple(_products_mod.HVP_METHODS),
    "vhp": tuple(_products_mod.VHP_METHODS),
    "batch_jacobian": tuple(_batch_mod.METHODS),
    "batch_hessian": tuple(_batch_mod.METHODS),
}

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
    "Coloring",
    "SparsePlan",
    "SparsityError",
    "SparsityPattern",
    "__version__",
    "batch_hessian",
    "batch_jacobian",
    "check",
    "coloring",
    "get_memory_budget",
    "hessian",
    "hessian_sparsity",
    "hvp",
    "jacobian",
    "jacobian_sparsity",
    "memory_budget",
    "oracles",
    "set_memory_budget",
    "sparse_hessian",
    "sparse_jacobian",
    "testing",
    "vhp",
]
