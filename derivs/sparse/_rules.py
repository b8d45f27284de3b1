"""Dependency rules, one per ATen op family: the tracer's entry point ``apply``.

The families live in their own modules, each registering its rules by op name:

- ``_rule_base``: pointwise ops, copies, value-free outputs, and ``fallback`` for every op
  without a rule (each output element depends on everything its inputs depend on);
- ``_rules_index``: indexing, gathers, scatters, pads and selections (ops run on ids);
- ``_rules_linalg``: reductions, scans, sorts, contractions (dense and torch sparse);
- ``_rules_conv``: convolutions and pooling;
- ``_rules_nn``: normalisations, losses, ``glu``, FFTs;
- ``_rules_resample``: interpolation and adaptive pooling.
"""

from __future__ import annotations

from typing import Any

import torch

from derivs.sparse import (  # noqa: F401  (imported for their registrations)
    _rules_conv,
    _rules_index,
    _rules_linalg,
    _rules_nn,
    _rules_resample,
)
from derivs.sparse._deps import Deps
from derivs.sparse._rule_base import RULES, Rule, fallback, functional_op, op_name, pointwise
from derivs.sparse._trace import Call


def apply(call: Call) -> list[Deps | None]:
    """The rows of ``call``'s outputs (the tracer's entry point)."""
    found = _CHOSEN.get(call.func)
    if found is None:
        found = _CHOSEN[call.func] = _choose(call.func)
    return found(call)


_CHOSEN: dict[Any, Rule] = {}


def _choose(func: Any) -> Rule:
    found = RULES.get(op_name(func))
    if found is not None:
        return found
    functional = functional_op(func)
    if functional is not None and torch.Tag.pointwise in functional.tags:
        return pointwise
    return fallback
