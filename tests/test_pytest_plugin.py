"""The pytest_derivs plugin in projects that are not derivs: each case is a fresh pytest run.

* loaded (entry point ``pytest11``) in an unrelated run, it imports neither torch, Hypothesis
  nor derivs;
* a user's suite gets the options and fixtures (``--impl torch.func``, ``derivs_impl``,
  ``derivs_device``, ``derivs_dtype``) and ``derivs.strategies``;
* expected-failure files: a listed failure is xfailed, the same test failing anew is not,
  an entry that matches nothing is warned about;
* the conformance report has the outcomes, the skip reasons and the shrunk counterexample;
* in the derivs suite itself, ``--impl torch.func`` skips every module that is not a
  conformance property (derivs' own tools), with a reason naming the implementation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(
    tmp_path: Path, files: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``tmp_path`` (its own rootdir and ini), on the given files."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DERIVS_", "PYTEST_", "HYPOTHESIS_"))
    }
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


UNRELATED = """
import sys

def test_nothing_heavy_was_imported(pytestconfig):
    assert pytestconfig.pluginmanager.get_plugin("pytest_derivs") is not None
    assert pytestconfig.getoption("derivs_impl") is None
    heavy = sorted(m for m in ("torch", "hypothesis", "derivs", "numpy") if m in sys.modules)
    assert heavy == [], f"imported by merely loading the plugin: {heavy}"
"""


def test_plugin_costs_nothing_in_an_unrelated_project(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, {"test_unrelated.py": UNRELATED})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "derivs conformance" not in done.stdout  # no header unless used


USERS_SUITE = """
import pytest
import torch
from hypothesis import HealthCheck, given, settings
import derivs.strategies as ds


def test_fixtures(derivs_impl, derivs_adapter, derivs_devices, derivs_device, derivs_dtype):
    assert derivs_impl.name == "torch.autograd.functional" == derivs_adapter.name
    assert derivs_device in derivs_devices
    x = torch.linspace(-1, 1, 3, dtype=derivs_dtype, device=derivs_device)
    assert torch.equal(derivs_impl.jacobian(torch.sin)(x), torch.diag(x.cos()))


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(ds.problems(ds.functions(n_args=1, max_elements=6), device="cpu"))
def test_strategies_installed(problem):
    assert ds.get_devices() == ["cpu"]
    assert repr(problem.func).startswith("f(x0: ")
"""


def test_a_users_suite_gets_options_fixtures_and_strategies(tmp_path: Path) -> None:
    done = run_pytest(
        tmp_path,
        {"test_users.py": USERS_SUITE},
        *("--impl", "torch.autograd.functional", "--devices", "cpu"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "derivs conformance: implementation torch.autograd.functional" in done.stdout
    assert "3 passed" in done.stdout  # derivs_dtype: float32 and float64


@pytest.mark.parametrize(
    ("spec", "exc", "message"),
    [
        (
            "no_such_module:thing",
            ValueError,
            "cannot import 'no_such_module' for 'no_such_module:thing'",
        ),
        (
            "derivs.conformance:nothing",
            ValueError,
            "'derivs.conformance' has no attribute 'nothing'",
        ),
        (
            "torch.fun",
            ValueError,
            "'torch.fun' is neither a built-in adapter (derivs, torch.func, torch.autograd.functional) nor 'package.module:object'",
        ),
        ("derivs.conformance:OPERATORS", TypeError, "has no 'name' attribute"),
    ],
)
def test_load_errors_name_the_spec(spec: str, exc: type[Exception], message: str) -> None:
    from derivs.conformance import load

    with pytest.raises(exc, match=r"^derivs\.conformance\.load: ") as info:
        load(spec)
    assert message in str(info.value)


KNOWN_BUGS = """
import pytest
from hypothesis import given, settings, strategies as st


@settings(max_examples=20, deadline=None, database=None)
@given(st.integers(0, 100))
def test_known(n):
    assert n < 10, "known bug: big n"


@settings(max_examples=20, deadline=None, database=None, print_blob=True)
@given(st.integers(0, 100))
def test_unlisted(n):
    assert n < 10, "a new bug"


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(0, 100))
def test_known_and_new(n):
    assert n < 50, "known bug: big n"
    assert n % 7 != 3, "a new bug"


@settings(max_examples=50, deadline=None, database=None)
@given(st.integers(10, 100))
def test_known_everywhere(n):
    assert n < 10, "known bug: big n"


