"""The memory a Hessian needs at its peak: a model, the probes it reads, and a measurement.

A Hessian is a Jacobian (outer) of a Jacobian (inner). Each pass pushes a batch of basis
vectors through the function at once (``chunk_size`` of them, or all), so the intermediates
of the inner pass are multiplied by the outer batch; an outer reverse pass also keeps the
inner pass's graph and pushes one cotangent per entry of the inner Jacobian: ``out * in`` of
them, each the size of that Jacobian. ``hessian_peak`` prices that per method from

* ``m``, ``n``: elements of the output and of the differentiated inputs;
* ``a``: elements of the function's intermediates that depend on the inputs (one evaluation,
  the output included), and ``d``: elements a second-order reverse pass allocates (the
  gradient of one vector-Jacobian product), both counted by ``probe``;
* ``p``: elements of the other tensor arguments (the weights), the item size and
  ``chunk_size``.

The coefficients were fitted by ``bench/hessian_memory.py --fit`` to peaks measured by
``measured_peak`` on the tutorial's ``tanh(W x + b)`` and two-layer networks (tanh, softplus
and sin), to be never below the measured peak there and as close to it as one set of
coefficients allows: ``docs/bench/hessian_memory.md`` has the table.

The policy reads the model: ``within_budget`` wraps the function of ``derivs.hessian``, and
``checked_for_hessian`` those of the batch and product transforms, so that a Hessian whose
size or predicted peak exceeds the memory budget (``derivs.set_memory_budget``) is refused
with what fits instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch._C._autograd import DeviceType
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from derivs import _config, _eager, _validate
from derivs._jacobian import prefers_forward

# NOTE: fitted by bench/hessian_memory.py --fit (element counts; see the module docstring).
# MODEL reads d, the allocations of the method's own second-order pass; SCREEN only a.
MODEL: dict[str, dict[str, float]] = {
    "fwd_rev": {
        "batch": 0.18,
        "tangents": 5.745,
        "result": 1.436,
        "pieces": 1.077,
        "params": 2.872,
    },
    "rev_rev": {"batch": 0.339, "basis": 1.016, "result": 1.016, "pieces": 1.016, "params": 2.708},
    "fwd_fwd": {"batch": 0.186, "tangents": 4.476, "result": 1.119, "pieces": 1.119, "params": 0.0},
}
SCREEN: dict[str, dict[str, float]] = {
    "fwd_rev": {
        "batch": 1.533,
        "tangents": 9.195,
        "result": 1.149,
        "pieces": 1.149,
        "params": 4.598,
    },
    "rev_rev": {"batch": 2.743, "basis": 0.0, "result": 1.029, "pieces": 1.029, "params": 8.228},
    "fwd_fwd": {"batch": 2.27, "tangents": 4.54, "result": 1.135, "pieces": 1.135, "params": 1.513},
    "rev_fwd": {"batch": 2.963, "basis": 0.0, "result": 1.111, "pieces": 1.111, "params": 5.926},
    "loop": {"graph": 5.492, "result": 1.03, "params": 0.0},
}
# NOTE: where SCREEN * SCREEN_MARGIN fits the budget the second-order probe is skipped;
# bench/hessian_memory.py checks MODEL <= SCREEN * SCREEN_MARGIN on every measured case.
SCREEN_MARGIN = 4
COMPOSED = ("fwd_rev", "rev_rev", "fwd_fwd", "rev_fwd")
# NOTE: rev_fwd's second-order pass (vjp of jvp) predicts its peak worse than a does (the
# measured spread: 4.6x against 2.5x), so its model is the screen's, like loop's.
PROBED = ("fwd_rev", "rev_rev", "fwd_fwd")


class Sizes(NamedTuple):
    """What the model reads: element counts and the batch of basis vectors per pass."""

    m: int  # output elements
    n: int  # differentiated input elements
    a: int  # the function's intermediates that depend on the inputs, output included
    d: int  # what the method's second-order pass allocates for single vectors (0: unknown)
    p: int  # elements of the tensor arguments not differentiated (weights, ...)
    itemsize: int
    chunk_size: int | None

    def batch(self, total: int) -> int:
        return total if self.chunk_size is None else min(self.chunk_size, total)


def terms(method: str, s: Sizes, *, screen: bool = False) -> dict[str, int]:
    """The element counts the peak of ``method`` is a combination of.

    ``batch``: the cost of one outer and one inner vector (``d``, or from ``a`` for the
    screen) times both batches; ``tangents``: an outer forward pass's tangent per
    intermediate; ``basis``: an outer reverse pass's cotangents, one per entry of the inner
    Jacobian; ``result`` and, for a chunked outer pass, ``pieces`` (its pieces before they
    are concatenated); ``params``: copies of the weights.
    """
    m, n, a = s.m, s.n, s.a
    cm, cn, cj = s.batch(m), s.batch(n), s.batch(m * n)
    result = m * n * n
    if method == "loop":  # one gradient entry at a time: the graph of the gradient
        return {"graph": a + n + m, "result": result, "params": s.p}
    if method not in COMPOSED:
        raise ValueError(f"derivs: no memory model for method={method!r}")
    inner_fwd = method.endswith("_fwd")
    vector = (a if inner_fwd else a + n) if screen else s.d
    outer = cn if method.startswith("fwd") else cj
    found = {"batch": outer * (cn if inner_fwd else cm) * vector}
    if method.startswith("fwd"):
        found["tangents"] = cn * a
    else:
        found["basis"] = cj * m * n
    found["result"] = result
    found["pieces"] = result if outer < (n if method.startswith("fwd") else m * n) else 0
    found["params"] = s.p
    return found


def hessian_peak(method: str, s: Sizes) -> int:
    """Predicted peak bytes of ``hessian(method=method)`` (``"auto"`` resolved by the caller).

    For the ``PROBED`` methods from ``s.d`` where it was probed (``second_order``), else the
    screen's estimate from ``s.a``, which over-predicts more but needs no second-order pass.
    """
    screen = method not in PROBED or s.d <= 0
    coefficients = (SCREEN if screen else MODEL)[method]
    elements = sum(coefficients[k] * v for k, v in terms(method, s, screen=screen).items())
    return math.ceil(elements) * s.itemsize


def _base(t: torch.Tensor) -> torch.Tensor:
    """The tensor that owns ``t``'s memory: itself, or the base it is a view of."""
    base = t._base if t._is_view() else None
    return t if base is None else base


