"""The conformance properties, as the wheel ships them: run them with one pytest command.

``pip install 'derivs[test]'``, then, where ``my_adapter.py`` defines ``ADAPTER``::

    python -m pytest --pyargs derivs.conformance.suite --impl my_adapter:ADAPTER

(``python -m`` puts the current directory on ``sys.path``; an adapter in an installed package
runs with plain ``pytest``). The wheel holds, under ``tests/``, the repository's test modules
marked ``conformance`` and the helper modules they import, with their repository names, so test
ids (``tests/test_jacobian.py::...``, ``pytest_derivs._ids``) and expected-failure files read the
same from either. This package's ``conftest.py`` loads the suite's setup, ``pytest_derivs.suite``.
In the repository they live in ``tests/``, and a plain ``pytest --impl ...`` runs them
(docs/suite/conformance.md).
"""
