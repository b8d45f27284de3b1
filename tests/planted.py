"""Planted bugs: deliberately wrong variants of the public operators.

The suite's worth is whether it catches bugs. Each variant below patches one piece of
``derivs`` with a plausible mistake; ``python -m tools.planted_bugs`` runs the suite once per
variant (the root conftest applies the one named by ``DERIVS_PLANTED_BUG``) and reports
killed/total with the time to kill. Every variant must be killed.

The variants target classes of bugs (scale, transposition, element order, argnums, precision,
chunking, mixed blocks, batch/sample alignment, axes that move only when sizes coincide,
strides, mutation, dtype, aux, coupling), not particular tests: none of them is referenced by
a test.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

import derivs._batch as batch_mod
import derivs._blocks as blocks_mod
import derivs._compiled as compiled_mod
import derivs._eager as eager_mod
import derivs._hessian as hessian_mod
import derivs._jacobian as jacobian_mod
import derivs._memory as memory_mod
import derivs._products as products_mod
import derivs.sparse._coloring as coloring_mod
import derivs.sparse._detect as detect_mod
import derivs.sparse._greedy as greedy_mod


class Variant(NamedTuple):
    description: str
    apply: Callable[[], None]


def _wrap(module: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``module.name`` by ``make(original)`` everywhere derivs refers to it.

    That is every ``derivs`` module attribute bound to the original (``from x import name``)
    and every dispatch-table entry (a module-level dict whose value is the original).
    """
    original = getattr(module, name)
    wrapped = functools.wraps(original)(make(original))
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "derivs" or mod_name.startswith("derivs.")):
            continue
        for attr, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, attr, wrapped)
            elif isinstance(value, dict):
                for key, entry in list(value.items()):
                    if entry is original:
                        value[key] = wrapped


def _map_blocks(result: Any, fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> Any:
    blocks, spec, aux = result
    return [[fn(b, k, i) for i, b in enumerate(row)] for k, row in enumerate(blocks)], spec, aux


def _map_hessians(result: Any, fn: Callable[[Any], Any]) -> Any:
    """``output_hessians``' (per output leaf, spec) with ``fn`` applied to each leaf's blocks."""
    per_leaf, spec = result
    return [fn(H) for H in per_leaf], spec


# --- jacobian -----------------------------------------------------------------------------


def jac_fwd_scale() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: _map_blocks(f(*a, **k), lambda b, _k, _i: b * (1 + 1e-6))

    _wrap(jacobian_mod, "_fwd_diff", make)


def jac_rev_transposed() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, *rest: Any) -> Any:
            def t(b: torch.Tensor, _k: int, i: int) -> torch.Tensor:
                n_in = args[argnums[i]].numel()
                return b.reshape(-1, n_in).T.reshape(b.shape) if b.numel() else b

            return _map_blocks(f(func, args, argnums, *rest), t)

        return g

    _wrap(jacobian_mod, "_rev", make)


def jac_vjp_vmap_input_order() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(start: Any, diff: Any, *rest: Any) -> Any:
            blocks = f(start, diff, *rest)
            out = []
            for k, row in enumerate(blocks):
                new = []
                for x, b in zip(diff, row, strict=True):
                    lead = start.leaves[k].dim()
                    rev = tuple(reversed(x.shape))
                    perm = (*range(lead), *reversed(range(lead, lead + x.dim())))
                    new.append(b.reshape(*start.leaves[k].shape, *rev).permute(perm))
                out.append(new)
            return out

        return g

    _wrap(blocks_mod, "rows_to_blocks", make)


def jac_swapped_argnums() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(*a: Any, **k: Any) -> Any:
            blocks, spec, aux = f(*a, **k)
            for row in blocks:
                if len(row) >= 2 and row[0].shape == row[1].shape:
                    row[0], row[1] = row[1], row[0]
            return blocks, spec, aux

        return g

    _wrap(jacobian_mod, "jacobian_blocks", make)


