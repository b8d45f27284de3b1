"""Tools that measure the verification suite itself (not derivs' speed: that is ``bench``).

Run from the repository root as modules, so that the checkout's ``derivs``, ``strategies``
and ``tests`` are the ones imported: ``python -m tools.<name>``.

* ``false_alarm_sweep`` (and its replay plugin ``sweep_replay``): does a correct build ever
  fail? ``mutation``, ``planted_bugs``: does a wrong build ever pass? (docs/suite/trust.md,
  docs/suite/planted.md)
* ``fuzz_stats``: examples per second of a HypoFuzz campaign;
* ``oracle_accuracy``: accuracy and cost of the finite-difference oracles (docs/oracles.md);
* ``strategy_stats``: what the strategies draw, and how fast (docs/strategies.md);
* ``conformance_table``: conformance reports joined into one table (docs/suite/conformance.md).
"""
