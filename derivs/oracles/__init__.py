"""Independent oracles: naive autograd loops and finite differences with error estimates.

These are the ground truth the verification suite checks ``derivs`` against, and they are
public so users can check their own derivatives. They share no code path with the operators
they check: this package imports only ``torch``, the standard library and ``typing`` (and
its own modules), and is built from ``torch.autograd.grad`` (one scalar at a time) and plain
arithmetic. It never touches ``torch.func``; ``tests/test_oracles.py`` proves both (by its
source and by importing it alone in a fresh interpreter).

Two families:

* naive loops, exact up to rounding (``_loops``): :func:`loop_jacobian` (one
  ``torch.autograd.grad`` per output element, the tutorial's loop), :func:`loop_hessian`
  (then one per gradient entry), and the per-sample loops :func:`loop_batch_jacobian` and
  :func:`loop_batch_hessian`;
* finite differences that return an :class:`Estimate` ``(value, error)``, ``error`` being an
  elementwise estimate of the absolute error of ``value`` (``_fd``): :func:`fd_jacobian` and
  :func:`fd_hessian`, with the schemes ``"central"`` and ``"richardson"``
  (``_differences``) and ``"complex_step"`` (``_complex``).

Finite differences compute in float64: the arguments are cast to it, and the
lower-precision tensors ``func`` closes over (a float32 module's parameters) are raised to
it while ``func`` runs, the user's tensors untouched (``_promote``); :func:`evaluation` says
what was raised.

Conventions shared by every oracle: ``args`` is the tuple of positional arguments of
``func``; ``argnums`` (an int or a tuple of ints, negative ones allowed) says which are
differentiated; a Jacobian block has shape ``(*out_shape, *in_shape)`` and the dtype and
device of the differentiated argument; a tuple ``argnums`` gives one block per argnum, in
``argnums`` order; a Hessian block ``H[i][j]`` has shape ``(*out_shape, *in_i, *in_j)`` and is
``d/dx_j (d out / d x_i)``. No oracle mutates its arguments or their ``requires_grad``.

A differentiated argument may be a pytree: a tuple, list, namedtuple or dict of tensors,
nested (a model's ``dict(named_parameters())``); every leaf must be a floating-point tensor
(a leaf that is not is named by its path, ``args[0]['lr']``). The results nest as
``torch.func`` nests them: a Jacobian with the output's structure outside and the
argument's inside (the tuple over ``argnums`` between them), a Hessian with the argument's
structure twice; ``in_dims`` of the batch loops may be an int or ``None`` per pytree, or a
pytree of them shaped like the argument (``_trees``).
"""

from __future__ import annotations

from derivs.oracles._common import Estimate
from derivs.oracles._differences import SCHEMES
from derivs.oracles._fd import fd_hessian, fd_jacobian
from derivs.oracles._loops import (
    loop_batch_hessian,
    loop_batch_jacobian,
    loop_hessian,
    loop_jacobian,
)
from derivs.oracles._promote import Evaluation, cast_computation, evaluation

__all__ = [
    "SCHEMES",
    "Estimate",
    "Evaluation",
    "cast_computation",
    "evaluation",
    "fd_hessian",
    "fd_jacobian",
    "loop_batch_hessian",
    "loop_batch_jacobian",
    "loop_hessian",
    "loop_jacobian",
]
