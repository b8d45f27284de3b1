"""jacobian: every method against the loop and finite-difference oracles, and against itself.

Generated functions (derivs.strategies.functions) have 1-3 inputs of 0-4 dims, in varied layouts;
argnums are single, tuples, negative. AD-vs-AD comparisons use assert_close's default
(tight) tolerance; FD comparisons add the oracle's own error estimate.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st
from suite_helpers import IMPL, Snapshot, assert_close_scaled, call_repr, fd_check, values_of

import derivs
import derivs.strategies as ds
from derivs import _eager, oracles

pytestmark = pytest.mark.conformance
METHODS = IMPL.methods("jacobian")


def draw_problem(
    data: st.DataObject, device: str, dtype: torch.dtype, **kwargs: object
) -> ds.Problem:
    kwargs.setdefault("coincide", None)  # half the draws: equal shapes, a square Jacobian
    return data.draw(
        ds.problems(ds.functions(**kwargs), device=device, dtype=dtype), label="problem"
    )


@pytest.mark.parametrize("method", IMPL.params("jacobian"))
@given(data=st.data())
def test_matches_loop_oracle(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Every method equals the naive row loop (tight: AD vs AD), whatever argnums."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    snap = Snapshot(p.args)
    jac = IMPL.jacobian(p.func, argnums, method=method)(*p.args)
    ctx = call_repr("jacobian", p.func, argnums=argnums, method=method)
    snap.check(ctx)
    assert_close_scaled(
        jac, oracles.loop_jacobian(p.func, p.args, argnums), values=values_of(p), context=ctx
    )


@pytest.mark.parametrize("method", IMPL.params("jacobian"))
@given(data=st.data())
def test_matches_finite_differences(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    """Every method equals the FD oracle within the oracle's error estimate."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    jac = IMPL.jacobian(p.func, argnums, method=method)(*p.args)
    fd_check(
        jac,
        p.func,
        p.args,
        argnums,
        order=1,
        real_analytic=p.func.real_analytic,
        context=call_repr("jacobian", p.func, argnums=argnums, method=method),
    )


