"""sena's three heavy paths at LLaVA-1.5-7B's shape, random weights: qa generation, pair log-probs, one DPO step.

The model has LLaVA-1.5-7B's widths (Llama decoder h 4096, f 11008, 32 heads, vocabulary 32064;
CLIP ViT-L/14 at 336 px, 24 layers; 2-layer MLP projector) with fewer decoder layers when time or
memory demands (--layers, printed); `--tiny` is a small model for a CPU check. Weights are random,
so the answers are noise: generation is forced to exactly --new-tokens tokens (min_new_tokens =
max_new_tokens through the model's generation_config), which makes throughput measurable.

Measured, each through sena's own entry points:
- qa: VLM.generate, greedy, images/s and new tokens/s at batch 1 and at --batch (params' qa batch);
- pair: VLM.preference_logps (PreferenceCollator + one forward), pairs/s;
- train: one optimizer step (after one warm-up step) of SenaDPOTrainer with stored reference
  log-probs vs trl's DPOTrainer with a live reference model (a frozen copy, its normal path):
  peak memory (torch.cuda.max_memory_allocated; on CPU the growth of peak RSS) and step time.
  Each train run is its own process. With two or more --layers values the peak is fitted as
  fixed + per-layer and extrapolated to 32 layers.

The regime is sena's: fp32 master weights with bf16 autocast and gradient checkpointing on a GPU
with bf16, fp32 without checkpointing elsewhere; AdamW; vision tower frozen.

    python benchmarks/gpu_scale.py --tiny                       # CPU check, about 2 minutes
    python benchmarks/gpu_scale.py --layers 4,8 --batch 32      # one H100/H200
- decode, today's path against the new one (qa's generation, sena_cli/vlm/model.py), at --decode-layers
  (default 8 and 32: the full LLaVA-1.5-7B fits one H200 in bf16), batch --batch, --prompts-per-image
  prompts per image: today = each prompt encodes its image, dynamic KV cache, eager; new = each
  image's vision features and prompt-prefix KV cache once (qa.reuse_image_features,
  qa.reuse_prefix_cache) and qa.decode auto (static KV cache and a
  torch.compile'd decode step on a GPU; dynamic on a CPU). Forward passes/s, new tokens/s, images/s,
  and the share of the memory-bandwidth bound: one decode step reads the language model's weights
  and the batch's KV cache (batch x mean context x layers x 2 x KV width x bytes), so at the card's
  bandwidth (--bandwidth-tbs; known cards by name) the bound is bandwidth / those bytes steps/s.
  qa/pair and the decode comparison at the same depth run in one process (one start-up); each
  other depth in its own.

Ends with `RESULT gpu_scale <stored/live peak-memory ratio of the DPO step at the most layers>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL = {"vocab": 32064, "hidden": 4096, "intermediate": 11008, "heads": 32, "vision_hidden": 1024,
        "vision_intermediate": 4096, "vision_layers": 24, "vision_heads": 16}
TINY = {"vocab": 2048, "hidden": 256, "intermediate": 688, "heads": 4, "vision_hidden": 64,
        "vision_intermediate": 128, "vision_layers": 2, "vision_heads": 2}
WORDS = [f"w{i}" for i in range(31000)]  # a word-level vocabulary big enough for LLaVA's 32064 rows
PROMPT = "Describe the image concisely. " + " ".join(WORDS[:20])


def build(shape: dict, layers: int):
    """A random LLaVA of the given shape on the device, in the dtype sena trains it (fp32) and a processor."""
    import torch

    from sena_cli.world import tiny

    vocab_words = WORDS[: shape["vocab"] - 40]
    tok = tiny.build_tokenizer(vocab_words + ["Describe the image concisely. Yes No"])
    processor = tiny.llava_processor(tok, 336, 14, "default")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # built on the device: a 7B-shaped model initialised on the CPU takes minutes
    model = tiny.random_llava(
        tok, image_size=336, patch_size=14, vision_hidden=shape["vision_hidden"],
        vision_intermediate=shape["vision_intermediate"], vision_layers=shape["vision_layers"],
        vision_heads=shape["vision_heads"], text_hidden=shape["hidden"], text_intermediate=shape["intermediate"],
        text_layers=layers, text_heads=shape["heads"], vocab_size=shape["vocab"], max_positions=4096,
        feature_strategy="default", feature_layer=-2, seed=0, device=device)
    model.config._name_or_path = "gpu_scale-random"  # trl reads it; nothing is loaded from it
    return model, processor, device


def _images(n: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)) for _ in range(n)]


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _inference_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def run_inference(shape: dict, layers: int, batch: int, new_tokens: int, pairs: int, pair_batch: int) -> dict:
    """pair log-probs (fp32 weights under autocast, as `sena pair`), the one-regime check, then qa generation
    at batch 1 and `batch` in the dtype `sena qa` loads (bf16 on a GPU)."""
    import torch

    from sena_cli.vlm import VLM

    model, processor, device = build(shape, layers)
    vlm = VLM(model, processor)
    out = {"params": sum(p.numel() for p in model.parameters())}
    try:  # pair first, as `sena pair` loads θ: fp32 weights under autocast to the training precision
        images = _images(pair_batch)
        rows = [{"image": i, "prompt": PROMPT, "chosen": " ".join(WORDS[100 + i: 150 + i]),
                 "rejected": " ".join(WORDS[200 + i: 240 + i])} for i in range(pairs)]
        precision = "bf16" if _inference_dtype() == torch.bfloat16 else "fp32"
        vlm.preference_logps(rows[:pair_batch], lambda i: images[i % pair_batch], max_length=2048,
                             precision=precision)  # warm-up
        _sync()
        t0 = time.perf_counter()
        for start in range(0, pairs, pair_batch):
            vlm.preference_logps(rows[start:start + pair_batch], lambda i: images[i % pair_batch], max_length=2048,
                                 precision=precision)
        _sync()
        seconds = time.perf_counter() - t0
        out["pair"] = {"pairs": pairs, "batch": pair_batch, "seconds": seconds, "pairs_per_s": pairs / seconds,
                       "precision": precision}
        out["regime"] = regime_check(model, processor, rows[: 2 * pair_batch], images, pair_batch, precision)
    except ImportError as exc:  # trl (and its datasets/pyarrow) missing on this machine
        out["pair"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    model.to(_inference_dtype())  # then qa's dtype: bf16 on a GPU that has it
    out["dtype"] = str(model.dtype)
    gen = model.generation_config
    gen.min_new_tokens = new_tokens  # random weights: force every answer to the full length
    gen.do_sample = False
    for label, bs, n in (("batch1", 1, max(4, batch // 4)), ("batched", batch, 2 * batch)):
        images = _images(n)
        vlm.generate(images[:bs], [PROMPT] * bs, max_new_tokens=new_tokens, batch_size=bs)  # warm-up
        _sync()
        t0 = time.perf_counter()
        answers = vlm.generate(images, [PROMPT] * n, max_new_tokens=new_tokens, batch_size=bs)
        _sync()
        seconds = time.perf_counter() - t0
        generated = sum(len(processor.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        out[label] = {"batch": bs, "images": n, "seconds": seconds, "images_per_s": n / seconds,
                      "new_tokens_per_s": n * new_tokens / seconds, "decoded_tokens": generated}
    return out


def regime_check(model, processor, rows: list[dict], images, pair_batch: int, precision: str) -> dict:
    """Step 0 of `sena train` against the reference log-probs `sena pair` stores, on this device.

    The reference: VLM.preference_logps in batches of `pair_batch` (pair's way). Step 0: the same
    answers scored through SenaDPOTrainer's model (trl's fused head) inside the Trainer's own
    autocast, in batches of 2 (another batch shape, as train.per_device_batch_size usually is).
    Also: the same reference computed with bf16 weights and no autocast (the other regime)."""
    import tempfile

    import torch
    from datasets import Dataset
    from trl import DPOConfig

    from sena_cli.vlm import VLM
    from sena_cli.vlm.dpo import SenaDPOTrainer
    from sena_cli.vlm.preference import NON_MODEL_KEYS, PreferenceCollator, completion_logps

    vlm = VLM(model, processor)
    load = lambda i: images[i % pair_batch]  # noqa: E731
    stored = []
    for start in range(0, len(rows), pair_batch):
        stored += vlm.preference_logps(rows[start:start + pair_batch], load, max_length=2048, precision=precision)
    reference = torch.tensor([[c, r] for c, _, r, _ in stored], dtype=torch.float64)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(output_dir=tmp, bf16=precision == "bf16", report_to="none", remove_unused_columns=False,
                           per_device_train_batch_size=2, use_cpu=not cuda, activation_checkpointing=False)
        collator = PreferenceCollator(processor, vlm.chat, load, 2048)
        trainer = SenaDPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(
            [{**r, "ref_chosen_logp": 0.0, "ref_rejected_logp": 0.0, "type": "des"} for r in rows]),
            data_collator=collator, processing_class=processor)
        step0 = []
        for start in range(0, len(rows), 2):
            batch = collator(rows[start:start + 2])
            inputs = {k: v.to(model.device) for k, v in batch.items() if k not in NON_MODEL_KEYS}
            labels = inputs["input_ids"].masked_fill(batch["completion_mask"].to(model.device) == 0, -100)
            with torch.no_grad(), trainer.compute_loss_context_manager(), trainer.accelerator.autocast():
                logps = trainer.model(**inputs, labels=labels, use_cache=False, fused_lm_head=True).log_probs
            sums = logps.float().sum(1).double().cpu()
            n = sums.shape[0] // 2
            step0 += [[sums[i].item(), sums[n + i].item()] for i in range(n)]
    policy = torch.tensor(step0, dtype=torch.float64)
    model.to(torch.bfloat16)
    other = []
    for start in range(0, len(rows), pair_batch):
        batch = PreferenceCollator(processor, vlm.chat, load, 2048)(rows[start:start + pair_batch])
        sums, _ = completion_logps(model, batch)
        n = sums.shape[0] // 2
        other += [[sums[i].item(), sums[n + i].item()] for i in range(n)]
    model.to(torch.float32)
    bf16_weights = torch.tensor(other, dtype=torch.float64)
    return {"answers": 2 * len(rows), "mean_logp": reference.mean().item(),
            "step0_max_abs": (policy - reference).abs().max().item(),
            "bf16_weights_max_abs": (bf16_weights - reference).abs().max().item()}


def run_train(shape: dict, layers: int, mode: str, pairs: int) -> dict:
    """Two optimizer steps; peak memory over both, time of the second. mode: stored | live."""
    import copy

    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from sena_cli.vlm.chat import ChatFormat
    from sena_cli.vlm.dpo import SenaDPOTrainer, freeze_vision_tower
    from sena_cli.vlm.preference import PreferenceCollator

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    base_rss = _rss_mb()
    model, processor, device = build(shape, layers)
    model.train()
    freeze_vision_tower(model)
    images = _images(4)
    rows = [{"image": i % 4, "prompt": PROMPT, "chosen": " ".join(WORDS[100 + i: 150 + i]),
             "rejected": " ".join(WORDS[200 + i: 240 + i]), "type": "des" if i % 2 else "gen",
             "ref_chosen_logp": -300.0, "ref_rejected_logp": -250.0} for i in range(2 * pairs)]
    chat = ChatFormat.of(processor, model.generation_config)
    collate_pairs = PreferenceCollator(processor, chat, lambda i: images[i], 2048)
    seen = {}

    def collate(batch_rows):
        batch = collate_pairs(batch_rows)
        seen.update(tokens=batch["input_ids"].numel(), sequences=batch["input_ids"].shape[0],
                    images=batch["pixel_values"].shape[0], completion=int(batch["completion_mask"][:, 1:].sum()))
        return batch

    steps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            _sync()
            steps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            steps[-1] = time.perf_counter() - steps[-1]

    config = DPOConfig(
        output_dir="/tmp/gpu_scale_out", beta=0.1, loss_type=["sigmoid"], max_length=2048,
        per_device_train_batch_size=pairs, max_steps=2, learning_rate=1e-6, weight_decay=0.0, max_grad_norm=1.0,
        bf16=bf16, use_cpu=not cuda, activation_checkpointing=cuda, report_to="none", remove_unused_columns=False,
        save_strategy="no", disable_tqdm=True, logging_steps=1, dataloader_num_workers=0,
        dataloader_pin_memory=False)
    dataset = Dataset.from_list(rows)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if mode == "stored":
        trainer = SenaDPOTrainer(model=model, args=config, train_dataset=dataset, data_collator=collate,
                                 processing_class=processor, callbacks=[Clock()])
    else:
        ref = copy.deepcopy(model).eval().requires_grad_(False)

        def live_collate(batch_rows):
            batch = collate(batch_rows)
            for key in ("is_des", "ref_chosen_logps", "ref_rejected_logps"):
                batch.pop(key, None)
            return batch

        trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset,
                             data_collator=live_collate, processing_class=processor, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else (_peak_rss_mb() - base_rss) / 1024
    return {"mode": mode, "layers": layers, "peak_gib": peak, "step_s": steps[-1], "bf16": bf16, "checkpointing": cuda,
            "params": sum(p.numel() for p in model.parameters()), **seen}


def predicted_peak_gib(shape: dict, r: dict) -> float:
    """The arithmetic of sena_fixtures/memory_model.py for this run: one process, steady state (AdamW state exists)."""
    from sena_fixtures import memory_model as tm

    s = tm.Shape(vocab=shape["vocab"], hidden=shape["hidden"], intermediate=shape["intermediate"],
                 layers=r["layers"], heads=shape["heads"], vision_hidden=shape["vision_hidden"],
                 vision_intermediate=shape["vision_intermediate"], vision_layers=shape["vision_layers"],
                 image_size=336, patch_size=14)
    triton = r["checkpointing"]  # on a GPU: trl's Triton head scores the completion tokens only
    b = tm.Batch(tokens=r["tokens"], sequences=r["sequences"], images=r["images"],
                 head_tokens=r["completion"] if triton else r["tokens"] - r["sequences"], triton=triton)
    regime = "mixed" if r["bf16"] else "fp32"
    trainable = s.lm_params() + s.projector_params()
    dynamic = tm.step_dynamics(s, b, regime, lora=False, checkpointing=r["checkpointing"], grad_bytes=4)["peak"]
    reference = 4 * s.total_params() if r["mode"] == "live" else 0  # trl's frozen fp32 copy
    return (4 * s.total_params() + 8 * trainable + dynamic + reference) / 2**30


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Memory bandwidth of known cards, TB/s (vendor figures): the bound's denominator.
BANDWIDTH_TBS = {"H200": 4.8, "H100 SXM": 3.35, "H100 PCIe": 2.0, "H100": 3.35, "A100-SXM4-80GB": 2.04,
                 "A100 80GB PCIe": 1.94, "A100": 1.56, "L40S": 0.864, "A10G": 0.6}


def card_bandwidth_tbs(name: str) -> float | None:
    for key, tbs in BANDWIDTH_TBS.items():  # most specific first
        if key.lower() in name.lower():
            return tbs
    return None


def bytes_per_step(model, batch: int, context: float) -> dict:
    """What one decode step reads: the language model's weights (decoder + head; the vision tower is not
    run in decode) and the KV cache of `batch` sequences of mean length `context`."""
    lm = model.model.language_model
    text = model.config.text_config
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    weights += sum(p.numel() * p.element_size() for p in model.lm_head.parameters())
    heads = text.num_attention_heads
    kv_width = (getattr(text, "num_key_value_heads", None) or heads) * (text.hidden_size // heads)
    element = next(lm.parameters()).element_size()
    kv = batch * context * text.num_hidden_layers * 2 * kv_width * element
    return {"weights": weights, "kv": kv, "total": weights + kv}


def run_decode(shape: dict, layers: int, batch: int, new_tokens: int, per_image: int) -> dict:
    """qa's generation, today's path and the new one, on `batch` images asked `per_image` prompts each."""
    import functools

    from sena_cli.vlm import VLM, ImageFeatures, PrefixCache
    from sena_cli.vlm.model import decode_mode

    model, processor, device = build(shape, layers)
    model.to(_inference_dtype())
    vlm = VLM(model, processor)
    gen = model.generation_config
    gen.min_new_tokens = new_tokens  # random weights: force every answer to the full length
    gen.do_sample = False
    images = _images(batch)
    texts = [f"{PROMPT} {WORDS[1000 + j]}" for j in range(per_image) for _ in range(batch)]
    imgs = [images[i] for _ in range(per_image) for i in range(batch)]  # a batch: different images, as in qa
    calls = {"steps": 0}  # one decode step per token column generated, counted outside the (compiled) forward
    model_generate = model.generate

    @functools.wraps(model_generate)
    def counted(*a, **k):
        out = model_generate(*a, **k)
        calls["steps"] += out.shape[1] - k["input_ids"].shape[1]
        return out

    model.generate = counted
    prompt_tokens = vlm.pre.inputs([images[0]], [vlm.chat.prompt(texts[0])])["input_ids"].shape[1]
    out = {"params": sum(p.numel() for p in model.parameters()), "dtype": str(model.dtype), "layers": layers,
           "prompt_tokens": prompt_tokens, "bytes": bytes_per_step(model, batch, prompt_tokens + new_tokens / 2)}
    for path, decode, reuse in (("today", "dynamic", False), ("new", "auto", True)):
        def once(decode=decode, reuse=reuse):
            features = ImageFeatures(2 * batch) if reuse else None
            prefixes = PrefixCache(2 * batch) if reuse else None
            return vlm.generate(imgs, texts, max_new_tokens=new_tokens, batch_size=batch, features=features,
                                decode=decode, prefixes=prefixes)
        _sync()
        t0 = time.perf_counter()
        first = once()  # warm-up: compiles the decode step on the compiled path
        _sync()
        warm = time.perf_counter() - t0
        calls["steps"] = 0
        t0 = time.perf_counter()
        answers = once()
        _sync()
        seconds = time.perf_counter() - t0
        out[path] = {"decode": decode_mode(decode, device), "seconds": seconds, "warm_up_s": warm,
                     "steps_per_s": calls["steps"] / seconds, "tokens_per_s": len(texts) * new_tokens / seconds,
                     "images_per_s": batch / seconds, "prompts": len(texts), "same_as_warm_up": first == answers,
                     "answers": answers}
    out["same_answers"] = out["today"].pop("answers") == out["new"].pop("answers")
    return out


def _child(args, *extra) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, *(["--tiny"] if args.tiny else []), "--new-tokens", str(args.new_tokens),
           "--batch", str(args.batch), "--pairs", str(args.pairs), "--pair-batch", str(args.pair_batch),
           "--train-pairs", str(args.train_pairs), "--prompts-per-image", str(args.prompts_per_image), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "stderr": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small widths for a CPU check (h 256, 2 CLIP layers)")
    ap.add_argument("--layers", default=None, help="decoder layers, comma-separated (default 4,8; --tiny 1,2)")
    ap.add_argument("--batch", type=int, default=32, help="qa generation batch (params' qa.batch_size)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=64, help="pairs scored for pair throughput")
    ap.add_argument("--pair-batch", type=int, default=8)
    ap.add_argument("--train-pairs", type=int, default=4, help="pairs per device in the DPO step")
    ap.add_argument("--decode-layers", default=None, help="decoder layers of the decode comparison, comma-separated "
                    "(default 8,32; --tiny: the largest of --layers)")
    ap.add_argument("--prompts-per-image", type=int, default=4, help="prompts per image in the decode comparison")
    ap.add_argument("--bandwidth-tbs", type=float, default=None, help="the card's memory bandwidth, TB/s "
                    "(default: known cards by name; none on a CPU)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = TINY if args.tiny else FULL
    layers = [int(x) for x in (args.layers or ("1,2" if args.tiny else "4,8")).split(",")]
    if args.child:
        kind, n, *mode = args.child.split(",")
        if kind == "inference":
            result = run_inference(shape, int(n), args.batch, args.new_tokens, args.pairs, args.pair_batch)
            if mode == ["decode"]:  # the decode comparison at the same depth: one process, one start-up
                import gc

                import torch

                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                try:
                    result["decode"] = run_decode(shape, int(n), args.batch, args.new_tokens, args.prompts_per_image)
                except Exception as e:  # noqa: BLE001 - reported like a failed child, the qa/pair figures kept
                    result["decode"] = {"error": f"{type(e).__name__}: {e}", "stderr": traceback.format_exc()[-2000:]}
        elif kind == "decode":
            result = run_decode(shape, int(n), args.batch, args.new_tokens, args.prompts_per_image)
        else:
            result = run_train(shape, int(n), mode[0], args.train_pairs)
        print(json.dumps(result))
        return

    import torch
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"shape: {'tiny (--tiny)' if args.tiny else 'LLaVA-1.5-7B widths'}: h {shape['hidden']}, f "
          f"{shape['intermediate']}, vocab {shape['vocab']}, CLIP {shape['vision_hidden']} x "
          f"{shape['vision_layers']} layers at 336 px (576 image tokens); decoder layers {layers} of 32; "
          f"random weights")
    t_all = time.perf_counter()
    decode_layers = [int(x) for x in (args.decode_layers or (str(max(layers)) if args.tiny else "8,32")).split(",")]
    shared = max(layers) in decode_layers  # its decode comparison runs in the inference child
    inf = _child(args, "--child", f"inference,{max(layers)}" + (",decode" if shared else ""))
    if "error" in inf:
        print(f"qa/pair: FAILED: {inf['error']}\n{inf['stderr']}")
    else:
        b1, bb = inf["batch1"], inf["batched"]
        print(f"\nqa generation ({max(layers)} layers, {inf['params'] / 1e6:.0f}M parameters, {inf['dtype']}, "
              f"{args.new_tokens} new tokens forced; decoded answers average "
              f"{bb['decoded_tokens'] / bb['images']:.1f} tokens once special tokens are dropped)")
        for r in (b1, bb):
            print(f"  batch {r['batch']:>3}: {r['images_per_s']:8.2f} images/s  "
                  f"{r['new_tokens_per_s']:9.1f} new tokens/s  ({r['images']} images, {r['seconds']:.1f} s)")
        print(f"  batched / batch-1 throughput: {bb['images_per_s'] / b1['images_per_s']:.1f}x")
        p = inf["pair"]
        print(f"pair log-probs: {p['pairs_per_s']:.2f} pairs/s (batch {p['batch']}, {p['pairs']} pairs, "
              f"fp32 weights, {p['precision']} autocast)"
              if "pairs_per_s" in p else f"pair log-probs: skipped ({p['skipped']})")
        if "regime" in inf:
            r = inf["regime"]
            print(f"one regime: max |step-0 log-ratio| over {r['answers']} answers (mean log-prob "
                  f"{r['mean_logp']:.1f}): {r['step0_max_abs']:.2e} nats (reference at batch {p['batch']}, "
                  f"trainer at batch 2); with bf16 weights instead: {r['bf16_weights_max_abs']:.2e} nats")
    bandwidth = args.bandwidth_tbs or (card_bandwidth_tbs(device) if torch.cuda.is_available() else None)
    print(f"\ndecode, today's path (per-prompt image encoding, dynamic cache, eager) vs the new one (features and "
          f"prefix KV cache once per image, qa.decode auto): batch {args.batch}, {args.prompts_per_image} prompts "
          "per image, "
          f"{args.new_tokens} new tokens forced; bound = {bandwidth or 'unknown (no --bandwidth-tbs)'} TB/s / bytes "
          "per step (weights + KV cache at the mean context)")
    for n in decode_layers:
        r = inf.get("decode", inf) if shared and n == max(layers) else _child(args, "--child", f"decode,{n}")
        if "error" in r:
            print(f"  {n:>2} layers: FAILED: {r['error']}\n{r['stderr']}")
            continue
        b = r["bytes"]
        bound = bandwidth * 1e12 / b["total"] if bandwidth else None
        print(f"  {n:>2} layers ({r['params'] / 1e6:.0f}M parameters, {r['dtype']}, prompt {r['prompt_tokens']} "
              f"tokens): bytes per step {b['weights'] / 1e9:.2f} GB weights + {b['kv'] / 1e9:.2f} GB KV cache"
              + (f"; bound {bound:.0f} steps/s" if bound else ""))
        for path in ("today", "new"):
            m = r[path]
            share = f"{m['steps_per_s'] / bound:6.1%} of the bound" if bound else "bound n/a"
            print(f"    {path:<5} ({m['decode']:>8}): {m['steps_per_s']:8.1f} steps/s {m['tokens_per_s']:9.1f} "
                  f"tokens/s {m['images_per_s']:7.2f} images/s  {share}  ({m['seconds']:.1f} s; warm-up "
                  f"{m['warm_up_s']:.1f} s)")
        print(f"    new / today: {r['new']['steps_per_s'] / r['today']['steps_per_s']:.2f}x; same greedy answers: "
              f"{r['same_answers']}")
    print(f"\nDPO step, {args.train_pairs} pairs per device (peak memory over 2 steps, time of the 2nd step; "
          "arithmetic: sena_fixtures/memory_model.py's formulas for this run, allocated tensor bytes; comparable "
          "on a GPU only: on CPU, RSS counts touched pages, and trl's head tile buffer (tokens x 32768) is mostly "
          "untouched when the vocabulary is small)")
    runs = {}
    for n in layers:
        for mode in ("stored", "live"):
            r = _child(args, "--child", f"train,{n},{mode}")
            runs[(n, mode)] = r
            if "error" in r:
                print(f"  {n:>2} layers {mode:>6}: FAILED: {r['error']}")
            else:
                print(f"  {n:>2} layers {mode:>6}: peak {r['peak_gib']:7.2f} GiB (arithmetic "
                      f"{predicted_peak_gib(shape, r):7.2f})   step {r['step_s']:6.2f} s   "
                      f"({r['params'] / 1e6:.0f}M parameters, {r['tokens']} tokens, "
                      f"{'bf16 autocast' if r['bf16'] else 'fp32'}, "
                      f"checkpointing {'on' if r['checkpointing'] else 'off'})")
    ok = [n for n in layers if all("error" not in runs[(n, m)] for m in ("stored", "live"))]
    ratio = None
    if ok:
        top = max(ok)
        s, v = runs[(top, "stored")], runs[(top, "live")]
        ratio = s["peak_gib"] / v["peak_gib"]
        print(f"  {top} layers: stored/live peak memory {ratio:.3f}, stored/live step time "
              f"{s['step_s'] / v['step_s']:.3f}")
        if len(ok) >= 2 and not args.tiny:
            lo, hi = min(ok), max(ok)
            for mode in ("stored", "live"):
                a, b = runs[(lo, mode)]["peak_gib"], runs[(hi, mode)]["peak_gib"]
                per_layer = (b - a) / (hi - lo)
                print(f"  extrapolated to 32 layers, {mode:>6}: {b + per_layer * (32 - hi):7.1f} GiB "
                      f"({per_layer:.2f} GiB per layer, fitted on {lo} and {hi} layers)")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")
    print(f"RESULT gpu_scale {ratio:.3f}" if ratio is not None else "RESULT gpu_scale nan")


if __name__ == "__main__":
    main()