@pytest.mark.parametrize("kind", ["known", "new"])
def test_listed_but_fails_anew(kind):
    raise RuntimeError("known bug" if kind == "known" else "something new")


def test_passes_although_listed():
    pass


@pytest.mark.derivs_only("a derivs guarantee")
def test_only_for_derivs():
    pass
"""

EXPECTED = """
# A bug we know about.
# repro: tests/upstream_repro.py::test_big_n
# match: known bug
test_known_bugs.py::test_known
test_known_bugs.py::test_known_and_new
test_known_bugs.py::test_known_everywhere
test_known_bugs.py::test_listed_but_fails_anew

test_known_bugs.py::test_passes_although_listed  # fixed upstream since
test_known_bugs.py::test_renamed_long_ago
"""


def test_expected_failures_and_the_report(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text(EXPECTED)
    report = tmp_path / "out" / "report.json"
    done = run_pytest(
        tmp_path,
        {"test_known_bugs.py": KNOWN_BUGS},
        "--impl",
        "torch.autograd.functional",
        "--expected-failures",
        "expected.txt",
        "--conformance-report",
        str(report),
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the new failure fails the run
    assert "XFAIL test_known_bugs.py::test_known - " in out  # bug hit, the rest passed
    assert "XFAIL test_known_bugs.py::test_known_everywhere" in out  # every example hit it
    assert "FAILED test_known_bugs.py::test_known_and_new" in out
    assert "XFAIL test_known_bugs.py::test_listed_but_fails_anew[known]" in out
    assert "FAILED test_known_bugs.py::test_listed_but_fails_anew[new]" in out
    assert "fails anew:\nRuntimeError: something new" in out
    assert "XPASS test_known_bugs.py::test_passes_although_listed" in out
    assert (
        "expected failure 'test_known_bugs.py::test_renamed_long_ago' matches no collected test"
        in out
    )
    assert "SKIPPED" in out and "a guarantee of derivs itself (a derivs guarantee)" in out

    data = json.loads(report.read_text())
    assert data["implementation"] == "torch.autograd.functional"
    assert data["torch"] and data["hypothesis"] and data["devices"] == ["cpu"]
    by = {p["property"]: p for p in data["properties"]}
    known = by["test_known_bugs.py::test_known"]
    assert known["outcome"] == "xfailed"
    (failure,) = known["cases"][0]["failures"]
    assert failure["error"].startswith("AssertionError: known bug: big n")
    assert known["cases"][0]["known_hits"]["count"] >= 1
    (new,) = by["test_known_bugs.py::test_unlisted"]["cases"][0]["failures"]
    assert new["counterexample"] == "Failing test case: test_unlisted(\n    n=10,\n)"  # shrunk
    assert "@reproduce_failure(" in new["reproduce"]  # print_blob's line, on its own
    (mixed,) = by["test_known_bugs.py::test_known_and_new"]["cases"][0]["failures"]
    assert mixed["error"].startswith("AssertionError: a new bug")  # the known one filtered out
    n = int(mixed["counterexample"].split("n=")[1].split(",")[0])
    assert n % 7 == 3 and n < 50, mixed["counterexample"]  # a new-bug input, not a known-bug one
    assert by["test_known_bugs.py::test_listed_but_fails_anew"]["outcome"] == "failed"
    assert by["test_known_bugs.py::test_only_for_derivs"]["skip_reasons"] == [
        "a guarantee of derivs itself (a derivs guarantee), not of the contract "
        "torch.autograd.functional is held to"
    ]
    md = report.with_suffix(".md").read_text()
    assert "| `test_known_bugs.py::test_known` | xfailed (1 xfailed of 1) |" in md


BUG_CLASS = """
import pytest
from hypothesis import given, settings, strategies as st


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(0, 100))
def test_meets_it(n):
    if n > 10:
        raise RuntimeError("the upstream bug")


@pytest.mark.parametrize("kind", ["clean", "other"])
def test_never_meets_it(kind):
    assert kind == "clean", "a new bug"


def test_fails_with_it():
    raise RuntimeError("the upstream bug, again")
