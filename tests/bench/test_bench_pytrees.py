"""Products and Hessians over a model's parameter dict: derivs against torch.func.

The loss is ``bench.problems.param_mlp_loss`` (a two-layer tanh MLP's MSE) as a function of
its parameter dict; the calls are ``bench.param_dict``'s, which times them side by side,
interleaved, and writes docs/bench/param_dict.md. Here each is a pytest-benchmark row, checked
against torch.func's result before it is timed:

* group ``hvp over a parameter dict``: ``derivs.hvp`` against ``jvp(grad)`` at 10**6 and
  10**7 parameters, the peak memory of each call in ``extra_info`` (``peak_bytes``);
* group ``hessian over a parameter dict``: ``derivs.hessian`` against
  ``torch.func.hessian`` at 200 and 1000 parameters.
"""

from __future__ import annotations

import pytest

from bench.param_dict import hessian_calls, hvp_calls
from bench.problems import param_mlp_inputs
from bench.timing import Bench
from derivs import _memory

pytestmark = pytest.mark.bench

IMPLS = {
    "derivs hvp": "derivs",
    "torch.func jvp(grad)": "torch.func",
    "derivs hessian": "derivs",
    "torch.func hessian": "torch.func",
}


@pytest.mark.parametrize("n", [10**6, 10**7], ids=["N=10**6", "N=10**7"])
@pytest.mark.parametrize("label", ["derivs hvp", "torch.func jvp(grad)"])
def test_hvp_over_a_parameter_dict(bench: Bench, n: int, label: str) -> None:
    """Is derivs' hvp over a parameter dict as fast as the tutorial's jvp(grad)?"""
    params, v, X, Y = param_mlp_inputs(n, bench.device)
    calls = hvp_calls(X, Y)
    fn = calls[label]
    peak = _memory.measured_peak(lambda: fn(params, v), bench.device)[0]
    bench(
        fn,
        (params, v),
        group=f"hvp over a parameter dict N={n:.0e}",
        label=label,
        impl=IMPLS[label],
        equiv="torch.func jvp(grad)",
        reference=calls["torch.func jvp(grad)"],
        n=sum(t.numel() for t in params.values()),
        peak_bytes=peak,
        fwd_bwd_bytes=_memory.measured_peak(lambda: calls["fwd+bwd"](params, v))[0],
    )


@pytest.mark.parametrize("n", [200, 1000], ids=["N=200", "N=1000"])
@pytest.mark.parametrize("label", ["derivs hessian", "torch.func hessian"])
def test_hessian_over_a_parameter_dict(bench: Bench, n: int, label: str) -> None:
    """derivs.hessian against torch.func.hessian on the same parameter dict."""
    params, _, X, Y = param_mlp_inputs(n, bench.device)
    calls = hessian_calls(X, Y)
    bench(
        calls[label],
        (params,),
        group=f"hessian over a parameter dict N={n}",
        label=label,
        impl=IMPLS[label],
        equiv="torch.func hessian",
        reference=calls["torch.func hessian"],
        n=sum(t.numel() for t in params.values()),
    )