class _Intermediates(TorchFunctionMode):
    """Counts the elements of every new tensor that requires grad (views of inputs and the
    results of in-place ops excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        flat = tree_flatten((args, kwargs))[0]
        inputs = {id(_base(t)) for t in flat if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.requires_grad and id(_base(t)) not in inputs:
                self.elements += t.numel()
        return out


# NOTE: TorchDispatchMode's __init__ and __init_subclass__ are unannotated in torch.
class _Allocations(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts the elements of every tensor an operator allocates (no views, no in-place)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.elements = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and not t._is_zerotensor():
                    self.elements += t.numel()
        return out


class Probe(NamedTuple):
    """What one eager evaluation of the function showed."""

    m: int  # output elements
    a: int  # intermediates that depend on the inputs, output included


def probe(func: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...]) -> Probe | None:
    """Evaluate ``func`` once with autograd and count its output and intermediates.

    ``None`` where an eager evaluation would not see ``func`` as the transforms will (inside
    a torch.func transform, under torch.compile, ...).
    """
    if not _eager.allowed(args):
        return None
    full = list(args)
    for i in argnums:
        full[i] = args[i].detach().requires_grad_()
    counter = _Intermediates()
    with torch.enable_grad(), counter:
        out = func(*full)
    m = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
    return Probe(m, max(counter.elements, m))


def second_order(
    func: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...], method: str
) -> int:
    """Elements ``method``'s composition allocates for one outer and one inner vector.

    The inner pass (vjp or jvp) and the outer one (jvp or vjp of it) with vectors of ones,
    by torch.func as the method runs them; counted at the operator level (views, in-place
    results and zero tensors excluded).
    """
    full = list(args)

    def g(*xs: torch.Tensor) -> Any:
        for i, x in zip(argnums, xs, strict=True):
            full[i] = x
        return func(*full)

    xs = tuple(args[i] for i in argnums)
    ones = tuple(torch.ones_like(x) for x in xs)

    def inner(*p: torch.Tensor) -> Any:
        if method.endswith("_fwd"):
            return torch.func.jvp(g, p, ones)[1]
        res = torch.func.vjp(g, *p)
        return res[1](tree_map(torch.ones_like, res[0]))  # every output leaf

    counter = _Allocations()
    with counter:
        if method.startswith("fwd"):
            torch.func.jvp(inner, xs, ones)
        else:
            res = torch.func.vjp(inner, *xs)
            res[1](tree_map(torch.ones_like, res[0]))
    return counter.elements


def measured_peak(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[int, Any]:
    """``(peak bytes allocated while fn runs, above what was allocated before, fn())``.

    On CUDA, from the caching allocator's statistics (``max_memory_allocated``). Elsewhere
    from ``torch.profiler``'s memory events: every allocation and free of the CPU allocator,
    in order. Either way it counts tensors only, and only those ``fn`` allocates, so it does
    not depend on what else the process or the machine is doing.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak, result