"""

PATTERN = """
# An upstream bug any test may meet when its draws do.
# match: the upstream bug
test_bug_class.py::*
"""


def run_bug_class(tmp_path: Path, expected: str) -> subprocess.CompletedProcess[str]:
    """The BUG_CLASS tests under another implementation, with ``expected`` as the file."""
    (tmp_path / "expected.txt").write_text(expected)
    return run_pytest(
        tmp_path,
        {"test_bug_class.py": BUG_CLASS},
        "--impl",
        "torch.autograd.functional",
        "--expected-failures",
        "expected.txt",
    )


def test_a_pattern_entry_is_a_bug_class_not_a_listing(tmp_path: Path) -> None:
    done = run_bug_class(tmp_path, PATTERN)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the unrelated failure still fails
    assert "XFAIL test_bug_class.py::test_meets_it - " in out  # examples hit it, rest passed
    assert "XFAIL test_bug_class.py::test_fails_with_it" in out
    assert "PASSED test_bug_class.py::test_never_meets_it[clean]" in out  # not XPASS
    assert "FAILED test_bug_class.py::test_never_meets_it[other]" in out
    assert "XPASS" not in out and "matches no collected test" not in out


def test_a_pattern_entry_needs_a_match(tmp_path: Path) -> None:
    done = run_bug_class(tmp_path, "# no match line\ntest_bug_class.py::*\n")
    assert done.returncode == 4, done.stdout + done.stderr  # a usage error
    assert "expected.txt:2: the pattern 'test_bug_class.py::*' needs a '# match: REGEX'" in (
        done.stdout + done.stderr
    )


# Entries per torch version, and entries that no longer fail, reported.
VERSIONED = """
def test_fixed_long_ago():
    raise RuntimeError("the old bug")


def test_still_fails():
    raise RuntimeError("the current bug")


def test_passes_now():
    pass
"""

VERSIONED_EXPECTED = """
# Held before torch 1: not applied to any torch that runs this.
# match: the old bug
# torch: <1
test_versions.py::test_fixed_long_ago

# Holds from torch 1 on.
# match: the current bug
# torch: >=1
test_versions.py::test_still_fails

# Listed, but no longer fails.
# torch: >=1
test_versions.py::test_passes_now

# A bug class no test of this run meets.
# match: a bug nobody meets
test_versions.py::*
"""


def test_entries_hold_for_torch_versions_and_stale_ones_are_reported(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text(VERSIONED_EXPECTED)
    done = run_pytest(
        tmp_path,
        {"test_versions.py": VERSIONED},
        *("--impl", "torch.autograd.functional", "--expected-failures", "expected.txt"),
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "FAILED test_versions.py::test_fixed_long_ago" in out  # its entry is not applied
    assert "XFAIL test_versions.py::test_still_fails" in out
    assert "XPASS test_versions.py::test_passes_now" in out
    summary = out.split("derivs expected failures", 1)[1].split("derivs capability matrix")[0]
    from importlib.metadata import version

    torch = version("torch")
    reported = {_where(line): line for line in summary.splitlines() if ": " in line}
    assert f"not applied, holds for torch <1, not {torch}" in reported["expected.txt:5"]
    stale = f"no test failed on it on torch {torch}"
    assert f"{stale} (1 covered tests ran)" in reported["expected.txt:14"]  # an XPASS
    assert f"{stale} (3 covered tests ran)" in reported["expected.txt:18"]  # a pattern
    assert "met by 1 of 1 covered tests" in reported["expected.txt:10"]  # failed, as listed
    assert reported["expected.txt:10"].startswith("Holds from torch 1 on ")  # the bug's title


def _where(line: str) -> str:
    """The entries a summary line is about: ``expected.txt:5: ...`` or ``Title (expected.txt:10): ...``."""
    head = line.split(": ", 1)[0]
    return head.rsplit(" (", 1)[1].rstrip(")") if head.endswith(")") else head


PER_DRAW = """
import pytest


@pytest.mark.parametrize("draw", ["hits", "misses"])
def test_one(draw):
    if draw == "hits":
        raise RuntimeError("a per-draw bug")


def test_two():
    pass


def test_three():
    pass  # its listed bug was fixed upstream


def test_four():
    raise RuntimeError("a bug every draw meets")
"""

PER_DRAW_EXPECTED = """
# A per-draw bug. Upstream.
# match: a per-draw bug
test_per_draw.py::test_one

# A per-draw bug. Upstream, the same bug listed again.
# match: a per-draw bug
test_per_draw.py::test_two

# A fixed bug.
test_per_draw.py::test_three

