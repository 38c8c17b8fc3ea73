import subprocess
import sys

from typer.testing import CliRunner

from sena_cli.cli import app

runner = CliRunner()


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sample", "noise", "qa", "pair", "train", "eval", "world", "base"):
        assert command in result.output


def test_train_without_pairs_is_one_line_naming_the_missing_file(tmp_path):
    from tests.conftest import full_params_yaml

    (tmp_path / "params.yaml").write_text(full_params_yaml({}))
    proc = subprocess.run([sys.executable, "-m", "sena_cli", "train", "--iter", "1"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data/iter1/pairs/pairs.jsonl: missing" in lines[0], proc.stderr


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
