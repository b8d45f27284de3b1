"""The methods' side of a check: each operator by each selected method of derivs, tagged
with the derivative rules its result rests on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from derivs import _validate
from derivs._check._references import References, contracted
from derivs._check._setup import Case, Options, sample
from derivs._check._sources import Operator, Source, run
from derivs._config import get_memory_budget
from derivs._jacobian import prefers_forward

Tensor = torch.Tensor
Transform = Callable[..., Any]
_TANGENT_SEED = 0


def mode_tags(out_numel: int, in_numel: int, device: torch.device) -> frozenset[str]:
    """What ``method='auto'`` of jacobian picks, as tags.

    In plain eager code auto's forward mode is the double-vjp (it rests on the backward and
    the backward's own derivatives), except with a custom ``autograd.Function`` in the graph,
    where it uses that Function's ``jvp``, as ``torch.func.jvp`` does. Only custom Functions
    can have a wrong rule here, so ``"jvp"`` is the tag that matters for a verdict.
    """
    return frozenset({"jvp"} if prefers_forward(out_numel, in_numel, device) else {"vjp"})


def second(first: frozenset[str], outer: str) -> frozenset[str]:
    """The tags of differentiating ``first``'s rule again, by ``outer`` mode."""
    rule = "vjp" if "vjp" in first else "jvp"
    return first | {f"d_{rule}", f"d_{rule}_{outer}"}


_JAC_TAGS = {
    "rev": {"vjp", "vmap"},
    "vjp_vmap": {"vjp", "vmap"},
    "loop": {"vjp"},
    "fwd": {"jvp", "vmap"},
}
_HESS_TAGS = {
    "fwd_rev": second(frozenset({"vjp", "vmap"}), "fwd"),
    "rev_rev": second(frozenset({"vjp", "vmap"}), "rev"),
    "fwd_fwd": second(frozenset({"jvp", "vmap"}), "fwd"),
    "rev_fwd": second(frozenset({"jvp", "vmap"}), "rev"),
    "loop": second(frozenset({"vjp"}), "rev"),
}
_HVP_TAGS = {
    "fwd_rev": second(frozenset({"vjp"}), "fwd"),
    "rev_rev": second(frozenset({"vjp"}), "rev"),
}


def _auto_jacobian(case: Case) -> frozenset[str]:
    """The tags of ``method='auto'`` (and of unlisted methods) for the Jacobian at the point."""
    in_numel = sum(x.numel() for x in case.diff)
    return mode_tags(case.out.numel(), in_numel, case.diff[0].device) | {"vmap"}


def _auto_hessian(case: Case) -> frozenset[str]:
    return second(_auto_jacobian(case), "fwd")


def labels_jacobian(opts: Options) -> list[str]:
    return [""] if opts.single else [f"[{i}]" for i in range(len(opts.nums))]


def labels_hessian(opts: Options) -> list[str]:
    n = len(opts.nums)
    return [""] if opts.single else [f"[{i}][{j}]" for i in range(n) for j in range(n)]


def _at_point(case: Case, transform: Transform, method: str) -> Any:
    return transform(case.func, case.opts.argnums, method=method)(*case.point)


def jacobian_sources(case: Case, refs: References, jacobian: Transform) -> dict[str, Operator]:
    """The Jacobian by every selected method, then by the oracles."""
    methods = case.opts.selected["jacobian"]
    if not methods:
        return {}
    srcs = [
        run(
            m,
            False,
            (_JAC_TAGS.get(m) or _auto_jacobian(case)) | {f"m:{m}"},
            partial(_at_point, case, jacobian, m),
        )
        for m in methods
    ]
    return {"jacobian": Operator(srcs + refs.at(False, [case.point]), labels_jacobian(case.opts))}


def hessian_sources(case: Case, refs: References, hessian: Transform) -> dict[str, Operator]:
    """The Hessian (order 2) by every selected method, then by the oracles."""
    methods = case.opts.selected["hessian"]
    if case.opts.order < 2 or not methods:
        return {}
    srcs = []
    for m in methods:
        tags = (_HESS_TAGS.get(m) or _auto_hessian(case)) | {f"m:{m}"}
        refusal = _reverse_outer_refusal(m, case.out.numel(), case.diff)
        if refusal:
            srcs.append(Source(m, False, tags, status="skip", note=refusal))
        else:
            srcs.append(run(m, False, tags, partial(_at_point, case, hessian, m)))
    return {"hessian": Operator(srcs + refs.at(True, [case.point]), labels_hessian(case.opts))}


def _wants_products(case: Case) -> bool:
    return case.opts.order == 2 and bool(case.opts.selected["hvp"] or case.opts.selected["vhp"])


def unchecked_notes(case: Case) -> dict[str, str]:
    """Notes on selected operators that do not apply to func."""
    if _wants_products(case) and case.out.dim() != 0:
        return {
            "hvp": f"hvp and vhp not checked: func is not scalar-valued (shape "
            f"{tuple(case.out.shape)})"
        }
    return {}


