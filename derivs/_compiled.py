"""The compiled path: an identity basis that ``torch.compile`` can see through.

A Jacobian by basis pushing multiplies the identity into the first linear map it meets
(``I @ W.T`` in forward mode) or a diagonal into the last (``diag(1 - y**2) @ W`` in
reverse mode). Inductor computes both as dense matrix products: for the tutorial's tall and
wide shapes, 32 * 32 * 2048 multiply-adds where the closed form ``(1 - y**2)[:, None] * W``
does 32 * 2048, which left the compiled Jacobian 3.4-3.9x the compiled closed form.

Under ``torch.compile`` derivs builds its basis with the custom op ``derivs::identity``, and
a post-grad graph pass (installed the first time that op is traced) rewrites exactly the
products with it: ``mm(I, B) -> B``, ``mm(A, I) -> A``, ``mm(diag(v), B) -> v[:, None] * B``
and ``mm(A, diag(v)) -> A * v[None, :]``, where ``diag(v)`` is the identity times a vector
(``I * v``, the cotangent basis scaled by an elementwise backward); and in those graphs a
product with a zero tangent (``x @ 0``: forward mode through ``linear`` for an argument
that is not differentiated) becomes zeros. The operand is found
through the ops that only re-view its elements in the same row-major order (reshape,
squeeze, contiguous ``as_strided`` and an ``as_strided_scatter`` that overwrites the whole
buffer). Graphs without ``derivs::identity`` are left alone, so a user's own ``torch.eye``
products keep their IEEE semantics (``0 * inf = nan``); in derivs' products the identity's
zeros are structural, as they are in forward-mode AD's symbolic zeros (torch's eager
``ZeroTensor`` tangents make the same choice).

Eager calls never use the op: :func:`identity` is ``torch.eye`` there.

The pass needs Inductor's custom-pass API (``torch._inductor.custom_graph_pass``, torch 2.6
on). On an older torch the compiled transforms still run and are right, without the
rewrite (the identity products stay dense), and compiling one warns with :data:`NO_REWRITE`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.fx import Graph, Node

__all__ = ["identity"]

aten = torch.ops.aten

NO_REWRITE = (
    "derivs: torch {version} has no Inductor custom-pass API (torch._inductor.custom_graph_pass,"
    " torch >= 2.6), so torch.compile of derivs' transforms runs without the identity-product"
    " rewrite: the results are right, the basis products (I @ W.T) are computed densely."
    " Upgrade torch for the rewrite."
)


# NOTE: the pass below matches the op by this name, not by object: a second import of
# derivs in one process (the pytree-overhead benchmark imports an older checkout beside this
# one) defines the op again, and graphs then hold the new overload object; compared by
# identity, the pass stopped recognising the basis (test_compile's product counts failed
# after such an import).
_IDENTITY_NAME = "derivs::identity"


@torch.library.custom_op(_IDENTITY_NAME, mutates_args=())
def _identity_op(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=dtype, device=device)


@_identity_op.register_fake
def _identity_fake(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # NOTE: the fake kernel runs (for real, not traced) when Dynamo first meets the op,
    # before Inductor compiles the graph: the moment to install the pass.
    install()
    return torch.empty((n, n), dtype=dtype, device=device)


def identity(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``n x n`` identity; under ``torch.compile`` as ``derivs::identity``."""
    if torch.compiler.is_compiling():
        eye: torch.Tensor = _identity_op(n, dtype, device)
        return eye
    return torch.eye(n, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- the pass


def _is_identity_op(target: Any) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is not None and schema.name == _IDENTITY_NAME and schema.overload_name == ""


# NOTE: ops whose result holds its input's elements in the same row-major order.
_SAME_ORDER = frozenset(
    {
        aten.reshape.default,
        aten.view.default,
        aten._unsafe_view.default,
        aten.unsqueeze.default,
        aten.squeeze.default,
        aten.squeeze.dim,
        aten.squeeze.dims,
        aten.clone.default,
    }
)


def _val(node: Any) -> torch.Tensor | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val if isinstance(val, torch.Tensor) else None


def _contiguous_strides(size: Any) -> tuple[int, ...]:
    strides, step = [], 1
    for extent in reversed(list(size)):
        strides.append(step)
        step *= max(int(extent), 1)
    return tuple(reversed(strides))


def _covers_contiguously(base: Any, size: Any, stride: Any, offset: Any = 0) -> bool:
    """Whether ``as_strided(base, size, stride, offset)`` re-views all of a contiguous base."""
    val = _val(base)
    if val is None or offset != 0 or not val.is_contiguous() or val.storage_offset() != 0:
        return False
    numel = 1
    for extent in size:
        numel *= int(extent)
    return tuple(stride) == _contiguous_strides(size) and val.numel() == numel


def _source(node: Any) -> Any:
    """The node whose elements ``node`` holds in the same row-major order (maybe itself)."""
    while isinstance(node, Node) and node.op == "call_function":
        reviewed = node.target is aten.as_strided.default and _covers_contiguously(*node.args[:4])
        if node.target in _SAME_ORDER or reviewed:
            node = node.args[0]
        elif node.target is aten.as_strided_scatter.default and _covers_contiguously(
            node.args[0], *node.args[2:5]
        ):
            node = node.args[1]
        else:
            break
    return node


def _symmetric_source(node: Any) -> Any:
    """:func:`_source`, also through transposes of square matrices (``I.T = I``,
    ``diag(v).T = diag(v)``: what this pass looks for is symmetric)."""
    src = _source(node)
    while _is_square_transpose(src):
        src = _source(src.args[0])
    return src


def _is_square_transpose(node: Any) -> bool:
    if not (isinstance(node, Node) and node.target is aten.permute.default):
        return False
    shape = _shape(node)
    return tuple(node.args[1]) == (1, 0) and shape is not None and shape[0] == shape[1]  # type: ignore[arg-type]


def _is_identity(node: Any, n: int) -> bool:
    src = _symmetric_source(node)
    if not (isinstance(src, Node) and _is_identity_op(src.target)):
        return False
    return _shape(src) == (n, n)


def _shape(node: Any) -> tuple[int, ...] | None:
    val = _val(node)
    return tuple(val.shape) if val is not None else None


def _diagonal(node: Any, n: int) -> Any:
    """``v`` where ``node`` is ``I * v`` (or ``v * I``) of shape (n, n), ``v`` of n elements."""
    src = _symmetric_source(node)
    if not (isinstance(src, Node) and src.target is aten.mul.Tensor and _shape(src) == (n, n)):
        return None
    for eye, v in (src.args, src.args[::-1]):
        if _is_identity(eye, n) and isinstance(v, Node) and _shape(v) in {(n,), (1, n), (n, 1)}:
            return v
    return None


def _is_zeros(node: Any) -> bool:
    """Whether ``node`` is a view (any layout) of ``full(..., 0)``: a symbolic zero tangent."""
    while isinstance(node, Node) and node.op == "call_function":
        if node.target is aten.full.default:
            return bool(node.args[1] == 0)
        if node.target in _SAME_ORDER or node.target in (aten.expand.default, aten.permute.default):
            node = node.args[0]
        else:
            return False
    return False


def _insert(graph: Graph, target: Callable[..., Any], args: tuple[Any, ...], like: Node) -> Node:
    new = graph.call_function(target, args)
    new.meta.update(like.meta)
    return new


def _rewrite_mm(graph: Graph, mm: Node) -> bool:
    """Replace one product with the identity or a diagonal; whether it did."""
    a, b = mm.args
    shape_a, shape_b = _shape(a), _shape(b)
    if shape_a is None or shape_b is None:
        return False
    with graph.inserting_before(mm):
        if _is_identity(a, shape_a[0]):
            new = _insert(graph, aten.clone.default, (b,), mm)
        elif _is_identity(b, shape_b[0]):
            new = _insert(graph, aten.clone.default, (a,), mm)
        elif (v := _diagonal(a, shape_a[0])) is not None:
            column = graph.call_function(aten.reshape.default, (v, [shape_a[0], 1]))
            new = _insert(graph, aten.mul.Tensor, (column, b), mm)
        elif (v := _diagonal(b, shape_b[0])) is not None:
            row = graph.call_function(aten.reshape.default, (v, [1, shape_b[0]]))
            new = _insert(graph, aten.mul.Tensor, (a, row), mm)
        elif _is_zeros(a) or _is_zeros(b):
            val = _val(mm)
            assert val is not None  # shapes were found above
            new = _insert(graph, aten.full.default, (list(val.shape), 0), mm)
            new.kwargs = {"dtype": val.dtype, "device": val.device}
        else:
            return False
    mm.replace_all_uses_with(new)
    graph.erase_node(mm)
    return True


def simplify_identity_products(graph: Graph) -> int:
    """Rewrite the products with ``derivs::identity`` in ``graph``; how many it rewrote."""
    if not any(_is_identity_op(n.target) for n in graph.nodes):
        return 0
    done = sum(_rewrite_mm(graph, n) for n in list(graph.nodes) if n.target is aten.mm.default)
    if done:
        graph.eliminate_dead_code()
    return done


def _source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _custom_graph_pass() -> Any:
    """Inductor's base class of custom passes, or None on a torch without it (before 2.6)."""
    # NOTE: imported here: torch._inductor costs seconds to import, eager users never need it.
    try:
        from torch._inductor.custom_graph_pass import CustomGraphPass
    except ImportError:
        return None
    return CustomGraphPass


def _make_pass(base: Any, previous: Any) -> Any:
    """The post-grad pre-pass: derivs' rewrite, then whatever pass was installed before."""

    class IdentityProducts(base):  # type: ignore[misc]
        def __call__(self, graph: Graph) -> None:
            simplify_identity_products(graph)
            if previous is not None:
                previous(graph)

        def uuid(self) -> Any:
            # NOTE: the FX graph cache keys compiled graphs by the custom passes' uuids.
            before = previous.uuid() if hasattr(previous, "uuid") else repr(previous)
            return ("derivs.identity_products", _source_hash(), before)

    return IdentityProducts()


def install() -> None:
    """Install the pass as Inductor's ``post_grad_custom_pre_pass`` (once; keeps any other).

    Without Inductor's custom-pass API it installs nothing and warns (:data:`NO_REWRITE`;
    each graph that traces the basis calls it once, and Python shows a warning once per
    place by default).
    """
    base = _custom_graph_pass()
    if base is None:
        warnings.warn(NO_REWRITE.format(version=torch.__version__), UserWarning, stacklevel=2)
        return
    from torch._inductor import config

    current = config.post_grad_custom_pre_pass
    if type(current).__name__ != "IdentityProducts":
        config.post_grad_custom_pre_pass = _make_pass(base, current)