@given(data=st.data())
def test_methods_agree_tightly(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """fwd == rev == vjp_vmap == loop == auto on the same call."""
    IMPL.need("jacobian")
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    results = {m: IMPL.jacobian(p.func, argnums, method=m)(*p.args) for m in METHODS}
    for m in METHODS[1:]:
        assert_close_scaled(
            results[m],
            results[METHODS[0]],
            values=values_of(p),
            context=f"{call_repr('jacobian', p.func, argnums=argnums, method=m)} vs method={METHODS[0]!r}",
        )


@given(data=st.data())
def test_tuple_argnums_are_the_single_blocks(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    """jacobian(f, (i, j))[k] == jacobian(f, argnums[k]): blocks in argnums order, none swapped."""
    IMPL.need("jacobian")
    p = draw_problem(data, device, dtype, n_args=st.integers(2, ds.MAX_ARGS))
    argnums = data.draw(ds.argnums(p.func.n_args, allow_int=False, min_size=2), label="argnums")
    method = data.draw(st.sampled_from(METHODS), label="method")
    blocks = IMPL.jacobian(p.func, argnums, method=method)(*p.args)
    assert isinstance(blocks, tuple) and len(blocks) == len(argnums)
    for k, a in enumerate(argnums):
        single = IMPL.jacobian(p.func, a, method=method)(*p.args)
        assert_close_scaled(
            blocks[k],
            single,
            values=values_of(p),
            context=f"{call_repr('jacobian', p.func, argnums=argnums, method=method)}[{k}] vs argnums={a}",
        )


@pytest.mark.parametrize("method", IMPL.params("jacobian", "chunk_size"))
@given(data=st.data())
def test_chunk_size_does_not_change_values(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    out_n = math.prod(p.func.out_shape)
    in_n = sum(math.prod(p.func.in_shapes[a]) for a in nums)
    # NOTE: a size that divides neither the rows (reverse mode) nor the columns (forward mode),
    # so the last chunk is partial whichever the method splits: a dropped or doubled last
    # chunk changes values only then.
    chunk = data.draw(ds.partial_chunk_sizes(max(out_n, 1), max(in_n, 1)), label="chunk_size")
    whole = IMPL.jacobian(p.func, argnums, method=method)(*p.args)
    chunked = IMPL.jacobian(p.func, argnums, method=method, chunk_size=chunk)(*p.args)
    assert_close_scaled(
        chunked,
        whole,
        values=values_of(p),
        context=call_repr("jacobian", p.func, argnums=argnums, method=method, chunk_size=chunk),
    )


@pytest.mark.parametrize("method", IMPL.params("jacobian", "has_aux"))
@given(data=st.data())
def test_has_aux_returns_aux_untouched(
    device: str, dtype: torch.dtype, method: str, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")

    def with_aux(*args: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = p.func(*args)
        return out, {"out": out.detach() * 2, "first": args[0].detach() + 1}

    jac, aux = IMPL.jacobian(with_aux, argnums, method=method, has_aux=True)(*p.args)
    ctx = call_repr("jacobian", p.func, argnums=argnums, method=method, has_aux=True)
    assert_close_scaled(
        jac,
        IMPL.jacobian(p.func, argnums, method=method)(*p.args),
        values=values_of(p),
        context=ctx,
    )
    assert_close_scaled(
        aux,
        {"out": p.func(*p.args) * 2, "first": p.args[0] + 1},
        values=values_of(p),
        context=f"{ctx} aux",
    )


@pytest.mark.derivs_only("auto's rule")
@given(data=st.data())
def test_auto_equals_the_method_it_picks(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    fwd = derivs.prefers_forward(
        math.prod(p.func.out_shape), sum(math.prod(p.func.in_shapes[a]) for a in nums), device
    )
    picked = "fwd" if fwd else "vjp_vmap"
    note(f"auto picks {picked}")
    auto = derivs.jacobian(p.func, argnums)(*p.args)
    assert_close_scaled(
        auto,
        derivs.jacobian(p.func, argnums, method=picked)(*p.args),
        values=values_of(p),
        context=f"{call_repr('jacobian', p.func, argnums=argnums)} vs method={picked!r}",
    )


@given(data=st.data())
def test_tutorial_predict_closed_form(device: str, dtype: torch.dtype, data: st.DataObject) -> None:
    """The tutorial's family, tall, wide and square: every method equals (1 - y**2)[:, None] * W."""
    IMPL.need("jacobian")
    p = data.draw(ds.tutorial_predict(device=device, dtype=dtype), label="predict")
    method = data.draw(st.sampled_from(METHODS), label="method")
    y = p.func(*p.args)
    expected = (1 - y**2)[:, None] * p.weight
    d_out, d_in = p.weight.shape
    assert_close_scaled(
        IMPL.jacobian(p.func, 2, method=method)(*p.args),
        expected,
        values=values_of(p),
        # NOTE: an entry sums W @ x + b (d_in + 1 terms), then a product's d_in or vjp's d_out.
        terms=d_in + 1 + max(d_in, d_out),
        context=call_repr("jacobian", p.func, argnums=2, method=method) + f" [{p.kind}]",
    )


# --- auto's eager path -----------------------------------------------------------------------
# At the top level of eager code auto takes both modes from one autograd graph (vmap over
# torch.autograd.grad; forward mode by the double-vjp); wherever that cannot give torch.func's
# result it must use torch.func. These pin the boundary. "tall" makes auto pick forward mode,
# "wide" reverse mode.

SHAPES = {"tall": (3, 600), "wide": (5, 4)}


def _tiled(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """``n_out`` elements: ``x`` repeated, output element i is ``x[i % x.numel()]``."""
    return x.repeat(-(-n_out // x.numel()))[:n_out]


@pytest.mark.derivs_only("auto's eager path")
@given(data=st.data())
def test_auto_same_when_inputs_require_grad(
    device: str, dtype: torch.dtype, data: st.DataObject
) -> None:
    """Inputs that require grad send auto through torch.func: the values must not change."""
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    plain = derivs.jacobian(p.func, argnums)(*p.args)
    tracked_args = [a.detach().clone().requires_grad_() for a in p.args]
    tracked = derivs.jacobian(p.func, argnums)(*tracked_args)
    assert_close_scaled(
        tuple(t.detach() for t in tracked) if isinstance(tracked, tuple) else tracked.detach(),
        plain,
        values=values_of(p),
        context=f"{call_repr('jacobian', p.func, argnums=argnums)} with inputs requiring grad",
    )


@pytest.mark.derivs_only("auto's eager path")
@pytest.mark.parametrize("mode", ["forward", "reverse"])
@given(data=st.data())
def test_auto_eager_modes_match_loop_oracle(
    device: str, dtype: torch.dtype, mode: str, data: st.DataObject
) -> None:
    """Both of auto's eager modes, forced, on generated functions (tight: AD vs AD).

    Generated outputs are small, so auto itself picks reverse mode for them; forcing the mode
    is how its forward mode (the double-vjp) meets every generated function too.
    """
    p = draw_problem(data, device, dtype)
    argnums = data.draw(ds.argnums(p.func.n_args), label="argnums")
    nums = ds.normalize_argnums(argnums, p.func.n_args)
    try:
        blocks, _spec, _ = _eager.eager_jacobian(
            p.func, p.args, nums, False, None, "test", lambda *_: mode == "forward"
        )
    except _eager.UseTorchFunc:
        event("eager path gave way to torch.func")
        return
    single = isinstance(argnums, int)
    jac = blocks[0][0] if single else tuple(blocks[0])
    assert_close_scaled(
        jac,
        oracles.loop_jacobian(p.func, p.args, argnums),
        values=values_of(p),
        context=f"{call_repr('jacobian', p.func, argnums=argnums)} eager {mode} mode",
    )


@pytest.mark.derivs_only("auto's eager path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_differentiable_in_closed_over_parameters(
    device: str, dtype: torch.dtype, shape: str
) -> None:
    """A Jacobian penalty: d/dW of |J|^2 where func closes over W (the eager path must give way)."""
    n_in, n_out = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_in, generator=gen, dtype=dtype).to(device)
    w = torch.randn(n_out, n_in, generator=gen, dtype=dtype).to(device).requires_grad_()

    def f(x: torch.Tensor) -> torch.Tensor:
        return (w @ x).tanh()

    grads = {}
    for method in ("auto", "rev"):
        jac = derivs.jacobian(f, method=method)(x)
        assert jac.requires_grad, f"jacobian(method={method!r}) lost the graph to W"
        grads[method] = torch.autograd.grad(jac.square().sum(), w)[0]
    assert_close_scaled(
        grads["auto"], grads["rev"], values=(x, w.detach()), context=f"{shape} d|J|^2/dW"
    )


@pytest.mark.derivs_only("auto's eager path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_differentiable_in_inputs_requiring_grad(
    device: str, dtype: torch.dtype, shape: str
) -> None:
    n_in, n_out = SHAPES[shape]
    x = torch.linspace(-1, 1, n_in, dtype=dtype, device=device).requires_grad_()

    def f(x: torch.Tensor) -> torch.Tensor:
        return _tiled(x.sin() * x.sum(), n_out)

    second = {}
    for method in ("auto", "rev"):
        jac = derivs.jacobian(f, method=method)(x)
        second[method] = torch.autograd.grad(jac.square().sum(), x)[0]
    assert_close_scaled(
        second["auto"], second["rev"], values=(x.detach(),), context=f"{shape} d|J|^2/dx"
    )


class _SquareNoDoubleBackward(torch.autograd.Function):
    """x**2 whose backward autograd cannot differentiate (it detaches the cotangent)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x**2

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[torch.Tensor], output: object) -> None:  # type: ignore[override]
        ctx.save_for_backward(inputs[0])  # type: ignore[attr-defined]
        ctx.save_for_forward(inputs[0])  # type: ignore[attr-defined]

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad.detach() * 2 * x

    @staticmethod
    def jvp(ctx: object, tangent: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return 2 * x * tangent


@pytest.mark.derivs_only("auto's eager path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_with_a_custom_function_that_is_not_twice_differentiable(
    device: str, dtype: torch.dtype, shape: str
) -> None:
    """Forward mode by the double-vjp would silently drop such a Function's term: never used."""
    n_in, n_out = SHAPES[shape]
    x = torch.linspace(-1, 1, n_in, dtype=dtype, device=device)

    def f(x: torch.Tensor) -> torch.Tensor:
        return _tiled(_SquareNoDoubleBackward.apply(x) + x, n_out)

    expected = torch.diag(2 * x + 1)[torch.arange(n_out, device=device) % n_in]
    assert_close_scaled(
        derivs.jacobian(f)(x), expected, values=(x,), context=f"{shape} custom Function"
    )


@pytest.mark.derivs_only("writable zero blocks, auto's eager path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_unused_inputs_and_constant_outputs(
    device: str, dtype: torch.dtype, shape: str
) -> None:
    n_in, n_out = SHAPES[shape]
    x = torch.linspace(-1, 1, n_in, dtype=dtype, device=device)
    y = torch.ones(2, dtype=dtype, device=device)

    def f(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _tiled(x.sin(), n_out), torch.full((3,), 2.0, dtype=dtype, device=device)

    (dx, dy), (cx, cy) = derivs.jacobian(f, (0, 1))(x, y)
    expected = derivs.jacobian(f, (0, 1), method="loop")(x, y)
    assert_close_scaled(
        ((dx, dy), (cx, cy)), expected, values=(x, y), context=f"{shape} unused/constant"
    )
    for block in (dy, cx, cy):
        assert all(st > 0 for st, n in zip(block.stride(), block.shape, strict=True) if n > 1), (
            f"a zero block is a broadcast view: strides {block.stride()}"
        )


@pytest.mark.derivs_only("auto's traced path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_traced_path_run_eagerly_matches_the_loop(
    device: str, dtype: torch.dtype, shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branch auto takes while torch.compile traces, run eagerly: same Jacobian and aux.

    It reads the output size from a plain evaluation and picks forward (tall) or reverse
    (wide) mode. NOTE: tests/test_compile.py runs it compiled, but mutation runs deselect
    compile tests (torch.compile traces through mutmut's trampolines); this reaches it without.
    """
    n_in, n_out = SHAPES[shape]
    x = torch.linspace(-1, 1, n_in, dtype=dtype, device=device)
    y = torch.linspace(0.5, 1.5, n_in, dtype=dtype, device=device)

    def f(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = _tiled(x.sin() * y, n_out)
        return out, out.sum()

    expected = {a: derivs.jacobian(f, a, has_aux=True, method="loop")(x, y) for a in (0, (0, 1))}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    got = {a: derivs.jacobian(f, a, has_aux=True)(x, y) for a in (0, (0, 1))}
    monkeypatch.undo()
    for a in got:
        assert_close_scaled(
            got[a], expected[a], values=(x, y), context=f"{shape} traced auto, argnums={a}"
        )


@pytest.mark.derivs_only("auto's eager path")
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_under_no_grad_and_aux_detached(device: str, dtype: torch.dtype, shape: str) -> None:
    n_in, n_out = SHAPES[shape]
    x = torch.linspace(-1, 1, n_in, dtype=dtype, device=device)

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = _tiled(x.exp(), n_out)
        return out, out * 2

    for context in (torch.no_grad(), torch.enable_grad()):
        with context:
            jac, aux = derivs.jacobian(f, has_aux=True)(x)
            ref_jac, ref_aux = derivs.jacobian(f, has_aux=True, method="rev")(x)
        assert not jac.requires_grad and not aux.requires_grad
        assert aux.requires_grad == ref_aux.requires_grad
        assert_close_scaled(
            (jac, aux), (ref_jac, ref_aux), values=(x,), context=f"{shape} {context}"
        )