def product_sources(
    case: Case, refs: References, hvp: Transform, vhp: Transform
) -> dict[str, Operator]:
    """hvp and vhp (order 2, scalar func) with a seeded random vector, by every selected
    method; the references are the oracles' Hessians contracted with the same vector."""
    if not _wants_products(case) or case.out.dim() != 0:
        return {}
    diff = case.diff
    gen = torch.Generator().manual_seed(_TANGENT_SEED)
    vectors = {
        op: [
            torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype).to(x.device)
            for x in diff
        ]
        for op in ("hvp", "vhp")
    }
    restricted = restricted_func(case)
    hess_refs = refs.at(True, [case.point])
    found = {}
    for op, product in (("hvp", hvp), ("vhp", vhp)):
        vs = vectors[op]
        srcs = [
            run(
                m,
                False,
                (_HVP_TAGS.get(m) or _auto_hessian(case)) | {f"m:{m}"},
                partial(product, restricted, tuple(diff), tuple(vs), method=m),
            )
            for m in case.opts.selected[op]
        ]
        if srcs:
            refs_op = [contracted(s, vs, op == "vhp") for s in hess_refs]
            found[op] = Operator(srcs + refs_op, [f"[{i}]" for i in range(len(diff))])
    return found


def restricted_func(case: Case) -> Callable[..., Any]:
    """func of the differentiated arguments only (the products take primals, not argnums)."""
    point, nums = case.point, case.opts.nums

    def restricted(*d: Tensor) -> Any:
        full = list(point)
        for a, x in zip(nums, d, strict=True):
            full[a] = x
        return case.func(*full)

    restricted.__name__ = case.name
    return restricted


def batch_sources(
    case: Case, refs: References, batch_jacobian: Transform, batch_hessian: Transform
) -> dict[str, Operator]:
    """With ``batched``: the batch Jacobian (and at order 2 the batch Hessian) by every
    selected method, then by the oracles at every sample."""
    opts = case.opts
    if opts.dims is None:
        return {}
    samples = [sample(case.args, opts.dims, b) for b in range(opts.size)]
    found = {}
    for op, grad, transform in (
        ("batch_jacobian", False, batch_jacobian),
        ("batch_hessian", True, batch_hessian),
    ):
        if not opts.selected[op] or (grad and opts.order < 2):
            continue
        srcs = [
            run(
                m,
                False,
                _batch_tags(case, grad, m),
                partial(_on_batch, case, transform, m),
                refused="n/a" if m == "sum" else None,
            )
            for m in opts.selected[op]
        ]
        labels = labels_hessian(opts) if grad else labels_jacobian(opts)
        oracles = refs.at(grad, samples, batched=opts.batched, full=case.args)
        found[op] = Operator(srcs + oracles, labels)
    return found


def _on_batch(case: Case, transform: Transform, method: str) -> Any:
    opts = case.opts
    return transform(case.func, opts.argnums, in_dims=opts.batched, method=method)(*case.args)


def _batch_tags(case: Case, grad: bool, method: str) -> frozenset[str]:
    if method == "sum" and grad:
        return second(frozenset({"vjp", "vmap"}), "fwd") | {"sum", "m:sum"}
    if method == "sum":
        # NOTE: the sum trick differentiates the sum over the batch (one sample's size) with
        # respect to the whole batch, so auto picks its mode for those sizes.
        nums = case.opts.nums
        batch_in = sum(case.args[a].numel() for a in nums)
        first = mode_tags(case.out.numel(), batch_in, case.args[nums[0]].device)
        return first | {"vmap", "sum", "m:sum"}
    return (_auto_hessian(case) if grad else _auto_jacobian(case)) | {f"m:{method}"}


# NOTE: measured on predict (out = in = D): hessian(method='rev_rev') peaked at 6.6 GB and
# 'rev_fwd' at 8.7 GB for D = 128, where the Hessian itself is 16 MiB. Reverse mode pushes
# out*in cotangents through the inner Jacobian, whose intermediates hold out*in values per
# cotangent: about (out*in)**2 values, D**4 here (~2 TB at D = 512). The factor 4 matches
# the measured peaks; derivs' memory budget only guards the Hessian and the basis.
_REVERSE_OUTER_FACTOR = 4


def _reverse_outer_refusal(method: str, out_numel: int, diff: Sequence[Tensor]) -> str:
    """Why a reverse-over-X Hessian would exhaust memory here ('' when it will not)."""
    if method not in ("rev_rev", "rev_fwd"):
        return ""
    cells = out_numel * sum(x.numel() for x in diff)
    need = _REVERSE_OUTER_FACTOR * cells**2 * _validate.itemsize_of(diff)
    budget = get_memory_budget()
    if need <= budget:
        return ""
    return (
        f"not run: reverse mode over this {out_numel}-output Jacobian would materialise about "
        f"{_validate.fmt_bytes(need)} of intermediates (~4 (out*in)**2 values), above the memory "
        f"budget of {_validate.fmt_bytes(budget)} (raise it with derivs.set_memory_budget to run it)"
    )
