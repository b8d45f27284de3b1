"""The memory budget of derivs.hessian: its model against measured peaks, and its refusals.

Peaks are measured by ``derivs._memory.measured_peak``: the CPU allocator's allocations and
frees while the Hessian is computed, from torch.profiler's memory events. That counts the
tensors the call allocates and nothing else, so it is the same on a loaded 2-core CI machine
as on a quiet one. The sizes keep every peak to a few MiB; ``python -m bench.hessian_memory``
runs the larger grid (and, with ``--big``, the tutorial's 32 x 512) behind the model's
coefficients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import derivs
from bench.problems import mlp, predict, softplus
from derivs import _memory

# NOTE: the model's documented bound (docs/performance.md): at most twice the measured peak,
# except rev_fwd, whose per-vector cost the probe reads least well (2.5x on tanh networks).
LIMIT = {"rev_fwd": 2.5}


def _args(func: Callable[..., Any], n: int, m: int, h: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(7 * n + m)
    x = torch.randn(n, generator=gen)
    if func is predict:
        return torch.randn(m, n, generator=gen), torch.randn(m, generator=gen), x
    w1 = torch.randn(h, n, generator=gen) / math.sqrt(n)
    return w1, torch.randn(m, h, generator=gen) / math.sqrt(h), x


# (function, n inputs, m outputs, hidden): peaks of 1 to 10 MiB; sizes not in the fit.
FORWARD_OUTER = [(predict, 80, 40, 0), (predict, 36, 88, 0), (softplus, 40, 12, 160)]
REVERSE_OUTER = [(predict, 20, 28, 0), (predict, 44, 12, 0), (softplus, 12, 16, 80)]
CASES = [
    pytest.param(method, case, id=f"{method}-{case[0].__name__}-{case[1]}to{case[2]}")
    for method, cases in (
        ("auto", FORWARD_OUTER),
        ("fwd_rev", FORWARD_OUTER),
        ("fwd_fwd", FORWARD_OUTER),
        ("rev_rev", REVERSE_OUTER),
        ("rev_fwd", [*REVERSE_OUTER, (mlp, 16, 12, 96)]),
        ("loop", [(predict, 12, 16, 0), (softplus, 8, 6, 40)]),
    )
    for case in cases
]


@pytest.mark.parametrize(("method", "case"), CASES)
def test_model_bounds_the_measured_peak(method: str, case: tuple[Any, int, int, int]) -> None:
    """measured <= predicted <= LIMIT x measured, for every Hessian method."""
    func, n, m, h = case
    args = _args(func, n, m, h)
    predicted = _memory.predicted_peak(func, args, (2,), method)
    measured, result = _memory.measured_peak(
        lambda: derivs.hessian(func, argnums=2, method=method)(*args)
    )
    assert result.shape == (m, n, n)
    limit = LIMIT.get(method, 2.0)
    assert predicted is not None
    assert measured <= predicted <= limit * measured, (
        f"hessian({func.__name__}, method={method!r}) on {n} -> {m}: predicted {predicted:,} "
        f"bytes, measured {measured:,} ({predicted / measured:.2f}x; bounds 1 to {limit})"
    )


def test_measured_peak_counts_what_the_call_allocates() -> None:
    """Two live 4 MB tensors, then one: a peak of 8 MB (plus the scalar of .sum())."""
    x = torch.ones(10**6)

    def two_then_one() -> torch.Tensor:
        a = x * 2
        b = a + 1
        del a
        return b.sum()

    peak, _ = _memory.measured_peak(two_then_one)
    assert 8 * 10**6 <= peak <= 8 * 10**6 + 1024


@pytest.mark.parametrize("method", ["rev_rev", "rev_fwd", "fwd_rev", "auto"])
def test_refused_before_anything_big_is_allocated(method: str) -> None:
    """Just under the predicted peak: refused, with the size, after only the probe ran."""
    args = _args(predict, 20, 28)
    predicted = _memory.predicted_peak(predict, args, (2,), method)
    assert predicted is not None
    fn = derivs.hessian(predict, argnums=2, method=method)
    with derivs.memory_budget(predicted - 1):

        def refused() -> None:
            with pytest.raises(ValueError, match=r"at its peak \(predicted\)") as info:
                fn(*args)
            assert "derivs.hessian: hessian(method=" in str(info.value)
            assert "derivs.hvp/derivs.vhp" in str(info.value)

        peak, _ = _memory.measured_peak(refused)
    # NOTE: the probe evaluates predict and, near the budget, one second-order pass: a few KiB.
    assert peak < predicted / 50, f"{peak:,} bytes allocated before refusing {predicted:,}"


def test_runs_at_the_predicted_peak() -> None:
    args = _args(predict, 20, 28)
    predicted = _memory.predicted_peak(predict, args, (2,), "rev_rev")
    assert predicted is not None
    with derivs.memory_budget(predicted):
        measured, _ = _memory.measured_peak(
            lambda: derivs.hessian(predict, argnums=2, method="rev_rev")(*args)
        )
    assert measured <= predicted


def _hinted_chunk(refusal: pytest.ExceptionInfo[ValueError]) -> int:
    return int(str(refusal.value).split("chunk_size=")[1].split()[0])


def test_the_hinted_chunk_size_fits() -> None:
    """The chunk_size the refusal suggests runs within the same budget."""
    args = _args(predict, 20, 28)
    full = _memory.predicted_peak(predict, args, (2,), "rev_rev")
    assert full is not None
    budget = full // 3
    with derivs.memory_budget(budget):
        with pytest.raises(ValueError, match=r"chunk_size=(\d+)") as info:
            derivs.hessian(predict, argnums=2, method="rev_rev")(*args)
        chunk = _hinted_chunk(info)
        measured, result = _memory.measured_peak(
            lambda: derivs.hessian(predict, argnums=2, method="rev_rev", chunk_size=chunk)(*args)
        )
    assert result.shape == (28, 20, 20)
    assert measured <= budget


def test_a_refused_chunk_size_is_answered_with_a_smaller_one() -> None:
    """A given chunk_size that does not fit: the hint is the largest smaller one that does."""
    args = _args(predict, 20, 28)
    peaks = {
        c: _memory.predicted_peak(predict, args, (2,), "rev_rev", chunk_size=c) for c in (4, 8)
    }
    assert peaks[4] is not None and peaks[8] is not None and peaks[4] < peaks[8]
    with derivs.memory_budget(peaks[8] - 1):
        with pytest.raises(ValueError, match=r"chunk_size=(\d+)") as info:
            derivs.hessian(predict, argnums=2, method="rev_rev", chunk_size=8)(*args)
        assert _hinted_chunk(info) == 4
        measured, _ = _memory.measured_peak(
            lambda: derivs.hessian(predict, argnums=2, method="rev_rev", chunk_size=4)(*args)
        )
    assert measured <= peaks[8] - 1


def test_a_budget_only_one_vector_at_a_time_fits_hints_chunk_size_1() -> None:
    """The smallest chunk is a hint too: at the peak of chunk_size=1, that is what it says."""
    args = _args(predict, 20, 28)
    one = _memory.predicted_peak(predict, args, (2,), "rev_rev", chunk_size=1)
    two = _memory.predicted_peak(predict, args, (2,), "rev_rev", chunk_size=2)
    assert one is not None and two is not None and one < two
    with derivs.memory_budget(one), pytest.raises(ValueError, match=r"chunk_size=(\d+)") as info:
        derivs.hessian(predict, argnums=2, method="rev_rev")(*args)
    assert _hinted_chunk(info) == 1


def test_refused_inside_a_transform_at_the_first_evaluation() -> None:
    """Under vmap the probe cannot run; the screen refuses at the first evaluation."""
    w, b, _ = _args(predict, 20, 28)
    xs = torch.randn(2, 20)
    fn = derivs.hessian(predict, argnums=2, method="rev_rev")
    with derivs.memory_budget(2**20), pytest.raises(ValueError, match="at its peak"):
        torch.func.vmap(fn, in_dims=(None, None, 0))(w, b, xs)
