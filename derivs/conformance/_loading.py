"""Finding the implementation under test by name: a built-in adapter or ``package.module:object``."""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from derivs.conformance._features import OPERATORS, Features

API = "derivs.conformance.load"

# name -> module:attribute of the built-in adapters (imported only when chosen)
BUILTIN = {
    "derivs": "derivs.conformance._derivs:ADAPTER",
    "torch.func": "derivs.conformance._torch_func:ADAPTER",
    "torch.autograd.functional": "derivs.conformance._autograd_functional:ADAPTER",
}


@runtime_checkable
class Adapter(Protocol):
    """What the suite needs from an implementation under test.

    ``name``, ``version`` and ``features`` (a :class:`Features`), plus one callable attribute
    per operator in ``features.methods``, with derivs' calling conventions (docs/contract.md):
    ``jacobian(func, argnums=0, *, method, has_aux=False, chunk_size=None)`` and
    ``hessian(func, argnums=0, *, method, chunk_size=None)`` return callables;
    ``batch_jacobian`` / ``batch_hessian(func, argnums=0, *, in_dims=0, method)`` too;
    ``hvp`` / ``vhp(func, primals, vectors, *, method)`` return a tuple shaped like primals.
    Keywords of features the adapter does not declare are never passed.
    """

    name: str
    version: str
    features: Features


def _import_object(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"{API}: {spec!r} is neither a built-in adapter ({', '.join(BUILTIN)}) nor "
            "'package.module:object'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{API}: cannot import {module_name!r} for {spec!r}: {error}") from error
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{API}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def validate(adapter: Any, spec: str = "adapter") -> Adapter:
    """Check that ``adapter`` has a name, version, Features and every declared operator.

    Raises:
        TypeError: a missing attribute, ``features`` that is not a Features, or a declared
            operator that is not callable on the adapter.
    """
    for attr in ("name", "version", "features"):
        if not hasattr(adapter, attr):
            raise TypeError(
                f"{API}: {spec} has no {attr!r} attribute (see derivs.conformance.Adapter)"
            )
    if not isinstance(adapter.features, Features):
        raise TypeError(
            f"{API}: {spec}.features must be a derivs.conformance.Features, "
            f"got {type(adapter.features).__name__}"
        )
    for op in OPERATORS:
        if adapter.features.operator_methods(op) and not callable(getattr(adapter, op, None)):
            raise TypeError(f"{API}: {spec} declares methods for {op!r} but has no callable {op!r}")
    return adapter  # type: ignore[no-any-return]


def load(spec: str) -> Adapter:
    """The adapter named ``spec``: a built-in name or ``package.module:object``.

    A class is instantiated without arguments; anything else is used as it is.

    Args:
        spec: ``"derivs"``, ``"torch.func"``, ``"torch.autograd.functional"`` or
            ``"package.module:object"`` (dots after the colon walk attributes).

    Returns:
        The validated adapter.

    Raises:
        ValueError: ``spec`` names nothing importable.
        TypeError: the object is not an adapter (see :func:`validate`).

    >>> load("derivs").name
    'derivs'
    """
    obj = _import_object(BUILTIN.get(spec, spec))
    if isinstance(obj, type):
        obj = obj()
    return validate(obj, spec)
