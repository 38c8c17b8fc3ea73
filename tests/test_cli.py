import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sena_cli.cli import app

runner = CliRunner()


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sample", "noise", "qa", "pair", "train", "eval", "world", "base"):
        assert command in result.output


@pytest.mark.parametrize("stage", ["train"])
def test_unfinished_stages_exit_2(stage):
    result = runner.invoke(app, [stage, "--iter", "1"])
    assert result.exit_code == 2
    assert "not implemented yet" in result.output


def test_bad_params_give_one_red_line_without_traceback(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  lr: fast\n")
    proc = subprocess.run([sys.executable, "-m", "sena_cli", "--params", str(params), "world"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'train.lr'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sena_cli", "--debug", "--params", str(tmp_path / "x.yaml"), "world"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "params file not found" in proc.stderr
