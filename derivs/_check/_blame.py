"""Where a wrong derivative rule lives: :func:`locate` names the custom
``torch.autograd.Function`` or the torch operator whose own rule is wrong.

``func`` runs once at the point while a recorder captures every custom Function call and
every aten operation that depends on the differentiated arguments (their inputs cloned, and
where they were called: a module path such as ``model.3``, or the file and line). Then each
recorded unit's rule is checked on its own, on the inputs it saw: its backward and jvp
against finite differences of its forward (``derivs.oracles.fd_jacobian``), its second-order
rules against finite differences of its gradient (``fd_hessian``), in float64 copies of the
recorded inputs. Custom Functions come first; torch operators are checked only when no
custom Function explains the failure.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwad
from torch.nn.modules import module as nn_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten
from torch.utils.weak import WeakTensorKeyDictionary

from derivs._check._compare import compare, magnitude
from derivs.oracles import fd_hessian, fd_jacobian

Tensor = torch.Tensor

# NOTE: bounds that keep locate cheap next to the check itself: the units recorded per
# forward and the bytes of their cloned inputs; the occurrences of one torch operator checked
# (the same op on other inputs rarely tells more); a unit with more differentiated input
# elements than _DENSE is checked along _DIRECTIONS seeded random directions (a wrong rule
# shows along almost every direction).
_MAX_UNITS = 256
_MAX_BYTES = 2**28
_PER_OP = 4
_DENSE = 16
_DIRECTIONS = 4
_SEED = 0

#: rule tag (as in ``_diagnose.CAUSES``) -> its name in a finding.
RULES: dict[str, str] = {
    "vjp": "backward",
    "jvp": "forward-mode (jvp)",
    "d_vjp_rev": "double backward",
    "d_vjp_fwd": "forward-over-reverse",
    "d_jvp_fwd": "forward-over-forward",
    "d_jvp_rev": "reverse-over-forward",
}
# A tag the verdict names that covers several rules checked locally.
_COVERS: dict[str, tuple[str, ...]] = {
    "d_vjp": ("d_vjp_rev", "d_vjp_fwd"),
    "d_jvp": ("d_jvp_rev", "d_jvp_fwd"),
}
# For a torch operator: the rule whose agreement clears the user's other methods.
_ALTERNATIVE: dict[str, tuple[str, str]] = {
    "vjp": ("jvp", "forward-mode methods"),
    "jvp": ("vjp", "reverse-mode methods"),
    "d_vjp_rev": ("d_vjp_fwd", "forward-over-reverse methods"),
    "d_vjp_fwd": ("d_vjp_rev", "reverse-mode methods"),
    "d_jvp_fwd": ("d_vjp_rev", "reverse-mode methods"),
    "d_jvp_rev": ("d_vjp_rev", "reverse-mode methods"),
}
_SKIPPED_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


@dataclass(frozen=True)
class Finding:
    """A unit whose own derivative rule is wrong on the inputs it saw in func's forward.

    ``owner`` is ``"function"`` (a custom ``torch.autograd.Function``, ``name`` its class)
    or ``"torch"`` (an aten operator, ``name`` such as ``aten.native_layer_norm``); ``rule``
    a tag of :data:`RULES`; ``module`` the path of the innermost module that called it
    (``model.3``, empty outside modules) and ``line`` the file and line of the call. The
    local comparison: ``max_abs_error`` the largest ``|AD - finite differences|``,
    ``tolerance`` the allowance there, ``ratio`` their largest quotient. ``detail`` says how
    it was checked (dtype, random directions); ``cleared`` the methods that a check of the
    unit's alternative rule clears (torch operators only).
    """

    owner: str
    name: str
    rule: str
    module: str
    line: str
    max_abs_error: float
    tolerance: float
    ratio: float
    detail: str = ""
    cleared: str = ""

    @property
    def site(self) -> str:
        return self.module or self.line

    def __str__(self) -> str:
        where = f" (called at `{self.site}`)" if self.site else ""
        if self.owner == "torch":
            tail = "not your code" + (f"; {self.cleared} are right" if self.cleared else "")
            return f"torch's {RULES[self.rule]} rule of `{self.name}`{where} is wrong ({tail})"
        if self.rule == "vjp":
            return f"`{self.name}.backward`{where} is wrong"
        if self.rule == "jvp":
            return f"`{self.name}.jvp`{where} is wrong"
        own = "backward" if self.rule.startswith("d_vjp") else "jvp"
        return (
            f"`{self.name}.{own}`{where} is wrong when differentiated ({RULES[self.rule]}): "
            f"it is right itself but built from operations whose own derivative is wrong "
            f"or cut (a .detach(), torch.no_grad(), once_differentiable?)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "name": self.name,
            "rule": self.rule,
            "module": self.module,
            "line": self.line,
            "max_abs_error": _plain(self.max_abs_error),
            "tolerance": _plain(self.tolerance),
            "ratio": _plain(self.ratio),
            "detail": self.detail,
            "cleared": self.cleared,
            "text": str(self),
        }


@dataclass
class Located:
    """What :func:`locate` found: the findings, and notes on units it could not check."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def clause(self) -> str:
        """The findings as one clause for a verdict ("" when there are none); a torch
        operator's wrong rules at one call site in one sentence."""
        groups: dict[tuple[str, ...], list[Finding]] = {}
        for f in self.findings:
            key = (f.name, f.site, f.cleared) if f.owner == "torch" else (str(f),)
            groups.setdefault(key, []).append(f)
        return "; ".join(_sentence(group) for group in groups.values())


