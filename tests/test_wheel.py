"""The wheel, installed into a fresh virtual environment, gives users derivs.strategies and the plugin.

Builds the wheel from a copy of the sources, creates a venv (``python -m venv``), runs
``pip install --no-index 'derivs-*.whl[test]'`` in it, then, from a directory outside the
repository, imports ``derivs.strategies``, ``derivs.conformance`` and ``pytest_derivs``
(checking they come from the venv) and runs a user's pytest suite that uses the plugin's
fixtures and the strategies.

NOTE: by default the test extra's dependencies (torch, Hypothesis, pytest, numpy, xdist)
come from the running environment through an overlay of symlinks that pip sees as
installed: reinstalling the 1 GB torch wheel took 5 min 24 s on the shared 2-core machine.
``DERIVS_WHEEL_TEST_FULL=1`` installs them for real (``torch==2.13.0`` from pip's
configured index). Deselect with ``-m "not wheel"``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "derivs", "strategies", "pytest_derivs")

pytestmark = pytest.mark.wheel


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, src / name)
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp / "dist",
        src,
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("derivs-*.whl")
    return wheel


def overlay(tmp: Path) -> Path:
    """The running environment's packages, derivs excepted, as symlinks in one directory."""
    view = tmp / "overlay"
    view.mkdir()
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            if (
                "derivs" in entry.name
                or entry.name.endswith(".pth")
                or (view / entry.name).exists()
            ):
                continue
            (view / entry.name).symlink_to(entry)
    return view


USERS_TEST = """
import sys
from pathlib import Path

import derivs.strategies as ds
import pytest_derivs
from hypothesis import HealthCheck, given, settings


def test_installed_not_from_the_repository(derivs_impl):
    prefix = Path(sys.prefix).resolve()
    for module in (ds, pytest_derivs, sys.modules["derivs.conformance"]):
        assert prefix in Path(module.__file__).resolve().parents, module.__file__
    assert derivs_impl.name == "derivs"


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(ds.problems(ds.functions(max_elements=6), device="cpu"))
def test_a_property_with_the_installed_strategies(derivs_impl, problem):
    jac = derivs_impl.jacobian(problem.func, method="rev")(*problem.args)
    assert jac.shape == (*problem.func.out_shape, *problem.func.in_shapes[0])
"""


def test_wheel_installs_strategies_and_plugin(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    # NOTE: without its own pip and setuptools (the bundled setuptools is older than torch
    # requires); the running pip installs into it with --python.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", str(python), "install", "-q")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DERIVS_", "PYTEST_", "VIRTUAL_ENV"))
    }
    env.pop("PYTHONPATH", None)
    if os.environ.get("DERIVS_WHEEL_TEST_FULL"):
        run(*pip, "torch==2.13.0", f"{wheel}[test]", cwd=tmp_path, env=env)
    else:
        purelib = run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        )
        Path(purelib.strip(), "overlay.pth").write_text(f"{overlay(tmp_path)}\n")
        run(*pip, "--no-index", f"{wheel}[test]", cwd=tmp_path, env=env)
    user = tmp_path / "user_project"
    user.mkdir()
    (user / "pytest.ini").write_text("[pytest]\n")
    (user / "test_user.py").write_text(textwrap.dedent(USERS_TEST))
    probe = "import importlib.util as u; print(u.find_spec('strategies'))"
    assert run(python, "-c", probe, cwd=user, env=env).strip() == "None"  # no top-level copy
    out = run(
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--impl",
        "derivs",
        cwd=user,
        env=env,
    )
    assert "2 passed" in out, out
