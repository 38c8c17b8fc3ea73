"""Peak host memory per rank while `sena train` starts under DeepSpeed ZeRO-3, up to the trainer's construction.

The issue this measures: a ZeRO-3 rank that loads the model before the training arguments exist holds the
whole fp32 model in host memory before DeepSpeed shards it. One command does both steps below in a temporary
folder, 2 ranks, and ends with `RESULT train_startup_peak_mb <largest peak of a rank at the trainer>`:

    python benchmarks/train_startup_memory.py [--hidden 1536 --layers 16]
    python benchmarks/train_startup_memory.py --tiny     # h 64, 2 layers: a check that it runs

The two steps, by hand:

    python benchmarks/train_startup_memory.py make PROJECT [--hidden 1536 --layers 16]
        a project with the embedded micro world, iteration 1's pairs (made by the tiny θ0), then θ0
        replaced by a LLaVA of the same processor with wider, deeper random weights saved in float16
        (as llava-1.5-7b-hf ships); pair's tokenization check still holds, the weights are all that grew.

    DS_ACCELERATOR=cpu ACCELERATE_USE_DEEPSPEED=true ACCELERATE_DEEPSPEED_ZERO3_INIT=true \\
    ACCELERATE_DEEPSPEED_CONFIG_FILE=$REPO/configs/deepspeed/zero3.json OMP_NUM_THREADS=1 \\
    torchrun --nproc_per_node 2 benchmarks/train_startup_memory.py run PROJECT
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
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _now_mb() -> dict:
    """Resident memory now: anonymous (the process's own) and file-backed (mapped weights files)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {f"{key.lower()}_now_mb": round(int(status[key].split()[0]) / 1024) for key in ("RssAnon", "RssFile")}


def make(project: Path, hidden: int, layers: int) -> None:
    import torch
    import yaml
    from transformers import AutoProcessor

    from sena_cli.artifacts import write_jsonl
    from sena_cli.config import params_from_dict, to_dict
    from sena_cli.stages.base import run_base
    from sena_cli.stages.pair import run_pair
    from sena_cli.world.build import build_world
    from sena_cli.world.tiny import random_llava
    from sena_fixtures.micro import write_manifest

    overrides = {"world": {"pool_images": 16, "instruct_images": 40, "instruct_examples_per_image": 2,
                           "eval": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4}},
                 "base": {"steps": 2, "warmup_steps": 0, "batch_size": 4, "threads": 1, "vision_hidden": 32,
                          "text_hidden": 32, "text_intermediate": 64},
                 "train": {"global_batch_size": 2, "per_device_batch_size": 1, "checkpoint_steps": 0}}
    params = params_from_dict(overrides)
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
    build_world(params, project / "data" / "world")
    run_base(params, root=project)
    colours = ["red", "green", "blue", "yellow"]
    images = [f"data/world/pool/{i:05d}.png" for i in range(8)]
    write_jsonl(project / "data/iter1/qa/records.jsonl", [
        {"id": str(i), "image": image, "type": "gen", "prompt": "What color is it?",
         "enhanced_answer": colours[i % 4], "corrupted_answer": colours[(i + 1) % 4]}
        for i, image in enumerate(images)])
    write_manifest(project, 1, images)  # what pair checks the qa records against
    run_pair(params, 1, root=project)

    model_dir = project / "models" / "iter0"
    base = params.base  # θ0's vision tower and tokenizer; a decoder `hidden` wide and `layers` deep
    tok = AutoProcessor.from_pretrained(model_dir).tokenizer
    model = random_llava(tok, image_size=params.world.image_size, patch_size=base.patch_size,
                         vision_hidden=base.vision_hidden, vision_layers=base.vision_layers,
                         vision_heads=base.vision_heads, text_hidden=hidden, text_intermediate=4 * hidden,
                         text_layers=layers, text_heads=hidden // 64, seed=0).to(torch.float16)
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
        print("RANK " + json.dumps({
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


def both(hidden: int, layers: int) -> None:
    """make, then run under torchrun with the environment `accelerate launch --config_file
    configs/accelerate/zero3.yaml` sets (DeepSpeed's CPU accelerator where there is no GPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        make(project, hidden, layers)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "configs/deepspeed/zero3.json"), "OMP_NUM_THREADS": "1"}
        import torch

        if not torch.cuda.is_available():
            env["DS_ACCELERATOR"] = "cpu"
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(port), __file__, "run",
                               str(project)], env=env, capture_output=True, text=True, timeout=1800)
    ranks = [json.loads(line[len("RANK "):]) for line in proc.stdout.splitlines() if line.startswith("RANK ")]
    if proc.returncode or len(ranks) != 2:
        sys.exit(f"the 2-rank start-up failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    for r in sorted(ranks, key=lambda r: r["rank"]):
        print(f"rank {r['rank']}: peak {r['peak_before_load_mb']} MB before the load, {r['peak_at_trainer_mb']} MB "
              f"at the trainer; ZeRO-3 partitions {r['zero3_partitioned']}, {r['elements_held']:,} elements held")
    print(f"RESULT train_startup_peak_mb {max(r['peak_at_trainer_mb'] for r in ranks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["make", "run"], help="one step only (default: both)")
    parser.add_argument("project", nargs="?", type=Path)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="h 64, 2 layers")
    args = parser.parse_args()
    if args.tiny:
        args.hidden, args.layers = 64, 2
    if args.what is None:
        both(args.hidden, args.layers)
    elif args.project is None:
        parser.error(f"{args.what} needs a PROJECT folder")
    elif args.what == "make":
        if args.project.exists():
            shutil.rmtree(args.project)
        make(args.project, args.hidden, args.layers)
    else:
        run(args.project.resolve())


if __name__ == "__main__":
    main()