def _sentence(findings: list[Finding]) -> str:
    """One finding's text, or a torch operator's several wrong rules in one."""
    first = findings[0]
    if len(findings) == 1:
        return str(first)
    names = [RULES[f.rule] for f in findings]
    rules = ", ".join(names[:-1]) + " and " + names[-1]
    where = f" (called at `{first.site}`)" if first.site else ""
    tail = "not your code" + (f"; {first.cleared} are right" if first.cleared else "")
    return f"torch's {rules} rules of `{first.name}`{where} are wrong ({tail})"


# ----------------------------------------------------------------------------- recording


@dataclass
class Unit:
    """One recorded call: a custom Function's ``apply`` or an aten operator.

    ``leaves``/``spec``: its ``(args, kwargs)`` flattened, tensors detached and cloned;
    ``diff``: the leaves that depend on func's differentiated arguments.
    """

    owner: str
    name: str
    call: Callable[..., Any]
    leaves: list[Any]
    spec: TreeSpec
    diff: tuple[int, ...]
    module: str
    line: str
    has_jvp: bool = True


class _Recorder(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records units while func runs once; see :func:`_recording`."""

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.names = names
        self.units: list[Unit] = []
        self.tainted: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.stack: list[torch.nn.Module] = []
        self.inside = 0  # depth of custom Function forwards (their ops are not func's rules)
        self.bytes = 0
        self.dropped = 0
        self.thread = threading.get_ident()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.inside:
            return func(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        hot = self.hot(leaves)
        snapshot = self.snapshot(leaves) if hot and _recordable(func) else None
        out = func(*args, **kwargs)
        if hot:
            self.taint(out)
            if snapshot is not None and _floating(out):
                name = str(func.overloadpacket)
                self.units.append(Unit("torch", name, func, snapshot, spec, hot, *self.site()))
        return out

    def hot(self, leaves: list[Any]) -> tuple[int, ...]:
        return tuple(
            i
            for i, x in enumerate(leaves)
            if isinstance(x, Tensor) and x.is_floating_point() and x in self.tainted
        )

    def taint(self, out: Any) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self.tainted[t] = True

    def snapshot(self, leaves: list[Any]) -> list[Any] | None:
        """The leaves with every tensor cloned, or None past the caps."""
        size = sum(x.numel() * x.element_size() for x in leaves if isinstance(x, Tensor))
        if len(self.units) >= _MAX_UNITS or self.bytes + size > _MAX_BYTES:
            self.dropped += 1
            return None
        self.bytes += size
        with torch.no_grad():
            return [x.detach().clone() if isinstance(x, Tensor) else x for x in leaves]

    def site(self) -> tuple[str, str]:
        """(the innermost named module running, the first frame outside torch and derivs)."""
        module = next((self.names[id(m)] for m in reversed(self.stack) if id(m) in self.names), "")
        return module, _user_line()

    def apply(self, original: Callable[..., Any], cls: Any, *args: Any, **kwargs: Any) -> Any:
        """``Function.apply`` while recording: the call is recorded, its forward's ops not."""
        if threading.get_ident() != self.thread or self.inside or _is_torch(cls):
            return original(cls, *args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        hot = self.hot(leaves)
        snapshot = self.snapshot(leaves) if hot else None
        self.inside += 1
        try:
            out = original(cls, *args, **kwargs)
        finally:
            self.inside -= 1
        if hot:
            self.taint(out)
            if snapshot is not None:
                has_jvp = cls.jvp is not torch.autograd.Function.jvp
                unit = Unit("function", cls.__name__, cls.apply, snapshot, spec, hot, *self.site())
                unit.has_jvp = has_jvp
                self.units.append(unit)
        return out


def _recordable(op: Any) -> bool:
    return torch.Tag.nondeterministic_seeded not in getattr(op, "tags", ())


def _floating(out: Any) -> bool:
    return any(isinstance(t, Tensor) and t.is_floating_point() for t in tree_flatten(out)[0])


def _is_torch(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "torch"


def _user_line() -> str:
    """``path:line`` of the innermost frame outside torch and derivs (relative if below cwd)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIPPED_DIRS):
        frame = frame.f_back
    if frame is None:
        return ""
    path = frame.f_code.co_filename
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{path if rel.startswith('..') else rel}:{frame.f_lineno}"


def _module_names(func: Callable[..., Any]) -> dict[int, str]:
    """id(module) -> its path, for the modules func is, is bound to, or names.

    A module func is (or is a method of) is called ``model``; one it reads from a closure
    cell or a global by the variable's name.
    """
    roots: list[tuple[str, torch.nn.Module]] = []
    seen: set[int] = set()

    def visit(f: Any, depth: int) -> None:
        if id(f) in seen or depth > 2:
            return
        seen.add(id(f))
        if isinstance(f, torch.nn.Module):
            roots.append(("model", f))
            return
        owner = getattr(f, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            roots.append(("model", owner))
        if isinstance(f, partial):
            visit(f.func, depth + 1)
            roots.extend(("model", a) for a in f.args if isinstance(a, torch.nn.Module))
        code = getattr(f, "__code__", None)
        if code is None:
            return
        cells = zip(code.co_freevars, getattr(f, "__closure__", None) or (), strict=False)
        named = [(n, c.cell_contents) for n, c in cells if _filled(c)]
        glob = getattr(f, "__globals__", {})
        named += [(n, glob[n]) for n in code.co_names if n in glob]
        for n, value in named:
            if isinstance(value, torch.nn.Module):
                roots.append((n, value))
            elif callable(value) and getattr(value, "__module__", None) == f.__module__:
                visit(value, depth + 1)  # a helper of the user's that calls the model

    visit(func, 0)
    names: dict[int, str] = {}
    for root, mod in roots:
        for path, m in mod.named_modules(prefix=root):
            names.setdefault(id(m), path)
    return names


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


@contextmanager
def _recording(recorder: _Recorder) -> Iterator[None]:
    """Function.apply patched, module hooks that keep the module stack, the dispatch mode."""
    original = torch.autograd.Function.__dict__["apply"]

    # NOTE: through the descriptor protocol: torch 2.13's ``apply`` is a Python classmethod,
    # torch 2.14's a C classmethod_descriptor, which has no ``__func__``.
    def call_original(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return original.__get__(None, cls)(*args, **kwargs)

    def apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return recorder.apply(call_original, cls, *args, **kwargs)

    def push(mod: torch.nn.Module, _: Any) -> None:
        if threading.get_ident() == recorder.thread:
            recorder.stack.append(mod)

    def pop(mod: torch.nn.Module, _: Any, __: Any) -> None:
        if recorder.stack and recorder.stack[-1] is mod:
            recorder.stack.pop()

    pre = nn_module.register_module_forward_pre_hook(push)
    post = nn_module.register_module_forward_hook(pop, always_call=True)
    torch.autograd.Function.apply = classmethod(apply)  # type: ignore[assignment,method-assign]
    try:
        with recorder:
            yield
    finally:
        torch.autograd.Function.apply = original  # type: ignore[method-assign]
        pre.remove()
        post.remove()


def record(
    func: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...]
) -> tuple[list[Unit], int]:
    """Run ``func`` once at ``args`` (the differentiated ones as fresh leaves requiring grad)
    and return the units whose inputs depend on them, and how many more the caps dropped.

    An exception from ``func`` propagates; one from the recording machinery alone (func runs
    without it) gives no units.
    """
    call = list(args)
    for a in nums:
        call[a] = args[a].detach().clone().requires_grad_(args[a].is_floating_point())
    recorder = _Recorder(_module_names(func))
    for a in nums:
        recorder.tainted[call[a]] = True
    try:
        with torch.enable_grad(), _recording(recorder):
            func(*call)
    except Exception:
        func(*call)  # NOTE: the user's own exception propagates from here unchanged
        return [], 0
    return recorder.units, recorder.dropped


# ----------------------------------------------------------------------------- local checks


class _Local(NamedTuple):
    """A unit as a scalar function of a small vector ``z``: ``phi(z) = <w, unit(x(z))>``."""

    phi: Callable[[Tensor], Tensor]
    z0: Tensor
    scale: float  # the magnitude of the unit's inputs and outputs
    detail: str
    vmappable: bool  # a torch operator (batching rules), not a custom Function


def _local(unit: Unit, dtype: torch.dtype, gen: torch.Generator) -> _Local | None:
    """``phi`` in ``dtype``; None when no output of the unit is differentiable."""
    leaves = [
        x.to(dtype) if isinstance(x, Tensor) and x.is_floating_point() else x for x in unit.leaves
    ]
    xs = [leaves[i] for i in unit.diff]
    n = sum(x.numel() for x in xs)
    z0, embed, how = _parametrize(xs, n, gen)

    def outputs(z: Tensor) -> list[Tensor]:
        call = [x.clone() if isinstance(x, Tensor) else x for x in leaves]
        for i, x in zip(unit.diff, embed(z), strict=True):
            call[i] = x
        args, kwargs = tree_unflatten(call, unit.spec)
        return [t for t in tree_flatten(unit.call(*args, **kwargs))[0] if isinstance(t, Tensor)]

    with torch.enable_grad():
        probe = outputs(z0.detach().requires_grad_())
    keep = [k for k, t in enumerate(probe) if t.is_floating_point() and t.requires_grad]
    if not keep:
        return None
    weights = {k: torch.randn(probe[k].shape, generator=gen, dtype=dtype) for k in keep}

    def phi(z: Tensor) -> Tensor:
        outs = outputs(z)
        return sum((weights[k] * outs[k]).sum() for k in keep)  # type: ignore[return-value]

    scale = magnitude([*xs, *(probe[k].detach() for k in keep)])
    detail = f"in {str(dtype).removeprefix('torch.')}{how}"
    return _Local(phi, z0, scale, detail, unit.owner == "torch")


def _parametrize(
    xs: list[Tensor], n: int, gen: torch.Generator
) -> tuple[Tensor, Callable[[Tensor], list[Tensor]], str]:
    """(z0, z -> the differentiated inputs, how): their elements themselves when few, else
    ``x + U z`` along ``_DIRECTIONS`` random directions scaled like ``x``."""
    if n <= _DENSE:
        sizes = [x.numel() for x in xs]
        z0 = torch.cat([x.reshape(-1) for x in xs])
        return (
            z0,
            lambda z: [p.reshape(x.shape) for p, x in zip(z.split(sizes), xs, strict=True)],
            "",
        )
    us = [
        torch.randn((*x.shape, _DIRECTIONS), generator=gen, dtype=x.dtype)
        * (max(magnitude([x]), 1.0) / math.sqrt(n))
        for x in xs
    ]
    z0 = xs[0].new_zeros(_DIRECTIONS)
    how = f", along {_DIRECTIONS} random directions (seed {_SEED}) of its {n} input elements"
    return z0, lambda z: [x + u @ z for x, u in zip(xs, us, strict=True)], how


def _basis(z0: Tensor) -> list[Tensor]:
    return list(torch.eye(z0.numel(), dtype=z0.dtype))


def _grad(phi: Callable[[Tensor], Tensor], z0: Tensor, create: bool = False) -> Tensor:
    """The gradient by the unit's backward (zeros where it does not reach z)."""
    z = z0.detach().requires_grad_()
    with torch.enable_grad():
        out = phi(z)
        if not out.requires_grad:
            return torch.zeros_like(z)
        (g,) = torch.autograd.grad(out, z, create_graph=create, allow_unused=True)
    return torch.zeros_like(z) if g is None else g


def _ad_vjp(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    return _grad(phi, z0)


def _ad_jvp(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    cols = []
    with fwad.dual_level():
        for e in _basis(z0):
            dual = fwad.make_dual(z0, e)  # type: ignore[no-untyped-call]
            tangent = fwad.unpack_dual(phi(dual)).tangent  # type: ignore[no-untyped-call]
            cols.append(torch.zeros((), dtype=z0.dtype) if tangent is None else tangent)
    return torch.stack(cols)


def _ad_rev_rev(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    z = z0.detach().requires_grad_()
    with torch.enable_grad():
        out = phi(z)
        g = torch.autograd.grad(out, z, create_graph=True)[0] if out.requires_grad else None
        if g is None or not g.requires_grad:
            return z0.new_zeros(z0.numel(), z0.numel())  # the backward cut its own graph
        rows = []
        for i in range(z0.numel()):
            (r,) = torch.autograd.grad(g[i], z, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(z) if r is None else r)
    return torch.stack(rows)


def _ad_fwd_rev(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    grad = torch.func.grad(phi)
    return torch.stack([torch.func.jvp(grad, (z0,), (e,))[1] for e in _basis(z0)], dim=1)


def _ad_fwd_fwd(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    def along(e: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda z: torch.func.jvp(phi, (z,), (e,))[1]

    basis = _basis(z0)
    return torch.stack(
        [torch.stack([torch.func.jvp(along(ej), (z0,), (ei,))[1] for ej in basis]) for ei in basis]
    )


def _ad_rev_fwd(phi: Callable[[Tensor], Tensor], z0: Tensor) -> Tensor:
    return torch.stack(
        [torch.func.grad(lambda z, e=e: torch.func.jvp(phi, (z,), (e,))[1])(z0) for e in _basis(z0)]
    )


_AD: dict[str, Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]] = {
    "vjp": _ad_vjp,
    "jvp": _ad_jvp,
    "d_vjp_rev": _ad_rev_rev,
    "d_vjp_fwd": _ad_fwd_rev,
    "d_jvp_fwd": _ad_fwd_fwd,
    "d_jvp_rev": _ad_rev_fwd,
}
# NOTE: torch operators batch under vmap, so their forward-mode rules are computed by
# torch.func's vmapped transforms (one call instead of k or k**2 nested jvps, about 14 ms
# each); a custom Function may have no vmap rule, so it gets the loops above.
_VMAPPED: dict[str, Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]] = {
    "jvp": lambda phi, z0: torch.func.jacfwd(phi)(z0),
    "d_vjp_fwd": lambda phi, z0: torch.func.jacfwd(torch.func.grad(phi))(z0),
    "d_jvp_fwd": lambda phi, z0: torch.func.jacfwd(torch.func.jacfwd(phi))(z0),
    "d_jvp_rev": lambda phi, z0: torch.func.jacrev(torch.func.jacfwd(phi))(z0),
}


def _ad(rule: str, local: _Local, z: Tensor) -> Tensor:
    table = _VMAPPED if local.vmappable and rule in _VMAPPED else _AD
    return table[rule](local.phi, z).detach()


class _Outcome(NamedTuple):
    wrong: bool
    max_abs: float
    tol: float
    ratio: float


def _compare_rule(rule: str, local: _Local, dtype: torch.dtype) -> _Outcome:
    """The unit's ``rule`` against finite differences at z0, with the kink guard."""
    first = rule in ("vjp", "jvp")
    oracle = fd_jacobian if first else fd_hessian
    ref = oracle(local.phi, (local.z0,), compute_dtype=dtype)
    ad = _ad(rule, local, local.z0)
    cmp = compare([ad], [ref.value], [ref.error], [""], None, None, local.scale)
    if cmp.ok:
        return _Outcome(False, cmp.max_abs, cmp.tol, cmp.ratio)
    return _Outcome(not _kink(rule, local, ad, ref.value), cmp.max_abs, cmp.tol, cmp.ratio)


def _kink(rule: str, local: _Local, ad: Tensor, ref: Tensor) -> bool:
    """Whether the rule's own values jump across z0 (a kink at the recorded input, such as
    relu at 0) by as much as they miss the differences: a rule that is simply wrong is wrong
    the same way on both sides."""
    z0 = local.z0
    d = torch.randn(z0.shape, generator=torch.Generator().manual_seed(_SEED + 1), dtype=z0.dtype)
    delta = math.sqrt(torch.finfo(z0.dtype).eps) * max(magnitude([z0]), 1.0)
    step = delta * d / d.norm()
    jump = (_ad(rule, local, z0 + step) - _ad(rule, local, z0 - step)).abs().max()
    return float(jump) > 0.5 * float((ad - ref).abs().max())


def _check(unit: Unit, rule: str, notes: list[str]) -> Finding | None:
    """The unit's ``rule`` on its recorded inputs: in float64, else in its own dtype."""
    own = next(unit.leaves[i].dtype for i in unit.diff)
    for dtype in dict.fromkeys((torch.float64, own)):
        gen = torch.Generator().manual_seed(_SEED)
        try:
            local = _local(unit, dtype, gen)
            if local is None:
                return None
            outcome = _compare_rule(rule, local, dtype)
        except Exception as exc:
            if dtype == own:
                notes.append(f"{_who(unit)}: its {RULES[rule]} rule could not be checked ({exc})")
            continue
        if not outcome.wrong:
            return None
        return Finding(
            unit.owner,
            unit.name,
            rule,
            unit.module,
            unit.line,
            outcome.max_abs,
            outcome.tol,
            outcome.ratio,
            local.detail,
        )
    return None


def _who(unit: Unit) -> str:
    site = unit.module or unit.line
    return f"`{unit.name}`" + (f" (called at `{site}`)" if site else "")


def _cleared(unit: Unit, rule: str) -> str:
    """The methods that the op's alternative rule clears, if it is right locally."""
    alternative, methods = _ALTERNATIVE[rule]
    notes: list[str] = []
    return methods if _check(unit, alternative, notes) is None and not notes else ""


def locate(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    argnums: int | tuple[int, ...],
    rule: str,
) -> Located:
    """Find whose ``rule`` is wrong: a custom Function's, else a torch operator's.

    Args:
        func, args, argnums: as given to ``derivs.check`` (``argnums`` an int or a tuple).
        rule: the tag of the rule the verdict found wrong (``"vjp"``, ``"jvp"``,
            ``"d_vjp"``, ``"d_vjp_rev"``, ``"d_vjp_fwd"``, ``"d_jvp"``, ``"d_jvp_fwd"``,
            ``"d_jvp_rev"``); any other tag gives an empty result.

    Returns:
        :class:`Located`: the findings (custom Functions whose rule is wrong on the inputs
        they saw; when there is none, torch operators), and notes on what was not checked.
    """
    rules = _COVERS.get(rule, (rule,) if rule in RULES else ())
    if not rules:
        return Located()
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    units, dropped = record(func, args, tuple(a % len(args) for a in nums))
    located = Located()
    for unit in (u for u in units if u.owner == "function"):
        for r in rules:
            if r == "d_jvp_fwd" and unit.has_jvp:
                continue  # NOTE: torch's nested forward mode gives zeros through a jvp rule
            finding = _check(unit, r, located.notes)
            if finding is not None:
                located.findings.append(finding)
    if not located.findings:
        located.findings = _torch_findings(units, rules, located.notes)
    if dropped:
        located.notes.append(
            f"{dropped} operations past the first {len(units)} were not recorded "
            f"(at most {_MAX_UNITS}, {_MAX_BYTES >> 20} MiB of inputs)"
        )
    return located


def _torch_findings(units: list[Unit], rules: tuple[str, ...], notes: list[str]) -> list[Finding]:
    """The torch operators whose rule is wrong, each op checked at its first few calls."""
    findings: list[Finding] = []
    checked: dict[str, int] = {}
    for unit in (u for u in units if u.owner == "torch"):
        if checked.get(unit.name, 0) >= _PER_OP:
            continue
        checked[unit.name] = checked.get(unit.name, 0) + 1
        for r in rules:
            finding = _check(unit, r, notes)
            if finding is not None:
                findings.append(_with_cleared(finding, _cleared(unit, r)))
                checked[unit.name] = _PER_OP
    return findings


def _with_cleared(finding: Finding, cleared: str) -> Finding:
    return Finding(**{**finding.__dict__, "cleared": cleared})


def _plain(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def blame(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    nums: tuple[int, ...],
    rules: Iterable[str],
    second_order: bool = False,
) -> Located:
    """:func:`locate` for each rule a verdict found wrong, merged; for ``derivs.check``, whose
    report must not fail for want of a culprit: what fails here becomes a note.

    ``second_order``: the rules were found wrong by a second-order operator; a first-order
    rule (``vjp``, ``jvp``) that no unit gets wrong is then looked for in its derivative
    (``d_vjp``, ``d_jvp``): the outliers all differentiate it.
    """
    merged = Located()
    for rule in sorted(rules):
        tries = [rule, f"d_{rule}"] if second_order and rule in ("vjp", "jvp") else [rule]
        for tag in tries:
            try:
                located = locate(func, args, nums, tag)
            except Exception as exc:  # NOTE: func ran at this point already: not its error
                merged.notes.append(f"whose {RULES.get(tag, tag)} rule is wrong: not found ({exc})")
                break
            merged.findings += [f for f in located.findings if f not in merged.findings]
            merged.notes += [n for n in located.notes if n not in merged.notes]
            if located.findings:
                break
    return merged
