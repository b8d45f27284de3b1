"""Pinned reproducers of what the conformance runs found in torch.func and torch.autograd.functional.

Each is the minimal reproducer quoted in docs/suite/conformance.md, ready to report, and
asserts the bug as measured on every torch the tox matrix names (the minimum to the newest
pip serves; the table per version is in docs/suite/conformance.md, "Upstream bugs per torch
version"). They run on any torch, with no version skip: the day an upstream release changes
one, its test fails, and that is a finding. Re-measure it; if fixed, the test asserts the bug
before the first fixed version and the fixed behaviour from it on, and the entries of the
adapter's expected-failure file (``derivs/conformance/expected_failures/``) that name it get
``# torch: <FIRST_FIXED``.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.functional as AF
from torch.func import hessian, jacfwd, jacrev, jvp

OVERLAP = "more than one element of the written-to tensor refers to a single memory location"


def test_torch_func_jacfwd_negative_argnums_is_silently_zero() -> None:
    """torch.func.jacfwd(f, argnums=-1) differentiates nothing: zeros, no error (jacrev is right).

    _jvp_with_argnums normalises argnums for slicing the primals (_slice_argnums) but hands the
    raw -1 to _replace_args, which compares it with non-negative positions, so the dual
    inputs are never substituted. torch.func.hessian (jacfwd of jacrev) inherits it.
    """
    x = torch.tensor(2.0, dtype=torch.float64)
    y = torch.tensor(3.0, dtype=torch.float64)
    assert jacfwd(lambda x: x, argnums=-1)(x) == 0  # d x / d x is 1
    assert jacrev(lambda x: x, argnums=-1)(x) == 1
    assert jacfwd(lambda x, y: x * y, argnums=-1)(x, y) == 0  # is x = 2
    assert jacfwd(lambda x, y: x * y, argnums=(0, -1))(x, y) == (3, 0)  # is (3, 2)
    assert hessian(lambda x: x**3, argnums=-1)(x) == 0  # is 6 x = 12


def test_torch_func_forward_mode_refuses_expanded_inputs() -> None:
    """jacfwd, hessian and jvp raise on an input with internal overlap; jacrev does not.

    torch.autograd.forward_ad.make_dual copies the tangent into the primal's layout when the
    layouts differ, and a stride-0 layout cannot hold a tangent with distinct entries.
    """
    x = torch.tensor([0.94]).expand(2)
    assert torch.equal(jacrev(torch.sin)(x), torch.diag(x.cos()))
    for call in (
        lambda: jacfwd(torch.sin)(x),
        lambda: hessian(lambda t: t.sin().sum())(x),
        lambda: jvp(torch.sin, (x,), (torch.ones(2),)),
    ):
        with pytest.raises(RuntimeError, match=OVERLAP):
            call()
    assert torch.equal(jacfwd(torch.sin)(x.contiguous()), torch.diag(x.cos()))


def test_autograd_functional_forward_mode_breaks_after_a_vector_matrix_product() -> None:
    """strategy="forward-mode" (vectorize=True): any op after ``x @ W`` (x 1-d) raises.

    The tangent of the vector-matrix product comes out of the legacy vmap prototype
    (torch._vmap_internals) with a stray leading dim, (1, 2) for a (2,) output, which the
    next op's forward gradient rejects; a ``dot`` after it raises a shape mismatch instead.
    torch.func.jacfwd and the reverse-mode strategy get it right. The Hessian's
    outer_jacobian_strategy="forward-mode" inherits it.
    """
    W = torch.ones(2, 2)
    x = torch.ones(2)
    assert torch.equal(
        AF.jacobian(lambda x: x @ W, x, vectorize=True, strategy="forward-mode"), W.T
    )
    with pytest.raises(RuntimeError, match="forward gradient that has a different size"):
        AF.jacobian(lambda x: (x @ W) * 2, x, vectorize=True, strategy="forward-mode")
    with pytest.raises(RuntimeError, match=r"dot\(self, other\): Shape mismatch"):
        AF.jacobian(lambda x: torch.dot(x @ W, x), x, vectorize=True, strategy="forward-mode")
    with pytest.raises(RuntimeError, match="forward gradient that has a different size"):
        AF.hessian(
            lambda x: (x @ W).tanh().sum(),
            x,
            vectorize=True,
            outer_jacobian_strategy="forward-mode",
        )
    # test_hessian.py::test_mixed_blocks_of_an_asymmetric_coupling's x^T W y: the dot after it
    # raises on every input, so the property fails as an error, never as a wrong value.
    with pytest.raises(RuntimeError, match=r"dot\(self, other\): Shape mismatch"):
        AF.hessian(
            lambda x, y: x @ W @ y,
            (x, x),
            vectorize=True,
            outer_jacobian_strategy="forward-mode",
        )
    assert torch.equal(AF.jacobian(lambda x: (x @ W) * 2, x, vectorize=True), 2 * W.T)
    assert torch.equal(jacfwd(lambda x: (x @ W) * 2)(x), 2 * W.T)


def test_autograd_functional_forward_mode_refuses_expanded_inputs() -> None:
    """The same make_dual limit as torch.func's forward mode (see above)."""
    x = torch.tensor([0.94]).expand(2)
    with pytest.raises(RuntimeError, match=OVERLAP):
        AF.jacobian(torch.sin, x, vectorize=True, strategy="forward-mode")
    assert torch.equal(AF.jacobian(torch.sin, x), torch.diag(x.cos()))


def test_autograd_functional_forward_mode_has_no_create_graph() -> None:
    """Documented by its error message: the adapter declares reverse_mode for reverse methods only."""
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="not supported together"):
        AF.jacobian(torch.sin, x, create_graph=True, vectorize=True, strategy="forward-mode")


def test_autograd_functional_hessian_needs_a_scalar_function() -> None:
    """Documented: "func ... returns a Tensor with a single element" (the adapter declares it)."""
    x = torch.ones(2)
    with pytest.raises(RuntimeError, match="single element"):
        AF.hessian(torch.sin, x)
