"""A test's id in the suite: the same from the repository and from the installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

# NOTE: the wheel installs pytest_derivs and derivs side by side; the properties it ships sit
# below derivs/conformance/suite/ (in a checkout that folder holds no tests, so nothing is).
SUITE = Path(__file__).resolve().parent.parent / "derivs" / "conformance" / "suite"


def suite_id(item: pytest.Item) -> str:
    """``item``'s id as the repository's run names it (``tests/test_jacobian.py::test_...``).

    A property run from the wheel gets the id pytest gives a file there: relative to the
    ``--pyargs`` package, or to the rootdir when the rootdir holds the virtual environment (a
    venv inside the project, or an ``--expected-failures`` path below a common ancestor), as in
    ``.venv/lib/python3.11/site-packages/derivs/conformance/suite/tests/test_jacobian.py::...``.
    Below the shipped suite the id is its path from there, ``tests/...``, as in the repository.
    """
    try:
        where = Path(item.path).resolve().relative_to(SUITE)
    except ValueError:
        return item.nodeid
    _, _, rest = item.nodeid.partition("::")
    return f"{where.as_posix()}::{rest}" if rest else where.as_posix()