# --- the policy: a Hessian refused before it outgrows the memory budget ---------------------


def composition(method: str, out_numel: int, in_numel: int, device: torch.device) -> str:
    """The composed method ``method`` runs: ``auto`` is forward over what jacobian's auto picks."""
    if method != "auto":
        return method
    return "fwd_fwd" if prefers_forward(out_numel, in_numel, device) else "fwd_rev"


def check_hessian_peak(api: str, method: str, sizes: Sizes, device: torch.device) -> None:
    """Refuse ``method`` where ``hessian_peak`` predicts a peak above the budget.

    The message gives the predicted size and what fits instead: another method, a
    ``chunk_size``, or Hessian-vector products.
    """
    resolved = composition(method, sizes.m, sizes.n, device)
    need = hessian_peak(resolved, sizes)
    budget = _config.get_memory_budget()
    if need <= budget:
        return
    fmt = _validate.fmt_bytes
    hints = []
    # NOTE: the other methods by the screen: their second-order passes were not probed.
    screened = sizes._replace(d=0)
    others = sorted((hessian_peak(m, screened), m) for m in COMPOSED if m != resolved)
    fits = [(peak, m) for peak, m in others if peak <= budget]
    if fits:
        hints.append(f"method={fits[0][1]!r} would need about {fmt(fits[0][0])}")
    chunk = _largest_chunk(resolved, sizes, budget) if method != "loop" else None
    if chunk is not None:
        peak = hessian_peak(resolved, sizes._replace(chunk_size=chunk))
        hints.append(f"chunk_size={chunk} about {fmt(peak)}")
    if not fits and hessian_peak("loop", screened) <= budget:
        hints.append("method='loop' (slow) fits")
    hints.append("derivs.hvp/derivs.vhp give Hessian-vector products without the matrix")
    what = f"hessian(method={method!r})" + (
        f", which runs {resolved!r}," if method == "auto" else ""
    )
    _validate.check_peak(api, what, need, "; ".join(hints))


def _largest_chunk(method: str, sizes: Sizes, budget: int) -> int | None:
    """The largest power-of-two ``chunk_size`` under which ``method`` fits, if any does."""
    top = max(sizes.m * sizes.n, sizes.n)
    if sizes.chunk_size is not None:
        top = min(top, sizes.chunk_size - 1)
    chunk = 1 << max(top.bit_length() - 1, 0)
    while chunk >= 1:
        if hessian_peak(method, sizes._replace(chunk_size=chunk)) <= budget:
            return chunk
        chunk //= 2
    return None


