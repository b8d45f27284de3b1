"""curvlinops (``curvlinops-for-pytorch``) as a curvature adapter: its Hessian and GGN operators.

``HessianLinearOperator`` and ``GGNLinearOperator`` over the model's parameters, on the
problem's batch as one mini-batch, multiplied onto the ``K`` vectors in curvlinops' list
format (each parameter's shape, then ``K``). curvlinops is imported when the adapter is
instantiated, not with this module.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, ClassVar

from derivs.conformance._curvature import CurvatureProblem, Params


class CurvlinopsCurvature:
    """``hvp`` and ``ggn`` through curvlinops' linear operators, on any drawn model."""

    name = "curvlinops"
    operators: ClassVar[dict[str, dict[str, Any]]] = {"hvp": {}, "ggn": {}}

    def __init__(self) -> None:
        # NOTE: imported here, not at the top: derivs itself does not depend on curvlinops,
        # and every module of derivs imports without it (the doctest walk imports them all).
        import curvlinops

        self._curvlinops = curvlinops
        self.version = version("curvlinops-for-pytorch")

    def hvp(self, problem: CurvatureProblem, V: Params) -> Params:
        return _apply(self._curvlinops.HessianLinearOperator, problem, V)

    def ggn(self, problem: CurvatureProblem, V: Params) -> Params:
        return _apply(self._curvlinops.GGNLinearOperator, problem, V)


def _apply(operator: Any, problem: CurvatureProblem, V: Params) -> Params:
    names = [name for name, _ in problem.model.named_parameters()]
    params = [p for _, p in problem.model.named_parameters()]
    op = operator(problem.model, problem.loss_func, params, [(problem.X, problem.y)])
    columns = op @ [V[name].movedim(0, -1) for name in names]
    out: Params = {
        name: problem.scale * column.movedim(-1, 0)
        for name, column in zip(names, columns, strict=True)
    }
    return out
