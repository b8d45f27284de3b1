"""Pieces the built-in adapters share: argnums as positions, functions of the selected inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def positions(argnums: int | tuple[int, ...], n_args: int) -> tuple[tuple[int, ...], bool]:
    """``argnums`` as non-negative positions, and whether it was a single int.

    >>> positions(-1, 3), positions((0, 2), 3)
    (((2,), True), ((0, 2), False))
    """
    if isinstance(argnums, int):
        return (argnums % n_args,), True
    return tuple(a % n_args for a in argnums), False


def of_selected(
    func: Callable[..., Any], args: Sequence[Any], nums: tuple[int, ...]
) -> Callable[..., Any]:
    """``func`` as a function of ``args[nums]`` alone, the other arguments held fixed.

    >>> of_selected(lambda a, b, c: a + 10 * b + 100 * c, (1, 2, 3), (0, 2))(4, 5)
    524
    """

    def selected(*chosen: Any) -> Any:
        full = list(args)
        for k, value in zip(nums, chosen, strict=True):
            full[k] = value
        return func(*full)

    return selected
