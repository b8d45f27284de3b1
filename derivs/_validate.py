"""Shared validation: every message starts with the API that raised it and names the argument.

Validators run eagerly where they can (when the transform is built) and otherwise once per
call, before any derivative is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import keystr, tree_flatten_with_path

from derivs import _config

Argnums = int | tuple[int, ...]


def describe(value: object) -> str:
    """A short description of ``value`` for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return (
        f"{type(value).__name__} {value!r}"
        if isinstance(value, int | float)
        else type(value).__name__
    )


def func_name(func: object) -> str:
    """The name of the user's ``func`` for the names of the transforms made from it."""
    return getattr(func, "__name__", type(func).__name__)


def transform_name(kind: str, func: object, argnums: object) -> str:
    """The ``__name__`` of a transform of ``func``: ``jacobian_of_f_wrt_argnums_(0,1)``."""
    return f"{kind}_of_{func_name(func)}_wrt_argnums_{argnums}".replace(" ", "")


def check_callable(api: str, func: object, name: str = "func") -> None:
    if not callable(func):
        raise TypeError(f"{api}: {name} must be callable, got {describe(func)}")


def check_bool(api: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{api}: {name} must be True or False, got {describe(value)}")


def check_argnums_spec(api: str, argnums: object) -> None:
    """Check the type of ``argnums`` (an int or a non-empty tuple of ints)."""
    if isinstance(argnums, bool) or not isinstance(argnums, int | tuple):
        raise TypeError(
            f"{api}: argnums must be an int or a tuple of ints, got {describe(argnums)}"
        )
    if isinstance(argnums, tuple):
        if not argnums:
            raise ValueError(f"{api}: argnums=() is empty; give at least one argument index")
        for k, a in enumerate(argnums):
            if isinstance(a, bool) or not isinstance(a, int):
                raise TypeError(f"{api}: argnums[{k}] must be an int, got {describe(a)}")


def normalize_argnums(api: str, argnums: Argnums, nargs: int) -> tuple[int, ...]:
    """Resolve negative indices against ``nargs``; reject out-of-range and duplicates."""
    raw = argnums if isinstance(argnums, tuple) else (argnums,)
    out = []
    for a in raw:
        if not -nargs <= a < nargs:
            raise ValueError(
                f"{api}: argnums={argnums!r} is out of range for {nargs} positional argument(s)"
            )
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{api}: argnums={argnums!r} names the same argument twice")
    return tuple(out)


def check_choice(api: str, name: str, value: object, choices: Mapping[str, str]) -> None:
    """``value`` of the argument ``name`` must be a key of ``choices`` (name -> one-line hint
    on when to use it): a ``method``, a sparse ``mode``, ``layout``..."""
    if isinstance(value, str) and value in choices:
        return
    listing = "\n".join(f"  {key!r}: {hint}" for key, hint in choices.items())
    raise ValueError(f"{api}: {name}={value!r} is not one of {list(choices)}:\n{listing}")


def check_chunk_size(api: str, chunk_size: object) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(
            f"{api}: chunk_size must be None or an int >= 1, got {describe(chunk_size)}"
        )
    if chunk_size < 1:
        raise ValueError(f"{api}: chunk_size must be None or >= 1, got {chunk_size}")


def check_differentiable(api: str, value: object, name: str) -> torch.Tensor:
    """A tensor we differentiate with respect to: real floating point."""
    if not isinstance(value, torch.Tensor):
        # NOTE: the operators flatten pytrees before they get here (derivs/_pytree.py); the
        # APIs that reach this with one (derivs.sparse) take tensors only.
        hint = (
            f" (a pytree: {api} takes tensors only; pass its tensors as separate arguments or "
            f"concatenate them into one)"
            if isinstance(value, tuple | list | dict)
            else ""
        )
        raise TypeError(
            f"{api}: {name} must be a floating-point tensor to differentiate, got "
            f"{describe(value)}{hint}"
        )
    if not value.dtype.is_floating_point:
        raise TypeError(
            f"{api}: {name} is {describe(value)}; only real floating-point tensors can be "
            f"differentiated (convert with .double() or .float())"
        )
    return value


def check_diff_args(
    api: str, args: Sequence[object], argnums: tuple[int, ...]
) -> list[torch.Tensor]:
    return [
        check_differentiable(api, args[a], f"args[{a}] (argnums includes {a})") for a in argnums
    ]


def check_primals_tangents(
    api: str,
    primals: object,
    tangents: object,
    tangents_name: str,
    labels: Sequence[str] | None = None,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``primals`` and ``tangents``/``cotangents``: tuples of tensors, equal in number and shape.

    ``labels[k]`` names entry ``k`` in messages (``[0]['w']`` for the leaves of pytrees);
    ``[k]`` by default.
    """
    for name, value in (("primals", primals), (tangents_name, tangents)):
        if not isinstance(value, tuple):
            hint = (
                f" (wrap a single tensor as ({name[:-1]},))"
                if isinstance(value, torch.Tensor)
                else ""
            )
            raise TypeError(
                f"{api}: {name} must be a tuple of tensors, got {describe(value)}{hint}"
            )
    assert isinstance(primals, tuple) and isinstance(tangents, tuple)
    if not primals:
        raise ValueError(f"{api}: primals=() is empty; give at least one tensor")
    if len(primals) != len(tangents):
        raise ValueError(
            f"{api}: {tangents_name} has {len(tangents)} entries, expected {len(primals)} like primals"
        )
    at = [f"[{k}]" for k in range(len(primals))] if labels is None else labels
    ps = tuple(check_differentiable(api, p, f"primals{at[k]}") for k, p in enumerate(primals))
    for k, (p, t) in enumerate(zip(ps, tangents, strict=True)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{api}: {tangents_name}{at[k]} must be a tensor, got {describe(t)}")
        if t.shape != p.shape:
            raise ValueError(
                f"{api}: {tangents_name}{at[k]} has shape {tuple(t.shape)}, "
                f"expected {tuple(p.shape)} like primals{at[k]}"
            )
        if t.dtype != p.dtype:
            raise TypeError(
                f"{api}: {tangents_name}{at[k]} has dtype {t.dtype}, expected {p.dtype} like primals{at[k]}"
            )
        if t.device != p.device:
            raise ValueError(
                f"{api}: {tangents_name}{at[k]} is on {t.device}, expected {p.device} like primals{at[k]}"
            )
    return ps, tuple(tangents)


def check_size(api: str, what: str, numel: int, itemsize: int, hint: str) -> None:
    """Refuse to materialise ``numel`` elements above the memory budget."""
    budget = _config.get_memory_budget()
    need = numel * itemsize
    if need > budget:
        raise _config.MemoryBudgetError(
            f"{api}: {what} would need {fmt_bytes(need)} ({numel:,} elements), above the memory "
            f"budget of {fmt_bytes(budget)}; {hint} (or raise the budget with "
            f"derivs.set_memory_budget / DERIVS_MEMORY_BUDGET)"
        )


def check_peak(api: str, what: str, nbytes: int, hint: str) -> None:
    """Refuse a computation whose predicted peak, ``nbytes``, is above the memory budget."""
    budget = _config.get_memory_budget()
    if nbytes > budget:
        raise _config.MemoryBudgetError(
            f"{api}: {what} would need about {fmt_bytes(nbytes)} at its peak (predicted), above "
            f"the memory budget of {fmt_bytes(budget)}; {hint} (or raise the budget with "
            f"derivs.set_memory_budget / DERIVS_MEMORY_BUDGET)"
        )


def fmt_index(flat: int, shape: Sequence[int]) -> str:
    """The position ``flat`` of a flattened tensor of ``shape`` as an index: ``(1, 0, 2)``."""
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return str(tuple(reversed(index)))


def fmt_bytes(n: int) -> str:
    """``n`` bytes for a message: ``381.5 MiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class CheckedFunc:
    """Wraps the user's ``func``: checks what it returns before anything is differentiated.

    * the output is a floating-point tensor (or, where allowed, a pytree of them);
    * with ``has_aux`` it is an ``(output, aux)`` pair;
    * with ``scalar`` it is a 0-d tensor;
    * where pytrees are not allowed, a pytree output is refused with its leaves' paths,
      then ``pytree_hint`` (the caller's advice: what it takes instead, and what else to use);
    * with ``factor`` the derivative about to be materialised (output elements x ``factor``)
      fits the memory budget. This runs at the first evaluation, inside the transform and
      before the basis is pushed through, so nothing big has been allocated yet;
    * ``on_output(output elements)``, where given, is called then too (a check of its own:
      the predicted peak of a Hessian).

    Exceptions raised by ``func`` itself propagate unchanged.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        api: str,
        *,
        has_aux: bool = False,
        allow_pytree: bool = True,
        scalar: bool = False,
        factor: int | None = None,
        itemsize: int = 4,
        what: str = "the Jacobian",
        hint: str = "use derivs.hvp/derivs.vhp for products instead of the full matrix",
        on_output: Callable[[int], None] | None = None,
        pytree_hint: str = "",
    ) -> None:
        self.func = func
        self.api = api
        self.has_aux = has_aux
        self.allow_pytree = allow_pytree
        self.scalar = scalar
        self.factor = factor
        self.itemsize = itemsize
        self.what = what
        self.hint = hint
        self.on_output = on_output
        self.pytree_hint = pytree_hint
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, *args: Any) -> Any:
        result = self.func(*args)
        out = result
        if self.has_aux:
            if not (isinstance(result, tuple | list) and len(result) == 2):
                raise ValueError(
                    f"{self.api}: has_aux=True but func returned {describe(result)}; "
                    f"expected an (output, aux) pair"
                )
            out = result[0]
        self.check_output(out)
        return result

    def check_output(self, out: object) -> None:
        api = self.api
        if isinstance(out, torch.Tensor):
            leaves: list[Any] = [out]
            _check_output_leaf(api, out, "func returned")
        elif self.allow_pytree and isinstance(out, tuple | list | dict):
            with_path = tree_flatten_with_path(out)[0]
            if not with_path:
                raise TypeError(
                    f"{api}: func returned an empty {type(out).__name__}; expected tensors"
                )
            for path, leaf in with_path:
                _check_output_leaf(api, leaf, f"func's output{keystr(path)} is")
            leaves = [leaf for _, leaf in with_path]
        else:
            kind = "a Tensor" + (" or a tuple/list/dict of Tensors" if self.allow_pytree else "")
            hint = _pytree_hint(out, self.pytree_hint)
            raise TypeError(f"{api}: func must return {kind}, got {describe(out)}{hint}")
        if self.scalar and not (len(leaves) == 1 and leaves[0].dim() == 0):
            raise ValueError(
                f"{api}: func must return a scalar (0-d tensor), got {describe(out)}; "
                f"reduce it (e.g. .sum()) or use derivs.jacobian/derivs.hessian for vector outputs"
            )
        if self.factor is not None:
            numel = sum(leaf.numel() for leaf in leaves) * self.factor
            check_size(api, self.what, numel, self.itemsize, self.hint)
        if self.on_output is not None:
            self.on_output(sum(leaf.numel() for leaf in leaves))


def _check_output_leaf(api: str, leaf: object, what: str) -> None:
    """A leaf of ``func``'s output (``what``: where it is) must be a real floating-point tensor."""
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(f"{api}: {what} {describe(leaf)}, not a tensor; expected tensors")
    if not leaf.dtype.is_floating_point:
        raise TypeError(
            f"{api}: {what} {describe(leaf)}; outputs must be real floating point to be "
            f"differentiated"
        )


def _pytree_hint(out: object, hint: str) -> str:
    """The leaves of a refused pytree output ``out``, named by path, then the caller's ``hint``."""
    if not isinstance(out, tuple | list | dict):
        return ""
    paths = [f"output{keystr(path)}" for path, _ in tree_flatten_with_path(out)[0]]
    listing = (
        f" (leaves {', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''})" if paths else ""
    )
    return listing + (f"; {hint}" if hint else "")


def without_overlap(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a contiguous copy when elements share memory (an ``expand``-ed view).

    Forward-mode AD refuses to attach a tangent to a tensor whose elements alias each other.
    """
    if any(stride == 0 and size > 1 for stride, size in zip(x.stride(), x.shape, strict=True)):
        return x.contiguous()
    return x


def itemsize_of(tensors: Sequence[torch.Tensor]) -> int:
    sizes = [t.element_size() for t in tensors]
    return max(sizes) if sizes else 4


def check_in_dims(
    api: str, in_dims: object, args: Sequence[object]
) -> tuple[tuple[int | None, ...], int]:
    """Resolve ``in_dims`` (vmap semantics) against ``args``; return (per-arg dims, batch size)."""
    n = len(args)
    if isinstance(in_dims, bool) or not (in_dims is None or isinstance(in_dims, int | tuple)):
        raise TypeError(
            f"{api}: in_dims must be an int or a tuple of int/None, got {describe(in_dims)}"
        )
    if in_dims is None:
        raise ValueError(
            f"{api}: in_dims=None maps over no argument; give at least one batched dim"
        )
    if isinstance(in_dims, int):
        dims: tuple[int | None, ...] = (in_dims,) * n
    else:
        if len(in_dims) != n:
            raise ValueError(
                f"{api}: in_dims={in_dims!r} has {len(in_dims)} entries but func was called with "
                f"{n} argument(s)"
            )
        for k, d in enumerate(in_dims):
            if d is not None and (isinstance(d, bool) or not isinstance(d, int)):
                raise TypeError(f"{api}: in_dims[{k}] must be an int or None, got {describe(d)}")
        dims = in_dims
    resolved: list[int | None] = []
    sizes: dict[int, int] = {}
    for k, (d, a) in enumerate(zip(dims, args, strict=True)):
        if d is None:
            resolved.append(None)
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{api}: in_dims[{k}]={d} but args[{k}] is {describe(a)}, not a tensor")
        if not -a.dim() <= d < a.dim():
            raise ValueError(
                f"{api}: in_dims[{k}]={d} is out of range for args[{k}] of shape {tuple(a.shape)}"
            )
        resolved.append(d % a.dim())
        sizes[k] = a.shape[d]
    if not sizes:
        raise ValueError(
            f"{api}: in_dims={in_dims!r} batches no argument; at least one must be batched"
        )
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"args[{k}]: {s}" for k, s in sizes.items())
        raise ValueError(f"{api}: batched arguments have different batch sizes ({listing})")
    return tuple(resolved), next(iter(sizes.values()))


def numel_of(shape: Sequence[int]) -> int:
    return math.prod(shape)
