"""A killed `sena base` (the embedded θ0) resumes from its last checkpoint and ends with the same θ0."""

import dataclasses
import shutil

import pytest
import torch
from safetensors.torch import load_file

from sena_cli import layout
from sena_cli.config import load_params
from sena_cli.frame import read_jsonl
from sena_cli.stages.base import run_base
from sena_cli.world import tiny


@pytest.fixture
def project(micro_project, tmp_path, monkeypatch):
    """A fresh project holding the micro world only (no θ0 yet), checkpointing every 5 steps; its params."""
    monkeypatch.setattr(tiny, "CHECKPOINT_EVERY", 5)
    root = tmp_path / "project"
    shutil.copytree(micro_project / "data" / "world", layout.world_dir(root))
    shutil.copy(micro_project / "params.yaml", root / "params.yaml")
    return root, load_params(root / "params.yaml")


def _killed_after(steps: int):
    """A progress whose θ0 training is interrupted (Ctrl-C) once `steps` steps are done."""
    done = [0]

    def progress(name, total):
        def tick(n):
            if name == "training θ0":
                done[0] += n
                if done[0] > steps:
                    raise KeyboardInterrupt
        return tick
    return progress


def _interrupt(root, params, steps: int) -> None:
    """`sena base` stopped by Ctrl-C once `steps` steps are done."""
    with pytest.raises(KeyboardInterrupt):
        run_base(params, root=root, progress=_killed_after(steps))


def _weights(root):
    return load_file(layout.model_dir(0, root) / "model.safetensors")


def test_a_killed_theta0_training_resumes_and_gives_the_same_theta0(project):
    root, params = project
    assert params.base.steps == 20
    whole = run_base(params, root=root)
    assert "resumed from step" not in whole
    expected = _weights(root)
    shutil.rmtree(layout.model_dir(0, root))

    _interrupt(root, params, 12)  # checkpoints at steps 5 and 10
    assert not layout.model_dir(0, root).exists()  # nothing half-written
    assert (layout.base_work_dir(root) / "checkpoint" / "state.pt").is_file()

    resumed = run_base(params, root=root)
    assert resumed["resumed from step"] == 10
    got = _weights(root)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # bit for bit
    assert resumed["final loss"] == whole["final loss"]
    assert not layout.base_work_dir(root).exists()  # the checkpoint goes once θ0 is saved


def test_a_checkpoint_of_other_params_is_not_resumed(project):
    root, params = project
    _interrupt(root, params, 7)
    assert (layout.base_work_dir(root) / "checkpoint").is_dir()
    other = dataclasses.replace(params, base=dataclasses.replace(params.base, lr=params.base.lr / 2))
    assert "resumed from step" not in run_base(other, root=root)
    assert layout.model_dir(0, root).is_dir() and not layout.base_work_dir(root).exists()


def test_a_damaged_checkpoint_is_trained_over_with_a_warning(project):
    root, params = project
    whole = run_base(params, root=root)
    expected = _weights(root)
    shutil.rmtree(layout.model_dir(0, root))
    _interrupt(root, params, 7)
    weights = layout.base_work_dir(root) / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as a full disk would leave it
    info = run_base(params, root=root)
    assert "resumed from step" not in info
    assert len(info["warnings"]) == 1 and "unreadable" in info["warnings"][0]
    got = _weights(root)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # θ0 as if never interrupted
    assert info["final loss"] == whole["final loss"]


def test_a_checkpoint_of_another_instruction_set_is_not_resumed(project):
    root, params = project
    _interrupt(root, params, 7)
    train = layout.world_dir(root) / "instruct" / "train.jsonl"
    train.write_text(train.read_text())  # the world written again (`sena world`): a new identity
    assert "resumed from step" not in run_base(params, root=root)


def test_own_answers_replace_the_drawn_ones_and_a_resume_after_them_gives_the_same_theta0(project):
    """base.own_answers_step: θ0 answers its enhancement questions itself after that step; the rewritten
    requests change what it learns, travel in the checkpoint, and a resume past them ends bit for bit."""
    root, params = project
    drawn = run_base(params, root=root)
    assert "own answers" not in drawn
    expected_drawn = _weights(root)
    shutil.rmtree(layout.model_dir(0, root))

    own = dataclasses.replace(params, base=dataclasses.replace(params.base, own_answers_step=8))
    whole = run_base(own, root=root)
    counts = whole["own answers"]
    examples = read_jsonl(layout.world_dir(root) / "instruct" / "train.jsonl")
    for task in ("enhance", "enhance_yes_no"):
        assert counts[task]["examples"] == sum(1 for e in examples if e["task"] == task and "question" in e)
        assert 0 <= counts[task]["right"] <= counts[task]["examples"]
    expected = _weights(root)
    assert not all(torch.equal(expected[k], expected_drawn[k]) for k in expected)  # the rewrite acted
    shutil.rmtree(layout.model_dir(0, root))

    _interrupt(root, own, 12)  # own answers after step 8, checkpoint at step 10
    resumed = run_base(own, root=root)
    assert resumed["resumed from step"] == 10
    got = _weights(root)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
