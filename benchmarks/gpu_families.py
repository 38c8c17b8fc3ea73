"""The model families through sena's stages on a GPU: sample, noise, qa, pair, then step 0 of training.

For LLaVA-1.5, Qwen2-VL and SmolVLM (the real-shaped tiny checkpoints of sena_fixtures/families.py), on
six images of varied shapes: the stages run as `sena` runs them on a GPU (qa in bf16, pair with
fp32 weights under bf16 autocast), then the trainer `sena train` builds scores every pair as trl's
DPO loss does at step 0, under the Trainer's own autocast. Printed per family: what each stage
made and the largest |step-0 log-ratio| (the one-regime rule says 0).

    python benchmarks/gpu_families.py            # on a GPU machine (on CPU it runs too, in fp32)
    python benchmarks/gpu_families.py --tiny     # LLaVA-1.5 only, two images: a check that it runs

Last line: RESULT gpu_families_max_step0_log_ratio <value over the families>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.stages import train as train_stage
from sena_cli.stages.noise import run_noise
from sena_cli.stages.pair import run_pair
from sena_cli.stages.qa import run_qa
from sena_cli.stages.sample import run_sample
from sena_fixtures.families import FAMILIES, TEST_PROCESSOR_SETTINGS

SHAPES = {"portrait": (240, 640), "panorama": (1200, 150), "tiny": (8, 8), "huge": (3000, 2000),
          "square": (400, 400), "photo": (640, 480)}


def step0(root: Path, params) -> float:
    from sena_cli.vlm import VLM
    from sena_cli.vlm.preference import NON_MODEL_KEYS

    pairs = train_stage.read_pairs(1, root)
    config = train_stage._training_config(params, root / "work", 1, 600.0)
    vlm = VLM.load(root / "models" / "iter0", dtype="float32", device=torch.device("cpu"),
                   processor_settings=params.model.processor)
    trainer = train_stage._build_trainer(params, 1, root, vlm, pairs, config, root / "work", False,
                                         lambda name, total: (lambda n: None), False)
    model = trainer.model.to(trainer.args.device)
    worst = 0.0
    for start in range(0, len(pairs), 2):
        batch = trainer.data_collator(pairs[start : start + 2])
        inputs = {k: v.to(model.device) for k, v in batch.items() if k not in NON_MODEL_KEYS}
        labels = inputs["input_ids"].masked_fill(batch["completion_mask"].to(model.device) == 0, -100)
        with torch.no_grad(), trainer.compute_loss_context_manager(), trainer.accelerator.autocast():
            logps = model(**inputs, labels=labels, use_cache=False, fused_lm_head=True).log_probs.float().sum(1)
        ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).to(logps.device)
        worst = max(worst, (logps - ref).abs().max().item())
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="LLaVA-1.5 only, on two small images")
    args = ap.parse_args()
    families = {"llava-1.5": FAMILIES["llava-1.5"]} if args.tiny else FAMILIES
    shapes = {"tiny": (8, 8), "photo": (64, 48)} if args.tiny else SHAPES
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; torch {torch.__version__}")
    results = {}
    for name, build in families.items():
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "pool").mkdir()
            rng = np.random.RandomState(0)
            for image, (w, h) in shapes.items():
                Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(root / "pool" / f"{image}.png")
            build(root / "models" / "iter0")
            params = params_from_dict({
                "loop": {"iterations": 1}, "model": {"processor": TEST_PROCESSOR_SETTINGS[name]},
                "sample": {"pool": "pool", "images_per_iteration": len(shapes)},
                "qa": {"batch_size": 3, "max_new_tokens": 8, "self_questioning": False}, "pair": {"batch_size": 4},
                "train": {"global_batch_size": 2, "per_device_batch_size": 2, "checkpoint_steps": 0}})
            info = {stage.__name__: stage(params, 1, root=root) for stage in (run_sample, run_noise, run_qa, run_pair)}
            reference = (root / "data/iter1/pairs/reference.json").read_text().replace("\n", " ")
            worst = step0(root, params)
        results[name] = worst
        print(f"{name:<10} images {info['run_sample']['images']}, qa records {info['run_qa']['records']}, "
              f"pairs {info['run_pair']['pairs']}, reference {reference}; max |step-0 log-ratio| {worst:.2e} "
              f"nats ({time.perf_counter() - started:.0f} s)")
    print(f"RESULT gpu_families_max_step0_log_ratio {max(results.values()):.2e}")


if __name__ == "__main__":
    main()
