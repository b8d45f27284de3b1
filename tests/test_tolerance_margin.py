"""tools/tolerance_margin measures the share of a tolerance a comparison uses, both counts."""

from __future__ import annotations

import math

import torch

from tools import tolerance_margin


def test_shares_are_diff_over_allowed_under_both_counts() -> None:
    """One entry of a 32x32 float32 block off by d: the share is d over each count's allowance."""
    eps = torch.finfo(torch.float32).eps
    expected = torch.zeros(32, 32)
    expected[0, 0] = 1.0  # the scale; the planted entry's own |expected| is 0 (no rtol part)
    d = 64 * 32 * eps
    actual = expected.clone()
    actual[5, 9] = d
    values = (torch.zeros(32), torch.zeros(32))  # T = max(64, 32) = 64
    numel, entry, block = tolerance_margin.shares(actual, expected, values)
    assert numel == 1024
    assert math.isclose(entry, d / (32 * eps * 8), rel_tol=1e-6)  # 8 = sqrt(64)
    assert math.isclose(block, d / (32 * eps * 32), rel_tol=1e-6)  # 32 = sqrt(1024)
    err = torch.full_like(expected, d)  # an oracle's estimate counts twice
    _, entry, _ = tolerance_margin.shares(actual, expected, values, err)
    assert math.isclose(entry, d / (32 * eps * 8 + 2 * d), rel_tol=1e-6)


def test_table_keeps_the_worst_share_per_comparison_and_size() -> None:
    rows = [("hessian", 2000, 0.1, 0.01), ("hessian", 3000, 0.3, 0.02), ("hessian", 10, 0.5, 0.5)]
    lines = tolerance_margin.table(rows).splitlines()
    assert "| hessian | > 1024 | 2 | 0.3 | 0.02 |" in lines
    assert "| hessian | <= 64 | 1 | 0.5 | 0.5 |" in lines


def test_a_few_draws_stay_inside_the_tolerance() -> None:
    rows = tolerance_margin.measure(3, 0, torch.float32)
    assert rows and all(share < 1 for _, _, share, _ in rows)
