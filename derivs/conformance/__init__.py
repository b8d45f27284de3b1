"""The suite as a conformance suite: adapters that put any Jacobian/Hessian implementation under test.

An adapter presents an implementation's operators with derivs' calling conventions and
declares what it supports (:class:`Features`); ``pytest --impl NAME`` (the ``pytest_derivs``
plugin) runs the verification suite against it. Built in: ``derivs`` (the default),
``torch.func`` and ``torch.autograd.functional``; anything else is ``package.module:object``.

>>> adapter = load("torch.func")
>>> adapter.features.operator_methods("hvp")
('jvp_grad', 'vjp_grad')
"""

from derivs.conformance._features import FEATURES, OPERATORS, Features
from derivs.conformance._loading import BUILTIN, Adapter, load, validate

__all__ = ["BUILTIN", "FEATURES", "OPERATORS", "Adapter", "Features", "load", "validate"]
