"""Peak host memory per rank while `sena train` starts under DeepSpeed ZeRO-3, up to the trainer's construction.

The issue this measures: a ZeRO-3 rank that loads the model before the training arguments exist holds the
whole fp32 model in host memory before DeepSpeed shards it. Two steps:

    python scripts/train_startup_memory.py make PROJECT [--hidden 1536 --layers 16]
        a project with the embedded micro world, iteration 1's pairs (made by the tiny θ0), then θ0
        replaced by a LLaVA of the same processor with wider, deeper random weights saved in float16
        (as llava-1.5-7b-hf ships); pair's tokenization check still holds, the weights are all that grew.

    DS_ACCELERATOR=cpu ACCELERATE_USE_DEEPSPEED=true ACCELERATE_DEEPSPEED_ZERO3_INIT=true \\
    ACCELERATE_DEEPSPEED_CONFIG_FILE=$REPO/configs/deepspeed/zero3.json OMP_NUM_THREADS=1 \\
    torchrun --nproc_per_node 2 scripts/train_startup_memory.py run PROJECT
        `sena train --iter 1` in PROJECT with the environment `accelerate launch --config_file
        configs/accelerate/zero3.yaml` gives its processes; each rank prints one line with its peak
        resident memory (ru_maxrss) before the weights load and when the trainer is about to be built,
        and whether the loaded parameters are ZeRO-3 partitions, then stops (training itself is not run).
        On a machine without GPUs DeepSpeed's CPU accelerator talks over gloo; accelerate starts
        DeepSpeed's communication itself only on GPUs, so this script starts it first.
        Point PYTHONPATH at the sena version to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _now_mb() -> dict:
    """Resident memory now: anonymous (the process's own) and file-backed (mapped weights files)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {f"{key.lower()}_now_mb": round(int(status[key].split()[0]) / 1024) for key in ("RssAnon", "RssFile")}


def make(project: Path, hidden: int, layers: int) -> None:
    import torch
    import yaml
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from sena_cli.artifacts import write_jsonl
    from sena_cli.config import params_from_dict, to_dict
    from sena_cli.stages.base import run_base
    from sena_cli.stages.pair import run_pair
    from sena_cli.world.build import build_world

    overrides = {"world": {"pool_images": 16, "instruct_images": 40, "instruct_examples_per_image": 2,
                           "eval": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4}},
                 "base": {"steps": 2, "batch_size": 4, "threads": 1, "vision_hidden": 32, "text_hidden": 32,
                          "text_intermediate": 64},
                 "train": {"global_batch_size": 2, "per_device_batch_size": 1, "checkpoint_steps": 0}}
    params = params_from_dict(overrides)
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
    build_world(params, project / "data" / "world")
    run_base(params, root=project)
    colours = ["red", "green", "blue", "yellow"]
    write_jsonl(project / "data/iter1/qa/records.jsonl", [
        {"id": str(i), "image": f"data/world/pool/{i:05d}.png", "type": "gen", "prompt": "What color is it?",
         "enhanced_answer": colours[i % 4], "corrupted_answer": colours[(i + 1) % 4]} for i in range(8)])
    run_pair(params, 1, root=project)

    model_dir = project / "models" / "iter0"
    config = LlavaConfig.from_pretrained(model_dir)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden, 4 * hidden, layers
    text.num_attention_heads = text.num_key_value_heads = hidden // 64
    text.head_dim = 64
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(torch.float16)
    for old in model_dir.glob("*.safetensors"):
        old.unlink()
    model.save_pretrained(model_dir)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"parameters": n, "fp32_gb": round(4 * n / 1e9, 3),
                      "weights_file_gb": round(sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 1e9,
                                               3)}))


def run(project: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    import sena_cli.vlm
    from sena_cli.config import load_params
    from sena_cli.stages.train import run_train
    from sena_cli.vlm import dpo

    rank = int(os.environ.get("RANK", "0"))
    seen = {}
    load = sena_cli.vlm.VLM.load.__func__

    def measured_load(cls, *args, **kwargs):
        seen.setdefault("before_load_mb", _peak_mb())
        return load(cls, *args, **kwargs)

    def stop(self, *args, model=None, **kwargs):
        params = list(model.parameters())
        print("RESULT " + json.dumps({
            "rank": rank, "peak_before_load_mb": round(seen.get("before_load_mb", 0)),
            "peak_at_trainer_mb": round(_peak_mb()), **_now_mb(),
            "zero3_partitioned": all(hasattr(p, "ds_id") for p in params),
            "elements_held": sum((p.ds_tensor if hasattr(p, "ds_tensor") else p).numel() for p in params),
            "dtype": str(params[0].dtype)}), flush=True)
        sys.exit(0)

    sena_cli.vlm.VLM.load = classmethod(measured_load)
    dpo.SenaDPOTrainer.__init__ = stop
    os.chdir(project)
    run_train(load_params(project / "params.yaml"), 1, root=Path("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["make", "run"])
    parser.add_argument("project", type=Path)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    if args.what == "make":
        if args.project.exists():
            shutil.rmtree(args.project)
        make(args.project, args.hidden, args.layers)
    else:
        run(args.project.resolve())


if __name__ == "__main__":
    main()
