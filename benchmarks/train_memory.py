"""Peak memory of one DPO training step: stored reference log-probs (sena) vs trl's live reference model.

Both runs train the same randomly initialised LLaVA (a ~90M-parameter language model by default,
so weights dominate the tiny activations) on the same 8 pairs, one optimizer step, full-parameter,
AdamW. "live" is plain trl: DPOTrainer builds a reference copy of the model and runs it every step.
"stored" is sena's SenaDPOTrainer: the reference log-probs come in the batch. Each run is its own
process; on a GPU the peak is torch.cuda.max_memory_allocated, on CPU the growth of peak RSS over
the process's RSS before the model is loaded. Also printed: the peak of forward+backward alone
(before the optimizer allocates its state). Small images and batch by default, so weights,
gradients and AdamW state dominate, as they do for a 7B model with gradient checkpointing.

    python benchmarks/train_memory.py [--hidden 768 --layers 6 --image-size 64 --batch 2]
    python benchmarks/train_memory.py --tiny     # h 64, 1 layer, 32 px, 1 pair: a check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def build_model(out: Path, hidden: int, layers: int, image_size: int) -> None:
    from PIL import Image

    from sena_cli.world import tiny

    texts = ["Describe the image concisely.", "A red circle and a blue square.", "A green cross.",
             "What color is the circle? red blue"]
    tok = tiny.build_tokenizer(texts)
    processor = tiny.llava_processor(tok, image_size, 8)
    # a real vocabulary size (32000): the embedding and LM head are a real share of the weights
    model = tiny.random_llava(tok, image_size=image_size, patch_size=8, vision_hidden=256, vision_intermediate=1024,
                              vision_layers=2, vision_heads=4, text_hidden=hidden, text_intermediate=hidden * 8 // 3,
                              text_layers=layers, text_heads=hidden // 64, vocab_size=32000, seed=0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for i in range(8):
        Image.new("RGB", (image_size, image_size), ["red", "blue", "green", "yellow"][i % 4]).save(out / f"img{i}.png")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(mode: str, model_dir: Path, batch: int) -> dict:
    """One optimizer step in this process; returns peak memory figures in MiB."""
    from datasets import Dataset
    from PIL import Image
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from sena_cli.vlm import VLM
    from sena_cli.vlm.dpo import SenaDPOTrainer
    from sena_cli.vlm.preference import PreferenceCollator

    base = 0.0 if torch.cuda.is_available() else rss_mb()
    vlm = VLM.load(model_dir, dtype="float32")
    rows = [{"image": f"img{i}.png", "prompt": "Describe the image concisely.", "type": "des",
             "chosen": "A red circle and a blue square.", "rejected": "A green cross.",
             "ref_chosen_logp": -20.0, "ref_rejected_logp": -15.0} for i in range(batch)]
    collator = PreferenceCollator(vlm.processor, vlm.chat, lambda p: Image.open(model_dir / p).convert("RGB"))
    marks = {}

    class Mark(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            marks["forward_backward"] = peak_mb() - base

    config = DPOConfig(output_dir=str(model_dir / f"out-{mode}"), per_device_train_batch_size=batch, max_steps=1,
                       report_to="none", remove_unused_columns=False, bf16=torch.cuda.is_available(),
                       activation_checkpointing=False, save_strategy="no", disable_tqdm=True, logging_steps=1)
    if mode == "stored":
        trainer = SenaDPOTrainer(model=vlm.model, args=config, train_dataset=Dataset.from_list(rows),
                                 data_collator=collator, processing_class=vlm.processor, callbacks=[Mark()])
    else:
        def live_collator(batch_rows):
            batch = collator(batch_rows)
            for key in ("is_des", "ref_chosen_logps", "ref_rejected_logps"):
                batch.pop(key, None)
            return batch

        trainer = DPOTrainer(model=vlm.model, args=config, train_dataset=Dataset.from_list(rows),
                             data_collator=live_collator, processing_class=vlm.processor, callbacks=[Mark()])
        assert trainer.ref_model is not None
    trainer.train()
    params = sum(p.numel() for p in vlm.model.parameters())
    return {"mode": mode, "params": params, "peak_mb": peak_mb() - base, **{f"{k}_mb": v for k, v in marks.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="pairs per step (8 images max)")
    parser.add_argument("--tiny", action="store_true", help="h 64, 1 layer, 32 px images, 1 pair")
    parser.add_argument("--one", choices=["stored", "live"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.hidden, args.layers, args.image_size, args.batch = 64, 1, 32, 1
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.model_dir), args.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, args.hidden, args.layers, args.image_size)
        results = {}
        for mode in ("stored", "live"):
            proc = subprocess.run([sys.executable, __file__, "--one", mode, "--model-dir", str(model_dir),
                                   "--batch", str(args.batch)],
                                  capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (peak RSS growth)"
    params = results["stored"]["params"]
    print(f"device: {device}; model parameters: {params / 1e6:.1f}M, fp32 weights = {params * 4 / 2**20:.0f} MiB; "
          f"batch {args.batch} pairs, {args.image_size}px images")
    for mode in ("stored", "live"):
        r = results[mode]
        print(f"{mode:>6}: peak {r['peak_mb']:8.0f} MiB  (forward+backward only: {r['forward_backward_mb']:8.0f} MiB)")
    fb = results["stored"]["forward_backward_mb"] / results["live"]["forward_backward_mb"]
    print(f"forward+backward ratio stored/live: {fb:.3f}")
    ratio = results["stored"]["peak_mb"] / results["live"]["peak_mb"]
    print(f"RESULT train_memory_ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
