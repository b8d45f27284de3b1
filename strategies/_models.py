"""Small networks with a loss and data: the models whose curvature the suite checks.

``model_problems()`` draws a ``ModelProblem``: an ``nn.Sequential`` built from ``LAYERS``
(linear layers, a 1-d convolution, layer and batch norms, a residual block) and
``ACTIVATIONS``, a loss (``nn.MSELoss`` or ``nn.CrossEntropyLoss``, mean or sum reduction)
and a batch ``(X, y)``. Weights and data come from one drawn seed, so a shrunk failure
reads as its architecture and that seed::

    ModelProblem(Conv1d(1, 2, kernel_size=2), Tanh(), Flatten(), Linear(4, 3) |
                 CrossEntropyLoss(reduction='sum') | X: (2, 1, 3) float64, seed=0)

Every model is in eval mode (a batch norm normalises by its drawn running statistics), so
samples are independent: the loss is the sum of per-sample terms (``ModelProblem.sample``),
which the curvature properties rely on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch import nn
from torch.func import functional_call

from ._caps import MAX_BATCH, MAX_SEED, check_type

#: Layer kinds ``model_problems(layers=...)`` draws from (besides the final linear layer).
LAYERS = ("linear", "conv", "layernorm", "batchnorm", "residual")
#: Activation kinds; each follows a linear or convolutional layer.
ACTIVATIONS = ("tanh", "sigmoid", "relu", "elu")
#: Losses, each with ``"mean"`` or ``"sum"`` reduction.
LOSSES = ("mse", "cross_entropy")
REDUCTIONS = ("mean", "sum")

# NOTE: widths up to 4 and at most two hidden blocks keep a model under about 80 parameters:
# the references materialise the dense Hessian (P x P) and the output Jacobian (N C x P),
# and the loop over unit vectors that checks an operator against them has P steps.
MAX_WIDTH = 4
MAX_HIDDEN = 2
# NOTE: a flattened convolution feeds at most 8 features into the dense part.
MAX_CONV_FEATURES = 8
MAX_CLASSES = 3

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "elu": nn.ELU,
}


class Residual(nn.Module):
    """A residual block ``x + act(linear(x))``."""

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = _ACTIVATION_MODULES[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))

    def extra_repr(self) -> str:
        return f"{self.linear.in_features}, {type(self.act).__name__}"


class ModelProblem(NamedTuple):
    """A model, a loss and a batch: the empirical risk ``scale * loss_func(model(X), y)``.

    ``scale`` is 1 for a whole batch; ``sample(n)`` gives sample ``n``'s term of it (scale
    ``1/N`` under mean reduction), so the terms of all samples sum to the batch's loss and
    every curvature of it.
    """

    model: nn.Module
    loss_func: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    seed: int
    scale: float = 1.0

    @property
    def batch_size(self) -> int:
        return int(self.X.shape[0])

    def params(self) -> dict[str, torch.Tensor]:
        """The model's parameters by name, detached copies (the model stays untouched)."""
        return {k: p.detach().clone() for k, p in self.model.named_parameters()}

    def outputs(self, params: dict[str, torch.Tensor], X: torch.Tensor | None = None) -> Any:
        """``model(X)`` with ``params`` in place of the model's own."""
        return functional_call(self.model, params, (self.X if X is None else X,))

    def loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The empirical risk at ``params``."""
        return self.scale * self.loss_func(self.outputs(params), self.y)

    def sample_loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """One sample's term of the risk (``x``, ``y`` without the batch dim)."""
        return self._sample_scale() * self.loss_func(self.outputs(params, x[None]), y[None])

    def sample(self, n: int) -> ModelProblem:
        """Sample ``n``'s term of the risk as a problem of its own."""
        return self._replace(X=self.X[n : n + 1], y=self.y[n : n + 1], scale=self._sample_scale())

    def _sample_scale(self) -> float:
        mean = getattr(self.loss_func, "reduction", "mean") == "mean"
        return self.scale / self.batch_size if mean else self.scale

    def __repr__(self) -> str:
        layers = ", ".join(_describe(m) for m in self.model)
        scale = "" if self.scale == 1.0 else f", scale={self.scale:g}"
        return (
            f"ModelProblem({layers} | {type(self.loss_func).__name__}"
            f"(reduction={self.loss_func.reduction!r}) | X: {tuple(self.X.shape)} "
            f"{str(self.X.dtype).removeprefix('torch.')}, seed={self.seed}{scale})"
        )


def _describe(module: nn.Module) -> str:
    """A one-line repr: ``Linear(2, 3)``, ``Conv1d(1, 2, kernel_size=2, padding=1)``."""
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features}, {module.out_features})"
    if isinstance(module, nn.Conv1d):
        return (
            f"Conv1d({module.in_channels}, {module.out_channels}, "
            f"kernel_size={module.kernel_size[0]}, padding={module.padding[0]})"  # type: ignore[index]
        )
    if isinstance(module, nn.LayerNorm):
        return f"LayerNorm({module.normalized_shape[0]})"
    if isinstance(module, nn.BatchNorm1d):
        return f"BatchNorm1d({module.num_features}, eval)"
    if isinstance(module, Residual):
        return f"Residual({module.extra_repr()})"
    return f"{type(module).__name__}()"


