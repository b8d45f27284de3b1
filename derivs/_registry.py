"""The six operators and their methods, each with a one-line hint: the one list of them.

The documented order is kept: operators as ``derivs.METHODS`` lists them, each operator's
methods with the default first. ``derivs.METHODS``, ``derivs.check``, the conformance
features and the pytest plugin derive from ``OPERATORS``; each operator module takes its
table from here (``tests/test_errors.py`` checks the dispatch tables against it).

NOTE: this module imports nothing, not even from the standard library: the pytest plugin
loads it by its file (``pytest_derivs._impl``), without running ``derivs/__init__.py``,
which imports torch; an unrelated project that has derivs installed then pays nothing.
"""

_BATCH = {
    "vmap": "torch.func.vmap over the per-sample transform; always valid (the default)",
    "loop": "a Python loop over samples; slow, a reference",
    "sum": "the sum trick: differentiate the batch-summed output of func applied to the whole "
    "batch; fastest, valid only if samples do not interact (checked)",
}

#: operator -> its methods (name -> when to use it), in the documented order.
OPERATORS: dict[str, dict[str, str]] = {
    "jacobian": {
        "auto": "forward mode when the output has more elements than the differentiated inputs "
        "and enough of them (measured per device: see prefers_forward), else reverse; in plain "
        "eager code both come from one autograd graph (vmap over torch.autograd.grad), skipping "
        "torch.func's fixed cost per call",
        "rev": "torch.func.jacrev: one vector-Jacobian product per output element (wide functions)",
        "fwd": "vmap over torch.func.jvp: one Jacobian-vector product per input element "
        "(tall functions)",
        "vjp_vmap": "the tutorial's vmap(vjp_fn)(unit_vectors); reverse mode built by hand",
        "loop": "one torch.autograd.grad per output element; slow, not composable with vmap, "
        "but the simplest thing that can work",
    },
    "hessian": {
        "auto": "forward over the method jacobian's 'auto' picks for the gradient (the usual best)",
        "fwd_rev": "jacfwd(jacrev(f)), what torch.func.hessian does: forward over reverse",
        "rev_rev": "jacrev(jacrev(f)): all reverse mode; works where forward-mode AD is missing",
        "fwd_fwd": "jacfwd(jacfwd(f)): all forward mode; good when outputs outnumber inputs",
        "rev_fwd": "jacrev(jacfwd(f)): reverse over forward",
        "loop": "one torch.autograd.grad per gradient entry; slow, not composable with vmap",
    },
    "hvp": {
        "auto": "reverse over reverse, measured the fastest (bench/hvp_grid.py); in plain eager "
        "code by torch.autograd, freeing the gradient before the second pass, else torch.func's "
        "vjp of grad",
        "fwd_rev": "jvp of grad: forward over reverse (the tutorial's hvp)",
        "rev_rev": "vjp of grad: reverse over reverse; works where forward-mode AD is missing",
        "dense": "materialise the Hessian and multiply; only for small inputs (a reference)",
    },
    "vhp": {
        "auto": "reverse over reverse; in plain eager code by torch.autograd, freeing the "
        "gradient before the second pass, else torch.func's vjp of grad",
        "rev_rev": "vjp of grad: reverse over reverse",
        "dense": "materialise the Hessian and multiply; only for small inputs (a reference)",
    },
    "batch_jacobian": _BATCH,
    "batch_hessian": _BATCH,
}
