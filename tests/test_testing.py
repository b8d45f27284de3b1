"""Meta-tests of derivs.testing.assert_close, the suite's one comparison helper.

It must pass equal inputs and genuine rounding differences (forward- vs reverse-mode in
float32), fail planted differences (a 1e-6 scale in float64, a transposition, one wrong
element, NaN, wrong dtype/shape/device/structure), and say where and by how much.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from derivs.testing import ERROR_SAFETY, assert_close, tolerance

FLOATS = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def matrices(draw: st.DrawFn, device: str, dtype: torch.dtype, min_side: int = 1) -> torch.Tensor:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=6))
    a = draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    return torch.from_numpy(a).to(device=device, dtype=dtype)


def failure(actual: Any, expected: Any, **kwargs: Any) -> str:
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, **kwargs)
    return str(info.value)


@given(data=st.data())
def test_passes_on_equal_inputs(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    x = data.draw(matrices(device, dtype))
    assert_close(x, x.clone())
    assert_close((x, (x * 2, x)), (x.clone(), (x * 2, x.clone())))
    assert_close({"a": x}, {"a": x.clone()})


@given(data=st.data())
def test_relative_error_1e_6_fails_in_float64(device: str, data: st.DataObject) -> None:
    if device.startswith("mps"):
        pytest.skip("mps has no float64")
    x = data.draw(matrices(device, torch.float64))
    if not bool((x != 0).any()):
        x = x + 1
    message = failure(x * (1 + 1e-6), x, context="jacobian(method='fwd')")
    assert message.startswith("[jacobian(method='fwd')] values differ")
    # while a few ulps pass
    assert_close(x * (1 + 4 * torch.finfo(torch.float64).eps), x)


@given(data=st.data())
def test_planted_single_element_is_located(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    x = data.draw(matrices(device, dtype))
    flat = data.draw(st.integers(0, x.numel() - 1), label="flat index")
    index = tuple(int(i) for i in np.unravel_index(flat, tuple(x.shape)))
    scale = float(x.abs().max()) + 1.0
    y = x.clone()
    y[index] += 1e-3 * scale
    message = failure(y, x, context="hessian(method='rev_rev')")
    note(message)
    assert f"worst at index {index}" in message
    assert "1 of " in message
    for needle in ("max abs error", "max rel error", "tolerance", "eps", "actual", "expected"):
        assert needle in message


@given(data=st.data())
def test_transposition_fails(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 6))
    a = data.draw(hnp.arrays(np.float64, (n, n), elements=FLOATS))
    x = torch.from_numpy(a).to(device=device, dtype=dtype)
    x[0, 1] = x[1, 0] + 1 + abs(float(x[1, 0]))  # certainly not symmetric
    message = failure(x.T, x)
    assert "values differ" in message


def smooth_random_function(seed: int, n: int, m: int) -> Any:
    """tanh/softplus of a sin-exp layer over 64 inputs: a smooth random R^n -> R^m."""
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(32, n, generator=g) / math.sqrt(n)
    W2 = torch.randn(m, 32, generator=g) / math.sqrt(32)
    b = torch.randn(32, generator=g)

    def f(x: torch.Tensor) -> torch.Tensor:
        h = torch.sin(W1 @ x + b) * torch.exp(0.3 * torch.tanh(W1 @ x))
        return torch.tanh(W2 @ h) + torch.nn.functional.softplus(W2 @ h.cumsum(0) / 8)

    return f, torch.randn(n, generator=g)


@pytest.mark.parametrize("seed", range(6))
def test_forward_and_reverse_mode_rounding_passes_in_float32(seed: int) -> None:
    """Genuine rounding differences on random smooth functions of 64 inputs must pass."""
    m = (1, 8, 64)[seed % 3]
    f, x = smooth_random_function(seed, 64, m)
    fwd, rev = torch.func.jacfwd(f)(x), torch.func.jacrev(f)(x)
    assert_close(fwd, rev, context=f"jacfwd vs jacrev, seed {seed}")
    if m == 1:
        h1 = torch.func.jacfwd(torch.func.jacrev(f))(x)
        h2 = torch.func.jacrev(torch.func.jacrev(f))(x)
        assert_close(h1, h2, context=f"fwd_rev vs rev_rev hessian, seed {seed}")


def test_structure_mismatch_is_reported_first_with_its_path() -> None:
    x = torch.ones(2)
    assert "structure mismatch: actual[1][0] is a Tensor, expected[1][0] is a tuple" in failure(
        (x, (x, x)), (x, ((x,), x))
    )
    assert "length 1, expected[1] has length 2" in failure((x, (x,)), (x, (x, x)))
    assert "actual is a list, expected is a tuple" in failure([x], (x,))
    assert "keys" in failure({"a": x}, {"b": x})
    # structure before values, shape/dtype/device before values in any block
    assert "structure" in failure((x * 2, x), (x, (x,)))
    message = failure((x * 2, torch.ones(3)), (x, torch.ones(2)))
    assert message.startswith("shape mismatch in block[1]: actual (3,), expected (2,)")


def test_dtype_shape_and_device_mismatches() -> None:
    x = torch.ones(2, 3)
    assert "dtype mismatch in tensor: actual torch.float32, expected torch.float64" in failure(
        x, x.double()
    )
    assert "shape mismatch in tensor: actual (3, 2), expected (2, 3)" in failure(x.T, x)
    assert "device mismatch" in failure(x, x.to("meta"))
    assert_close(x.to("meta"), x.to("meta"))  # meta: shapes and dtypes only
    assert_close(torch.ones(0, 3), torch.ones(0, 3))


def test_nan_and_infinity() -> None:
    x = torch.tensor([1.0, 2.0, 3.0])
    y = x.clone()
    y[1] = math.nan
    assert "worst at index (1,)" in failure(y, x)
    assert "values differ" in failure(x, y)
    assert_close(y, y.clone())  # NaN where the reference has NaN agrees
    z = x.clone()
    z[2] = math.inf
    assert_close(z, z.clone())
    assert "worst at index (2,)" in failure(z, x)
    assert "worst at index (2,)" in failure(-z, z)


def test_error_estimate_widens_the_tolerance() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    y = x + torch.tensor([1e-9, -1e-9, 0.0], dtype=torch.float64)
    failure(y, x)
    assert_close(y, x, error=torch.full_like(x, 1e-9 / ERROR_SAFETY))
    message = failure(y, x, error=torch.full_like(x, 1e-10))
    assert "error" in message and "oracle error estimate here 1e-10" in message
    assert "error[1] does not have the structure" in failure((x, (x,)), (x, (x,)), error=(x, x))


def test_explicit_rtol_and_atol_replace_the_defaults() -> None:
    x = torch.tensor([1.0, 100.0], dtype=torch.float64)
    y = x * (1 + 1e-6)
    assert_close(y, x, rtol=2e-6)
    assert_close(y, x, atol=2e-4)
    message = failure(y, x, rtol=1e-7, atol=0.0)
    assert "rtol=1e-07 (given)" in message
    with pytest.raises(ValueError, match=r"^derivs\.testing\.assert_close: rtol=-1"):
        assert_close(x, x, rtol=-1)


def test_message_reads_well() -> None:
    expected = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    actual = expected.clone()
    actual[2, 1] = 7.5
    message = failure(
        (actual, expected), (expected, expected), context="jacobian(method='fwd', argnums=(0, 1))"
    )
    lines = message.splitlines()
    assert lines[0] == (
        "[jacobian(method='fwd', argnums=(0, 1))] values differ in block[0]"
        " (shape (3, 4), float32, cpu): 1 of 12 elements out of tolerance"
    )
    assert re.match(
        r"  worst at index \(2, 1\): actual 7\.5, expected 9, \|diff\| 1\.5 > ", lines[1]
    )
    assert "max abs error 1.5 at (2, 1); max rel error 0.167 at (2, 1)" in lines[2]
    assert "32*eps*sqrt(numel)*max|expected|" in lines[3] and "eps of float32" in lines[3]


def test_tolerance_formula() -> None:
    eps = torch.finfo(torch.float32).eps
    t = tolerance(torch.float32, 64, scale=2.0)
    assert t.rtol == 8 * eps and t.atol == 32 * eps * 8 * 2.0
    assert tolerance(torch.int64, 5).atol == 0.0
    x = torch.tensor([3, 4])
    assert_close(x, x.clone())
    assert "values differ" in failure(x + 1, x)