def _check_kinds(name: str, value: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(allowed)
    check_type(name, value, (list, tuple, set, frozenset), f"a collection of {allowed}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{name} has unknown kinds {unknown}; valid: {tuple(allowed)}")
    return tuple(k for k in allowed if k in value)


def model_problems(
    *,
    layers: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    reductions: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float64,
    max_batch: int = MAX_BATCH,
) -> st.SearchStrategy[ModelProblem]:
    """``ModelProblem``s from the named kinds (None: all of ``LAYERS``, ``ACTIVATIONS``, ...).

    ``layers=()`` draws a single linear layer; at least one activation and loss is needed.
    """
    layer_kinds = _check_kinds("layers", layers, LAYERS)
    act_kinds = _check_kinds("activations", activations, ACTIVATIONS)
    loss_kinds = _check_kinds("losses", losses, LOSSES)
    reduction_kinds = _check_kinds("reductions", reductions, REDUCTIONS)
    for name, kinds in (
        ("activations", act_kinds),
        ("losses", loss_kinds),
        ("reductions", reduction_kinds),
    ):
        if not kinds:
            raise InvalidArgument(f"{name} is empty; draw from at least one")
    check_type("dtype", dtype, torch.dtype, "a torch.dtype")
    if not dtype.is_floating_point:
        raise InvalidArgument(f"dtype={dtype} must be a floating-point dtype")
    check_type("max_batch", max_batch, int, "an int")
    if max_batch < 1:
        raise InvalidArgument(f"max_batch={max_batch} must be at least 1")
    return _model_problems(layer_kinds, act_kinds, loss_kinds, reduction_kinds, dtype, max_batch)


@st.composite
def _model_problems(
    draw: st.DrawFn,
    layer_kinds: tuple[str, ...],
    act_kinds: tuple[str, ...],
    loss_kinds: tuple[str, ...],
    reduction_kinds: tuple[str, ...],
    dtype: torch.dtype,
    max_batch: int,
) -> ModelProblem:
    loss = draw(st.sampled_from(loss_kinds))
    reduction = draw(st.sampled_from(reduction_kinds))
    n_out = draw(st.integers(2 if loss == "cross_entropy" else 1, MAX_CLASSES))
    batch = draw(st.integers(1, max_batch))
    seed = draw(st.integers(0, MAX_SEED))
    plan: list[tuple[Any, ...]] = []
    if "conv" in layer_kinds and draw(st.booleans()):
        in_shape, width = _draw_conv(draw, plan, act_kinds)
    else:
        width = draw(st.integers(1, MAX_WIDTH))
        in_shape = (width,)
    hidden = [k for k in layer_kinds if k != "conv"]
    for _ in range(draw(st.integers(0, MAX_HIDDEN if hidden else 0))):
        kind = draw(st.sampled_from(hidden))
        if kind == "linear":
            new = draw(st.integers(1, MAX_WIDTH))
            plan += [("linear", width, new), (draw(st.sampled_from(act_kinds)),)]
            width = new
        elif kind == "residual":
            plan.append(("residual", width, draw(st.sampled_from(act_kinds))))
        else:
            plan.append((kind, width))
    plan.append(("linear", width, n_out))
    return _build(plan, loss, reduction, in_shape, n_out, batch, seed, dtype)


def _draw_conv(
    draw: st.DrawFn, plan: list[tuple[Any, ...]], act_kinds: tuple[str, ...]
) -> tuple[tuple[int, ...], int]:
    """A Conv1d, an activation and a Flatten; the input shape and the flattened width."""
    channels = draw(st.integers(1, 2))
    kernel = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 1))
    out_channels = draw(st.integers(1, 2))
    max_length = MAX_CONV_FEATURES // out_channels + kernel - 1 - 2 * padding
    length = draw(st.integers(max(1, kernel - 2 * padding), max_length))
    plan += [
        ("conv", channels, out_channels, kernel, padding),
        (draw(st.sampled_from(act_kinds)),),
        ("flatten",),
    ]
    return (channels, length), out_channels * (length + 2 * padding - kernel + 1)


def _module(step: tuple[Any, ...], gen: torch.Generator) -> nn.Module:
    kind, *sizes = step
    if kind == "linear":
        return nn.Linear(*sizes)
    if kind == "conv":
        channels, out_channels, kernel, padding = sizes
        return nn.Conv1d(channels, out_channels, kernel, padding=padding)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "residual":
        return Residual(*sizes)
    if kind == "layernorm":
        return nn.LayerNorm(sizes[0])
    if kind == "batchnorm":
        norm = nn.BatchNorm1d(sizes[0])
        norm.running_mean = 0.3 * torch.randn(sizes[0], generator=gen)
        norm.running_var = 0.5 + torch.rand(sizes[0], generator=gen)
        return norm
    return _ACTIVATION_MODULES[kind]()


def _build(
    plan: list[tuple[Any, ...]],
    loss: str,
    reduction: str,
    in_shape: tuple[int, ...],
    n_out: int,
    batch: int,
    seed: int,
    dtype: torch.dtype,
) -> ModelProblem:
    gen = torch.Generator().manual_seed(seed)
    # NOTE: modules initialise from the global generator: fork it so drawing a model leaves
    # the caller's random state alone, and seed it so the seed alone fixes the weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(*(_module(step, gen) for step in plan))
        # NOTE: norms start at weight 1, bias 0, where some second derivatives vanish:
        # perturb every parameter so no block of the Hessian is zero by construction.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    model = model.to(dtype).eval()
    X = torch.randn((batch, *in_shape), generator=gen).to(dtype)
    if loss == "mse":
        y = torch.randn((batch, n_out), generator=gen).to(dtype)
        loss_func: nn.Module = nn.MSELoss(reduction=reduction)
    else:
        y = torch.randint(0, n_out, (batch,), generator=gen)
        loss_func = nn.CrossEntropyLoss(reduction=reduction)
    return ModelProblem(model, loss_func, X, y, seed)
