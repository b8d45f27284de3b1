"""The oracles' evaluations of ``func`` raised to the compute dtype, the user's objects untouched.

The finite-difference oracles cast the arguments to float64, but a model's parameters and
buffers, or the tensors a closure captures, stay float32 (bfloat16, float16): ``F.linear``
then refuses to mix them. :class:`Raising` is a ``TorchFunctionMode`` active only while an
oracle evaluates ``func``; in it every lower-precision floating operand of every torch
function is used as a float64 copy (complex64 as complex128), so the whole computation runs
in the compute dtype. The copies are exact (a widening cast), made once per oracle call and
per tensor (and again after the tensor changes); the user's tensors are never modified.

What the mode does not raise, it reports:

* lower-precision results that ``func`` computes on purpose (``x.float()``,
  ``softmax(x, dtype=torch.float32)``) are kept: they are part of ``func``, their rounding is
  measured by ``_noise.measured_noise`` like any other, and their next use is raised;
* integer tensors are never promoted;
* a tensor ``func`` did not create (a buffer, a captured constant, an argument) that an
  in-place method of it modifies (``self.count.add_(1)``) is saved before and restored
  after each evaluation, so every evaluation sees the same state; one modified by another
  op (``batch_norm``'s running statistics in train mode) is reported, and where it was a
  promoted copy, only the copy changed.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode, resolve_name

from derivs.oracles._common import Tensor, prepare
from derivs.oracles._differences import _cast_args, _compute_dtype

_IN_PLACE_DUNDERS = frozenset(
    {
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__ipow__",
        "__imatmul__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "__setitem__",
        "__set__",  # a property set, e.g. ``w.data = ...``
    }
)
# NOTE: methods named like in-place ones that change no data (autograd flags, sharing).
_NOT_DATA = frozenset({"requires_grad_", "share_memory_", "retain_grad", "register_hook"})
# NOTE: tensor identity and bookkeeping: run on the user's tensor itself, never on a copy
# (a promoted copy has another hash and storage, and no .grad).
_IDENTITY = frozenset(
    {
        Tensor.__hash__,
        Tensor.data_ptr,
        Tensor.untyped_storage,
        Tensor.storage,
        *(
            inspect.getattr_static(Tensor, name).__get__
            for name in ("_version", "grad", "grad_fn", "is_leaf", "_base", "requires_grad")
        ),
        Tensor.__repr__,
        Tensor.__format__,
        Tensor.__reduce_ex__,
        Tensor.__deepcopy__,
    }
)


def _lower(t: object, real: torch.dtype) -> bool:
    """Whether ``t`` is a floating (or complex) tensor less precise than ``real``."""
    if not isinstance(t, Tensor):
        return False
    if t.is_complex():
        return t.dtype.itemsize < 2 * real.itemsize
    return t.is_floating_point() and torch.finfo(t.dtype).eps > torch.finfo(real).eps


def _higher(t: object, real: torch.dtype) -> bool:
    """Whether ``t`` is a real floating tensor more precise than ``real``."""
    return (
        isinstance(t, Tensor)
        and t.is_floating_point()
        and torch.finfo(t.dtype).eps < torch.finfo(real).eps
    )


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def _tensors(tree: Any) -> Iterator[Tensor]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Tensor):
            yield node
        elif isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())


def _map(tree: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map(t, fn) for t in tree)
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    return tree


def _in_place_target(func: Callable[..., Any], args: tuple[Any, ...]) -> Tensor | None:
    """The tensor ``func`` modifies in place (its ``self``), or None for other functions."""
    name = getattr(func, "__name__", "")
    in_place = name in _IN_PLACE_DUNDERS or (
        name.endswith("_") and not name.startswith("_") and name not in _NOT_DATA
    )
    if in_place and args and isinstance(args[0], Tensor):
        return args[0]
    return None


class Evaluation(NamedTuple):
    """How the finite-difference oracles evaluate ``func``: see :func:`evaluation`.

    ``dtype``: the compute dtype; ``arguments``: the floating arguments of lower precision,
    cast (exactly) to ``dtype``; ``promoted``: the lower-precision tensors ``func`` uses
    but did not create (parameters, buffers, captured constants), raised to ``dtype``;
    ``kept``: the torch functions that compute a lower-precision result from ``dtype``
    operands (explicit casts), kept as ``func`` wrote them; ``mutated``: the tensors
    ``func`` modifies but did not create. Each entry is ``"dtype (shape)"`` or a name.
    """

    dtype: torch.dtype
    arguments: tuple[str, ...]
    promoted: tuple[str, ...]
    kept: tuple[str, ...]
    mutated: tuple[str, ...]

    def summary(self) -> str:
        """One line, e.g. ``func raised to float64 (3 float32 tensors it uses promoted: ...)``.

        Empty when nothing was raised, kept or modified (a float64 ``func`` of float64
        tensors).
        """
        dtype = str(self.dtype).removeprefix("torch.")
        raised = [*self.arguments, *self.promoted]
        parts = []
        if raised:
            kinds = "/".join(sorted({p.split(" ", 1)[0] for p in raised}))
            what = []
            if self.arguments:
                what.append(f"its {kinds} arguments cast")
            if self.promoted:
                n = len(self.promoted)
                shown = ", ".join(self.promoted[:4]) + ", ..." * (n > 4)
                what.append(f"{n} tensor{'s' * (n != 1)} it uses promoted: {shown}")
            parts.append(f"func raised to {dtype} ({'; '.join(what)})")
        if self.kept:
            parts.append(
                f"lower-precision results it computes on purpose kept ({', '.join(self.kept)}):"
                " their rounding is in the error estimate"
            )
        if self.mutated:
            parts.append(
                f"it modifies tensors it did not create ({', '.join(self.mutated)}): each"
                " evaluation starts from the state before the first (in-place methods are"
                " undone; a promoted tensor's copy is what changed)"
            )
        return "; ".join(parts)


class Raising(TorchFunctionMode):
    """Inside :meth:`session`: every lower-precision operand is used as a ``real`` copy.

    One instance per oracle call: the copies of the tensors ``func`` closes over are made
    once and reused (a tensor whose version changed is copied again).
    """

    def __init__(self, real: torch.dtype, *, lowering: bool = False) -> None:
        super().__init__()
        self.real = real
        # NOTE: lowering (check's reference= mode only) casts the more precise operands
        # down instead: a reference computed in a low-precision kernel's dtype.
        self._moves = _higher if lowering else _lower
        self.complex = torch.complex128 if real == torch.float64 else torch.complex64
        # id -> (the tensor, its version when copied, the copy, the copy's version then)
        self._copies: dict[int, tuple[weakref.ref[Tensor], int, Tensor, int]] = {}
        self._made: dict[int, weakref.ref[Tensor]] = {}  # made by an op in this session
        self._seen: dict[int, tuple[weakref.ref[Tensor], int]] = {}  # external operands
        self._saved: dict[int, tuple[Tensor, Tensor]] = {}  # in-place targets, as they were
        self.promoted: dict[int, str] = {}
        self.kept: dict[str, None] = {}
        self.mutated: dict[int, str] = {}

    @contextmanager
    def session(self) -> Iterator[None]:
        """One evaluation: the in-place targets restored at its end.

        The mode itself is entered (``with mode:``) only around the calls that run the
        user's code (``func``, and ``torch.autograd.grad`` through its backward), so the
        oracle's own bookkeeping in between sees its tensors as they are.
        """
        self._made, self._seen, self._saved = {}, {}, {}
        try:
            yield
        finally:
            self._close()

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` evaluated in a session, under the mode."""

        def raised(*args: Any) -> Any:
            with self.session(), self:
                return func(*args)

        return raised

    def evaluation(self) -> Evaluation:
        return Evaluation(
            self.real,
            (),
            tuple(self.promoted.values()),
            tuple(self.kept),
            tuple(self.mutated.values()),
        )

    def _close(self) -> None:
        with torch.no_grad():
            for t, before in self._saved.values():
                t.copy_(before)
        for key, (ref, version) in self._seen.items():
            seen = ref()
            if seen is not None and seen._version != version and key not in self._saved:
                self.mutated.setdefault(key, _describe(seen))
        for key, (ref, _, copy, version) in list(self._copies.items()):
            original = ref()
            # NOTE: an op changed the copy (batch_norm updates its running statistics
            # without bumping their version, hence the comparison): copy afresh next time
            if original is None:
                del self._copies[key]
            elif copy._version != version or not _same(copy, original.to(copy.dtype)):
                self.mutated.setdefault(key, f"{self.promoted[key]}, its copy")
                del self._copies[key]

    def _external(self, t: Tensor) -> bool:
        root = t if t._base is None else t._base
        ref = self._made.get(id(root))
        return ref is None or ref() is not root

    def _raise(self, t: Tensor) -> Tensor:
        if not self._external(t):
            if self._moves(t, self.real):
                return t.to(self.complex if t.is_complex() else self.real)
            return t
        self._seen.setdefault(id(t), (weakref.ref(t), t._version))
        if not self._moves(t, self.real):
            return t
        hit = self._copies.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
        copy = t.to(self.complex if t.is_complex() else self.real)
        self._copies[id(t)] = (weakref.ref(t), t._version, copy, copy._version)
        self.promoted.setdefault(id(t), _describe(t))
        return copy

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _IDENTITY:
            return func(*args, **kwargs)
        target = _in_place_target(func, args)
        if target is not None:
            if self._external(target):
                key = id(target)
                self._saved.setdefault(key, (target, target.detach().clone()))
                self.mutated.setdefault(key, f"{_describe(target)} by {resolve_name(func)}")
            args = (target, *_map(args[1:], self._raise))
        else:
            args = _map(args, self._raise)
        kwargs = _map(kwargs, self._raise)
        out = func(*args, **kwargs)
        narrowed = False
        for t in _tensors(out):
            self._made[id(t)] = weakref.ref(t)
            narrowed = narrowed or self._moves(t, self.real)
        # NOTE: a lower-precision result from raised floating operands is func's own cast
        # (from integer operands or none, it is a constant made exactly, e.g. torch.zeros)
        if narrowed and target is None and any(_inexact(t) for t in _tensors((args, kwargs))):
            self.kept.setdefault(resolve_name(func) or getattr(func, "__name__", "?"))
        return out


