"""launch.<stage>: a stage reruns itself under its launcher; a stage run by hand is recorded in dvc.lock.

The relaunch's command line and when it happens (no torch); a fake launcher script that records how
it was invoked, through the command line; and (slow) a DVC project on the micro world where stages
run by hand, one under a launcher, leave `dvc repro` nothing to rerun, and `dvc repro` itself runs a
stage under its launcher.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sena_cli import launch
from sena_cli.cli import app
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_fixtures.micro import full_params_yaml, micro_dict

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _params(**launchers):
    return params_from_dict({"launch": launchers})


# ---------------------------------------------------------------- the command line of a relaunch


def test_the_relaunch_is_the_launcher_then_the_same_command():
    words = launch.launcher(_params(qa="torchrun --nproc_per_node 8"), "qa")
    assert launch.relaunch_argv(words, "qa", 2) == [
        "torchrun", "--nproc_per_node", "8", "-m", "sena_cli", "qa", "--iter", "2"]
    words = launch.launcher(_params(train='accelerate launch --config_file "my configs/zero3.yaml"'), "train")
    assert launch.relaunch_argv(words, "train", 1, "other.yaml", debug=True) == [
        "accelerate", "launch", "--config_file", "my configs/zero3.yaml",
        "-m", "sena_cli", "--params", "other.yaml", "--debug", "train", "--iter", "1"]


def test_no_launcher_and_stages_without_one_run_in_this_process():
    params = _params(qa="torchrun --nproc_per_node 8")
    assert launch.launcher(params, "pair") == [] and launch.launcher(params, "eval") == []
    assert launch.launcher(params, "noise") == []  # sample and noise are one process: no launch key
    assert launch.relaunch(_params(), "qa", 1) is None


def test_a_launcher_with_unbalanced_quotes_is_one_line_naming_the_key():
    with pytest.raises(SenaError, match=r"^launch.eval: cannot split .*fix its quotes in params.yaml"):
        launch.launcher(_params(eval='torchrun --rdzv_endpoint "host:29500'), "eval")


def test_inside_a_launch_a_stage_never_relaunches():
    assert not launch.inside_launch({})
    assert launch.inside_launch({"WORLD_SIZE": "8"})  # torchrun / accelerate started this process
    assert launch.inside_launch({"SENA_LAUNCHED": "1"})  # a launcher that sets no WORLD_SIZE cannot loop


def test_only_a_hand_run_on_rank_0_is_recorded():
    assert launch.should_record({})
    assert launch.should_record({"RANK": "0", "WORLD_SIZE": "2"})  # `torchrun … -m sena_cli qa` by hand
    assert not launch.should_record({"RANK": "1", "WORLD_SIZE": "2"})
    assert not launch.should_record({"DVC_STAGE": "qa@1"})  # dvc repro records its stages itself
    assert not launch.should_record({"SENA_LAUNCHED": "1"})  # the process that launched records once


def test_the_launch_keys_are_tracked_by_no_stage():
    """The launcher changes how many processes do the work, not the outputs: no stage reruns for it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, block in stages.items():
        body = block.get("do", block)
        assert not [k for k in body.get("params", []) if str(k).startswith("launch")], name
        assert "launch" not in body["cmd"], name


# ---------------------------------------------------------------- a fake launcher through the command line


def _fake_launcher(folder: Path, status: int = 0, run: bool = False) -> Path:
    """A launcher script that appends `DVC_STAGE|SENA_LAUNCHED|its arguments` to folder/launched.log,
    then exits with `status`, or (run) runs its arguments with this Python, as torchrun would."""
    script = folder / "fake-launcher"
    log = folder / "launched.log"
    tail = f'exec {shlex.quote(sys.executable)} "$@"' if run else f"exit {status}"
    script.write_text(f'#!/bin/sh\necho "$DVC_STAGE|$SENA_LAUNCHED|$*" >> {shlex.quote(str(log))}\n{tail}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _launched(folder: Path) -> list[str]:
    log = folder / "launched.log"
    return log.read_text().splitlines() if log.is_file() else []


def test_sena_qa_runs_under_the_launcher_given(tmp_path, monkeypatch):
    script = _fake_launcher(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"launch": {"qa": f"{script} --nproc_per_node 3"}}))
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "SENA_LAUNCHED", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["qa", "--iter", "2"])
    assert result.exit_code == 0, result.output
    assert _launched(tmp_path) == ["|1|--nproc_per_node 3 -m sena_cli qa --iter 2"]


def test_a_failed_launch_exits_with_its_status_in_one_line(tmp_path, monkeypatch):
    script = _fake_launcher(tmp_path, status=3)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"launch": {"pair": str(script)}}))
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "SENA_LAUNCHED", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["--params", "p.yaml", "pair", "--iter", "1"])
    assert result.exit_code == 3
    assert _launched(tmp_path) == ["|1|-m sena_cli --params p.yaml pair --iter 1"]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "launch.pair" in lines[0] and "exited with status 3" in lines[0], result.output


def test_a_launcher_that_cannot_start_is_one_line_naming_the_key(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"launch": {"eval": "no-such-launcher-xyz -n 2"}}))
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "SENA_LAUNCHED", "DVC_STAGE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["eval", "--iter", "1"])
    assert result.exit_code == 1
    assert "launch.eval: cannot start 'no-such-launcher-xyz'" in result.output, result.output