def jac_fwd_through_float32() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, diff: Any, *rest: Any) -> Any:
            low = [x.float() for x in diff]
            blocks, spec, aux = f(
                lambda *d: func(*[t.to(x.dtype) for t, x in zip(d, diff, strict=True)]), low, *rest
            )
            return (
                [[b.to(x.dtype) for b, x in zip(row, diff, strict=True)] for row in blocks],
                spec,
                aux,
            )

        return g

    _wrap(jacobian_mod, "_fwd_diff", make)


def chunk_basis_offset() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(start: int, stop: int, like: Any) -> Any:
            total = sum(t.numel() for t in like)
            if start == 0 or stop >= total:
                return f(start, stop, like)
            return f(start + 1, stop + 1, like)

        return g

    _wrap(blocks_mod, "standard_basis", make)


def loop_row_shift() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, *rest: Any) -> Any:
            def shift(b: torch.Tensor, _k: int, i: int) -> torch.Tensor:
                n_in = args[argnums[i]].numel()
                flat = b.reshape(-1, n_in)
                return flat.roll(1, 0).reshape(b.shape) if flat.shape[0] > 1 else b

            return _map_blocks(f(func, args, argnums, *rest), shift)

        return g

    _wrap(jacobian_mod, "_loop", make)


# --- jacobian, auto's eager path ----------------------------------------------------------


def auto_eager_fwd_scale() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: [[b * (1 + 1e-6) for b in row] for row in f(*a, **k)]

    _wrap(eager_mod, "eager_fwd", make)


def auto_eager_columns_reversed() -> None:
    push = eager_mod.EagerGraph.push

    def reversed_push(self: Any, tangents: Any) -> Any:
        return [c.flip(0) for c in push(self, tangents)]

    eager_mod.EagerGraph.push = reversed_push


def auto_eager_closure_grad_ignored() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(tensors: Any, own: Any) -> Any:
            used, _other, custom = f(tensors, own)
            return used, False, custom

        return g

    _wrap(eager_mod, "walk", make)


def auto_eager_unused_rows_not_zero() -> None:
    pull = eager_mod.EagerGraph.pull

    def wrong_pull(self: Any, cotangents: Any) -> Any:
        res = list(pull(self, cotangents))
        for i in range(len(res)):
            if i not in self.used:
                res[i] = torch.ones_like(res[i])
        return res

    eager_mod.EagerGraph.pull = wrong_pull


def noncontiguous_read_as_contiguous() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, *rest: Any, **k: Any) -> Any:
            def flat(x: Any) -> Any:
                if isinstance(x, torch.Tensor) and not x.is_contiguous() and 0 not in x.stride():
                    strides, acc = [], 1
                    for s in reversed(x.shape):
                        strides.insert(0, acc)
                        acc *= s
                    return torch.as_strided(x, x.shape, strides, x.storage_offset())
                return x

            return f(func, [flat(a) for a in args], *rest, **k)

        return g

    _wrap(jacobian_mod, "jacobian_blocks", make)


def caller_requires_grad_mutated() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, *rest: Any) -> Any:
            for a in argnums:
                if args[a].is_leaf:
                    args[a].requires_grad_(True)
            return f(func, args, argnums, *rest)

        return g

    _wrap(jacobian_mod, "_loop", make)


def dtype_not_kept() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: _map_blocks(f(*a, **k), lambda b, _k, _i: b.float())

    _wrap(jacobian_mod, "jacobian_blocks", make)


def has_aux_returns_output() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, has_aux: bool, *rest: Any) -> Any:
            blocks, spec, aux = f(func, args, argnums, has_aux, *rest)
            if has_aux:
                aux = func(*args)[0]
            return blocks, spec, aux

        return g

    _wrap(jacobian_mod, "_fwd", make)


# --- hessian ------------------------------------------------------------------------------


def hess_drop_mixed_blocks() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: _map_hessians(f(*a, **k), diagonal)

    def diagonal(H: Any) -> Any:
        return [
            [b if i == j else torch.zeros_like(b) for j, b in enumerate(row)]
            for i, row in enumerate(H)
        ]

    _wrap(hessian_mod, "output_hessians", make)


def hess_fwd_rev_scale() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, method: str, **k: Any) -> Any:
            result = f(func, args, argnums, method, **k)
            if method != "fwd_rev":
                return result
            return _map_hessians(result, lambda H: [[b * (1 + 1e-6) for b in row] for row in H])

        return g

    _wrap(hessian_mod, "output_hessians", make)


