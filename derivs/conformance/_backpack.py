"""BackPACK (``backpack-for-pytorch``) as a curvature adapter: per-sample gradients and diagonals.

One backward pass of the extended model and loss inside ``backpack(extension)``:
``BatchGrad`` (per-sample gradients, ``p.grad_batch``), ``DiagGGNExact`` (``p.diag_ggn_exact``)
and ``DiagHessian`` (``p.diag_h``). BackPACK registers hooks on the modules it extends, so
it works on a deep copy of the problem's model and loss (the user's model stays untouched).
``operators`` declares the layers BackPACK's documentation lists for each extension:
Linear and Conv layers and elementwise activations for all three; BatchNorm (eval mode) for
the first-order ``BatchGrad`` only. BackPACK is imported when the adapter is instantiated,
not with this module.
"""

from __future__ import annotations

import copy
import warnings
from importlib.metadata import version
from typing import Any, ClassVar

from derivs.conformance._curvature import CurvatureProblem, Params

_SEQUENTIAL = {"layers": ("linear", "conv")}


class BackpackCurvature:
    """BackPACK's ``BatchGrad``, ``DiagGGNExact`` and ``DiagHessian`` on sequential models."""

    name = "backpack"
    operators: ClassVar[dict[str, dict[str, Any]]] = {
        "per_sample_gradients": {"layers": ("linear", "conv", "batchnorm")},
        "diag_ggn": _SEQUENTIAL,
        "diag_hessian": _SEQUENTIAL,
    }

    def __init__(self) -> None:
        # NOTE: imported here, not at the top: derivs itself does not depend on BackPACK,
        # and every module of derivs imports without it (the doctest walk imports them all).
        import backpack
        from backpack import extensions

        self._backpack, self._extensions = backpack, extensions
        self.version = version("backpack-for-pytorch")

    def per_sample_gradients(self, problem: CurvatureProblem) -> Params:
        return self._backward(problem, self._extensions.BatchGrad(), "grad_batch")

    def diag_ggn(self, problem: CurvatureProblem) -> Params:
        return self._backward(problem, self._extensions.DiagGGNExact(), "diag_ggn_exact")

    def diag_hessian(self, problem: CurvatureProblem) -> Params:
        return self._backward(problem, self._extensions.DiagHessian(), "diag_h")

    def _backward(self, problem: CurvatureProblem, extension: Any, attribute: str) -> Params:
        """One backward pass under ``extension``; ``attribute`` of each parameter, scaled."""
        bp = self._backpack
        model = bp.extend(copy.deepcopy(problem.model))
        loss_func = bp.extend(copy.deepcopy(problem.loss_func))
        # NOTE: BackPACK's module hooks fire on outputs only (X does not require grad), which
        # torch reports as a UserWarning on every backward; it is expected here.
        with bp.backpack(extension), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            loss_func(model(problem.X), problem.y).backward()
        out: Params = {
            name: problem.scale * getattr(p, attribute).detach()
            for name, p in model.named_parameters()
        }
        return out