def test_inside_a_launch_the_launcher_is_not_run_again(tmp_path, monkeypatch):
    script = _fake_launcher(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"launch": {"qa": str(script)}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SENA_LAUNCHED", "1")
    result = runner.invoke(app, ["qa", "--iter", "1"])  # runs qa here, which finds no sample
    assert _launched(tmp_path) == []
    assert result.exit_code == 1 and "data/iter1/sample" in result.output, result.output


def test_a_failed_record_warns_with_the_command_to_run(tmp_path, monkeypatch):
    """A folder that looks like a DVC project but is not one: `dvc commit` fails, the warning says what to run."""
    (tmp_path / ".dvc").mkdir()
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(full_params_yaml({}))
    for name in ("DVC_STAGE", "SENA_LAUNCHED", "RANK"):
        monkeypatch.delenv(name, raising=False)
    warning = launch.record_hand_run("qa", 1, tmp_path)
    assert warning is not None and warning.startswith("qa@1 not recorded in dvc.lock (")
    assert "run `dvc commit --force qa@1`" in warning
    assert launch.record_hand_run("qa", 9, tmp_path) is None  # not a stage of this dvc.yaml: nothing to record
    other = launch.record_hand_run("qa", 1, tmp_path, params_file=tmp_path / "other.yaml")
    assert other is not None and "it ran with" in other and "DVC tracks params.yaml" in other
    assert launch.record_hand_run("qa", 1, tmp_path / "elsewhere") is None  # not a DVC project


def test_a_hand_run_that_cannot_be_recorded_says_so_in_one_yellow_line(tmp_path, monkeypatch):
    script = _fake_launcher(tmp_path)
    (tmp_path / ".dvc").mkdir()  # looks like a DVC project, is none: `dvc commit` fails
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(full_params_yaml({"launch": {"qa": str(script)}}))
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "SENA_LAUNCHED", "DVC_STAGE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["qa", "--iter", "1"])
    assert result.exit_code == 0, result.output  # the stage's work stands
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: qa@1 not recorded in dvc.lock ("), result.output
    assert lines[0].endswith("run `dvc commit --force qa@1` or `dvc repro` will run it again"), result.output


# ---------------------------------------------------------------- hand runs, launches and dvc repro (slow)


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in _env().items() if k not in ("WORLD_SIZE", "RANK", "SENA_LAUNCHED", "DVC_STAGE")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _sena(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "sena_cli", *args], cwd)


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def test_stages_run_by_hand_and_under_a_launcher_leave_dvc_repro_nothing_to_rerun(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "sena_cli", root / "sena_cli", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    script = _fake_launcher(tmp_path, run=True)
    d = micro_dict()
    d["launch"] = {"qa": str(script), "pair": str(script)}
    (root / "params.yaml").write_text(full_params_yaml(d))
    _dvc("init", "--no-scm", "-q", cwd=root)
    _dvc("repro", "sample@1", "base", cwd=root)  # code, world, pool, sample@1, base

    _sena("noise", "--iter", "1", cwd=root)  # by hand, one process
    _sena("qa", "--iter", "1", cwd=root)  # by hand, under launch.qa
    assert _launched(tmp_path) == ["|1|-m sena_cli qa --iter 1"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert {"noise@1", "qa@1"} <= set(lock)
    assert set(json.loads(_dvc("status", "--json", "qa@1", cwd=root))) <= {"pool"}  # pool: always changed
    assert _ran(_dvc("repro", "qa@1", cwd=root)) == {"pool"}

    # dvc repro runs pair@1 under launch.pair; DVC_STAGE is how the launched stage knows not to record
    assert "pair@1" in _ran(_dvc("repro", "pair@1", cwd=root))
    assert _launched(tmp_path)[1:] == ["pair@1|1|-m sena_cli pair --iter 1"]
    assert (root / "data/iter1/pairs/pairs.jsonl").is_file()

    # another launcher (1 GPU -> 8) reruns nothing: the launch keys are not tracked
    d["launch"] = {"qa": "", "pair": f"{script} --nproc_per_node 8"}
    (root / "params.yaml").write_text(full_params_yaml(d))
    assert _ran(_dvc("repro", "pair@1", cwd=root)) == {"pool"}
    assert len(_launched(tmp_path)) == 2


def test_a_real_torchrun_launcher_runs_qa_on_two_processes_as_one_would(micro_project, micro_dict, tmp_path):
    """launch.qa = torchrun with 2 processes (CPU, gloo): `sena qa` reruns itself under it, the ranks
    share the chunks, and the records are byte-identical to one process's (this is qa's two-process test)."""
    import socket

    from sena_cli.stages.qa import run_qa
    from tests.stages.test_qa import _noised_project

    project, params = _noised_project(micro_project, micro_dict, tmp_path / "p", images=8, batch_size=2)
    single = shutil.copytree(project, tmp_path / "single")
    run_qa(params, 1, root=single)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = yaml.safe_load((project / "params.yaml").read_text())
    d["launch"]["qa"] = (f"{shlex.quote(sys.executable)} -m torch.distributed.run --nproc_per_node 2 "
                         f"--master_addr 127.0.0.1 --master_port {port}")
    (project / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    out = _sena("qa", "--iter", "1", cwd=project)
    records = "data/iter1/qa/records.jsonl"
    assert (project / records).read_bytes() == (single / records).read_bytes()
    assert out.count("chunks run now") == 2, out[-3000:]  # each rank's summary: two processes ran
