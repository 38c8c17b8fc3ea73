"""Memory of one DPO training step, from arithmetic, checked against a measurement at a size that runs here.

The arithmetic (docs/performance.md explains every term) counts, for a LLaVA-style model (CLIP
vision tower, MLP projector, Llama decoder), what one `sena train` step keeps per device:
weights, gradients, AdamW states, master weights, autocast's bf16 weight copies, the activations
autograd saves (per decoder layer and token, derived from what each op saves), trl's chunked
LM-head workspace, and the backward sweep that trades activations for gradients layer by layer.
`table_7b()` applies it to LLaVA-1.5-7B on 8 GPUs (DDP, ZeRO-2, ZeRO-3, LoRA; with and without
gradient checkpointing).

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
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GiB = 2**30
MiB = 2**20
ROOT = Path(__file__).resolve().parents[1]

# trl 1.16's chunked LM head (trl/kernels/chunked_logprob.py): tiles of TOKENS x VOCAB_TILE logits.
HEAD_TOKEN_TILE = 4096
HEAD_VOCAB_TILE = 32768


# ---------------------------------------------------------------- shape and parameter counts


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    image_size: int
    patch_size: int
    lora_r: int = 16

    @property
    def image_tokens(self) -> int:  # LLaVA-1.5 drops the CLS token ("default" feature strategy)
        return (self.image_size // self.patch_size) ** 2

    def lm_layer_params(self) -> int:  # q, k, v, o (no bias, no GQA), gate, up, down, two RMSNorms
        h, f = self.hidden, self.intermediate
        return 4 * h * h + 3 * h * f + 2 * h

    def lm_linear_params(self) -> int:  # the decoder's projections (what autocast casts and LoRA adapts)
        h, f = self.hidden, self.intermediate
        return self.layers * (4 * h * h + 3 * h * f)

    def lm_params(self) -> int:  # layers + embedding + untied LM head + final norm
        return self.layers * self.lm_layer_params() + 2 * self.vocab * self.hidden + self.hidden

    def projector_params(self) -> int:  # Linear(d_v, h) + GELU + Linear(h, h), with biases
        return self.vision_hidden * self.hidden + self.hidden + self.hidden * self.hidden + self.hidden

    def vision_params(self) -> int:  # CLIP ViT: patch conv (no bias), CLS, positions, pre/post LN, layers
        d, f, p = self.vision_hidden, self.vision_intermediate, self.patch_size
        positions = self.image_tokens + 1
        layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
        return 3 * p * p * d + d + positions * d + 2 * d + self.vision_layers * layer + 2 * d

    def total_params(self) -> int:
        return self.lm_params() + self.projector_params() + self.vision_params()

    def lora_params(self) -> int:  # r x (in + out) per adapted projection, 7 per layer
        h, f, r = self.hidden, self.intermediate, self.lora_r
        return self.layers * r * (4 * (h + h) + 3 * (h + f))


# LLaVA-1.5-7B: Vicuna-7B (LLaMA-7B shape) with LLaVA's 32064-token vocabulary, CLIP ViT-L/14 at 336 px.
LLAVA_7B = Shape(vocab=32064, hidden=4096, intermediate=11008, layers=32, heads=32, vision_hidden=1024,
                 vision_intermediate=4096, vision_layers=24, image_size=336, patch_size=14)


# ---------------------------------------------------------------- activations


def layer_activation_bytes_per_token(s: Shape, regime: str, lora: bool) -> float:
    """Bytes autograd saves in one decoder layer per token (HF LlamaDecoderLayer, SDPA attention).

    regime: "fp32" (everything fp32: sena on CPU), "mixed" (fp32 weights under bf16 autocast: sena's
    Trainer on GPU), "bf16" (weights and activations bf16: DeepSpeed's bf16 mode). Assumes a fused
    attention kernel (flash / memory-efficient SDPA: saves q, k, v, output and a per-head logsumexp,
    never the s x s probabilities), no GQA, and dropout off (trl's DPOConfig sets disable_dropout,
    which also turns LoRA's dropout into the identity).
    """
    h, f, a, r = s.hidden, s.intermediate, s.heads, s.lora_r
    e = 4 if regime == "fp32" else 2  # matmul outputs
    small = 2 * 4 + 4 * a  # two RMSNorm rsqrt columns, fp32 logsumexp per head
    attention = 4 * e * h  # q, k (after rotary), v, attention output (o_proj's input is a view of it)
    # Each RMSNorm saves its input in fp32. A trained norm also saves the normalised x before its weight.
    # Then what the projections after it save of its output: fp32 keeps the one fp32 output (shared by
    # q/k/v, or gate/up); autocast casts it to bf16 once per projection (3 attention, 2 MLP), as the
    # output is not a leaf and autocast caches only leaves; bf16 mode keeps one bf16 output.
    if regime == "fp32":
        norm_outputs = 2 * 4 * h
    elif regime == "mixed":
        norm_outputs = (3 + 2) * 2 * h
    else:
        norm_outputs = 2 * 2 * h
    norm_inputs = 2 * 4 * h
    if not lora:
        normalised = 2 * (4 if regime != "bf16" else 2) * h
        mlp = 4 * e * f  # gate out, up out, SiLU out, SiLU*up (down_proj's input)
        return norm_inputs + normalised + norm_outputs + attention + mlp + small
    # LoRA: frozen weights need no saved inputs, but each adapter's A saves its input, which is the same
    # tensor the trained projection would have saved (the norm outputs, the attention output, SiLU*up),
    # plus its r-wide output. Under autocast peft first casts o_proj's bf16 input to its fp32 adapter,
    # and autocast casts that back: a bf16 copy of the attention output of its own.
    mlp = 4 * e * f  # gate out, up out, SiLU out, and SiLU*up for down's adapter
    o_copy = 2 * h if regime == "mixed" else 0
    return norm_inputs + norm_outputs + attention + o_copy + mlp + 7 * e * r + small


def checkpoint_bytes_per_token(s: Shape, regime: str) -> float:
    """With gradient checkpointing a layer keeps only its input (the residual stream)."""
    return (2 if regime == "bf16" else 4) * s.hidden


def residual_bytes(regime: str) -> int:
    return 2 if regime == "bf16" else 4


@dataclass
class Batch:
    tokens: int  # sequences x padded length (chosen and rejected are both in the batch)
    sequences: int
    images: int  # one per sequence: trl feeds the image with chosen and with rejected
    head_tokens: int  # positions the chunked LM head scores: all (CPU) or completion tokens only (GPU)
    triton: bool  # trl's fused Triton head (GPU) vs its torch path (CPU)


def batch_for(s: Shape, pairs: int, text_tokens: int = 100, completion_tokens: int = 50, gpu: bool = True) -> Batch:
    seq = s.image_tokens + text_tokens
    return Batch(tokens=2 * pairs * seq, sequences=2 * pairs, images=2 * pairs,
                 head_tokens=2 * pairs * (completion_tokens if gpu else seq - 1), triton=gpu)


def _head_workspace(s: Shape, b: Batch, regime: str, backward: bool) -> float:
    """trl's chunked log-prob head: a TOKENS x 32768 tile buffer in the compute dtype; its torch path
    (no Triton, as on CPU) also holds whole fp32 tiles of temporaries: forward 3 (scaled logits, their
    exp, exp x logits), backward 7 (scaled twice, log-probs, probs, grad, target mask as float, their
    difference and product); a bf16 tile's fp32 upcast is gone before the peak."""
    n = min(b.head_tokens, HEAD_TOKEN_TILE)
    compute = 4 if regime == "fp32" else 2
    ws = n * HEAD_VOCAB_TILE * compute
    if not b.triton:
        ws += (7 if backward else 3) * n * min(s.vocab, HEAD_VOCAB_TILE) * 4
    if backward:
        ws += b.head_tokens * s.hidden * 4  # grad of the hidden states, fp32
    return ws


def forward_saved(s: Shape, b: Batch, regime: str, lora: bool, checkpointing: bool) -> dict:
    """What the forward leaves for backward, by part (bytes)."""
    per_layer = (checkpoint_bytes_per_token(s, regime) if checkpointing
                 else layer_activation_bytes_per_token(s, regime, lora)) * b.tokens
    e = 4 if regime == "fp32" else 2
    res = residual_bytes(regime)
    seq_len = b.tokens // b.sequences
    head_dim = s.hidden // s.heads
    shared = b.sequences * seq_len * seq_len * 4 + 2 * seq_len * head_dim * res  # additive mask, cos, sin
    # Final RMSNorm (input, normalised x unless frozen) and the head's copy of the hidden states it scores.
    final = b.tokens * s.hidden * (res + (0 if lora else res)) + b.head_tokens * s.hidden * res
    # Projector (trained unless LoRA): its input features (bf16 once autocast casts them), GELU in, GELU out.
    projector = 0 if lora else b.images * s.image_tokens * (s.vision_hidden * e + 2 * s.hidden * e)
    return {"layers": per_layer * s.layers, "per_layer": per_layer, "final": final, "projector": projector,
            "shared": shared}


def autocast_copies(s: Shape, regime: str, lora: bool, checkpointing: bool) -> tuple[float, float]:
    """bf16 weight copies under autocast: (held at the end of the forward, held per layer in backward).

    A trainable fp32 weight's bf16 cast is cached until the model's autocast region exits and saved for
    backward; a frozen one (LoRA's base) is cast anew by each op and saved for backward. With
    checkpointing nothing is saved: trainable copies still sit in the cache at the end of the forward,
    frozen ones are freed at once; each layer's recompute casts its own again.
    """
    if regime != "mixed":
        return 0.0, 0.0
    lm = 2 * s.lm_linear_params()
    projector = 0 if lora else 2 * s.projector_params()
    if checkpointing:
        return (0.0 if lora else lm + projector), lm / s.layers
    return lm + projector, 0.0


def backward_transient(s: Shape, b: Batch, regime: str) -> float:
    """Gradients of activations alive inside one layer's backward: the residual stream's gradient and
    its accumulator, and the MLP's three T x f gradients (SiLU*up, SiLU out, up out)."""
    e = 4 if regime == "fp32" else 2
    return b.tokens * (2 * s.hidden * residual_bytes(regime) + 3 * s.intermediate * e)


def step_dynamics(s: Shape, b: Batch, regime: str, lora: bool, checkpointing: bool, grad_bytes: float,
                  grads_sharded: bool = False) -> dict:
    """Peak above the persistent state over forward and backward (first step: no optimizer state yet).

    Backward runs head -> layers (last first) -> projector -> embedding; each part's saved tensors are
    freed as its gradients appear. grad_bytes: bytes per trainable parameter of gradient storage
    (fp32 4, bf16 2); grads_sharded: ZeRO keeps only a partition (counted by the caller), so gradients
    do not accumulate here.
    """
    saved = forward_saved(s, b, regime, lora, checkpointing)
    cached, per_layer_copies = autocast_copies(s, regime, lora, checkpointing)
    acts = saved["layers"] + saved["final"] + saved["projector"] + saved["shared"]
    end_of_forward = acts + cached + _head_workspace(s, b, regime, backward=False)
    g = 0.0 if grads_sharded else grad_bytes
    head_grad = 0 if lora else s.vocab * s.hidden * g
    layer_grad = (s.lora_params() / s.layers if lora else s.lm_layer_params()) * g
    live = acts + (0.0 if checkpointing else cached)
    peaks = [end_of_forward]
    # LM head: its fp32 weight-gradient buffer and tiles while everything else is still saved.
    peaks.append(live + head_grad + s.vocab * s.hidden * 4 * (not lora) + _head_workspace(s, b, regime, True))
    live += head_grad - saved["final"]
    recompute = (layer_activation_bytes_per_token(s, regime, lora) * b.tokens + per_layer_copies
                 if checkpointing else 0.0)
    copies_per_layer = 0.0 if checkpointing else cached / s.layers if regime == "mixed" else 0.0
    for _ in range(s.layers):
        peaks.append(live + recompute + backward_transient(s, b, regime) + layer_grad)
        live += layer_grad - saved["per_layer"] - copies_per_layer
    if not lora:
        live += s.projector_params() * g - saved["projector"]
        peaks.append(live + s.vocab * s.hidden * g)  # the embedding's dense gradient comes last
    return {"peak": max(peaks), "end_of_forward": end_of_forward, "activations": acts, "autocast_copies": cached}


# ---------------------------------------------------------------- one process, one step (the check)


def predict_single_process(s: Shape, b: Batch, regime: str, lora: bool, checkpointing: bool) -> dict:
    """What the measurement sees: peaks above the bytes alive before the step (the weights)."""
    trainable = s.lora_params() if lora else s.lm_params() + s.projector_params()
    width = 2 if regime == "bf16" else 4  # gradients and AdamW states take the parameters' dtype
    fb = step_dynamics(s, b, regime, lora, checkpointing, grad_bytes=width)
    grads = width * trainable
    adam = 2 * width * trainable  # exp_avg, exp_avg_sq; torch's fused AdamW needs no temporaries
    return {"forward_backward": fb["peak"], "optimizer_step": grads + adam, "trainable": trainable}


# ---------------------------------------------------------------- 8 GPUs, LLaVA-1.5-7B


def per_gpu_7b(strategy: str, lora: bool, checkpointing: bool, pairs: int = 1, gpus: int = 8,
               s: Shape = LLAVA_7B) -> dict:
    """Per-GPU memory of a steady-state step (optimizer states exist) in sena's regime; bytes."""
    b = batch_for(s, pairs)
    total = s.total_params()
    trainable = s.lora_params() if lora else s.lm_params() + s.projector_params()
    n = gpus
    rows: dict[str, float] = {}
    if strategy == "ddp":  # Trainer: fp32 weights, bf16 autocast, fp32 grads, fp32 AdamW; DDP's grad buckets
        regime = "mixed"
        rows["weights (fp32 = master)"] = 4 * total
        rows["gradients (fp32)"] = 4 * trainable
        rows["DDP gradient buckets (fp32)"] = 4 * trainable  # gradient_as_bucket_view is off (accelerate default)
        rows["AdamW m, v (fp32)"] = 8 * trainable
        persistent = rows["weights (fp32 = master)"] + rows["DDP gradient buckets (fp32)"] + rows["AdamW m, v (fp32)"]
        dyn = step_dynamics(s, b, regime, lora, checkpointing, grad_bytes=4)
    elif strategy.endswith("-bf16"):  # DeepSpeed's bf16 mode: bf16 weights and grads, fp32 master + m + v partitioned
        regime = "bf16"
        if strategy.startswith("zero2"):
            rows["weights (bf16)"] = 2 * total
        else:  # partition + the gathered working set: the largest module and a prefetch bucket (0.9 h^2)
            rows["weights (bf16)"] = 2 * total / n + 2 * (s.vocab * s.hidden + 0.9 * s.hidden**2)
        bucket = 2 * 2 * s.hidden**2  # reduce bucket ("auto" = h^2 elements) and its copy in flight
        rows["gradients (bf16, partition + buckets)"] = 2 * trainable / n + bucket
        rows["master weights (fp32, partition)"] = 4 * trainable / n
        rows["AdamW m, v (fp32, partition)"] = 8 * trainable / n
        rows["fp32 gradient partition at the step"] = 4 * trainable / n
        persistent = sum(v for k, v in rows.items() if not k.startswith("fp32 gradient"))
        dyn = step_dynamics(s, b, regime, lora, checkpointing, grad_bytes=2, grads_sharded=True)
    else:  # what sena ships: DeepSpeed's torch_autocast, fp32 weights and grads, autocast like DDP; ZeRO
        # keeps its own fp32 partition of the trainable weights for the optimizer, and m, v
        regime = "mixed"
        if strategy == "zero2":
            rows["weights (fp32)"] = 4 * total
        else:
            rows["weights (fp32)"] = 4 * total / n + 4 * (s.vocab * s.hidden + 0.9 * s.hidden**2)
        bucket = 2 * 4 * s.hidden**2
        rows["gradients (fp32, partition + buckets)"] = 4 * trainable / n + bucket
        rows["master weights (fp32, partition)"] = 4 * trainable / n
        rows["AdamW m, v (fp32, partition)"] = 8 * trainable / n
        persistent = sum(rows.values())
        dyn = step_dynamics(s, b, regime, lora, checkpointing, grad_bytes=4, grads_sharded=True)
    rows["activations saved (peak of forward/backward)"] = dyn["activations"]
    if dyn["autocast_copies"]:
        rows["autocast bf16 weight copies"] = dyn["autocast_copies"]
    if strategy == "ddp" or "fp32 gradient partition at the step" not in rows:
        peak = persistent + dyn["peak"]
    else:
        peak = max(persistent + dyn["peak"], persistent + rows["fp32 gradient partition at the step"])
    return {"rows": rows, "peak": peak, "persistent": persistent, "dynamic": dyn["peak"], "regime": regime}


def table_7b(pairs: int = 1, gpus: int = 8) -> str:
    s = LLAVA_7B
    lines = [f"LLaVA-1.5-7B: {s.total_params():,} parameters ({s.lm_params():,} language model, "
             f"{s.projector_params():,} projector, {s.vision_params():,} vision tower); LoRA r={s.lora_r}: "
             f"{s.lora_params():,}. Per GPU, {gpus} GPUs, {pairs} pair(s) per GPU per micro-batch "
             f"(2 sequences x {s.image_tokens} image + 100 text tokens).",
             "",
             "| setup | checkpointing | weights | grads (+DDP buckets) | optimizer (+master) "
             "| activations (+bf16 copies) | peak/GPU |",
             "|---|---|---|---|---|---|---|"]
    setups = [("DDP, full", "ddp", False), ("ZeRO-2, full", "zero2", False), ("ZeRO-3, full", "zero3", False),
              ("DDP, LoRA", "ddp", True), ("ZeRO-2, LoRA", "zero2", True),
              ("ZeRO-2 bf16 mode, full", "zero2-bf16", False), ("ZeRO-3 bf16 mode, full", "zero3-bf16", False)]
    for label, strategy, lora in setups:
        for ckpt in (False, True):
            r = per_gpu_7b(strategy, lora, ckpt, pairs, gpus)
            rows = r["rows"]
            weights = sum(v for k, v in rows.items() if k.startswith("weights"))
            grads = sum(v for k, v in rows.items() if k.startswith("gradients") or k.startswith("DDP"))
            optim = sum(v for k, v in rows.items() if k.startswith("AdamW") or k.startswith("master")
                        or k.startswith("fp32 gradient"))
            acts = rows["activations saved (peak of forward/backward)"] + rows.get("autocast bf16 weight copies", 0)
            lines.append(f"| {label} | {'on' if ckpt else 'off'} | {weights / GiB:.1f} | {grads / GiB:.1f} | "
                         f"{optim / GiB:.1f} | {acts / GiB:.1f} | **{r['peak'] / GiB:.1f}** |")
    b = batch_for(s, pairs)
    lines += ["", f"Saved activations per decoder layer and token (bytes), and for {b.tokens} tokens x {s.layers} "
              "layers (GiB):"]
    for regime in ("fp32", "mixed", "bf16"):
        for lora in (False, True):
            per_token = layer_activation_bytes_per_token(s, regime, lora)
            lines.append(f"  {regime:<5} {'LoRA' if lora else 'full':<4}: {per_token:9,.0f} B/token/layer  "
                         f"{per_token * b.tokens * s.layers / GiB:6.2f} GiB")
    lines.append(f"  checkpointing keeps {checkpoint_bytes_per_token(s, 'mixed'):,.0f} B/token/layer "
                 f"({checkpoint_bytes_per_token(s, 'bf16'):,.0f} in bf16 mode) plus one layer recomputed")
    return "\n".join(lines)


# ---------------------------------------------------------------- measurement


WORDS = ("red blue green yellow circle square cross triangle small large left right top bottom near far "
         "the a of and on in with above below beside image shows there is one two three shape colour").split()


def _sentence(n: int, offset: int) -> str:
    return " ".join(WORDS[(i * 7 + offset) % len(WORDS)] for i in range(n)) + "."


def build_model(out: Path, s: Shape) -> None:
    import torch
    from PIL import Image
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from sena_cli.world import tiny

    tok = tiny.build_tokenizer(WORDS + ["."])
    image_processor = CLIPImageProcessor(size={"shortest_edge": s.image_size},
                                         crop_size={"height": s.image_size, "width": s.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=s.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tiny.CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
                                       num_hidden_layers=s.vision_layers, num_attention_heads=4,
                                       image_size=s.image_size, patch_size=s.patch_size),
        text_config=LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                                num_hidden_layers=s.layers, num_attention_heads=s.heads,
                                num_key_value_heads=s.heads, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
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
    small = Shape(vocab=args.vocab, hidden=args.hidden, intermediate=args.hidden * 8 // 3 // 64 * 64 + 64,
                  layers=args.layers, heads=args.hidden // 64, vision_hidden=256, vision_intermediate=1024,
                  vision_layers=2, image_size=336, patch_size=14)
    print(f"\nCheck: random LLaVA, {small.total_params() / 1e6:.1f}M parameters "
          f"(h {small.hidden}, f {small.intermediate}, {small.layers} layers, vocab {small.vocab}; "
          f"CLIP 256x2 at 336 px), {args.pairs} pair(s), one SenaDPOTrainer step on CPU, 1 thread")
    # MALLOC_MMAP_THRESHOLD_: large blocks go back to the OS when freed, so RSS follows the live bytes.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"{'regime':<6} {'train':<5} {'ckpt':<4} | {'fwd+bwd meas':>12} {'pred':>8} {'err':>6} | "
          f"{'step meas':>9} {'pred':>8} {'err':>6} | {'RSS growth':>10}")
    runs = [(regime, lora, ckpt) for regime in ("fp32", "mixed") for lora in (False, True) for ckpt in (False, True)]
    runs += [("bf16", False, False), ("bf16", False, True)]  # no bf16 LoRA: peft keeps fp32 adapters, DeepSpeed not
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
    sys.path.insert(0, str(ROOT))
    main()
