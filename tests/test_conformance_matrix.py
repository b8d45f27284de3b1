"""The capability matrix at the end of an ``--impl`` run, and in the conformance report.

Each run is a fresh pytest process on a small suite that parametrises over
``SuiteImpl.params`` (torch.autograd.functional declares three jacobian methods, no
``has_aux`` and no batch operators), asks for operators with ``SuiteImpl.need``, fails once
and has a derivs-only test, under an ini whose ``addopts`` is pyproject's ``-ra``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_derivs._report import NOT_CONTRACT, matrix, matrix_text
from tools import conformance_table

SUITE = """
import pytest
import pytest_derivs

IMPL = pytest_derivs.impl()


@pytest.mark.parametrize("method", IMPL.params("jacobian"))
def test_jacobian(method):
    IMPL.jacobian(lambda x: x, method=method)


@pytest.mark.parametrize("method", IMPL.params("jacobian", "has_aux"))
def test_has_aux(method):
    IMPL.jacobian(lambda x: (x, x), method=method, has_aux=True)


@pytest.mark.parametrize("method", IMPL.params("batch_jacobian", "in_dims"))
def test_in_dims(method):
    IMPL.batch_jacobian(lambda x: x, method=method, in_dims=1)


def test_products_agree():
    IMPL.need("hvp")
    IMPL.need("vhp")
    assert False, "a planted disagreement"


@pytest.mark.derivs_only("a derivs guarantee")
def test_derivs_only():
    pass
