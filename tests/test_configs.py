"""The shipped launch configs and the pipeline file agree with what the code expects."""

import json
from pathlib import Path

import pytest
import torch.distributed.run as torchrun
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import _filter_args, prepare_deepspeed_cmd_env, prepare_multi_gpu_env

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


def test_zero_configs_launch_standard_multinode_and_zero3_inits_sharded():
    for name, init in (("zero2", False), ("zero3", True)):
        ds = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml")).deepspeed_config
        assert ds["deepspeed_multinode_launcher"] == "standard", name  # accelerate's default is pdsh
        assert ds["zero3_init_flag"] is init, name


def _dry_launch(config_file: Path, log_dir: Path) -> tuple[list[str] | None, dict, object]:
    """What `accelerate launch --num_machines 2 --num_processes 16` on machine 1 would start, without starting it:
    accelerate's own argument resolution, then torchrun's launch config (no network is touched)."""
    argv = ["--config_file", str(config_file), "--num_machines", "2", "--num_processes", "16", "--machine_rank", "1",
            "--main_process_ip", "127.0.0.1", "-m", "sena_cli", "train", "--iter", "1"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        deepspeed_cmd, env = prepare_deepspeed_cmd_env(args)
    else:
        deepspeed_cmd, env = None, prepare_multi_gpu_env(args)
    script = ["--training_script", args.training_script, "--training_script_args", args.training_script_args]
    targs = _filter_args(args, torchrun.get_args_parser(), script)
    targs.log_dir = str(log_dir)
    launch, _, _ = torchrun.config_from_args(targs)
    return deepspeed_cmd, env, launch


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_two_machines_form_one_torchrun_job(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's config would set it in this process otherwise
    deepspeed_cmd, env, launch = _dry_launch(REPO / "configs" / "accelerate" / f"{name}.yaml", tmp_path)
    assert deepspeed_cmd is None  # not the pdsh `deepspeed --hostfile` launcher: each machine runs torchrun
    assert (launch.min_nodes, launch.max_nodes, launch.nproc_per_node) == (2, 2, 8)
    assert launch.rdzv_backend == "static" and launch.rdzv_endpoint == "127.0.0.1:29500"
    assert launch.rdzv_configs["rank"] == 1
    if name == "zero3":
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"


def test_without_the_standard_launcher_two_machines_would_go_through_pdsh(tmp_path, monkeypatch):
    """The check above can fail: accelerate's default multi-node launcher starts a separate pdsh job."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = yaml.safe_load((REPO / "configs" / "accelerate" / "zero2.yaml").read_text())
    del config["deepspeed_config"]["deepspeed_multinode_launcher"]
    config["deepspeed_config"]["deepspeed_config_file"] = str(REPO / "configs" / "deepspeed" / "zero2.json")
    (tmp_path / "zero2.yaml").write_text(yaml.safe_dump(config))
    deepspeed_cmd, _, _ = _dry_launch(tmp_path / "zero2.yaml", tmp_path)
    assert deepspeed_cmd[:2] == ["deepspeed", "--hostfile"]


def test_dvc_iterations_match_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    iterations = load_params(REPO / "params.yaml").loop.iterations
    for name in ("sample", "noise", "qa", "pair", "train"):
        keys = stages[name]["foreach"]
        assert sorted(int(k) for k in keys) == list(range(1, iterations + 1)), name
        assert all(v["prev"] == int(k) - 1 for k, v in keys.items()), name
    assert stages["eval"]["foreach"] == list(range(iterations + 1))
