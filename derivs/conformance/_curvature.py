"""Curvature of a model's empirical risk: references built from derivs' operators, and adapters.

The curvature libraries users rely on (curvlinops, BackPACK) compute products with, and
diagonals of, the Hessian and the generalized Gauss-Newton matrix (GGN) of a model's loss over
its parameters. The suite checks them (``tests/test_curvature.py``) against references built
from derivs' operators on the parameter dict:

* the Hessian ``H``: ``derivs.hessian(problem.loss)(params)``, flattened to ``P x P``;
* the GGN ``G = J^T H_loss J``: ``J`` the Jacobian of the outputs over the parameters
  (``derivs.jacobian``), ``H_loss`` the Hessian of the loss over the outputs
  (``derivs.hessian``);
* per-sample gradients: ``derivs.batch_jacobian`` of one sample's term of the loss.

A curvature adapter has ``name``, ``version``, ``operators`` (operator name -> the model kinds
it supports, the keywords of ``derivs.strategies.model_problems``) and one method per
operator it declares:

==========================  ===============================================================
``hvp(problem, V)``         ``H V``: ``V`` a parameter dict whose leaves carry a leading
                            dim ``K`` (``K`` vectors); the result is structured like ``V``
``ggn(problem, V)``         ``G V``, the same
``per_sample_gradients``    ``(problem)``: the gradient of each sample's term, ``(N, *p)``
``diag_ggn``                ``(problem)``: the diagonal of ``G``, shaped like the parameters
``diag_hessian``            ``(problem)``: the diagonal of ``H``, the same
==========================  ===============================================================

``problem`` is a ``derivs.strategies.ModelProblem`` (:class:`CurvatureProblem` says what of
it an adapter may use): the risk is ``problem.scale * problem.loss_func(problem.model(X), y)``.
Built in: ``derivs`` (below), ``curvlinops`` and ``backpack``
(``derivs/conformance/_curvlinops.py``, ``_backpack.py``), which import their library only
when loaded, so derivs does not depend on them.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils._pytree import tree_map

import derivs

Params = dict[str, torch.Tensor]

#: Every curvature operator an adapter may declare.
CURVATURE_OPERATORS = ("hvp", "ggn", "per_sample_gradients", "diag_ggn", "diag_hessian")

#: name -> module:attribute of the built-in curvature adapters, and the package each needs.
CURVATURE_ADAPTERS = {
    "derivs": ("derivs.conformance._curvature:DerivsCurvature", None),
    "curvlinops": ("derivs.conformance._curvlinops:CurvlinopsCurvature", "curvlinops"),
    "backpack": ("derivs.conformance._backpack:BackpackCurvature", "backpack"),
}


class CurvatureProblem(Protocol):
    """What a curvature adapter may use of a ``derivs.strategies.ModelProblem``."""

    model: nn.Module
    loss_func: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    scale: float

    def params(self) -> Params: ...

    def outputs(self, params: Params, X: torch.Tensor | None = None) -> torch.Tensor: ...

    def loss(self, params: Params) -> torch.Tensor: ...

    def sample_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def load_curvature(name: str) -> Any:
    """The built-in curvature adapter ``name``, instantiated (its library imported now).

    Raises:
        ValueError: ``name`` is not one of ``CURVATURE_ADAPTERS``.
        ImportError: its library is not installed (the message names the package).
    """
    if name not in CURVATURE_ADAPTERS:
        raise ValueError(
            f"derivs.conformance.load_curvature: name={name!r} is not one of "
            f"{sorted(CURVATURE_ADAPTERS)}"
        )
    spec, _package = CURVATURE_ADAPTERS[name]
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


# --- flat views of parameter dicts ------------------------------------------------------------


def flatten(tree: Params, lead: int = 0) -> torch.Tensor:
    """The leaves of a parameter dict concatenated, in its order, after ``lead`` leading dims."""
    return torch.cat([t.reshape(*t.shape[:lead], -1) for t in tree.values()], dim=lead)


def flatten_matrix(blocks: dict[str, Params], params: Params) -> torch.Tensor:
    """A Hessian-like ``H[a][b]`` (shape ``(*a, *b)``) of ``params`` as a ``P x P`` matrix."""
    return torch.cat(
        [
            torch.cat(
                [blocks[a][b].reshape(params[a].numel(), params[b].numel()) for b in params],
                dim=1,
            )
            for a in params
        ],
        dim=0,
    )


def unflatten(flat: torch.Tensor, like: Params) -> Params:
    """``flat`` (``(*lead, P)``) split into a dict shaped like ``like`` after the lead dims."""
    lead = flat.shape[:-1]
    pieces = torch.split(flat, [t.numel() for t in like.values()], dim=-1)
    return {
        k: piece.reshape(*lead, *t.shape)
        for (k, t), piece in zip(like.items(), pieces, strict=True)
    }


def basis(params: Params) -> Params:
    """The ``P`` unit vectors of the parameter space, as a dict with a leading dim ``P``."""
    n = sum(t.numel() for t in params.values())
    first = next(iter(params.values()))
    return unflatten(torch.eye(n, dtype=first.dtype, device=first.device), params)


# --- references -------------------------------------------------------------------------------


def reference_hessian(problem: CurvatureProblem) -> torch.Tensor:
    """The Hessian of the risk over the parameters, ``P x P``: ``derivs.hessian``, loop method."""
    params = problem.params()
    # NOTE: method="loop" (torch.autograd.grad row by row): torch.func's vmap of the double
    # backward of layer_norm drops the normalisation's dependence on the input (torch 2.13.0,
    # tests/test_upstream_models.py), so every other method is wrong on LayerNorm models.
    return flatten_matrix(derivs.hessian(problem.loss, method="loop")(params), params)


def reference_ggn(problem: CurvatureProblem) -> torch.Tensor:
    """The GGN ``J^T H_loss J``, ``P x P``, from ``derivs.jacobian`` and ``derivs.hessian``."""
    params = problem.params()
    out = problem.outputs(params).detach()
    jac = flatten(derivs.jacobian(problem.outputs)(params), lead=out.dim())
    jac = jac.reshape(out.numel(), -1)
    h_loss = derivs.hessian(lambda o: problem.scale * problem.loss_func(o, problem.y))(out)
    h_loss = h_loss.reshape(out.numel(), out.numel())
    ggn: torch.Tensor = jac.T @ h_loss @ jac
    return ggn


def reference_per_sample_gradients(problem: CurvatureProblem) -> Params:
    """Each sample's gradient, ``(N, *p)``: ``derivs.batch_jacobian`` of its term of the risk."""
    grads: Params = derivs.batch_jacobian(problem.sample_loss, in_dims=(None, 0, 0))(
        problem.params(), problem.X, problem.y
    )
    return grads


