"""SIGKILL to real `sena` processes in the middle of long work; the rerun resumes from what was
flushed (qa: tests/stages/test_qa.py) and writes the same outputs as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sena_cli.artifacts import write_jsonl
from sena_cli.config import params_from_dict
from sena_cli.stages.eval import run_eval
from sena_cli.stages.pair import run_pair
from sena_cli.stages.train import _complete_state, run_train
from tests.conftest import full_params_yaml
from tests.helpers import project_from, write_manifest

pytestmark = pytest.mark.slow


def _project(micro_project, root, d, n_pairs=12):
    project_from(micro_project, root)
    (root / "params.yaml").write_text(full_params_yaml(d))
    colours = ["red", "green", "blue", "yellow"]
    write_jsonl(root / "data/iter1/qa/records.jsonl", [{
        "id": str(i), "image": f"data/world/pool/{i:05d}.png", "type": "des" if i % 3 == 0 else "gen",
        "prompt": "What color is the circle?", "enhanced_answer": colours[i % 4],
        "corrupted_answer": colours[(i + 1) % 4]} for i in range(n_pairs)])
    write_manifest(root, 1, [f"data/world/pool/{i:05d}.png" for i in range(n_pairs)])
    return root


def _kill_when(project, args, ready, timeout=120):
    """Start `sena ARGS`, SIGKILL it as soon as ready() is true; return nothing (asserts it was killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sena_cli", *args], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    assert proc.poll() is None, "the process finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _lines(path):
    return [ln for ln in path.read_text().splitlines() if ln.endswith("}")] if path.exists() else []


def test_killed_pair_resumes_from_its_journal(micro_project, micro_dict, tmp_path):
    d = {**micro_dict, "pair": {"batch_size": 1}}
    params = params_from_dict(d)
    reference = _project(micro_project, tmp_path / "ref", d)
    run_pair(params, 1, root=reference)
    project = _project(micro_project, tmp_path / "p", d)
    journal = project / "data/iter1/pairs.partial/rank0.jsonl"
    _kill_when(project, ["pair", "--iter", "1"], lambda: len(_lines(journal)) >= 3)
    finished = len(_lines(journal))
    assert not (project / "data/iter1/pairs").exists()  # nothing published half-way
    info = run_pair(params, 1, root=project)
    assert info["batches run now"] == 12 - finished  # records redone after resume: 0
    out = "data/iter1/pairs/pairs.jsonl"
    assert (project / out).read_bytes() == (reference / out).read_bytes()


def test_killed_train_resumes_from_its_last_checkpoint(micro_project, micro_dict, tmp_path):
    d = {**micro_dict, "train": {"global_batch_size": 2, "per_device_batch_size": 2, "lr": 1e-3,
                                 "checkpoint_steps": 1}}
    params = params_from_dict(d)
    reference = _project(micro_project, tmp_path / "ref", d)
    run_pair(params, 1, root=reference)
    run_train(params, 1, root=reference)
    project = _project(micro_project, tmp_path / "p", d)
    run_pair(params, 1, root=project)
    checkpoints = project / "data/iter1/train.partial/checkpoints"
    _kill_when(project, ["train", "--iter", "1"],
               lambda: any(_complete_state(c / "trainer_state.json") and int(c.name.split("-")[1]) >= 2
                           for c in checkpoints.glob("checkpoint-*")))  # written whole, not just begun
    assert not (project / "models/iter1").exists()
    info = run_train(params, 1, root=project)
    assert 2 <= info["resumed from step"] < 6
    assert info["steps"] == 6
    ours = load_file(project / "models/iter1/model.safetensors")
    theirs = load_file(reference / "models/iter1/model.safetensors")
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)  # same θ1 as without the kill


def test_killed_eval_resumes_at_the_first_unanswered_batch(micro_project, micro_dict, tmp_path):
    import json

    d = {**micro_dict, "eval": {**micro_dict["eval"], "batch_size": 1}}
    params = params_from_dict(d)
    reference = _project(micro_project, tmp_path / "ref", d)
    batches = run_eval(params, 0, root=reference)["batches run now"]
    project = _project(micro_project, tmp_path / "p", d)
    journal = project / "data/iter0/eval.partial/rank0.jsonl"

    def chunks():
        return [json.loads(line)["chunk"] for line in _lines(journal)]

    _kill_when(project, ["eval", "--iter", "0"], lambda: any(c.startswith("benchmark:") for c in chunks()))
    finished = [c for c in chunks() if c.startswith("benchmark:")]
    answered = [c for c in chunks() if not c.startswith("benchmark:")]
    assert not (project / "metrics/iter0.json").exists()
    info = run_eval(params, 0, root=project)
    assert info["benchmarks run now"] == 4 - len(finished)
    assert info["batches run now"] == batches - len(answered)  # no answered batch asked again
    for out in ("metrics/iter0.json", "data/iter0/eval/answers.jsonl"):
        assert (project / out).read_bytes() == (reference / out).read_bytes()
    assert not (project / "data/iter0/eval.partial").exists()


def test_killed_base_resumes_from_its_last_checkpoint(micro_project, micro_dict, tmp_path):
    """The embedded θ0 (`sena base`): a checkpoint every tiny.CHECKPOINT_EVERY (100) steps."""
    import shutil

    from sena_cli import layout
    from sena_cli.stages.base import run_base
    from sena_cli.world import tiny

    d = {**micro_dict, "base": {**micro_dict["base"], "steps": tiny.CHECKPOINT_EVERY + 20}}
    params = params_from_dict(d)
    projects = []
    for name in ("ref", "p"):
        root = tmp_path / name
        shutil.copytree(micro_project / "data" / "world", layout.world_dir(root))
        (root / "params.yaml").write_text(full_params_yaml(d))
        projects.append(root)
    reference, project = projects
    run_base(params, root=reference)
    state = layout.base_work_dir(project) / "checkpoint" / "state.pt"
    _kill_when(project, ["base"], state.is_file)
    assert not layout.model_dir(0, project).exists()  # nothing published half-way
    info = run_base(params, root=project)
    assert info["resumed from step"] == tiny.CHECKPOINT_EVERY
    ours = load_file(layout.model_dir(0, project) / "model.safetensors")
    theirs = load_file(layout.model_dir(0, reference) / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # the same θ0 as without the kill
    assert not layout.base_work_dir(project).exists()
