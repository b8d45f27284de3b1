"""``python -m derivs check``: file targets, the input domain, --mode, and the unverified exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from derivs.__main__ import EXIT_PASS, EXIT_UNVERIFIED, EXIT_USAGE, main

MODEL = """
import torch
from helper import scale


def loss(x):
    return (scale * x).sin().sum()


def log_sum(x):
    return x.log().sum()
"""


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A file importing a neighbour, as a user's script would."""
    (tmp_path / "helper.py").write_text("scale = 0.5\n")
    path = tmp_path / "my_model.py"
    path.write_text(MODEL)
    return path


def test_file_target_runs_with_its_neighbours_importable(
    model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"{model_file}:loss", "--shape", "5", "--order", "1"]) == EXIT_PASS
    assert "verdict: PASS" in capsys.readouterr().out


def test_file_target_from_a_subprocess(model_file: Path) -> None:
    cmd = [sys.executable, "-m", "derivs", "check", f"{model_file}:loss", "--shape", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == EXIT_PASS, done.stderr
    assert "my_model" not in done.stderr


@pytest.mark.parametrize(
    "domain", [["--positive"], ["--low", "0.1", "--high", "3"]], ids=["positive", "low-high"]
)
def test_domain_options_keep_log_in_its_domain(
    model_file: Path, domain: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", f"{model_file}:log_sum", "--shape", "6", "--order", "1", *domain]
    assert main(argv) == EXIT_PASS, capsys.readouterr().out


def test_log_on_default_normal_inputs_is_not_a_pass(model_file: Path) -> None:
    """The reason the domain options exist: randn puts some inputs below 0."""
    argv = ["check", f"{model_file}:log_sum", "--shape", "6", "--order", "1"]
    assert main(argv) != EXIT_PASS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--low", "1"], "--low and --high go together"),
        (["--low", "2", "--high", "1"], "need finite LOW < HIGH"),
        (["--positive", "--high", "1"], "--positive or --low/--high, not both"),
    ],
    ids=["low-alone", "empty-interval", "positive-and-high"],
)
def test_bad_domain_is_a_usage_error(
    model_file: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"{model_file}:loss", "--shape", "3", *extra]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{tmp_path}/nope.py:f", "--shape", "3"]) == EXIT_USAGE
    assert "is not a file" in capsys.readouterr().err


def test_no_independent_oracle_is_unverified_not_a_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong backward checked only by rev-mode methods and the loop oracle (which share it)."""
    argv = [
        "check",
        "examples.check_examples:energy_wrong_backward",
        "--shape",
        "4",
        "--order",
        "1",
        "--methods",
        "rev",
        "--oracles",
        "loop",
    ]
    assert main(argv) == EXIT_UNVERIFIED
    assert "verdict: UNVERIFIED" in capsys.readouterr().out


def test_mode_projected(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", f"{model_file}:loss", "--shape", "40", "--order", "2", "--mode", "projected"]
    assert main(argv) == EXIT_PASS
    out = capsys.readouterr().out
    assert "mode=projected" in out
    assert "fd(dir)" in out


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "examples.check_examples:energy", "--shape", "4", "--mode", "sparse"])
    assert exc.value.code == EXIT_USAGE
