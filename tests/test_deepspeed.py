"""`sena train` under DeepSpeed ZeRO-2 and ZeRO-3 on CPU, two processes, against one process.

What `accelerate launch --config_file configs/accelerate/zero{2,3}.yaml` sets (ACCELERATE_USE_DEEPSPEED
and the JSON file) with DS_ACCELERATOR=cpu and gloo. With train.precision bf16, `sena pair` computes
the reference log-probs under fp32 weights + bf16 autocast and `sena train` configures DeepSpeed's
torch_autocast the same way (stages/train.py deepspeed_config), so:
- step 0's log-ratios are exactly 0 in one process and under ZeRO-2, and within 1e-3 under ZeRO-3
  (DPO loss ln 2, rewards 0);
- ZeRO-2 and ZeRO-3 follow one process's loss curve (the same global batches: one process accumulates
  two micro-batches), and ZeRO-3 loads the weights already sharded.
The reference is one process rather than DDP under torchrun: plain DDP trains what one process trains
(tests/stages/test_train.py::test_two_processes_train_what_one_trains), and a third two-rank launch made
this test 108 s under `pytest -n 2` instead of 45 s (2026-12-04).
DeepSpeed's own bf16 mode (16-bit weights) would not give 0 (measured in docs/models.md).

Needs the `deepspeed` package (make setup installs it: `pip install --no-build-isolation deepspeed==0.19.8`)
and a C++ compiler (its CPU accelerator builds a shared-memory op on first use).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from sena_cli.artifacts import write_jsonl
from sena_cli.config import params_from_dict
from tests.conftest import full_params_yaml
from tests.helpers import project_from, torchrun, write_manifest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow"]


def _paired(micro_project, micro_dict, root: Path) -> Path:
    from sena_cli.stages.pair import run_pair

    d = {**micro_dict, "pair": {"batch_size": 4},
         "train": {"global_batch_size": 4, "per_device_batch_size": 2, "lr": 1e-3, "checkpoint_steps": 0,
                   "precision": "bf16", "epochs": 2.0}}
    project_from(micro_project, root)
    (root / "params.yaml").write_text(full_params_yaml(d))
    images = [f"data/world/pool/{i:05d}.png" for i in range(8)]
    write_jsonl(root / "data/iter1/qa/records.jsonl", [
        {"id": str(i), "image": image, "type": "des" if i % 2 else "gen",
         "prompt": "Describe the image concisely." if i % 2 else "What color is the circle?",
         "enhanced_answer": f"A {COLOURS[i % 4]} circle." if i % 2 else COLOURS[i % 4],
         "corrupted_answer": f"A {COLOURS[(i + 1) % 4]} cross." if i % 2 else COLOURS[(i + 2) % 4]}
        for i, image in enumerate(images)])
    write_manifest(root, 1, images)
    run_pair(params_from_dict(d), 1, root=root)
    return root


def _curve(project: Path) -> dict:
    summary = json.loads((project / "data/iter1/train/summary.json").read_text())
    with open(project / "data/iter1/train/live/plots/metrics/dpo_loss.tsv", newline="") as f:
        summary["curve"] = [float(r["dpo_loss"]) for r in csv.DictReader(f, delimiter="\t")]
    return summary


def _zero(project: Path, zero: int) -> dict:
    env = {"DS_ACCELERATOR": "cpu", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
           "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / f"configs/deepspeed/zero{zero}.json")}
    proc = torchrun("-m", "sena_cli", "train", "--iter", "1", cwd=project, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"sharded_at_load": "weights sharded at load" in proc.stdout} | _curve(project)


def _one_process(project: Path) -> dict:
    from sena_cli.config import for_iteration, load_params
    from sena_cli.stages.train import run_train

    run_train(for_iteration(load_params(project / "params.yaml"), 1), 1, root=project)
    return _curve(project)


def test_zero2_and_zero3_start_at_log_ratio_zero_and_follow_one_process(micro_project, micro_dict, tmp_path):
    base = _paired(micro_project, micro_dict, tmp_path / "base")
    one = _one_process(shutil.copytree(base, tmp_path / "one", symlinks=True))
    assert one["processes"] == 1 and one["gradient_accumulation"] == 2 and one["steps"] == 4
    zero = {z: _zero(shutil.copytree(base, tmp_path / f"zero{z}", symlinks=True), z) for z in (2, 3)}
    for z, run in zero.items():
        assert run["processes"] == 2 and run["gradient_accumulation"] == 1 and run["steps"] == 4, z
        assert run["sharded_at_load"] is (z == 3), z  # the training config exists before the model
    # Step 0: the policy is θ0 and the stored reference is θ0 in the same regime: log-ratio 0, exactly
    # in one process and under ZeRO-2; ZeRO-3's gathered forward differs by ~1e-3 nats (rewards =
    # β·log-ratio ~1e-4), where DeepSpeed's bf16 mode differs by ~0.07 nats (docs/models.md).
    for run in (one, zero[2]):
        assert run["first"]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-7)
        assert run["first"]["reward_chosen"] == 0.0 and run["first"]["reward_rejected"] == 0.0
    first = zero[3]["first"]
    assert first["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(first["reward_chosen"]) < 1e-3 and abs(first["reward_rejected"]) < 1e-3
    assert one["curve"][-1] < one["curve"][0] - 0.01  # it trains
    for z, run in zero.items():
        assert run["curve"] == pytest.approx(one["curve"], abs=5e-4), z
