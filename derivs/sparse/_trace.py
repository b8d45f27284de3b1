"""The tracer: runs a derivative at ATen level and propagates dependency sets op by op.

A ``TorchDispatchMode`` sees every ATen op of the traced vector-Jacobian (or Hessian-vector)
product, including the ops that autograd, custom ``autograd.Function`` backwards and in-place
updates run. Each op is executed on the real values, then its rule (``derivs.sparse._rules``)
maps the dependency sets of its inputs to its outputs.

Sets live on *storages*, not on tensors: a view reads the rows of the storage elements it
covers (from its real strides), and an in-place op writes rows back to the elements it
covers, so aliasing, views of views and in-place updates through views are exact without
rules of their own.

Two flags per storage:

- dependency rows (``Deps`` over the storage's elements), present once a seed reached it;
- *varying*: its values change with the point (primal inputs, seeds, random ops and
  everything computed from them). Values that are not varying (constants, closures, index
  tensors built from them) are the same at every point, so rules may read them.

In global mode the tracer refuses to let a varying value leave torch (``.item()``,
``bool()``, ``.tolist()``, ``.numpy()``, data-dependent shapes): Python could branch on it,
and the trace would then hold for this point only (``Untraceable``). Dependency rows never
leave torch in either mode (the dependence would be lost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from derivs.sparse import _deps
from derivs.sparse._deps import Deps
from derivs.sparse._escapes import (
    EscapeMode,
    Untraceable,
    custom_nodes,
    data_dependent_inputs,
    enter,
    leave,
)
from derivs.sparse._storage import (
    Storage,
    grow,
    is_float,
    key,
    positions,
    storage_numel,
    tensors_of,
)

__all__ = ["Call", "Tracker", "Untraceable", "fallback_rows", "is_float", "tensors_of"]


class Tracker:
    """The state of one trace: dependency rows and varying flags per storage."""

    def __init__(self, n_seeds: int, *, local: bool, rules: Callable[[Call], list[Deps | None]]):
        self.n_seeds = n_seeds
        self.local = local
        self.apply_rule = rules
        self.storages: dict[int, Storage] = {}
        self.varying: set[int] = set()
        # NOTE: every tensor the trace touches is kept alive until it ends, so a storage
        # key is never reused by a new storage while its rows are still recorded.
        self.alive: list[torch.Tensor] = []
        self.quiet = 0
        self.refused: Untraceable | None = None

    # -- reading and writing rows ----------------------------------------------------------

    def deps(self, t: torch.Tensor) -> Deps | None:
        """The rows of ``t``'s elements (row-major), None when no element depends on a seed."""
        if t.numel() == 0 or t.device.type == "meta":
            return None
        st = self.storages.get(key(t))
        if st is None or st.deps.nnz == 0:
            return None
        if t.layout != torch.strided:
            # NOTE: a sparse tensor is one unit: each element may depend on all it depends on.
            return _deps.uniform(t.numel(), st.deps.seed_set(), self.n_seeds)
        grow(st, t)
        pos = positions(t, storage_numel(t))
        if st.elem_size == t.element_size():
            return st.deps if pos is None else _deps.take(st.deps, pos)
        # NOTE: a view of the bytes as another dtype (view_as_real, view_as_complex, view(dtype)).
        pos = torch.arange(t.numel()) if pos is None else pos
        size, ratio = t.element_size(), st.elem_size
        if ratio % size == 0:  # t's elements are parts of the storage's
            return _deps.take(st.deps, torch.div(pos, ratio // size, rounding_mode="floor"))
        if size % ratio == 0:  # t's elements span several of the storage's
            r = size // ratio
            parts = [(st.deps, None, pos * r + k) for k in range(r)]
            return _deps.gather_union(t.numel(), self.n_seeds, parts)
        return _deps.uniform(t.numel(), st.deps.seed_set(), self.n_seeds)

    def write(self, t: torch.Tensor, rows: Deps | None) -> None:
        """Record that the elements of ``t`` now hold ``rows`` (None: no dependence)."""
        if t.numel() == 0 or t.device.type == "meta":
            return
        k = key(t)
        st = self.storages.get(k)
        if st is None and rows is None:
            return
        rows = _deps.empty(t.numel(), self.n_seeds) if rows is None else rows
        if t.layout != torch.strided:
            seeds = rows.seed_set()
            self.storages[k] = Storage(_deps.uniform(1, seeds, self.n_seeds), 0, 1)
            return
        pos = positions(t, storage_numel(t))
        if st is None:
            numel = storage_numel(t)
            st = Storage(_deps.empty(numel, self.n_seeds), t.element_size(), numel)
            self.storages[k] = st
        grow(st, t)
        if st.elem_size != t.element_size():
            pos, rows = self._in_storage_units(st, t, pos, rows)
        st.deps = rows if pos is None else _deps.assign(st.deps, pos, rows)

    def _in_storage_units(
        self, st: Storage, t: torch.Tensor, pos: torch.Tensor | None, rows: Deps
    ) -> tuple[torch.Tensor, Deps]:
        """A write through a view of another dtype, as rows of the storage's elements.

        A storage element only partly written keeps its old rows too (a union: sound).
        """
        pos = torch.arange(t.numel()) if pos is None else pos
        size, ratio = t.element_size(), st.elem_size
        if size % ratio == 0:  # each element of t covers several storage elements
            r = size // ratio
            spots = (pos.unsqueeze(1) * r + torch.arange(r)).reshape(-1)
            return spots, _deps.take(
                rows, torch.arange(t.numel()).unsqueeze(1).expand(-1, r).reshape(-1)
            )
        r = max(ratio // size, 1)
        spots, inverse = torch.unique(torch.div(pos, r, rounding_mode="floor"), return_inverse=True)
        merged = _deps.union(
            spots.numel(), self.n_seeds, [(rows, inverse), (_deps.take(st.deps, spots), None)]
        )
        return spots, merged

    def seed(self, t: torch.Tensor, offset: int) -> None:
        """Make element ``e`` of the fresh tensor ``t`` seed ``offset + e``."""
        self.alive.append(t)
        self.varying.add(key(t))
        self.write(t, _deps.identity(t.numel(), offset, self.n_seeds))

    def mark_varying(self, t: torch.Tensor) -> None:
        self.alive.append(t)
        if t.numel():
            self.varying.add(key(t))

    def is_varying(self, t: torch.Tensor) -> bool:
        return t.numel() > 0 and key(t) in self.varying

    # -- the modes -------------------------------------------------------------------------

    @contextmanager
    def active(self) -> Iterator[None]:
        with EscapeMode(self), _Dispatch(self):
            yield

    def grad(
        self,
        outputs: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        grad_outputs: Sequence[torch.Tensor] | None = None,
        *,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor | None, ...]:
        """``torch.autograd.grad``, escapes caught inside custom backwards too.

        The autograd engine runs backwards without torch-function modes, so the mode that
        catches ``.numpy()`` and ``.tolist()`` is entered around each custom
        ``autograd.Function``'s backward by node hooks.
        """
        modes: list[EscapeMode] = []
        handles = []
        for node in custom_nodes(outputs):
            handles.append(node.register_prehook(lambda *_: enter(modes, EscapeMode(self))))
            handles.append(node.register_hook(lambda *_: leave(modes)))
        try:
            grads: tuple[torch.Tensor | None, ...] = torch.autograd.grad(
                list(outputs), list(inputs), grad_outputs, allow_unused=True,
                create_graph=create_graph,
            )  # fmt: skip
        finally:
            while modes:
                leave(modes)
            for h in handles:
                h.remove()
        return grads

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Printing a tensor reads its values: no escape is checked while a repr is built."""
        self.quiet += 1
        try:
            yield
        finally:
            self.quiet -= 1

    def check_escape(self, what: str, tensors: list[torch.Tensor]) -> None:
        """Refuse to let a seed-dependent (any mode) or varying (global) value leave torch."""
        if self.quiet:
            return
        if any(self.deps(t) is not None for t in tensors):
            self.refuse(f"the derivative passes through {what}: its dependence cannot be followed")
        if not self.local and any(self.is_varying(t) for t in tensors):
            self.refuse(
                f"func reads input-dependent values through {what} "
                "(Python control flow or data-dependent shapes on the input values)"
            )

    def refuse(self, reason: str) -> None:
        """Raise ``Untraceable``, and remember it (in case func catches and carries on)."""
        self.refused = Untraceable(reason)
        raise self.refused

    def after(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Propagate varying flags and rows from the inputs of ``func`` to what it wrote."""
        ins = tensors_of(args) + (tensors_of(kwargs) if kwargs else [])
        outs = tensors_of(out)
        self.alive.extend(outs)
        in_keys = {key(a) for a in ins if a.numel()}
        written = written_args(func, args, kwargs)
        fresh = [o for o in outs if o.numel() and key(o) not in in_keys]
        if torch.Tag.nondeterministic_seeded in func.tags or any(self.is_varying(a) for a in ins):
            self.varying.update(key(t) for t in fresh + written if t.numel())
        if func._schema.name in _METADATA_ONLY:
            return
        if not written and not any(is_float(o) for o in fresh):
            return  # a view (its rows are its storage's) or an integer result
        call = Call(self, func, args, kwargs, outs)
        if not any(call.deps(a) is not None for a in ins):
            for t in written:
                self.write(t, None)
            return
        results = self.apply_rule(call)
        written_keys = {key(t) for t in written if t.numel()}
        done: set[int] = set()
        for o, rows in zip(outs, results, strict=True):
            if not o.numel():
                continue
            if key(o) not in in_keys or key(o) in written_keys:
                self.write(o, rows if is_float(o) else None)
                done.add(key(o))
        for t in written:
            if t.numel() and key(t) not in done:
                self.write(t, fallback_rows(call, t))


class Call:
    """One op as the rules see it: the op, its real arguments and outputs, and the tracker."""

    def __init__(
        self,
        tracker: Tracker,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outs: list[torch.Tensor],
    ) -> None:
        self.tracker = tracker
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.outs = outs
        self.local = tracker.local
        self.n_seeds = tracker.n_seeds
        self._deps: dict[int, Deps | None] = {}

    def deps(self, t: Any) -> Deps | None:
        """The rows of tensor ``t`` (None for non-tensors, integer tensors, no dependence)."""
        if not isinstance(t, torch.Tensor) or not is_float(t):
            return None
        if id(t) not in self._deps:
            self._deps[id(t)] = self.tracker.deps(t)
        return self._deps[id(t)]

    def is_varying(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and self.tracker.is_varying(t)

    def tensors(self) -> list[torch.Tensor]:
        return tensors_of(self.args) + (tensors_of(self.kwargs) if self.kwargs else [])

    def bound(self) -> dict[str, Any]:
        """The arguments by schema name, defaults filled in."""
        return bind(self.func, self.args, self.kwargs)


def bind(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, a in enumerate(func._schema.arguments):
        if k < len(args) and not a.kwarg_only:
            out[a.name] = args[k]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def fallback_rows(call: Call, t: torch.Tensor) -> Deps | None:
    """Every element of ``t`` depends on every seed any input depends on (always sound)."""
    found = [d for d in (call.deps(a) for a in call.tensors()) if d is not None]
    if not found or not is_float(t):
        return None
    seeds = _deps.unique(torch.cat([d.seeds for d in found]))
    return _deps.uniform(t.numel(), seeds, call.n_seeds)


_WRITTEN: dict[Any, tuple[tuple[int, str], ...]] = {}


def written_args(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors ``func`` writes to (``self`` of in-place ops, ``out=`` arguments)."""
    spec = _WRITTEN.get(func)
    if spec is None:
        spec = tuple(
            (k, a.name)
            for k, a in enumerate(func._schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        _WRITTEN[func] = spec
    found: list[torch.Tensor] = []
    for k, name in spec:
        value = args[k] if k < len(args) else kwargs.get(name)
        found.extend(tensors_of(value))
    return found


_aten = torch.ops.aten
# NOTE: in-place ops that change a tensor's shape or strides, not the values it holds.
# ``resize_`` keeps the storage (its StorageImpl) and the elements it held; new ones are empty.
_METADATA_ONLY = frozenset(
    f"aten::{name}"
    for name in (
        "t_", "transpose_", "squeeze_", "unsqueeze_", "as_strided_", "detach_", "resize_",
        "resize_as_",
    )
)  # fmt: skip


class _Dispatch(TorchDispatchMode):  # type: ignore[no-untyped-call]
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # NOTE: otherwise torch wraps __torch_dispatch__ in torch._dynamo.disable, whose first
        # call imports torch._dynamo (seconds); the tracer never runs under torch.compile.
        return False

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.tracker = tracker

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        watched = data_dependent_inputs(func, args, kwargs)
        if watched:
            self.tracker.check_escape(f"{func}", watched)
        out = func(*args, **kwargs)
        # NOTE: the rules' own tensor ops need no escape mode (and would pay for it per op).
        with torch._C.DisableTorchFunction():
            self.tracker.after(func, args, kwargs, out)
        return out
