"""The implementation under test as the suite calls it.

``SuiteImpl`` wraps an adapter (``derivs.conformance``): the six operators with derivs'
signatures, the methods the suite parametrises over, and skips with the reason wherever a
property needs an operator, method or feature the adapter does not declare. A declared
feature is never skipped: if it fails, the property fails.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

# the value and id of the one parameter a property gets when an operator has no method
ABSENT = "absent"


def _registry_operators() -> tuple[str, ...]:
    """derivs' operators, from ``derivs/_registry.py`` loaded by its file.

    NOTE: ``import derivs._registry`` would run ``derivs/__init__.py``, which imports torch,
    and this module loads with every pytest run of any project that has derivs installed;
    the registry imports nothing, so its file is run alone (``find_spec`` of a top-level
    package locates it without importing it).
    """
    package = importlib.util.find_spec("derivs")
    folders = [] if package is None else list(package.submodule_search_locations or [])
    if not folders:
        raise ImportError("pytest_derivs: the derivs package is not installed")
    path = Path(folders[0]) / "_registry.py"
    spec = importlib.util.spec_from_file_location("pytest_derivs._registry", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"pytest_derivs: cannot load {path}")
    registry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(registry)
    return tuple(registry.OPERATORS)


OPERATORS = _registry_operators()

# the marker naming what a test case exercises: operator, method (None: the operator has no
# declared method), declared feature (None: the operator itself); the capability matrix of
# pytest_derivs._report counts outcomes by it
CAPABILITY = "derivs_capability"


def capability(operator: str, method: str | None, feature: str | None) -> pytest.MarkDecorator:
    """The ``derivs_capability`` mark of a parameter exercising ``operator``'s ``method``."""
    mark: pytest.MarkDecorator = getattr(pytest.mark, CAPABILITY)
    return mark(operator, method, feature)


