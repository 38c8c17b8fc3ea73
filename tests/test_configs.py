"""The shipped launch configs and the pipeline file agree with what the code expects."""

import json
from pathlib import Path

import yaml
from accelerate.commands.config.config_args import load_config_from_file

from sena_cli.config import load_params

REPO = Path(__file__).resolve().parents[1]


def test_accelerate_configs_load_and_leave_counts_and_batches_to_the_run():
    for name, kind, stage in (("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3)):
        config = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
        assert config.distributed_type.value == kind
        assert config.num_processes == -1  # no GPU count in the file: --num_processes decides
        if stage:
            ds = json.loads((REPO / config.deepspeed_config["deepspeed_config_file"]).read_text())
            assert ds["zero_optimization"]["stage"] == stage
            # Batch sizes, accumulation, clipping and precision come from params.yaml via the Trainer.
            for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                        "gradient_clipping"):
                assert ds[key] == "auto", key


def test_dvc_iterations_match_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    iterations = load_params(REPO / "params.yaml").loop.iterations
    for name in ("sample", "noise", "qa", "pair", "train"):
        keys = stages[name]["foreach"]
        assert sorted(int(k) for k in keys) == list(range(1, iterations + 1)), name
        assert all(v["prev"] == int(k) - 1 for k, v in keys.items()), name
    assert stages["eval"]["foreach"] == list(range(iterations + 1))