# A bug every draw meets.
test_per_draw.py::test_four
"""
DOCUMENTED = ROOT / "docs" / "suite" / "conformance.md"


def _shape(line: str) -> str:
    """A summary line without its bug's title, places and counts."""
    line = re.sub(r"^.*?\([^()]*\): ", "(...): ", line)  # the title may hold brackets
    return re.sub(r"\d+", "N", re.sub(r"\([^()]*\)", "(...)", line))


def test_the_summary_has_a_line_per_bug_and_counts_entries_its_draws_missed(
    tmp_path: Path,
) -> None:
    (tmp_path / "expected.txt").write_text(PER_DRAW_EXPECTED)
    args = ("--impl", "torch.autograd.functional", "--expected-failures", "expected.txt")
    done = run_pytest(tmp_path, {"test_per_draw.py": PER_DRAW}, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.split("derivs expected failures", 1)[1].split("derivs capability")[0]
    lines = [line for line in summary.splitlines() if ": " in line]
    assert len(lines) == 3, summary  # the two entries of one bug share a line
    assert lines[0].startswith("A per-draw bug (expected.txt:4-8): met by 1 of 3 covered tests;")
    assert (
        "1 of its 2 entries met no example of it in this run's draws (expected.txt:8)" in lines[0]
    )
    assert "no fix" in lines[0]
    assert lines[1].startswith("A fixed bug (expected.txt:11): no test failed on it")
    assert lines[2] == "A bug every draw meets (expected.txt:14): met by 1 of 1 covered tests"
    # the page's example of such a summary has the lines' shape
    page = DOCUMENTED.read_text(encoding="utf-8").split("For torch.func at a random seed:")[1]
    example = page.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    assert example and {_shape(line) for line in example} <= {_shape(line) for line in lines}
    verbose = run_pytest(tmp_path, {"test_per_draw.py": PER_DRAW}, *args, "-v").stdout
    summary = verbose.split("derivs expected failures", 1)[1].split("derivs capability")[0]
    assert "expected.txt:8: 'test_per_draw.py::test_two': no test failed on it" in summary
    assert "expected.txt:4:" not in summary  # it met the bug


def test_a_torch_line_must_be_a_version_specifier(tmp_path: Path) -> None:
    done = run_bug_class(tmp_path, "# match: x\n# torch: 2.14 or later\ntest_bug_class.py::*\n")
    assert done.returncode == 4, done.stdout + done.stderr  # a usage error
    assert "expected.txt:3: '# torch: 2.14 or later' is not a version specifier" in (
        done.stdout + done.stderr
    )


# The derivs suite itself under another implementation: its own tests are skipped, not failed.

CONFORMANCE_MARK = re.compile(r"^pytestmark = pytest\.mark\.conformance$", re.MULTILINE)
# a -v line per test: "path::test SKIPPED (reason)   [ 12%]"
SKIPPED_ITEM = re.compile(
    r"^(tests/test_\w+\.py)::\S+ SKIPPED \((.*)\)\s*(?:\[\s*\d+%\])?$", re.MULTILINE
)
FOR_TORCH_FUNC = re.compile(r"^not a conformance property: .*, not torch\.func$")  # conftest.py's


def _derivs_own_test_modules() -> list[str]:
    """The suite's test modules that are not conformance properties (derivs' own tools)."""
    return [
        f"tests/{path.name}"
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if not CONFORMANCE_MARK.search(path.read_text(encoding="utf-8"))
    ]


def test_derivs_own_tests_are_skipped_for_another_implementation() -> None:
    modules = _derivs_own_test_modules()
    # NOTE: the derivation must see the modules the brief of issue 14 names, at least.
    assert {"tests/test_sparse.py", "tests/test_memory.py", "tests/test_check.py"} <= set(modules)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERIVS_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env["COLUMNS"] = "1000"  # NOTE: -v lines keep the whole reason
    options = ("-p", "no:cacheprovider", "-v", "-rN", "--impl", "torch.func")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *options, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    summary = out.strip().splitlines()[-1]
    assert " skipped" in summary and not any(
        word in summary for word in ("passed", "failed", "error", "xfail", "xpass")
    ), summary
    # NOTE: nothing ran (above), and every case says why: the implementation's skip comes
    # before a module's own (a Redis server that is not there, a device that is absent).
    items = SKIPPED_ITEM.findall(out)
    assert items and all(FOR_TORCH_FUNC.match(why) for _, why in items), sorted(
        {why for _, why in items if not FOR_TORCH_FUNC.match(why)}
    )
    assert {module for module, _ in items} == set(modules)