class SuiteImpl:
    """The adapter named by ``--impl``, with its calls counted and undeclared features skipped.

    Args:
        adapter: a validated ``derivs.conformance.Adapter``.
        spec: the name it was loaded by (``--impl``).
    """

    def __init__(self, adapter: Any, spec: str) -> None:
        self.adapter = adapter
        self.spec = spec
        self.name: str = adapter.name
        self.version: str = adapter.version
        self.features: Any = adapter.features
        self.calls = 0  # operator calls, so a conformance test that never calls it is caught
        # (operator, method, feature) each need() and operator call of the running test asked
        # for: the capability of a test that is not parametrised over methods
        self.touched: list[tuple[str, str | None, str | None]] = []

    def __repr__(self) -> str:
        return f"SuiteImpl({self.name} {self.version})"

    @property
    def is_derivs(self) -> bool:
        """Whether derivs itself is under test (its own extra guarantees then apply)."""
        return bool(self.name == "derivs")

    # ----------------------------------------------------------------- what the suite iterates

    def methods(self, operator: str, feature: str | None = None) -> tuple[str, ...]:
        """The declared methods of ``operator`` (those with ``feature`` when given)."""
        if feature is None:
            return tuple(self.features.operator_methods(operator))
        return tuple(self.features.with_feature(feature, operator))

    def default(self, operator: str) -> str:
        """The operator's default method (the first declared), skipping when it is absent."""
        self.need(operator)
        return self.methods(operator)[0]

    def reason(self, operator: str, feature: str | None = None, method: str | None = None) -> str:
        """Why a property of ``operator`` (with ``feature``, for ``method``) cannot run."""
        if not self.methods(operator):
            return f"{self.name} provides no {operator}"
        if method is not None and method not in self.methods(operator):
            return f"{self.name} has no {operator} method {method!r}"
        where = operator if method is None else f"{operator}(method={method!r})"
        return f"{self.name} does not declare {feature} for {where}"

    def params(
        self, operator: str, feature: str | None = None, exclude: Iterable[str] = ()
    ) -> list[Any]:
        """Methods to parametrise over; one skipped parameter, with the reason, if none.

        Each is a ``pytest.param`` with the method as value and id (test ids are the method
        names) and the ``derivs_capability`` mark (operator, method, feature) the capability
        matrix counts it by.
        """
        skip = set(exclude)
        chosen = [m for m in self.methods(operator, feature) if m not in skip]
        if chosen:
            return [pytest.param(m, marks=capability(operator, m, feature), id=m) for m in chosen]
        marks = [pytest.mark.skip(reason=self.reason(operator, feature))]
        marks.append(capability(operator, None, feature))
        return [pytest.param(ABSENT, marks=marks, id=ABSENT)]

    def api_params(self, operators: Sequence[str], feature: str | None = None) -> list[Any]:
        """``(operator, method)`` pairs with ids ``operator-method``; absent operators skipped."""
        pairs: list[Any] = []
        for op in operators:
            chosen = self.methods(op, feature)
            pairs += [
                pytest.param(op, m, marks=capability(op, m, feature), id=f"{op}-{m}")
                for m in chosen
            ]
            if not chosen:
                marks = [pytest.mark.skip(reason=self.reason(op, feature))]
                marks.append(capability(op, None, feature))
                pairs.append(pytest.param(op, ABSENT, marks=marks, id=f"{op}-{ABSENT}"))
        return pairs

    def compositions(self) -> list[Any]:
        """``(outer, inner)`` Jacobian-method pairs of the declared Hessian compositions."""
        pairs = [
            pytest.param(
                *pair, marks=capability("hessian", hess, "compositions"), id="-".join(pair)
            )
            for hess, pair in self.features.compositions.items()
        ]
        if pairs:
            return pairs
        mark = pytest.mark.skip(
            reason=f"{self.name} declares no Hessian method as a composition of Jacobian methods"
        )
        marks = [mark, capability("hessian", None, "compositions")]
        return [pytest.param(ABSENT, ABSENT, marks=marks, id=ABSENT)]

    def composed_method(self, outer: str, inner: str) -> str:
        """The Hessian method declared as ``outer`` over ``inner``."""
        for hess, pair in self.features.compositions.items():
            if tuple(pair) == (outer, inner):
                return str(hess)
        raise KeyError(f"{self.name} declares no Hessian method {outer}({inner})")

    def supports(self, feature: str, operator: str, method: str | None = None) -> bool:
        """Whether ``method`` of ``operator`` (any method when None) declares ``feature``."""
        return bool(self.features.supports(feature, operator, method))

    def need(self, operator: str, feature: str | None = None, method: str | None = None) -> None:
        """Skip the running test unless ``operator`` (``method``, ``feature``) is declared."""
        self.touched.append((operator, method, feature))
        declared = self.methods(operator)
        if not declared or (method is not None and method not in declared):
            pytest.skip(self.reason(operator, None, method))
        if feature is not None and not self.supports(feature, operator, method):
            pytest.skip(self.reason(operator, feature, method))

    def need_device(self, device: str) -> None:
        """Skip the running test unless the adapter declares ``device``'s type."""
        if not self.features.supports_device(device):
            pytest.skip(f"{self.name} declares devices {self.features.devices}, not {device!r}")

    # ----------------------------------------------------------------- the six operators

    def _call(
        self, operator: str, method: str | None, extras: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        unknown = sorted(set(extras) - {"has_aux", "chunk_size", "in_dims"})
        if unknown:
            raise TypeError(f"SuiteImpl.{operator}: unexpected keywords {unknown}")
        method = self.default(operator) if method is None else method
        self.need(operator, method=method)
        passed = {}
        for key, value, default, feature in (
            ("has_aux", extras.get("has_aux", False), False, "has_aux"),
            ("chunk_size", extras.get("chunk_size"), None, "chunk_size"),
            ("in_dims", extras.get("in_dims", 0), 0, "in_dims"),
        ):
            if key in extras and value != default:
                self.need(operator, feature, method)
                passed[key] = value
        self.calls += 1
        return method, passed

    def jacobian(
        self,
        func: Callable[..., Any],
        argnums: Any = 0,
        *,
        method: str | None = None,
        **extras: Any,
    ) -> Callable[..., Any]:
        """The adapter's ``jacobian(func, argnums, method=...)``, the call counted.

        ``method=None`` is the adapter's default (its first declared method); ``has_aux`` and
        ``chunk_size`` are passed on where declared, and skip the running test otherwise.
        """
        method, passed = self._call("jacobian", method, extras)
        return self.adapter.jacobian(func, argnums, method=method, **passed)  # type: ignore[no-any-return]

    def hessian(
        self,
        func: Callable[..., Any],
        argnums: Any = 0,
        *,
        method: str | None = None,
        **extras: Any,
    ) -> Callable[..., Any]:
        """The adapter's ``hessian(func, argnums, method=...)``; ``chunk_size`` as for
        :meth:`jacobian`."""
        method, passed = self._call("hessian", method, extras)
        return self.adapter.hessian(func, argnums, method=method, **passed)  # type: ignore[no-any-return]

    def batch_jacobian(
        self,
        func: Callable[..., Any],
        argnums: Any = 0,
        *,
        method: str | None = None,
        **extras: Any,
    ) -> Callable[..., Any]:
        """The adapter's ``batch_jacobian(func, argnums, method=...)``; ``in_dims`` other than 0
        and ``chunk_size`` are passed only where declared."""
        method, passed = self._call("batch_jacobian", method, extras)
        return self.adapter.batch_jacobian(func, argnums, method=method, **passed)  # type: ignore[no-any-return]

    def batch_hessian(
        self,
        func: Callable[..., Any],
        argnums: Any = 0,
        *,
        method: str | None = None,
        **extras: Any,
    ) -> Callable[..., Any]:
        """The adapter's ``batch_hessian(func, argnums, method=...)``; ``in_dims`` as for
        :meth:`batch_jacobian`."""
        method, passed = self._call("batch_hessian", method, extras)
        return self.adapter.batch_hessian(func, argnums, method=method, **passed)  # type: ignore[no-any-return]

    def hvp(
        self, func: Callable[..., Any], primals: Any, tangents: Any, *, method: str | None = None
    ) -> Any:
        """The adapter's ``hvp(func, primals, tangents, method=...)``: ``H @ v``."""
        method, _ = self._call("hvp", method, {})
        return self.adapter.hvp(func, primals, tangents, method=method)

    def vhp(
        self, func: Callable[..., Any], primals: Any, cotangents: Any, *, method: str | None = None
    ) -> Any:
        """The adapter's ``vhp(func, primals, cotangents, method=...)``: ``v @ H``."""
        method, _ = self._call("vhp", method, {})
        return self.adapter.vhp(func, primals, cotangents, method=method)

    def operator(self, name: str) -> Callable[..., Any]:
        """The operator called ``name`` (``getattr(derivs, api)`` in the suite's tables)."""
        if name not in OPERATORS:
            raise ValueError(f"SuiteImpl.operator: unknown operator {name!r}")
        return getattr(self, name)  # type: ignore[no-any-return]
