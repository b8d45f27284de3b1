"""Hypothesis strategies for the derivs verification suite.

Small blocks, composed with ``@st.composite``; every bound is keyword-only and checked when the
strategy is built (``shapes(min_dims=3, max_dims=2)`` raises ``InvalidArgument: min_dims=3 is
larger than max_dims=2``). Sizes are capped by the named constants in ``derivs.strategies._caps``
(re-exported here), each with a comment saying why.

Entry points (all return Hypothesis strategies unless noted):

Blocks
    ``shapes(*, min_dims=0, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE, max_elements=MAX_ELEMENTS)``
        tuples of ints, 0-d to 4-d, size-1 and non-square sides.
    ``devices(*, include_meta=False)``
        device strings from ``get_devices()`` (the plugin's ``--devices``), plus ``"meta"``.
    ``dtypes(device=None)``
        float64 and float32 (float32 only on mps).
    ``tensors(shape, dtype=float64, device="cpu", *, layout=None, values=None, min_value=-1, max_value=1)``
        tensors of exactly that shape with a layout from ``LAYOUTS`` (contiguous, offset,
        transposed, sliced, expanded); ``shape``/``dtype``/``device``/``layout`` may be
        strategies (``st.shared(shapes(), key=...)`` gives several tensors one shape).
    ``tangents_like(primals, *, layout=None, ...)`` (alias ``cotangents_like``)
        tuples of tensors matched to ``primals`` in number, shape, dtype and device.
    ``argnums(n_args, *, allow_tuple=True, allow_int=True, allow_negative=True, min_size=1, max_size=None)``
        an int in ``[-n, n)`` or a tuple of distinct positions; ``normalize_argnums`` (a
        function) maps a draw to non-negative positions.
    ``in_dims(in_shapes, *, allow_int=True, allow_none=True, allow_nonzero=True, allow_negative=True)``
        ``vmap``-style ``in_dims``; ``normalize_in_dims`` (a function) gives one non-negative
        position or None per argument; ``batched_args(in_shapes, in_dims, batch_size, dtype,
        device)`` lays tensors out to match; ``batched_shape`` (a function) gives one shape.
    ``batch_sizes(*, min_size=1, max_size=MAX_BATCH)``
    ``chunk_sizes(total, *, divides=None, allow_none=False)``
        chunk sizes that divide ``total`` or not (and ones larger than it).
    ``partial_chunk_sizes(*totals)``
        chunk sizes that divide none of ``totals``: the last chunk is always partial.

Functions
    ``functions(*, n_args=None, in_shapes=None, out_shape=None, scalar_output=None, min_depth=0,
    max_depth=3, batch_polymorphic=None, real_analytic=None, ops=None, max_dims=MAX_DIMS,
    max_elements=MAX_ELEMENTS, coincide=False)``
        ``GeneratedFunction``: random smooth expression trees whose repr is the formula, e.g.
        ``f(x0: (3,), x1: (3,)) -> () = (tanh(x0 @ W1) * x1).sum(-1)  where W1 = randn((3, 3), seed=1) / sqrt(3)``.
    ``coincident_signatures(*, n_args=None, in_shapes=None, out_shape=None, ...)``
        ``(in_shapes, out_shape)`` whose sizes coincide on purpose (equal argument shapes,
        a square Jacobian); ``functions(coincide=True)`` and ``batched_problems(coincide=True)``
        use them (the latter also sets the batch size to the output's leading size), so a
        transposed or moved axis changes values, not shapes; ``coincide=None`` draws whether.
    ``coupled_functions(*, n_args=1, ..., couplings=None)``
        whole-batch functions ``(B, *in) -> (B, *out)`` that couple samples (``coupled=True``).
    ``eval_formula(repr_text)`` (a function)
        the callable a ``GeneratedFunction``'s repr describes (bit-identical values).

Sparse functions
    ``sparse_functions(*, kinds=None, scalar=None)``
        ``SparseFunction``: stencils (1-D, 2-D, periodic or not), the Brusselator, banded maps,
        block-diagonal batches, gathers and scatters with drawn index tensors, convolutions,
        elementwise chains with a few dense couplings, custom ``autograd.Function``s,
        value-dependent ``where``, and scalar ones for Hessians (chained Rosenbrock, stencil
        energies); each knows the structure of its Jacobian (Hessian), ``.structure()``,
        derived from its parameters, e.g.
        ``stencil1d(x: (8,)) -> (6,) = 2.0 * x[0:6] + 0.5 * sin(x[2:8])``.
    ``sparse_problems(func=None, *, kinds=None, scalar=None, device=None, dtype=None, layout=None)``
        ``Problem(func, device, dtype, args)`` with a sparse ``func``.
    ``eval_sparse_formula(repr_text)`` (a function)
        the callable a ``SparseFunction``'s repr describes (bit-identical values).

Whole draws (NamedTuples)
    ``problems(func=None, *, device=None, dtype=None, include_meta=False, layout=None)``
        ``Problem(func, device, dtype, args)``.
    ``batched_problems(func=None, *, device=None, dtype=None, in_dims=None, batch_size=None, ...)``
        ``BatchedProblem(func, device, dtype, args, in_dims, batch_size)`` with ``.sample(b)``.
    ``tutorial_predict(*, kind=None, min_features=1, max_features=MAX_FEATURES, batch_size=None, ...)``
        ``PredictProblem(func, device, dtype, weight, bias, x, xs, kind)``: the tutorial's
        ``predict(weight, bias, x) = linear(x, weight, bias).tanh()``, tall, wide or square,
        with ``.args``, ``.batched_args`` and ``.in_dims == (None, None, 0)``.

Models
    ``model_problems(*, layers=None, activations=None, losses=None, reductions=None, dtype=float64, max_batch=MAX_BATCH)``
        ``ModelProblem(model, loss_func, X, y, seed, scale)``: a small ``nn.Sequential`` from
        ``LAYERS`` (linear, 1-d conv, layer and batch norm in eval mode, a ``Residual`` block)
        and ``ACTIVATIONS``, an MSE or cross-entropy loss (``LOSSES``, ``REDUCTIONS``) and a
        batch; ``.params()``, ``.loss(params)``, ``.sample(n)`` (one sample's term of the
        loss), for the curvature properties (``tests/test_curvature.py``).

Pytrees
    ``pytree_problems(problem=None, *, kinds=None, outputs=("tensor",))``
        ``PytreeProblem(func, args, argnums, flat, kind, in_dims)``: a ``Problem``'s arguments
        packed into pytrees (``PYTREE_KINDS``: a dict named like a model's parameters, a
        list, a namedtuple, a random nest, a single leaf next to plain tensors); ``func``
        calls the problem's function on the leaves (and may return a pytree,
        ``OUTPUT_KINDS``); ``.pack(leaves)`` packs tangents or per-leaf results likewise.
    ``batched_pytree_problems(problem=None, *, kinds=None, outputs=("tensor",))``
        the same for a ``BatchedProblem``, its ``in_dims`` packed like the arguments.

Devices
    ``set_devices(devices)`` / ``get_devices()``: set once by the pytest_derivs plugin from ``--devices``.
"""