def hess_vector_output_summed() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, method: str, **k: Any) -> Any:
            result = f(func, args, argnums, method, **k)
            return _map_hessians(result, lambda H: summed(H, args[argnums[0]].dim(), method))

        return g

    def summed(H: Any, in_dims: int, method: str) -> Any:
        out_dims = H[0][0].dim() - in_dims * 2
        if method != "rev_fwd" or out_dims == 0:
            return H
        dims = tuple(range(out_dims))
        return [[b.sum(dims, keepdim=True).expand_as(b) for b in row] for row in H]

    _wrap(hessian_mod, "output_hessians", make)


# --- hvp / vhp ----------------------------------------------------------------------------


def hvp_fwd_rev_no_mixed() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, primals: Any, tangents: Any, *, method: str = "fwd_rev") -> Any:
            if method != "fwd_rev" or not isinstance(primals, tuple) or len(primals) < 2:
                return f(func, primals, tangents, method=method)
            out = []
            for i in range(len(primals)):

                def only(x: torch.Tensor, i: int = i) -> torch.Tensor:
                    full = list(primals)
                    full[i] = x
                    return func(*full)

                out.append(f(only, (primals[i],), (tangents[i],), method=method)[0])
            return tuple(out)

        return g

    _wrap(products_mod, "hvp", make)


def vhp_swapped_cotangents() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, primals: Any, cotangents: Any, *, method: str = "rev_rev") -> Any:
            if (
                isinstance(cotangents, tuple)
                and len(cotangents) >= 2
                and cotangents[0].shape == cotangents[1].shape
            ):
                cotangents = (cotangents[1], cotangents[0], *cotangents[2:])
            return f(func, primals, cotangents, method=method)

        return g

    _wrap(products_mod, "vhp", make)


def hvp_dense_tangent_order() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, primals: Any, tangents: Any, *, method: str = "fwd_rev") -> Any:
            if method == "dense" and isinstance(tangents, tuple):
                tangents = tuple(
                    t.permute(*reversed(range(t.dim()))).reshape(t.shape)
                    if isinstance(t, torch.Tensor)
                    else t
                    for t in tangents
                )
            return f(func, primals, tangents, method=method)

        return g

    _wrap(products_mod, "hvp", make)


def vhp_dense_transposed_blocks() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, argnums: Any, method: str, **k: Any) -> Any:
            result = f(func, args, argnums, method, **k)
            if k.get("api") != "derivs.vhp":
                return result
            return _map_hessians(result, transposed)

        return g

    def transposed(H: Any) -> Any:
        return [
            [H[j][i] if H[j][i].shape == H[i][j].shape else H[i][j] for j in range(len(H))]
            for i in range(len(H))
        ]

    original = hessian_mod.output_hessians
    products_mod.output_hessians = functools.wraps(original)(make(original))


# --- batch --------------------------------------------------------------------------------


def batch_wrong_sample() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(*a: Any, **k: Any) -> Any:
            inner = f(*a, **k)

            def call(*args: Any) -> Any:
                res = inner(*args)
                return (
                    tuple(r.roll(1, 0) for r in res) if isinstance(res, tuple) else res.roll(1, 0)
                )

            return call

        return g

    _wrap(batch_mod, "batch_jacobian", make)


def batch_sum_no_coupling_check() -> None:
    batch_mod._check_independent = lambda *a, **k: None


def batch_sum_in_dims_ignored() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, nums: Any, dims: Any, *rest: Any) -> Any:
            return f(func, args, nums, [0 if d is not None else None for d in dims], *rest)

        return g

    _wrap(batch_mod, "_sum_jacobian_blocks", make)


def batch_sum_batch_axis_not_moved() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(func: Any, args: Any, nums: Any, dims: Any, *rest: Any) -> Any:
            blocks, spec = f(func, args, nums, dims, *rest)
            left = []
            for row in blocks:  # per output leaf: (B, *out, *in_i), in_i per sample
                kept = []
                for blk, a in zip(row, nums, strict=True):
                    # the summed Jacobian's batch axis where it was, behind the output dims
                    stale = blk.movedim(0, blk.dim() - args[a].dim() + dims[a])
                    kept.append(stale if stale.shape == blk.shape else blk)
                left.append(kept)
            return left, spec

        return g

    _wrap(batch_mod, "_sum_jacobian_blocks", make)


