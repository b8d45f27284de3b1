"""derivs' benchmarks: a development package of the repository, not shipped in the wheel.

Run from the repository root (``python -m bench.<tool>``); ``tests/bench`` (pytest-benchmark)
and the tests that need a problem import it by name (pytest's ``pythonpath = ["."]``).

* ``bench.problems``: every benchmark problem, in torch, with its closed forms;
  ``bench.sparse_problems``: the sparse ones, written once over an array namespace (torch-free,
  so the JAX anchor shares them);
* ``bench.timing``: the timer (interleaved blocks, device sync) and ``Bench``, the
  check-then-time helper of the pytest-benchmark fixtures; ``bench.machine``: the facts every
  measurement records; ``bench.output``: time/ratio/byte formats and the ``.json``/``.md`` writer;
* tools, each writing ``docs/bench/<name>.{json,md}``: ``auto_grid``, ``hvp_grid``,
  ``products_at_scale``, ``hessian_memory``, ``compile``, ``sparse_detect``, ``check``,
  ``param_dict``, ``pytree_overhead`` (derivs before and after pytrees); ``sparse_jax``
  (asdex, its own environment); the reports: ``results`` (a saved pytest-benchmark run) <-
  ``sparse_report`` <- ``report``.

Importing ``bench`` imports nothing else (``bench.sparse_jax`` runs without torch).
"""