def checked_for_hessian(
    func: Callable[..., Any],
    api: str,
    diff: Sequence[torch.Tensor],
    *,
    n: int | None = None,
    factor: int = 1,
    scalar: bool = False,
    on_output: Callable[[int], None] | None = None,
    pytree_hint: str = "",
) -> _validate.CheckedFunc:
    """``func`` checked to return a tensor whose Hessian (``n`` inputs, ``factor`` copies) fits;
    or, unless ``scalar``, a pytree of tensors, every leaf counted.

    ``on_output(output elements)`` runs after that check, at every evaluation;
    ``pytree_hint`` is what a refused pytree output's message adds (the caller's advice).
    """
    n = sum(x.numel() for x in diff) if n is None else n
    return _validate.CheckedFunc(
        func,
        api,
        allow_pytree=not scalar,
        scalar=scalar,
        factor=factor * n * n,
        itemsize=_validate.itemsize_of(diff),
        what="the Hessian",
        hint="use derivs.hvp/derivs.vhp for Hessian-vector products, which never form the matrix",
        on_output=on_output,
        pytree_hint=pytree_hint,
    )


def _sizes(
    args: Sequence[Any],
    argnums: tuple[int, ...],
    chunk_size: int | None,
    m: int,
    a: int,
    d: int,
) -> Sizes:
    diff = [args[i] for i in argnums]
    other = sum(
        t.numel() for i, t in enumerate(args) if isinstance(t, torch.Tensor) and i not in argnums
    )
    n = sum(x.numel() for x in diff)
    return Sizes(m, n, a, d, other, _validate.itemsize_of(diff), chunk_size)


def predicted_peak(
    func: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    chunk_size: int | None = None,
) -> int | None:
    """The model's peak bytes for ``hessian(func, argnums, method=method)``, fully probed.

    ``func`` is evaluated once, and its second-order pass once; ``None`` where it cannot be
    probed. The guard refuses by this number wherever the screen alone could not clear it.
    """
    probed = probe(func, args, argnums)
    if probed is None:
        return None
    s = _sizes(args, argnums, chunk_size, probed.m, probed.a, 0)
    resolved = composition(method, s.m, s.n, args[argnums[0]].device)
    if resolved in PROBED:
        s = s._replace(d=second_order(func, args, argnums, resolved))
    return hessian_peak(resolved, s)


def within_budget(
    func: Callable[..., Any],
    api: str,
    args: Sequence[Any],
    argnums: tuple[int, ...],
    method: str,
    chunk_size: int | None,
    *,
    scalar: bool = False,
) -> _validate.CheckedFunc:
    """``func`` checked, its Hessian's size and predicted peak within the memory budget.

    At the top level of eager code ``func`` is evaluated once first (``probe``) and
    an oversized Hessian is refused before any transform runs; where the screen's estimate
    comes within ``SCREEN_MARGIN`` of the budget the method's second-order pass is probed too
    and the model decides. Elsewhere the refusal comes at the first evaluation inside the
    transforms, by the screen, assuming as many intermediates as inputs and outputs.
    """
    diff = [args[a] for a in argnums]
    device = diff[0].device
    checked = checked_for_hessian(func, api, diff, scalar=scalar)
    probed = probe(checked, args, argnums)
    if probed is not None:
        s = _sizes(args, argnums, chunk_size, probed.m, probed.a, 0)
        resolved = composition(method, s.m, s.n, device)
        screen = hessian_peak(resolved, s)
        near = screen * SCREEN_MARGIN > _config.get_memory_budget()
        if resolved in PROBED and near:
            s = s._replace(d=second_order(checked, args, argnums, resolved))
        check_hessian_peak(api, method, s, device)
        return checked
    n = sum(x.numel() for x in diff)

    def on_output(m: int) -> None:
        check_hessian_peak(api, method, _sizes(args, argnums, chunk_size, m, m + n, 0), device)

    checked.on_output = on_output
    return checked
