"""Sparse Jacobians and Hessians: sparsity detection, colouring, compressed evaluation.

``derivs.sparse_jacobian(f)(x)`` detects which entries of ``df/dx`` may be nonzero (by tracing
the derivative: valid for every ``x``), colours the columns (or rows) so that columns sharing
a colour share no row, evaluates one Jacobian-vector product per colour and reads every
nonzero out of the result: a torch sparse tensor, for the cost of a few products instead of
one per input. ``derivs.sparse_hessian`` does the same for Hessians (star colouring,
Hessian-vector products). The pieces are public on their own: ``jacobian_sparsity``,
``hessian_sparsity`` (patterns) and ``coloring``.
"""

from derivs.sparse._api import (
    HESSIAN_MODES,
    JACOBIAN_MODES,
    PATTERNS,
    SparseTransform,
    sparse_hessian,
    sparse_jacobian,
)
from derivs.sparse._coloring import MODES, ORDER_CHOICES, Coloring
from derivs.sparse._greedy import ORDERS
from derivs.sparse._inspect import (
    COLORING_MODES,
    DETECTIONS,
    coloring,
    hessian_sparsity,
    jacobian_sparsity,
)
from derivs.sparse._pattern import KINDS, SparsityPattern
from derivs.sparse._plan import SparsePlan
from derivs.sparse._recover import LAYOUTS
from derivs.sparse._verify import SparsityError

__all__ = [
    "COLORING_MODES",
    "DETECTIONS",
    "HESSIAN_MODES",
    "JACOBIAN_MODES",
    "KINDS",
    "LAYOUTS",
    "MODES",
    "ORDERS",
    "ORDER_CHOICES",
    "PATTERNS",
    "Coloring",
    "SparsePlan",
    "SparseTransform",
    "SparsityError",
    "SparsityPattern",
    "coloring",
    "hessian_sparsity",
    "jacobian_sparsity",
    "sparse_hessian",
    "sparse_jacobian",
]