from ._basic import (
    argnums,
    batch_sizes,
    chunk_sizes,
    devices,
    dtypes,
    dtypes_for,
    in_dims,
    normalize_argnums,
    normalize_in_dims,
    shapes,
)
from ._caps import (
    EXP_INPUT_BOUND,
    INPUT_BOUND,
    MAX_ARGS,
    MAX_BATCH,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_FEATURES,
    MAX_INTERMEDIATE,
    MAX_SIDE,
    VALUE_BOUND,
)
from ._coincident import (
    COINCIDENCES,
    coincident_batch_size,
    coincident_shape,
    coincident_signatures,
    partial_chunk_sizes,
)
from ._devices import get_devices, set_devices
from ._expr import eval_formula
from ._functions import (
    COUPLINGS,
    JOIN_OPS,
    NON_ANALYTIC_OPS,
    NON_POLYMORPHIC_OPS,
    OPS,
    UNARY_OPS,
    GeneratedFunction,
    coupled_functions,
    functions,
)
from ._models import (
    ACTIVATIONS,
    LAYERS,
    LOSSES,
    REDUCTIONS,
    ModelProblem,
    Residual,
    model_problems,
)
from ._problems import (
    PREDICT_KINDS,
    BatchedProblem,
    PredictProblem,
    Problem,
    batched_problems,
    predict_function,
    problems,
    tutorial_predict,
)
from ._pytrees import (
    OUTPUT_KINDS,
    PYTREE_KINDS,
    PytreeFunction,
    PytreeProblem,
    batched_pytree_problems,
    pytree_problems,
)
from ._sparse import (
    HESSIAN_KINDS,
    SPARSE_KINDS,
    VALUE_DEPENDENT_KINDS,
    SparseFunction,
    eval_sparse_formula,
    sparse_functions,
    sparse_problems,
)
from ._tensors import (
    LAYOUTS,
    NON_CONTIGUOUS_LAYOUTS,
    VALUE_MODES,
    batched_args,
    batched_shape,
    cotangents_like,
    feasible_layouts,
    tangents_like,
    tensors,
)

__all__ = [
    "ACTIVATIONS",
    "COINCIDENCES",
    "COUPLINGS",
    "EXP_INPUT_BOUND",
    "HESSIAN_KINDS",
    "INPUT_BOUND",
    "JOIN_OPS",
    "LAYERS",
    "LAYOUTS",
    "LOSSES",
    "MAX_ARGS",
    "MAX_BATCH",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "MAX_FEATURES",
    "MAX_INTERMEDIATE",
    "MAX_SIDE",
    "NON_ANALYTIC_OPS",
    "NON_CONTIGUOUS_LAYOUTS",
    "NON_POLYMORPHIC_OPS",
    "OPS",
    "OUTPUT_KINDS",
    "PREDICT_KINDS",
    "PYTREE_KINDS",
    "REDUCTIONS",
    "SPARSE_KINDS",
    "UNARY_OPS",
    "VALUE_BOUND",
    "VALUE_DEPENDENT_KINDS",
    "VALUE_MODES",
    "BatchedProblem",
    "GeneratedFunction",
    "ModelProblem",
    "PredictProblem",
    "Problem",
    "PytreeFunction",
    "PytreeProblem",
    "Residual",
    "SparseFunction",
    "argnums",
    "batch_sizes",
    "batched_args",
    "batched_problems",
    "batched_pytree_problems",
    "batched_shape",
    "chunk_sizes",
    "coincident_batch_size",
    "coincident_shape",
    "coincident_signatures",
    "cotangents_like",
    "coupled_functions",
    "devices",
    "dtypes",
    "dtypes_for",
    "eval_formula",
    "eval_sparse_formula",
    "feasible_layouts",
    "functions",
    "get_devices",
    "in_dims",
    "model_problems",
    "normalize_argnums",
    "normalize_in_dims",
    "partial_chunk_sizes",
    "predict_function",
    "problems",
    "pytree_problems",
    "set_devices",
    "shapes",
    "sparse_functions",
    "sparse_problems",
    "tangents_like",
    "tensors",
    "tutorial_predict",
]