# --- derivs itself as a curvature adapter -----------------------------------------------------


class DerivsCurvature:
    """derivs' operators on the parameter dict, by other routes than the references'.

    * ``hvp``: ``derivs.hvp`` over the parameter dict, vmapped over the ``K`` vectors;
    * ``ggn``: ``derivs.hvp`` of the loss of the model linearised at the parameters
      (``f(p0) + J (p - p0)``, by ``torch.func.jvp``), whose Hessian is exactly the GGN;
    * ``per_sample_gradients``: ``derivs.jacobian`` of the vector of per-sample terms.
    """

    name = "derivs"
    version = derivs.__version__
    operators: ClassVar[dict[str, dict[str, Any]]] = {
        "hvp": {},
        "ggn": {},
        "per_sample_gradients": {},
    }

    def hvp(self, problem: CurvatureProblem, V: Params) -> Params:
        return _vmapped_hvp(problem.loss, problem.params(), V)

    def ggn(self, problem: CurvatureProblem, V: Params) -> Params:
        p0 = problem.params()
        out0 = problem.outputs(p0).detach()

        def linearised_loss(p: Params) -> torch.Tensor:
            step = tree_map(torch.sub, p, p0)
            change = torch.func.jvp(problem.outputs, (p0,), (step,))[1]
            risk: torch.Tensor = problem.scale * problem.loss_func(out0 + change, problem.y)
            return risk

        return _vmapped_hvp(linearised_loss, p0, V)

    def per_sample_gradients(self, problem: CurvatureProblem) -> Params:
        X, y = problem.X, problem.y

        def terms(p: Params) -> torch.Tensor:
            return torch.stack([problem.sample_loss(p, X[n], y[n]) for n in range(len(X))])

        grads: Params = derivs.jacobian(terms)(problem.params())
        return grads


def _vmapped_hvp(loss: Any, params: Params, V: Params) -> Params:
    def one(v: Params) -> Params:
        result: Params = derivs.hvp(loss, (params,), (v,))[0]
        return result

    out: Params = torch.func.vmap(one)(V)
    return out
