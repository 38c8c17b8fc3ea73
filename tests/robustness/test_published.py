"""Nothing unsound is published: a θ(K-1) with NaN weights, a diverged training, a NaN metric or a
record without its fields stop the stage in one line before the atomic rename, and what was there
before (a good θ1, the pairs, the metrics) stays byte-identical."""

import json
import shutil
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file, save_file

from sena_cli.errors import SenaError
from sena_cli.frame import QA_RECORD, publish
from sena_cli.stages import train as train_stage
from tests.robustness.helpers import fails, params_with, theta1

SMALL_TRAIN = {"train__global_batch_size": 2, "train__per_device_batch_size": 2, "train__checkpoint_steps": 0}


@contextmanager
def _nan_weights(model_dir):
    """One element of every floating tensor of the model set to NaN (a corrupt checkpoint), then put back."""
    weights = model_dir / "model.safetensors"
    saved = weights.read_bytes()
    tensors = load_file(weights)
    for t in tensors.values():
        if t.is_floating_point():
            t.view(-1)[0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    try:
        yield
    finally:
        weights.write_bytes(saved)


def test_pair_refuses_log_probs_that_are_not_finite(project, monkeypatch):
    with _nan_weights(project / "models/iter0"):
        out = fails(project, monkeypatch, ["pair", "--iter", "1"],
                    "models/iter0: θ0 gives log-probs that are not finite (nan, nan, nan, nan) for the pair of ")
    assert "check its weights, then rerun `sena pair --iter 1`" in out
    assert not (project / "data/iter1/pairs.partial").exists()  # nothing unsound journaled either


def test_a_diverged_training_publishes_no_theta(project, monkeypatch):
    """θ0 with NaN weights trains to a NaN loss: θ1 is not written, the good θ1 already there stays."""
    with theta1(project), _nan_weights(project / "models/iter0"):
        fails(project, monkeypatch, ["train", "--iter", "1"],
              "θ1 not written: training diverged (dpo_loss is nan at step 1); lower train.lr (2e-06) or train.beta "
              "(0.1), or check θ0 (models/iter0), and rerun `sena train --iter 1`; models/iter1 is left as it was",
              params_with(project, **SMALL_TRAIN))
    assert not (project / "data/iter1/train.partial").exists()


def test_weights_that_are_not_finite_are_refused_before_the_rename(project, monkeypatch):
    """A NaN that appears in the weights only (the logged losses are finite): checked on the written
    θ1, tensor by tensor, before it replaces models/iter1."""
    from sena_cli.vlm.dpo import SenaDPOTrainer

    train = SenaDPOTrainer.train

    def train_then_poison(self, *args, **kwargs):
        out = train(self, *args, **kwargs)
        with torch.no_grad():
            self.model.get_output_embeddings().weight.view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(SenaDPOTrainer, "train", train_then_poison)
    with theta1(project):
        fails(project, monkeypatch, ["train", "--iter", "1"],
              "θ1 not written: its weight language_model.lm_head.weight is not finite after training; lower "
              "train.lr (2e-06) or train.beta (0.1), or check θ0 (models/iter0), and rerun `sena train --iter 1`; "
              "models/iter1 is left as it was", params_with(project, **SMALL_TRAIN, train__evaluate_pairs=False))
    assert not (project / ".iter1.saving").exists() and not (project / "models/.iter1.saving").exists()


def test_a_metric_that_is_not_finite_is_not_written(project, monkeypatch):
    import sena_cli.bench.world as world_bench

    (project / "metrics").mkdir(exist_ok=True)
    (project / "metrics/iter0.json").write_text(json.dumps({"pope": {"random": {"f1": 0.5}}}))
    pope_metrics = world_bench.pope_metrics
    monkeypatch.setattr(world_bench, "pope_metrics", lambda *a: {**pope_metrics(*a), "f1": float("nan")})
    try:
        # The answers journaled in eval.partial are kept: a rerun after the fix reuses them.
        fails(project, monkeypatch, ["eval", "--iter", "0"],
              "metrics/iter0.json: 'pope.random.f1' must be a finite number or text, got NaN; not written; rerun "
              "with --debug and report which benchmark gave it",
              params_with(project, eval__benchmarks=["world_pope"]), allow=("data/iter0/eval.partial",))
    finally:
        shutil.rmtree(project / "metrics")
        shutil.rmtree(project / "data/iter0", ignore_errors=True)


def test_an_output_without_its_fields_is_not_published(tmp_path):
    folder = tmp_path / "data/iter1/qa"
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text("the good one\n")
    record = {"id": "a", "image": "a.png", "type": "gen", "prompt": "q", "enhanced_answer": "red",
              "corrupted_answer": None}
    with pytest.raises(SenaError) as err, publish(folder) as out:
        out.records(folder / "records.jsonl", [record], QA_RECORD)
    assert str(err.value) == (f"{folder}/records.jsonl: line 1: 'corrupted_answer' must be text, got null; not "
                              "published (the earlier version, if any, is kept); rerun with --debug and report it")
    assert (folder / "records.jsonl").read_text() == "the good one\n"
    assert [p.name for p in tmp_path.joinpath("data/iter1").iterdir()] == ["qa"]  # no temporary folder left


def test_the_training_summary_leaves_out_what_was_not_logged():
    """trl logs a metric as NaN or not at all (a diverged step): the summary and the table skip it."""
    history = [{"step": 1, "dpo_loss": 0.69, "alignment_loss": 0.2, "rewards/accuracies": 0.5, "loss": 0.9},
               {"step": 2, "dpo_loss": 0.5, "alignment_loss": float("nan"), "loss": 0.7}]
    summary = train_stage._summary(history, {"eval_dpo_loss": 0.4}, [{"type": "des"}], 2, 1, 1, 1.0)
    assert summary["first"] == {"dpo_loss": 0.69, "alignment_loss": 0.2, "reward_accuracy": 0.5, "loss": 0.9}
    assert summary["last"] == {"dpo_loss": 0.5, "loss": 0.7}
    rows = train_stage._rows(summary)
    assert rows["dpo_loss first→last"] == "0.6900 → 0.5000"
    assert "alignment_loss first→last" not in rows and "reward_accuracy on all pairs after" not in rows
