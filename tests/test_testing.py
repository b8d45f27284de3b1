"""Meta-tests of derivs.testing.assert_close, the suite's one comparison helper.

It must pass equal inputs and genuine rounding differences (forward- vs reverse-mode in
float32; roundings of subnormal and near-overflow values), fail planted differences (a 1e-6
scale in float64 at any normal magnitude, an underflow-sized error in a normal-range value,
a transposition, one wrong element, NaN, wrong dtype/shape/device/structure), and say where
and by how much. The suite's wrapper, which counts the roundings of an entry rather than of
its block, must fail a wrong entry that the block's count let through.
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
from suite_helpers import assert_close_scaled, entry_terms, magnitude

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
        r"  worst at \[0\]\[2, 1\]: actual 7\.5, expected 9, \|diff\| 1\.5 > ", lines[1]
    )
    assert "max abs error 1.5 at (2, 1); max rel error 0.167 at (2, 1)" in lines[2]
    assert "32*eps*sqrt(numel)*max|expected|" in lines[3] and "eps of float32" in lines[3]
    assert "*sqrt(12)*11)" in lines[3]  # the derivation with this block's numbers
    assert "underflow floor" not in message


def test_tolerance_formula() -> None:
    eps = torch.finfo(torch.float32).eps
    t = tolerance(torch.float32, 64, scale=2.0)
    assert t.rtol == 8 * eps and t.atol == 32 * eps * 8 * 2.0
    assert tolerance(torch.int64, 5).atol == 0.0
    eps64 = torch.finfo(torch.float64).eps
    assert tolerance(torch.float64, 4).atol == 32 * eps64 * 2 * 1.0  # scale defaults to 1
    x = torch.tensor([3, 4])
    assert_close(x, x.clone())
    assert "values differ" in failure(x + 1, x)


def test_terms_replace_numel_in_the_count() -> None:
    """``terms=``: the roundings counted per entry; the default stays the block's numel."""
    eps = torch.finfo(torch.float32).eps
    per_entry = tolerance(torch.float32, 1024, scale=2.0, terms=64)
    assert per_entry.atol == 32 * eps * 8 * 2.0 and per_entry.rtol == 8 * eps
    assert tolerance(torch.float32, 1024, scale=2.0).atol == 32 * eps * 32 * 2.0
    assert "32*eps*sqrt(terms)*max|expected| = 32*1.19e-07*sqrt(64)*2)" in per_entry.describe()
    floor = tolerance(torch.float32, 9, scale=0.0, terms=4)
    assert floor.atol == 32 * 2 * 2.0**-149 and "sqrt(terms)*tiny" in floor.describe()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_terms_are_refused_by_name(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^derivs\.testing\.tolerance: terms="):
        tolerance(torch.float32, 4, terms=bad)


# ----------------------------------------------------------------------------- magnitudes
# NOTE: values are drawn as sign * mantissa * 2**k over the dtype's whole exponent range, in
# bands: subnormal (below tiny, where the floats are spaced by eps * tiny), near tiny, and
# near overflow, so that the underflow floor and the large-magnitude arithmetic of the
# comparison are exercised on purpose rather than by the luck of a float strategy.

BANDS = ("subnormal", "near_tiny", "unit", "huge")


def _exponents(dtype: torch.dtype, band: str) -> tuple[int, int]:
    info = torch.finfo(dtype)
    lo_normal, hi = math.frexp(info.tiny)[1] - 1, math.frexp(info.max)[1] - 1
    lowest = lo_normal - round(-math.log2(info.eps))  # the smallest subnormal's exponent
    return {
        "subnormal": (lowest, lo_normal - 1),
        "near_tiny": (lo_normal, lo_normal + 8),
        "unit": (-4, 4),
        # leave 3 binades of headroom: the tests below add and multiply values
        "huge": (hi - 12, hi - 3),
    }[band]


@st.composite
def magnitudes(draw: st.DrawFn, dtype: torch.dtype, bands: tuple[str, ...] = BANDS) -> float:
    band = draw(st.sampled_from(bands), label="band")
    lo, hi = _exponents(dtype, band)
    k = draw(st.integers(lo, hi))
    mantissa = draw(st.floats(1, 2, exclude_max=True))
    sign = draw(st.sampled_from([1.0, -1.0]))
    # the value as the dtype holds it (a subnormal keeps fewer mantissa bits)
    return float(torch.tensor(sign * math.ldexp(mantissa, k), dtype=torch.float64).to(dtype))


def banded(data: st.DataObject, dtype: torch.dtype, n: int, bands: tuple[str, ...]) -> torch.Tensor:
    xs = [data.draw(magnitudes(dtype, bands), label=f"x[{i}]") for i in range(n)]
    return torch.tensor(xs, dtype=torch.float64).to(dtype)


@given(data=st.data())
def test_roundings_pass_at_every_magnitude(dtype: torch.dtype, data: st.DataObject) -> None:
    """``a * b + c`` rounded op by op in ``dtype`` against the same rounded once from float64.

    Subnormal products and sums carry absolute errors of a fraction of the subnormal
    spacing whatever their value: the underflow floor must let them pass (without it a
    product of 1.4e-45 and 1.5 failed), and near-overflow values must not break the
    comparison's own arithmetic.

    NOTE: the rounding of ``a * b`` is relative to ``a * b``, not to the sum: where ``c``
    cancels it (a*b = -3.3316e-36, c = 3.3384e-36, sum 6.78e-39 in float32, seed 353 of the
    false-alarm sweep) the product's rounding, 9e-44, is 1.3e-5 of the sum, past the default
    atol of the sum alone. So the scale is that of the intermediates, max(|a*b|, |c|), as
    the suite's comparisons scale by the magnitudes flowing through a computation; with
    ``tolerance``'s underflow floor, still the subnormal spacing when they are all subnormal.
    """
    n = data.draw(st.integers(1, 8), label="n")
    band = data.draw(st.sampled_from([("subnormal",), ("near_tiny",), ("huge",), BANDS]))
    a, c = banded(data, dtype, n, band), banded(data, dtype, n, band)
    b = banded(data, dtype, n, ("unit",))
    exact = a.double() * b.double() + c.double()
    if not bool(torch.isfinite(exact.to(dtype)).all()):
        return  # overflowed past the dtype's range: nothing to compare
    note(f"a={a.tolist()} b={b.tolist()} c={c.tolist()}")
    scale = float(torch.maximum((a.double() * b.double()).abs(), c.double().abs()).max())
    atol = tolerance(dtype, n, scale=scale).atol
    assert_close(a * b + c, exact.to(dtype), atol=atol, context="op-by-op vs rounded once")
    assert_close(torch.nextafter(a, a.new_tensor(math.inf)), a, context="one ulp/spacing up")


@given(data=st.data())
def test_relative_error_1e_6_fails_at_every_normal_magnitude_in_float64(
    data: st.DataObject,
) -> None:
    x = banded(data, torch.float64, data.draw(st.integers(1, 8)), ("near_tiny", "unit", "huge"))
    message = failure(x * (1 + 1e-6), x)
    assert "values differ" in message and "underflow floor" not in message


@given(data=st.data())
def test_underflow_sized_error_in_a_normal_value_fails(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """An error of a few tiny in a normal value of at most 1e-2 tiny / eps must fail.

    Such an error is far beyond the floor (32 eps tiny) and at least 100 eps of the value:
    the floor only governs blocks whose values are all below tiny.
    """
    info = torch.finfo(dtype)
    delta = data.draw(st.floats(1, 100), label="delta / tiny") * info.tiny
    top = math.log2(delta / (100 * info.eps))
    k = data.draw(st.floats(math.log2(info.tiny), top), label="log2 value")
    v = torch.tensor([2.0**k], dtype=torch.float64).to(dtype)
    bad = (v.double() + delta).to(dtype)
    assert float((bad.double() - v.double()).abs()) >= delta / 2  # representable in dtype
    message = failure(bad, v, context="underflow-sized error")
    assert "values differ" in message and "underflow floor" not in message


@given(data=st.data())
def test_floor_passes_a_few_spacings_and_fails_many(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    """Below tiny the floor is 32 sqrt(numel) spacings: 4 pass, 33 sqrt(numel) fail."""
    info = torch.finfo(dtype)
    spacing = info.tiny * info.eps
    n = data.draw(st.integers(1, 6), label="numel")
    units = data.draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n), label="units")
    e = torch.tensor(units, dtype=torch.float64).mul(spacing).to(dtype)
    near = e.double() + torch.tensor([4.0 * spacing] * n, dtype=torch.float64)
    assert_close(near.to(dtype), e)
    far = e.double().clone()
    far[0] += math.ceil(33 * math.sqrt(n)) * spacing
    message = failure(far.to(dtype), e)
    assert "underflow floor" in message and "< tiny" in message


def test_reported_subnormal_false_alarm_passes() -> None:
    """The issue's case: the loop Jacobian of x @ S @ x at S = 1.4e-45, x = 1.5 in float32."""
    x, S = torch.tensor([1.5]), torch.tensor([[1.4e-45]])
    loop = torch.autograd.grad(x.requires_grad_() @ S @ x, x)[0].detach()
    truth = ((S.double() + S.double().T) @ x.detach().double()).float()
    assert float(loop) != float(truth)  # 4 spacings against 3: a genuine rounding
    assert_close(loop, truth, context="loop_jacobian of x @ S @ x")


# ----------------------------------------------------------------------------- which element


def test_worst_element_is_the_largest_excess_over_its_own_tolerance() -> None:
    """The element reported is the one furthest beyond its tolerance, not the largest diff."""
    e = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # element 0 is off by 1 against an estimate of 0.4 (tolerance 0.8), element 1 by 0.5
    # against none: element 1 is worse by far
    message = failure(
        e + torch.tensor([1.0, 0.5], dtype=torch.float64),
        e,
        error=torch.tensor([0.4, 0.0], dtype=torch.float64),
    )
    assert "worst at index (1,)" in message and "2 of 2" in message
    ints = torch.tensor([3, 4, 5])
    assert "worst at index (2,)" in failure(ints + torch.tensor([0, 1, 5]), ints)
    # below float64's floor the ratio is below 1 and must still rank the failing element
    zeros = torch.zeros(2, dtype=torch.float64)
    message = failure(torch.tensor([0.0, 1e-318], dtype=torch.float64), zeros)
    assert "worst at index (1,)" in message and "1 of 2" in message
    # non-finite mismatches rank first, the first of them when there are several
    ones = torch.ones(2)
    assert "worst at index (0,)" in failure(torch.tensor([math.inf, math.nan]), ones)


def test_blocks_without_a_finite_expected_value() -> None:
    nans = torch.full((3,), math.nan)
    assert_close(nans, nans.clone())
    infs = torch.full((2,), math.inf)
    assert "2 of 2" in failure(torch.ones(2), infs)


@pytest.mark.parametrize("cdtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_blocks_compare_both_parts(cdtype: torch.dtype) -> None:
    z = torch.tensor([1 + 2j, -0.5j, 3.0], dtype=cdtype)
    assert_close(z, z.clone())
    eps = torch.finfo(cdtype).eps
    assert_close(z * (1 + 2 * eps), z)
    message = failure(z + 1e-3j, z, context="complex")
    assert "values differ" in message and "3 of 3" in message
    message = failure(z + torch.tensor([0, 0.001j, 0], dtype=cdtype), z)
    assert "1 of 3" in message and "worst at index (1,)" in message and "-0.5j" in message


# ----------------------------------------------------------------------------- messages
# NOTE: the failure message is the suite's interface to a person: these examples pin the
# parts a mutation campaign (tools/mutation.py run testing) showed no other test reads.


def _tolerance_line(message: str) -> str:
    return next(ln for ln in message.splitlines() if ln.startswith("  tolerance: "))


def test_message_says_which_tolerances_were_given() -> None:
    x = torch.tensor([1.0, 100.0], dtype=torch.float64)
    y = x * (1 + 1e-6)
    head = "  tolerance: |actual - expected| <= atol + rtol*|expected|; "
    neither = _tolerance_line(failure(y, x))
    assert neither.startswith(head + "atol=") and "(given)" not in neither
    assert "default" not in neither
    only_rtol = _tolerance_line(failure(y, x, rtol=1e-7))
    assert only_rtol.startswith(head + "rtol=1e-07 (given); default atol=")
    only_atol = _tolerance_line(failure(y, x, atol=0.0))
    assert only_atol.startswith(head + "atol=0 (given); default atol=")
    both = _tolerance_line(failure(y, x, rtol=1e-7, atol=0.0))
    assert both == head + "atol=0 (given), rtol=1e-07 (given)"


def test_message_names_the_error_estimate_beside_the_default_derivation() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    line = _tolerance_line(failure(x + 1e-9, x, error=torch.full_like(x, 1e-10)))
    assert line.startswith("  tolerance: |actual - expected| <= atol + rtol*|expected| + 2*error; ")
    assert line.endswith("eps of float64; oracle error estimate here 1e-10")
    assert "32*eps*sqrt(numel)*max|expected|" in line


def test_message_of_a_nan_mismatch_and_of_an_error_at_expected_one() -> None:
    x = torch.tensor([1.0, 4.0, 2.0])
    y = x.clone()
    y[1] = math.nan
    assert "max abs error inf at" in failure(y, x)
    # the relative error at an expected value of exactly 1 is the absolute one
    message = failure(torch.tensor([1.5, 4.0, 2.0]), x)
    assert "max rel error 0.5 at (0,)" in message


def test_message_of_a_block_without_a_finite_expected_value_states_scale_0() -> None:
    message = failure(torch.ones(2), torch.full((2,), math.inf))
    assert "(max|expected| 0 < tiny)" in message


def test_integer_blocks_have_no_underflow_floor() -> None:
    zeros = torch.zeros(3, dtype=torch.int64)
    message = failure(zeros + 1, zeros)
    assert "underflow floor" not in message and "*sqrt(3)*0)" in message


def test_error_estimate_of_the_wrong_kind_or_shape_is_named() -> None:
    x = torch.ones(2, dtype=torch.float64)
    assert "error is a float, expected a Tensor" in failure(x, x, error=1e-3)
    message = failure(x, x, error=torch.ones(3, dtype=torch.float64))
    assert "error has shape (3,), which does not broadcast to (2,)" in message
    message = failure((x, x), (x, x), error=(x,))
    assert "error does not have the structure of expected" in message


def test_lists_dicts_and_none_leaves_compare() -> None:
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert_close([x, (x,)], [x.clone(), (x.clone(),)])
    assert_close((x, None), (x.clone(), None))
    assert "actual is a float, expected is a Tensor" in failure(1.0, x)
    assert "actual and expected are float (only tensors" in failure(1.0, 1.0)
    # a dict block takes its own error estimate, and its path is named
    y = x + 1e-9
    assert_close({"a": y}, {"a": x}, error={"a": torch.full_like(x, 1e-9)})
    assert "actual['a'] is a tuple, expected['a'] is a Tensor" in failure({"a": (x,)}, {"a": x})
    assert "values differ in block['a']" in failure({"a": y}, {"a": x})


def test_every_failing_block_is_listed() -> None:
    x = torch.ones(2)
    message = failure((x + 1, x, x + 1, x + 1), (x, x, x, x))
    lines = message.splitlines()
    assert lines[0].startswith("values differ in block[0]")
    assert lines[-1] == "  (also failing: [2], [3])"


@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_bad_tolerances_are_refused_by_name(name: str) -> None:
    x = torch.ones(2)
    for bad in (-1, True, "1e-3", math.nan):
        with pytest.raises(ValueError, match=rf"^derivs\.testing\.assert_close: {name}="):
            assert_close(x, x, **{name: bad})


# ----------------------------------------------------------------------------- count per entry
# NOTE: suite_helpers.assert_close_scaled counts the roundings of an entry, not of its block
# (entry_terms): a wrong entry that hid in a large float32 block's norm-wise allowance fails.


def _tanh_layer(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W (n x n, entries of order 1/sqrt(n)) and x in [-1, 1]^n, float32, fixed seed."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    return W.float(), x.float()


def test_per_entry_count_fails_an_error_the_block_count_passes() -> None:
    """A 32x32 float32 Jacobian of ``tanh(W @ x)`` with one entry off by 6.1e-5 of its scale.

    Each entry sums the 32 terms of ``W @ x``; the suite counts max(MAX_INTERMEDIATE, 32) =
    64 per entry, atol = 32 eps sqrt(64) scale = 3.05e-5 scale, where the block's count
    allowed 32 eps sqrt(1024) scale = 1.22e-4 scale. An error of twice the new atol (half
    the old) passed before and fails now, while the Jacobians float32 computes in reverse
    and forward mode pass.
    """
    W, x = _tanh_layer(32)

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(W @ v)

    W64, x64 = W.double(), x.double()
    expected = ((1 - torch.tanh(W64 @ x64) ** 2)[:, None] * W64).float()
    values = (x, f(x))
    assert entry_terms(values) == 64
    scale = max(magnitude(expected), magnitude(*values))
    eps = torch.finfo(torch.float32).eps
    block_atol, entry_atol = 32 * eps * math.sqrt(32 * 32) * scale, 32 * eps * 8 * scale
    planted = expected.clone()
    planted[3, 7] += 2 * entry_atol
    assert_close(planted, expected, atol=block_atol, context="the block's count")
    with pytest.raises(AssertionError, match=r"1 of 1024 elements .*\n  worst at index \(3, 7\)"):
        assert_close_scaled(planted, expected, values=values, context="per entry")
    for jac in (torch.func.jacrev(f)(x), torch.func.jacfwd(f)(x)):
        assert_close_scaled(jac, expected, values=values, context="float32 rounding")
