"""What an implementation under test declares: its operators, methods and optional features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from derivs import _registry

API = "derivs.conformance.Features"

OPERATORS = tuple(_registry.OPERATORS)

# feature -> what declaring it promises (the pytest header and the docs print these)
FEATURES = {
    "vmap": "the transform's result composes with torch.func.vmap",
    "forward_mode": "torch.func.jvp differentiates through the transform's result",
    "reverse_mode": "torch.autograd.grad differentiates the result in inputs requiring grad",
    "has_aux": "jacobian accepts has_aux=True",
    "chunk_size": "accepts chunk_size= (values must not change)",
    "in_dims": "batch operators accept vmap-style in_dims other than 0",
    "whole_batch": "a batch method that is handed the whole-batch function (the sum trick)",
    "vector_hessians": "Hessians of vector-valued functions, shape (*out, *in, *in)",
    "pytrees": "differentiated arguments, and the outputs of jacobian, hessian and the batch "
    "operators (not hvp/vhp: a scalar), may be dicts, lists, tuples or namedtuples of tensors; "
    "results nest as torch.func nests them",
}

# True: every method of every operator; False: none; a mapping: operator -> True or methods.
Support = Union[bool, Mapping[str, Union[bool, Sequence[str]]]]  # noqa: UP007 (runtime alias)


def _normalise(
    name: str, support: Support, methods: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """``support`` as operator -> methods, checked against the declared methods."""
    if isinstance(support, bool):
        return {op: ms for op, ms in methods.items()} if support else {}
    if not isinstance(support, Mapping):
        raise TypeError(
            f"{API}: {name} must be True, False or a mapping operator -> methods, "
            f"got {type(support).__name__}"
        )
    result: dict[str, tuple[str, ...]] = {}
    for op, ms in support.items():
        if op not in methods:
            raise ValueError(f"{API}: {name} names operator {op!r}, which has no methods declared")
        chosen = methods[op] if ms is True else () if ms is False else tuple(ms)
        unknown = [m for m in chosen if m not in methods[op]]
        if unknown:
            raise ValueError(
                f"{API}: {name}[{op!r}] names {unknown}, not among the methods {list(methods[op])}"
            )
        result[op] = chosen
    return result


@dataclass(frozen=True)
class Features:
    """The operators, methods and optional features an adapter declares.

    A property that needs a feature the adapter does not declare is skipped with the reason;
    a declared feature that fails, fails.

    The nine optional features (``vmap``, ``forward_mode``, ``reverse_mode``, ``has_aux``,
    ``chunk_size``, ``in_dims``, ``whole_batch``, ``vector_hessians``, ``pytrees``;
    ``FEATURES`` says what each promises) each say which methods have it: True for every method, False (the
    default) for none, or a mapping operator -> True or method names. After construction
    each is that mapping, operator -> tuple of methods.

    Args:
        methods: operator -> method names, the first being the default; an operator left out
            (or given no methods) is absent, and every property of it is skipped.
        devices: device types the implementation supports (``"meta"`` for shape-only
            runs); None for any device.
        dtypes: floating dtypes it supports, as names (``"float32"``).
        compositions: Hessian methods that are Jacobian methods composed,
            ``{hessian_method: (outer_jacobian_method, inner_jacobian_method)}``.

    Raises:
        ValueError: an unknown operator, or a feature naming a method not in ``methods``.

    >>> f = Features(methods={"jacobian": ["rev", "fwd"]}, has_aux={"jacobian": ["rev"]})
    >>> f.supports("has_aux", "jacobian", "rev"), f.supports("has_aux", "jacobian", "fwd")
    (True, False)
    """

    methods: Mapping[str, Sequence[str]]
    vmap: Support = False
    forward_mode: Support = False
    reverse_mode: Support = False
    has_aux: Support = False
    chunk_size: Support = False
    in_dims: Support = False
    whole_batch: Support = False
    vector_hessians: Support = False
    pytrees: Support = False
    devices: Sequence[str] | None = None
    dtypes: Sequence[str] = ("float32", "float64")
    compositions: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [op for op in self.methods if op not in OPERATORS]
        if unknown:
            raise ValueError(f"{API}: unknown operators {unknown}; the operators are {OPERATORS}")
        methods = {op: tuple(ms) for op, ms in self.methods.items() if ms}
        object.__setattr__(self, "methods", methods)
        for name in FEATURES:
            object.__setattr__(self, name, _normalise(name, getattr(self, name), methods))
        for hess, (outer, inner) in self.compositions.items():
            jac = methods.get("jacobian", ())
            if hess not in methods.get("hessian", ()) or outer not in jac or inner not in jac:
                raise ValueError(
                    f"{API}: compositions[{hess!r}] = ({outer!r}, {inner!r}) needs a hessian "
                    f"method {hess!r} and jacobian methods {outer!r}, {inner!r}"
                )
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))

    def operator_methods(self, operator: str) -> tuple[str, ...]:
        """The declared methods of ``operator`` (empty when it is absent)."""
        return tuple(self.methods.get(operator, ()))

    def supports(self, feature: str, operator: str, method: str | None = None) -> bool:
        """Whether ``method`` of ``operator`` (any method when None) declares ``feature``."""
        if feature not in FEATURES:
            raise ValueError(
                f"{API}.supports: unknown feature {feature!r}; one of {list(FEATURES)}"
            )
        table: dict[str, tuple[str, ...]] = getattr(self, feature)
        chosen = table.get(operator, ())
        return bool(chosen) if method is None else method in chosen

    def with_feature(self, feature: str, operator: str) -> tuple[str, ...]:
        """The methods of ``operator`` that declare ``feature``, in declaration order."""
        return tuple(
            m for m in self.operator_methods(operator) if self.supports(feature, operator, m)
        )

    def supports_device(self, device: str) -> bool:
        """Whether ``device`` (``"cuda:1"``: its type) is among the declared devices."""
        kind = device.split(":")[0]
        return self.devices is None or kind in self.devices

    def summary(self) -> list[str]:
        """One line per operator and per feature, as the pytest header prints them."""
        lines = [f"{op}: {', '.join(ms)}" for op, ms in self.methods.items()]
        absent = [op for op in OPERATORS if op not in self.methods]
        if absent:
            lines.append(f"absent: {', '.join(absent)}")
        for name in FEATURES:
            table: dict[str, tuple[str, ...]] = getattr(self, name)
            if not table:
                lines.append(f"{name}: no")
            elif table == dict(self.methods):
                lines.append(f"{name}: all")
            else:
                lines.append(
                    f"{name}: " + "; ".join(f"{op} ({', '.join(ms)})" for op, ms in table.items())
                )
        lines.append(f"devices: {'any' if self.devices is None else ', '.join(self.devices)}")
        lines.append(f"dtypes: {', '.join(self.dtypes)}")
        if self.compositions:
            shown = ", ".join(f"{h} = {o}({i})" for h, (o, i) in self.compositions.items())
            lines.append(f"compositions: {shown}")
        return lines

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready copy (the conformance report stores it)."""
        out: dict[str, object] = {"methods": {op: list(ms) for op, ms in self.methods.items()}}
        for name in FEATURES:
            table: dict[str, tuple[str, ...]] = getattr(self, name)
            out[name] = {op: list(ms) for op, ms in table.items()}
        out["devices"] = None if self.devices is None else list(self.devices)
        out["dtypes"] = list(self.dtypes)
        out["compositions"] = {h: list(p) for h, p in self.compositions.items()}
        return out
