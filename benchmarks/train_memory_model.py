"""Memory of one DPO training step, from arithmetic, checked against a measurement at a size that runs here.

The arithmetic is sena_fixtures/memory_model.py (docs/performance.md explains every term): what one
`sena train` step keeps per device for a LLaVA-style model; `table_7b()` applies it to LLaVA-1.5-7B
on 8 GPUs (DDP, ZeRO-2, ZeRO-3, LoRA; with and without gradient checkpointing).

The check: a small random LLaVA (tens of millions of parameters, 576 image tokens + ~100 text
tokens per sequence, as LLaVA-1.5) trains one optimizer step through sena's SenaDPOTrainer
(stored reference log-probs, AdamW, the vision tower frozen), full-parameter and LoRA, with and
without gradient checkpointing, in fp32 (sena's CPU regime) and in bf16 autocast over fp32
weights (sena's GPU regime, run here with CPU autocast). Each run is its own process. Measured:
live tensor bytes from torch's profiler (every CPU allocation and free, profile_memory=True),
peak above the bytes alive when the step starts, split at the optimizer step; the growth of peak
RSS is printed beside it as a cross-check (it also counts the allocator's and profiler's own
memory). Predicted: the same quantities from the formulas, given only the model's shape and the
batch's token and image counts. Ends with `RESULT train_memory_model_max_rel_error <x>`.

    python benchmarks/train_memory_model.py [--table-only] [--hidden 512 --layers 12 --vocab 8192]
    python benchmarks/train_memory_model.py --tiny      # h 64, 1 layer, two runs: a check that it runs
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

from sena_fixtures.memory_model import (
    Batch,
    MiB,
    Shape,
    predict_single_process,
    table_7b,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- measurement


WORDS = ("red blue green yellow circle square cross triangle small large left right top bottom near far "
         "the a of and on in with above below beside image shows there is one two three shape colour").split()


def _sentence(n: int, offset: int) -> str:
    return " ".join(WORDS[(i * 7 + offset) % len(WORDS)] for i in range(n)) + "."


def build_model(out: Path, s: Shape) -> None:
    from PIL import Image

    from sena_cli.world import tiny

    tok = tiny.build_tokenizer(WORDS + ["."])
    processor = tiny.llava_processor(tok, s.image_size, s.patch_size, "default")
    model = tiny.random_llava(tok, image_size=s.image_size, patch_size=s.patch_size, vision_hidden=s.vision_hidden,
                              vision_intermediate=s.vision_intermediate, vision_layers=s.vision_layers,
                              vision_heads=4, text_hidden=s.hidden, text_intermediate=s.intermediate,
                              text_layers=s.layers, text_heads=s.heads, vocab_size=s.vocab,
                              feature_strategy="default", feature_layer=-2, seed=0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    Image.new("RGB", (s.image_size, s.image_size), "red").save(out / "img.png")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def measure_one(model_dir: Path, regime: str, lora: bool, checkpointing: bool, pairs: int) -> dict:
    """One optimizer step of SenaDPOTrainer in this process; live tensor bytes from torch's profiler."""
    import torch
    from datasets import Dataset
    from PIL import Image
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile, record_function
    from transformers import TrainerCallback
    from trl import DPOConfig

    from sena_cli.vlm import VLM
    from sena_cli.vlm.dpo import LORA_TARGETS, SenaDPOTrainer, freeze_vision_tower
    from sena_cli.vlm.preference import PreferenceCollator

    # bf16: weights and activations in bf16 as in DeepSpeed's bf16 mode (here without its fp32 master).
    vlm = VLM.load(model_dir, dtype="bfloat16" if regime == "bf16" else "float32", device=torch.device("cpu"))
    model = vlm.model
    model.train()
    freeze_vision_tower(model)
    rows = [{"image": "img.png", "prompt": _sentence(40, 0), "chosen": _sentence(55, 3), "rejected": _sentence(55, 5),
             "type": "des", "ref_chosen_logp": -60.0, "ref_rejected_logp": -50.0} for _ in range(pairs)]
    collate = PreferenceCollator(vlm.processor, vlm.chat, lambda p: Image.open(model_dir / p).convert("RGB"), 2048)
    seen = {}

    def collator(batch_rows):
        batch = collate(batch_rows)
        seen.update(tokens=batch["input_ids"].numel(), sequences=batch["input_ids"].shape[0],
                    images=batch["pixel_values"].shape[0])
        return batch

    marks = {}

    class Mark(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            marks["rf"] = record_function("sena::optimizer_step")
            marks["rf"].__enter__()

        def on_optimizer_step(self, args, state, control, **kwargs):
            marks["rf"].__exit__(None, None, None)

    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS,
                                 task_type="CAUSAL_LM")
    config = DPOConfig(output_dir=str(model_dir / "out"), beta=0.1, loss_type=["sigmoid"], max_length=2048,
                       per_device_train_batch_size=pairs, max_steps=1, learning_rate=1e-5, weight_decay=0.0,
                       max_grad_norm=1.0, bf16=regime == "mixed", use_cpu=not torch.cuda.is_available(),
                       activation_checkpointing=checkpointing,
                       report_to="none", remove_unused_columns=False, save_strategy="no", disable_tqdm=True,
                       logging_steps=1, dataloader_num_workers=0, dataloader_pin_memory=False)
    trainer = SenaDPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), data_collator=collator,
                             processing_class=vlm.processor, peft_config=peft_config, callbacks=[Mark()])
    trainer.remove_callback(__import__("transformers").PrinterCallback)
    # The model's forward as a profiler range: splits forward from backward in the allocation trace.
    def forward_starts(*_):
        marks["fwd"] = record_function("sena::forward")
        marks["fwd"].__enter__()

    trainer.model.register_forward_pre_hook(forward_starts)
    trainer.model.register_forward_hook(lambda *_: marks["fwd"].__exit__(None, None, None))
    rss0 = _rss_mb()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.train()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0

    allocs, window, forward = [], None, None
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation:
            allocs.append((e.start_time_ns, e.extra_fields.alloc_size))
        elif e.name == "sena::optimizer_step":
            window = (e.start_time_ns, e.end_time_ns)
        elif e.name == "sena::forward":
            forward = (e.start_time_ns, e.end_time_ns)
    allocs.sort()
    live, fb, step, fwd, end_of_forward = 0, 0, 0, 0, 0
    for t, nbytes in allocs:
        if t > forward[1] and not end_of_forward:
            end_of_forward = live
        live += nbytes
        if t <= forward[1]:
            fwd = max(fwd, live)
        if t < window[0]:
            fb = max(fb, live)
        elif t <= window[1]:
            step = max(step, live)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"forward_backward": fb, "optimizer_step": step, "forward": fwd, "end_of_forward": end_of_forward,
            "rss_growth_mb": rss_growth, "trainable": trainable,
            "params": sum(p.numel() for p in trainer.model.parameters()), **seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--pairs", type=int, default=1, help="pairs per step (2 sequences each)")
    ap.add_argument("--table-only", action="store_true", help="print the 7B table and stop")
    ap.add_argument("--tiny", action="store_true", help="a check that it runs: h 64, 1 layer, 112 px, two runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        regime, lora, ckpt = args.one.split(",")
        print(json.dumps(measure_one(Path(args.model_dir), regime, lora == "lora", ckpt == "ckpt", args.pairs)))
        return
    print(table_7b())
    if args.table_only:
        return
    if args.tiny:
        args.hidden, args.layers, args.vocab = 64, 1, 512
    small = Shape(vocab=args.vocab, hidden=args.hidden, intermediate=args.hidden * 8 // 3 // 64 * 64 + 64,
                  layers=args.layers, heads=args.hidden // 64, vision_hidden=256, vision_intermediate=1024,
                  vision_layers=2, image_size=112 if args.tiny else 336, patch_size=14)
    print(f"\nCheck: random LLaVA, {small.total_params() / 1e6:.1f}M parameters "
          f"(h {small.hidden}, f {small.intermediate}, {small.layers} layers, vocab {small.vocab}; "
          f"CLIP 256x2 at {small.image_size} px), {args.pairs} pair(s), one SenaDPOTrainer step on CPU, 1 thread")
    # MALLOC_MMAP_THRESHOLD_: large blocks go back to the OS when freed, so RSS follows the live bytes.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"{'regime':<6} {'train':<5} {'ckpt':<4} | {'fwd+bwd meas':>12} {'pred':>8} {'err':>6} | "
          f"{'step meas':>9} {'pred':>8} {'err':>6} | {'RSS growth':>10}")
    runs = [(regime, lora, ckpt) for regime in ("fp32", "mixed") for lora in (False, True) for ckpt in (False, True)]
    runs += [("bf16", False, False), ("bf16", False, True)]  # no bf16 LoRA: peft keeps fp32 adapters, DeepSpeed not
    if args.tiny:
        runs = [("fp32", False, False), ("mixed", True, True)]
    worst, batch_line = 0.0, None
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir, small)
        for regime, lora, ckpt in runs:
            tag = f"{regime},{'lora' if lora else 'full'},{'ckpt' if ckpt else 'none'}"
            proc = subprocess.run([sys.executable, __file__, "--one", tag, "--model-dir", str(model_dir),
                                   "--pairs", str(args.pairs)], capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            b = Batch(tokens=m["tokens"], sequences=m["sequences"], images=m["images"],
                      head_tokens=m["tokens"] - m["sequences"], triton=False)
            p = predict_single_process(small, b, regime, lora, ckpt)
            assert p["trainable"] == m["trainable"], (p["trainable"], m["trainable"])
            errs = [(m[k] - p[k]) / m[k] for k in ("forward_backward", "optimizer_step")]
            worst = max(worst, *map(abs, errs))
            print(f"{regime:<6} {'lora' if lora else 'full':<5} {'on' if ckpt else 'off':<4} | "
                  f"{m['forward_backward'] / MiB:10.0f}Mi {p['forward_backward'] / MiB:6.0f}Mi {errs[0]:+6.1%} | "
                  f"{m['optimizer_step'] / MiB:7.0f}Mi {p['optimizer_step'] / MiB:6.0f}Mi {errs[1]:+6.1%} | "
                  f"{m['rss_growth_mb']:8.0f}Mi", flush=True)
            batch_line = (f"batch: {m['tokens']} tokens in {m['sequences']} sequences, {m['images']} images; "
                          f"model {m['params'] / 1e6:.1f}M parameters")
    print(batch_line)
    print("fwd+bwd: peak before the optimizer step; step: peak during it (AdamW allocates its state); both above the "
          "bytes alive when the step starts (the weights). err = (measured - predicted) / measured. RSS growth: peak "
          "RSS over RSS before trainer.train(), incl. the profiler's own records.")
    print(f"RESULT train_memory_model_max_rel_error {worst:.3f}")


if __name__ == "__main__":
    main()
