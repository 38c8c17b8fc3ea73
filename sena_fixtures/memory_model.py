"""Memory of one DPO training step, from arithmetic (docs/performance.md explains every term).

For a LLaVA-style model (CLIP vision tower, MLP projector, Llama decoder), what one `sena train` step keeps
per device: weights, gradients, AdamW states, master weights, autocast's bf16 weight copies, the activations
autograd saves (per decoder layer and token, derived from what each op saves), trl's chunked LM-head
workspace, and the backward sweep that trades activations for gradients layer by layer. `table_7b()` applies
it to LLaVA-1.5-7B on 8 GPUs (DDP, ZeRO-2, ZeRO-3, LoRA; with and without gradient checkpointing).

Shared by tests/test_memory_arithmetic.py (which checks the counts against transformers, peft and autograd)
and the benchmarks that print it beside measured peaks (benchmarks/train_memory_model.py, gpu_scale.py).
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 2**30
MiB = 2**20

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
