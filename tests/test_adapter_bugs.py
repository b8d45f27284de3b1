"""The catalogue of planted adapter bugs (examples/planted_adapters.py) and the plugin's guard.

Each planted bug is checked to be what its description says: wrong on a draw that makes it
visible, right (equal to the unplanted adapter) on one that hides it. That second case is why
the properties make the visible draws on purpose (docs/suite/conformance.md, "Planted adapter
bugs"); ``python -m tools.adapter_bugs`` measures how often the README's command catches each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_pytest_plugin import run_pytest

from derivs.testing import assert_close
from examples import planted_adapters as planted

F64 = torch.float64
W = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0], [0.7, -2.0, 1.0]], dtype=F64)
X = torch.tensor([0.3, -0.8, 1.1], dtype=F64)
Y = torch.tensor([-0.4, 0.9, 0.2], dtype=F64)
XB = torch.tensor([[0.3, -0.8, 1.1], [0.5, 0.1, -0.6], [-0.2, 0.4, 0.9]], dtype=F64)


def coupled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x @ W @ y + (x**3 * y).sum()


def sym_coupled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x + y).sum()


def vector(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * x.sum()


def scalar(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x).prod()


Call = Callable[[Any], Any]
# bug -> (a call that shows it, a call that hides it)
CASES: dict[str, tuple[Call, Call]] = {
    "transposed_mixed_block": (
        lambda a: a.hessian(coupled, (0, 1))(X, Y),
        lambda a: a.hessian(sym_coupled, (0, 1))(X, Y),  # a symmetric mixed block
    ),
    "negative_argnums": (
        lambda a: a.jacobian(coupled, -1)(X, Y),
        lambda a: a.jacobian(vector, -1)(X),  # one argument
    ),
    "dropped_last_chunk": (
        lambda a: a.jacobian(vector, chunk_size=2)(X),
        lambda a: a.jacobian(vector, chunk_size=3)(X),  # the chunk divides the rows
    ),
    "batch_axis_swapped": (
        lambda a: a.batch_jacobian(vector)(XB),
        lambda a: a.batch_jacobian(vector)(XB[:2]),  # batch 2, output axis 3
    ),
    "hessian_summed_over_outputs": (
        lambda a: a.hessian(vector)(X),
        lambda a: a.hessian(scalar)(X),  # a scalar function
    ),
    "hvp_ignores_mixed": (
        lambda a: a.hvp(coupled, (X, Y), (Y, X)),
        lambda a: a.hvp(scalar, (X,), (Y,)),  # one argument
    ),
    "downcast_float32": (
        lambda a: a.jacobian(vector)(X),
        lambda a: a.jacobian(vector)(X.float()),  # float32 already
    ),
}


def test_every_catalogued_bug_has_cases() -> None:
    assert set(CASES) == set(planted.CATALOGUE)
    assert {cls.bug for cls in planted.BUGS} == set(planted.CATALOGUE)


@pytest.mark.parametrize("bug", list(planted.CATALOGUE))
def test_a_planted_bug_shows_only_on_its_draws(bug: str) -> None:
    shows, hides = CASES[bug]
    adapter, base = getattr(planted, bug), planted.none
    assert adapter.name == f"torch.func+{bug}" and adapter.features is base.features
    assert_close(hides(adapter), hides(base), context=f"{bug}, hidden")
    with pytest.raises(AssertionError, match="values differ"):
        assert_close(shows(adapter), shows(base), context=f"{bug}, shown")


GUARDED = """
import pytest
import torch

pytestmark = pytest.mark.conformance


def test_never_calls_it(derivs_impl):
    assert derivs_impl.methods("jacobian")


def test_calls_it(derivs_impl):
    x = torch.ones(2, dtype=torch.float64)
    assert derivs_impl.jacobian(torch.sin)(x).shape == (2, 2)


@pytest.mark.derivs_only("a guarantee of derivs alone")
def test_derivs_only_need_not_call_it():
    pass
"""


@pytest.mark.parametrize("impl", ["derivs", "torch.func"])
def test_a_conformance_property_that_never_calls_the_implementation_fails(
    tmp_path: Path, impl: str
) -> None:
    done = run_pytest(tmp_path, {"test_guarded.py": GUARDED}, "--impl", impl, "--devices", "cpu")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert (
        "test_guarded.py::test_never_calls_it is a conformance property but never called the "
        "implementation under test" in out
    )
    assert "FAILED test_guarded.py::test_never_calls_it" in out
    assert "PASSED test_guarded.py::test_calls_it" in out
    # derivs' own guarantees are not guarded: passed for derivs, skipped for the others
    shown = "PASSED" if impl == "derivs" else "SKIPPED"
    assert f"{shown} test_guarded.py::test_derivs_only_need_not_call_it" in out or (
        shown == "SKIPPED" and "SKIPPED [1] test_guarded.py" in out
    )