def batch_hessian_loop_reversed() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(per_sample: Any) -> Any:
            return f(per_sample[::-1])

        return g

    _wrap(batch_mod, "_stack", make)


VARIANTS: dict[str, Variant] = {
    "jac-fwd-scale-1e-6": Variant("forward-mode Jacobian scaled by 1 + 1e-6", jac_fwd_scale),
    "jac-rev-transposed": Variant(
        "reverse-mode Jacobian transposed (data read as (in, out))", jac_rev_transposed
    ),
    "jac-vjp_vmap-input-order": Variant(
        "vjp_vmap rows laid out with the input dims reversed", jac_vjp_vmap_input_order
    ),
    "jac-swapped-argnums": Variant(
        "blocks of argnums[0] and argnums[1] swapped when shapes agree", jac_swapped_argnums
    ),
    "jac-fwd-through-float32": Variant(
        "forward mode computes float64 through float32", jac_fwd_through_float32
    ),
    "chunk-basis-offset": Variant(
        "chunks after the first push the basis shifted by one row", chunk_basis_offset
    ),
    "loop-row-shift": Variant(
        "loop method attaches each row to the next output element", loop_row_shift
    ),
    "auto-eager-fwd-scale-1e-6": Variant(
        "auto's eager forward mode scaled by 1 + 1e-6", auto_eager_fwd_scale
    ),
    "auto-eager-columns-reversed": Variant(
        "auto's eager forward mode returns the columns of a chunk in reverse order",
        auto_eager_columns_reversed,
    ),
    "auto-eager-closure-grad-ignored": Variant(
        "auto's eager path used although func closes over tensors requiring grad",
        auto_eager_closure_grad_ignored,
    ),
    "auto-eager-unused-rows-not-zero": Variant(
        "auto's eager reverse mode fills the block of an unused input with ones",
        auto_eager_unused_rows_not_zero,
    ),
    "noncontiguous-read-as-contiguous": Variant(
        "non-contiguous inputs read with contiguous strides", noncontiguous_read_as_contiguous
    ),
    "caller-requires-grad-mutated": Variant(
        "loop method sets requires_grad on the caller's tensors", caller_requires_grad_mutated
    ),
    "dtype-not-kept": Variant(
        "Jacobians returned in float32 whatever the input dtype", dtype_not_kept
    ),
    "has-aux-returns-output": Variant(
        "fwd with has_aux returns the output in place of aux", has_aux_returns_output
    ),
    "hess-drop-mixed-blocks": Variant(
        "Hessian blocks H[i][j], i != j, dropped (zeros)", hess_drop_mixed_blocks
    ),
    "hess-fwd_rev-scale-1e-6": Variant("fwd_rev Hessian scaled by 1 + 1e-6", hess_fwd_rev_scale),
    "hess-vector-output-summed": Variant(
        "rev_fwd Hessian of a vector output summed over outputs", hess_vector_output_summed
    ),
    "hvp-fwd_rev-no-mixed": Variant(
        "hvp (fwd_rev) ignores the mixed blocks of several primals", hvp_fwd_rev_no_mixed
    ),
    "vhp-swapped-cotangents": Variant(
        "vhp pairs cotangents[0] with primals[1] and vice versa", vhp_swapped_cotangents
    ),
    "hvp-dense-tangent-order": Variant(
        "dense hvp reads multi-dim tangents in reversed dim order", hvp_dense_tangent_order
    ),
    "vhp-dense-transposed-blocks": Variant(
        "dense vhp uses H[j][i] for H[i][j]", vhp_dense_transposed_blocks
    ),
    "batch-wrong-sample": Variant(
        "batch_jacobian results attached to the previous sample", batch_wrong_sample
    ),
    "batch-sum-no-coupling-check": Variant(
        "sum trick accepts functions that couple samples", batch_sum_no_coupling_check
    ),
    "batch-sum-in-dims-ignored": Variant(
        "sum trick assumes every batch dim is 0", batch_sum_in_dims_ignored
    ),
    "batch-sum-batch-axis-not-moved": Variant(
        "sum trick moves the batch axis to the front only where the shape shows it is not"
        " there (the tutorial's movedim(1, 0) forgotten when batch == output's leading size)",
        batch_sum_batch_axis_not_moved,
    ),
    "batch-loop-reversed": Variant(
        "loop method stacks samples in reverse order", batch_hessian_loop_reversed
    ),
}