def _inexact(t: Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def evaluation(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...] = 0,
    *,
    compute_dtype: torch.dtype | None = None,
) -> Evaluation:
    """How :func:`fd_jacobian` and :func:`fd_hessian` evaluate ``func`` at ``args``.

    ``func`` runs once, as the oracles run it: its floating arguments cast to
    ``compute_dtype`` (default float64; float32 on mps), and every lower-precision tensor it
    uses but did not create (a float32 module's parameters and buffers, a bfloat16 weight a
    closure captures) raised to that dtype while it runs, the user's tensors untouched.

    Args:
        func, args, argnums, compute_dtype: as for :func:`fd_jacobian`.

    Returns:
        An :class:`Evaluation`: the compute dtype, the arguments cast up to it, the tensors
        promoted, the lower-precision results ``func`` computes on purpose (kept, their
        rounding measured), and the tensors it modifies without having created them.

    Raises:
        TypeError, ValueError: bad arguments (messages start with
            ``derivs.oracles.evaluation``); whatever ``func`` raises, unchanged.

    >>> lin = torch.nn.Linear(2, 1)  # float32 parameters
    >>> ev = evaluation(lin, (torch.ones(2),))
    >>> ev.dtype, ev.arguments, ev.promoted
    (torch.float64, ('float32 (2,)',), ('float32 (1, 2)', 'float32 (1,)'))
    """
    api = "derivs.oracles.evaluation"
    targs, nums, _ = prepare(api, func, args, argnums)
    cdtype = _compute_dtype(api, [targs[a] for a in nums], compute_dtype)
    mode = Raising(cdtype)
    mode.wrap(func)(*_cast_args(targs, cdtype))
    cast = tuple(_describe(a) for a in targs if _lower(a, cdtype))
    return mode.evaluation()._replace(arguments=cast)


def cast_computation(func: Callable[..., Any], dtype: torch.dtype) -> Callable[..., Any]:
    """``func`` computing in ``dtype``: every floating tensor it uses cast to ``dtype``.

    With float64 (or float32) every less precise tensor is raised, as the finite-difference
    oracles raise ``func``; with a less precise ``dtype`` (bfloat16, float16) every more
    precise one is lowered: a reference written in plain float32 PyTorch computed as a
    low-precision kernel would be. The results ``func`` computes in another dtype on purpose
    are kept. The user's tensors are never modified; the casts are made once per tensor.
    Call it on arguments of ``dtype``; only the forward pass runs under the casts.

    >>> w = torch.tensor([0.1, 0.2])  # float32
    >>> cast_computation(lambda x: w @ x, torch.float64)(torch.ones(2, dtype=torch.float64))
    tensor(0.3000, dtype=torch.float64)
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"derivs.oracles.cast_computation: dtype must be a floating torch.dtype, got {dtype!r}"
        )
    mode = Raising(dtype, lowering=torch.finfo(dtype).eps > torch.finfo(torch.float32).eps)
    return mode.wrap(func)


def _same(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))
