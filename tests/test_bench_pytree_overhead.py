"""bench.pytree_overhead's machinery: a second copy of derivs imported apart, the check before
timing, the bit-for-bit comparison and the noise rule (not a benchmark: no ``bench`` mark)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import derivs
from bench import pytree_overhead as po
from bench.problems import predict, predict_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def copy() -> types.ModuleType:
    return po.load_package(ROOT)


def test_load_package_imports_a_second_copy_apart(copy: types.ModuleType) -> None:
    assert copy is not derivs
    assert sys.modules["derivs"] is derivs
    assert copy.jacobian is not derivs.jacobian
    args = predict_inputs(5, 3, "cpu")
    ours = derivs.jacobian(predict, argnums=2)(*args)
    theirs = copy.jacobian(predict, argnums=2)(*args)
    assert torch.equal(ours, theirs)


def test_load_package_refuses_a_root_without_the_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"load_package: root .* has no derivs/__init__\.py"):
        po.load_package(tmp_path)
    assert sys.modules["derivs"] is derivs


def _square(group_name: str = "jacobian square D=16") -> po.Group:
    return next(g for g in po.groups() if g.name == group_name)


def test_measure_case_times_both_versions_and_the_control(copy: types.ModuleType) -> None:
    case = po.measure_case(
        _square(),
        "rev",
        {"before": copy, "after": derivs},
        "cpu",
        trials=2,
        rounds=1,
        block_s=1e-4,
    )
    assert case["bitwise_equal"]
    assert len(case["times"]) == 2
    for times in case["times"]:
        assert set(times) == set(po.ENTRIES)
        assert all(t > 0 for t in times.values())


def test_measure_case_checks_each_version_before_timing() -> None:
    def wrong_jacobian(*_: Any, **__: Any) -> Any:
        return lambda weight, bias, x: torch.zeros(weight.shape)

    wrong = types.SimpleNamespace(jacobian=wrong_jacobian)
    with pytest.raises(AssertionError, match="jacobian square D=16 rev, after"):
        po.measure_case(
            _square(),
            "rev",
            {"before": derivs, "after": wrong},  # type: ignore[dict-item]
            "cpu",
            trials=1,
            rounds=1,
            block_s=1e-4,
        )


def test_bitwise_comparison_sees_one_ulp() -> None:
    a = (torch.ones(3),)
    b = (torch.ones(3).nextafter(torch.full((3,), 2.0)),)
    assert po._bitwise_equal(a, (torch.ones(3),))
    assert not po._bitwise_equal(a, b)


def _summary(ratios: list[float], noise: list[float]) -> dict[str, float]:
    times = [
        {"before": 1.0, "after": r, "before again": n} for r, n in zip(ratios, noise, strict=True)
    ]
    return po.summarize({"times": times})


def test_beyond_noise_needs_every_trial_slower_than_the_control_ever_moved() -> None:
    assert po.beyond_noise(_summary([1.20, 1.25, 1.22], [1.02, 0.98, 1.05]))
    # one trial within the control's spread: not beyond noise
    assert not po.beyond_noise(_summary([1.20, 1.04, 1.22], [1.02, 0.98, 1.05]))
    # the control once ran 1/0.8 = 1.25x apart: a 1.2x ratio is within that
    assert not po.beyond_noise(_summary([1.20, 1.21, 1.22], [1.02, 0.80, 1.05]))
    s = _summary([1.1, 1.3, 1.2], [1.0, 1.0, 1.0])
    assert (s["ratio"], s["ratio_min"], s["ratio_max"]) == (1.2, 1.1, 1.3)