"""


def run_suite(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest --impl torch.autograd.functional`` on SUITE, addopts ``-ra``.

    NOTE: not test_pytest_plugin.run_pytest: that one passes ``-rA`` on the command line,
    which is what keeps the skip lines; here the ``-r`` comes from the ini, as in derivs.
    """
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -ra\n")
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DERIVS_", "PYTEST_", "HYPOTHESIS_"))
    }
    env.pop("PYTHONPATH", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, "--impl", "torch.autograd.functional", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# (operator, method, feature) -> passed, failed, skipped, as SUITE and the adapter make them
EXPECTED_ROWS = {
    ("jacobian", "-", "has_aux"): (0, 0, 1),
    ("jacobian", "forward_vectorize", "-"): (1, 0, 0),
    ("jacobian", "reverse", "-"): (1, 0, 0),
    ("jacobian", "reverse_vectorize", "-"): (1, 0, 0),
    ("hvp", "-", "-"): (0, 1, 0),
    ("vhp", "-", "-"): (0, 1, 0),
    ("batch_jacobian", "-", "in_dims"): (0, 0, 1),
    (NOT_CONTRACT, "-", "-"): (0, 0, 1),
}


def _matrix_rows(out: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    """The printed matrix: (operator, method, feature) -> (passed, failed, skipped)."""
    section = out.split("derivs capability matrix: torch.autograd.functional", 1)[1]
    lines = section.splitlines()[1:]
    head = lines[0].split()
    assert head[:6] == ["operator", "method", "feature", "passed", "failed", "skipped"], head
    rows = {}
    for line in lines[1:]:
        if line.startswith("="):
            break
        cells = line.split()
        if cells[0] == "(not":  # the row label has a space
            cells = [NOT_CONTRACT, *cells[3:]]
        rows[tuple(cells[:3])] = tuple(int(c) for c in cells[3:6])
    return rows


def test_an_impl_run_ends_with_the_matrix_not_a_line_per_skip(tmp_path: Path) -> None:
    done = run_suite(tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert _matrix_rows(out) == EXPECTED_ROWS
    assert "does not declare has_aux for jacobian (1)" in out
    assert "provides no batch_jacobian (1)" in out
    assert "derivs only (1)" in out
    assert "SKIPPED" not in out  # folded into the matrix
    assert "FAILED test_suite.py::test_products_agree" in out  # -ra's other lines stay


LISTED = """
# A planted disagreement.
test_suite.py::test_products_agree

# Listed, but passes.
test_suite.py::test_jacobian
"""


def test_the_matrix_and_the_bug_lines_stand_for_the_xfail_and_xpass_lines(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text(LISTED)
    done = run_suite(tmp_path, "--expected-failures", "expected.txt")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "XFAIL" not in out and "XPASS" not in out  # no line per case, no XPASSES section
    assert "1 xfailed, 3 xpassed" in out.splitlines()[-1]
    assert "A planted disagreement (expected.txt:3): met by 1 of 1 covered tests" in out
    assert "Listed, but passes (expected.txt:6): no test failed on it" in out
    matrix_lines = out.split("derivs capability matrix")[1].splitlines()
    assert matrix_lines[1].split()[3:8] == ["passed", "failed", "xfailed", "xpassed", "skipped"]
    assert ["hvp", "-", "-", "0", "0", "1", "0", "0"] in [line.split() for line in matrix_lines]
    kept = run_suite(tmp_path, "--expected-failures", "expected.txt", "-rxX").stdout
    assert "XFAIL test_suite.py::test_products_agree" in kept
    assert "XPASS test_suite.py::test_jacobian[reverse]" in kept


def test_r_on_the_command_line_keeps_the_skip_lines(tmp_path: Path) -> None:
    done = run_suite(tmp_path, "-rs")
    assert "derivs capability matrix" in done.stdout, done.stdout + done.stderr
    assert "SKIPPED [1] test_suite.py" in done.stdout


def test_the_report_stores_the_matrix_in_json_and_markdown(tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    done = run_suite(tmp_path, "--conformance-report", str(report))
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(report.read_text())
    stored = {
        (r["operator"], r["method"] or "-", r["feature"] or "-"): (
            r["counts"].get("passed", 0),
            r["counts"].get("failed", 0),
            r["counts"].get("skipped", 0),
        )
        for r in data["matrix"]
    }
    assert stored == EXPECTED_ROWS
    md = report.with_suffix(".md").read_text()
    assert "## Capability matrix" in md
    assert (
        "| `jacobian` | - | `has_aux` | 0 | 0 | 1 | does not declare has_aux for jacobian (1) |"
        in md
    )
    assert "| `hvp` | - | - | 0 | 1 | 0 |  |" in md


def test_a_case_counts_in_each_capability_and_columns_follow_the_outcomes() -> None:
    cases = [
        {"id": "a", "outcome": "passed", "capability": [["hvp", "fwd_rev", None]]},
        {"id": "b", "outcome": "xfailed", "capability": [["hvp", "fwd_rev", None]]},
        {
            "id": "c",
            "outcome": "failed",
            "capability": [["hvp", "fwd_rev", None], ["vhp", "rev_rev", None]],
        },
        {"id": "d", "outcome": "skipped", "reason": "x does not declare vmap for hvp"},
        {"id": "e", "outcome": "skipped", "reason": "not a conformance property: its tools"},
    ]
    rows = matrix(cases)
    assert [(r["operator"], r["method"], r["counts"]) for r in rows] == [
        ("hvp", "fwd_rev", {"passed": 1, "xfailed": 1, "failed": 1}),
        ("vhp", "rev_rev", {"failed": 1}),
        ("(no operator)", None, {"skipped": 1}),
        (NOT_CONTRACT, None, {"skipped": 1}),
    ]
    assert rows[2]["why"] == {"does not declare vmap for hvp": 1}
    assert rows[3]["why"] == {"not a conformance property": 1}
    text = matrix_text(rows)
    assert text[0].split() == [
        "operator",
        "method",
        "feature",
        "passed",
        "failed",
        "xfailed",
        "skipped",
        "skipped",
        "because",
    ]
    assert text[1].split() == ["hvp", "fwd_rev", "-", "1", "1", "1", "0"]


def test_the_table_tool_fills_both_sections_of_a_page_from_a_report(tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    assert run_suite(tmp_path, "--conformance-report", str(report)).returncode == 1
    page = tmp_path / "page.md"
    stale = "a stale table"
    sections = [
        conformance_table.marked(name) for name in ("capability matrices", "property table")
    ]
    page.write_text("".join(f"{begin}\n{stale}\n{end}\nkept\n" for begin, end in sections))
    conformance_table.main([str(report), "--write", str(page)])
    text = page.read_text()
    assert stale not in text
    assert text.count("kept") == 2
    matrices, table = (text.split(begin)[1].split(end)[0] for begin, end in sections)
    assert "### torch.autograd.functional" in matrices
    assert "| `hvp` | - | - | 0 | 1 | 0 |  |" in matrices
    # the property table: the planted failure is a row, derivs' own guarantee is not
    assert "| `test_suite.py::test_products_agree` | 1 FAIL |" in table
    assert "test_derivs_only" not in table
    assert "| torch.autograd.functional |" in table  # the run's facts


def test_the_table_tool_names_a_page_without_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    begin, end = conformance_table.marked("capability matrices")
    page.write_text(f"{begin}\n{end}\n")  # no property table
    report = {"implementation": "x", "version": "1", "torch": "t", "devices": ["cpu"]}
    report |= {"hypothesis_profile": "ci", "suite_commit": None, "suite_dirty": False}
    report |= {"duration_s": 1.0, "totals": {}, "properties": []}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit, match=r"page\.md has no <!-- property table: begin -->"):
        conformance_table.main([str(path), "--write", str(page)])
    assert page.read_text() == f"{begin}\n{end}\n"  # nothing written
