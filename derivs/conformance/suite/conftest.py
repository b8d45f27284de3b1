"""The suite's setup (Hypothesis profiles, ``device``/``dtype`` parameters) for the shipped properties."""

pytest_plugins = ["pytest_derivs.suite"]
