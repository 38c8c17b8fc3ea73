"""End-to-end smoke run of the DVC pipeline on a micro profile, in a temporary copy of the repo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import full_params_yaml

REPO = Path(__file__).resolve().parents[1]


def _dvc(args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_then_nothing(tmp_path, micro_dict):
    shutil.copytree(REPO / "sena_cli", tmp_path / "sena_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(full_params_yaml(micro_dict))
    _dvc(["init", "--no-scm", "-q"], tmp_path)
    out = _dvc(["repro"], tmp_path)
    for stage in ("world", "base", "eval@0", "sample@1", "noise@1", "qa@1", "pair@1"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((tmp_path / "metrics" / "iter0.json").read_text())
    assert set(metrics["pope"]) == {"random", "popular", "adversarial"}
    assert (tmp_path / "models" / "iter0" / "model.safetensors").is_file()
    assert (tmp_path / "data" / "iter1" / "pairs" / "pairs.jsonl").is_file()
    assert "Running stage" not in _dvc(["repro"], tmp_path)
    shown = _dvc(["metrics", "show", "--json"], tmp_path)
    assert "pope" in shown