# --- sparse (derivs.sparse) ---------------------------------------------------------------


def sparse_detect_drops_pair() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(*a: Any, **k: Any) -> Any:
            rows, cols, shape = f(*a, **k)
            if rows.numel() == 0:
                return rows, cols, shape
            keep = torch.ones(rows.numel(), dtype=torch.bool)
            keep[rows.numel() // 2] = False
            return rows[keep], cols[keep], shape

        return g

    _wrap(detect_mod, "jacobian_pattern", make)
    _wrap(detect_mod, "hessian_pattern", make)


def sparse_recovery_off_by_one() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(col: Any) -> Any:
            idx = f(col)
            m, n = col.pattern.shape
            total = col.num_colors * (m if col.mode == "column" else n)
            return (idx + 1).clamp_max(max(total - 1, 0))

        return g

    _wrap(coloring_mod, "recovery_index", make)


def sparse_coloring_merges_conflict() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(graph: Any, order: Any, limit: int) -> Any:
            color = f(graph, order, limit)
            if color is None:
                return None
            for v in range(graph.n):
                nbrs = graph.adj[graph.ptr[v] : graph.ptr[v + 1]]
                if nbrs:
                    color[nbrs[0]] = color[v]
                    break
            return color

        return g

    _wrap(greedy_mod, "greedy_distance1", make)


def sparse_hessian_wrong_colour() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(col: Any) -> Any:
            idx = f(col)
            p = col.pattern
            off = (p.rows != p.cols).nonzero().reshape(-1)
            if col.mode != "star" or col.num_colors < 2 or off.numel() == 0:
                return idx
            e = int(off[0])
            wrong = (int(col.colors[p.cols[e]]) + 1) % col.num_colors
            idx = idx.clone()
            idx[e] = wrong * p.shape[0] + int(p.rows[e])
            return idx

        return g

    _wrap(coloring_mod, "recovery_index", make)


SPARSE_VARIANTS: dict[str, Variant] = {
    "sparse-detect-drops-pair": Variant(
        "detection drops one (row, col) dependence of the pattern", sparse_detect_drops_pair
    ),
    "sparse-recovery-off-by-one": Variant(
        "recovery reads every nonzero one element past its place", sparse_recovery_off_by_one
    ),
    "sparse-coloring-merges-conflict": Variant(
        "column/row colouring gives two conflicting vertices one colour",
        sparse_coloring_merges_conflict,
    ),
    "sparse-hessian-wrong-colour": Variant(
        "star recovery reads one Hessian entry from the next colour", sparse_hessian_wrong_colour
    ),
}
VARIANTS.update(SPARSE_VARIANTS)


# --- performance: hvp/vhp auto, the memory budget, the compiled path ---------------------


def hvp_auto_first_primal_only() -> None:
    """auto's eager path forms <grad f, v> from the first primal alone (mixed blocks lost)."""
    original = products_mod._eager_rev_rev

    def wrong(func: Any, ps: Any, vs: Any) -> Any:
        if len(ps) < 2:
            return original(func, ps, vs)
        zeros = tuple(torch.zeros_like(v) for v in vs[1:])
        return original(func, ps, (vs[0], *zeros))

    products_mod._eager_rev_rev = functools.wraps(original)(wrong)


def hvp_auto_eager_scale() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: tuple(r * (1 + 1e-6) for r in f(*a, **k))

    _wrap(products_mod, "_eager_rev_rev", make)


def memory_model_undercounts() -> None:
    """The peak model leaves out the batched intermediates (its largest term)."""
    for table in (memory_mod.MODEL, memory_mod.SCREEN):
        for coefficients in table.values():
            if "batch" in coefficients:
                coefficients["batch"] = 0.0


def memory_hint_chunk_too_large() -> None:
    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(*a: Any, **k: Any) -> Any:
            chunk = f(*a, **k)
            return None if chunk is None else 4 * chunk

        return g

    _wrap(memory_mod, "_largest_chunk", make)


def compiled_auto_remembers_sizes() -> None:
    """jacobian's auto stores the output size under torch.compile too (a recompile)."""

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        remember, known = jacobian_mod._remember_out_numel, jacobian_mod._known_out_numel
        pick, fwd, rev = jacobian_mod._pick_key, jacobian_mod._fwd, jacobian_mod._vjp_vmap
        forward = jacobian_mod.prefers_forward

        def g(func: Any, args: Any, argnums: Any, *rest: Any) -> Any:
            key = pick(func, args, argnums)
            n_in = max(1, sum(args[a].numel() for a in argnums))
            size = known(*key)
            if size is not None:
                impl = fwd if forward(size, n_in, args[argnums[0]].device) else rev
                return impl(func, args, argnums, *rest)
            result = f(func, args, argnums, *rest)
            remember(*key, sum(row[0].numel() // args[argnums[0]].numel() for row in result[0]))
            return result

        # NOTE: dynamo imports the module of every function it inlines; this file is loaded
        # by path, not importable, so g takes derivs.jacobian's globals (it reads none).
        return types.FunctionType(
            g.__code__, vars(jacobian_mod), g.__name__, g.__defaults__, g.__closure__
        )

    _wrap(jacobian_mod, "_auto_traced", make)


def compiled_diagonal_read_as_identity() -> None:
    """The compiled pass takes ``diag(v)`` for the identity: ``mm(diag(v), B) -> B``."""

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        diagonal = compiled_mod._diagonal

        def g(node: Any, n: int) -> bool:
            return bool(f(node, n)) or diagonal(node, n) is not None

        return g

    _wrap(compiled_mod, "_is_identity", make)


def compiled_keeps_the_identity_operand() -> None:
    """The compiled pass replaces ``I @ B`` (or ``A @ I``) by the identity, not the other operand."""

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        def g(graph: Any, target: Any, args: tuple[Any, ...], like: Any) -> Any:
            if target is torch.ops.aten.clone.default:
                a, b = like.args
                args = (b if args[0] is a else a,)
            return f(graph, target, args, like)

        return g

    _wrap(compiled_mod, "_insert", make)


PERF_VARIANTS: dict[str, Variant] = {
    "hvp-auto-first-primal-only": Variant(
        "hvp/vhp auto (eager) builds <grad f, v> from the first primal only",
        hvp_auto_first_primal_only,
    ),
    "hvp-auto-eager-scale-1e-6": Variant(
        "hvp/vhp auto (eager) scaled by 1 + 1e-6", hvp_auto_eager_scale
    ),
    "memory-model-undercounts": Variant(
        "the Hessian peak model drops its batched-intermediates term", memory_model_undercounts
    ),
    "memory-hint-chunk-too-large": Variant(
        "the refusal suggests a chunk_size 4x too large to fit", memory_hint_chunk_too_large
    ),
    "compiled-auto-remembers-sizes": Variant(
        "jacobian auto caches output sizes under torch.compile (recompiles)",
        compiled_auto_remembers_sizes,
    ),
    "compiled-diagonal-read-as-identity": Variant(
        "the compiled pass rewrites diag(v) @ B to B (drops the scale)",
        compiled_diagonal_read_as_identity,
    ),
    "compiled-keeps-the-identity-operand": Variant(
        "the compiled pass rewrites I @ B to I (keeps the wrong operand)",
        compiled_keeps_the_identity_operand,
    ),
}
VARIANTS.update(PERF_VARIANTS)


def apply(name: str) -> None:
    """Patch ``derivs`` with the variant called ``name`` (for this process only)."""
    if name not in VARIANTS:
        raise ValueError(f"DERIVS_PLANTED_BUG={name!r} is not one of {sorted(VARIANTS)}")
    VARIANTS[name].apply()
