"""θ0 of the embedded default: a tiny but real LLaVA, built offline and trained on the world.

Architecture (sizes from `base` params): a CLIP vision tower, LLaVA's MLP projector and a
Llama decoder, with a word-level tokenizer built with `tokenizers`. Saved with
`save_pretrained`, it loads through AutoModelForImageTextToText / AutoProcessor exactly
like a hub checkpoint, so the loop never special-cases it.

The tokenizer splits on spaces (Metaspace) and isolates punctuation, and decodes with
the same Metaspace rule, so decode(encode(text)) gives back every text the world writes
(a plain WordLevel decoder glues punctuation to words and breaks that).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from sena_cli.config import BaseParams, WorldParams

# θ0's training state is saved this often (~13 s of the shipped θ0's steps on 2 cores; a save takes
# milliseconds), so a killed `sena base` loses at most that much.
CHECKPOINT_EVERY = 100

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, IMAGE]
USER_TAG, ASSISTANT_TAG = "USER:", "ASSISTANT:"

# Renders plain-string or LLaVA-style list content; the generation prompt ends at
# "ASSISTANT:" and an assistant turn is " answer</s>", so prompt + completion splits cleanly.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> {% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def build_tokenizer(texts: Iterable[str], extra_special_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every word of `texts` (plus the chat tags)."""
    pre = _pre_tokenizer()
    specials = SPECIAL_TOKENS + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    words: set[str] = set()
    for text in list(texts) + [f"{USER_TAG} {ASSISTANT_TAG}"]:
        for piece in text.split(IMAGE):
            words.update(w for w, _ in pre.pre_tokenize_str(piece))
    vocab = {tok: i for i, tok in enumerate(specials + sorted(words - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE}, model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    if extra_special_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return tok


def llava_processor(tokenizer, image_size: int, patch_size: int, feature_strategy: str = "full",
                    chat_template: str = CHAT_TEMPLATE, **image_settings) -> LlavaProcessor:
    """A LLaVA processor: CLIP's image processor (resize and centre-crop to `image_size`) and `tokenizer`."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}, **image_settings)
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy=feature_strategy, num_additional_image_tokens=1, chat_template=chat_template,
    )


def random_llava(
    tokenizer, *, image_size: int, patch_size: int, vision_hidden: int, vision_layers: int, vision_heads: int,
    text_hidden: int, text_intermediate: int, text_layers: int, text_heads: int, vision_intermediate: int | None = None,
    vocab_size: int | None = None, max_positions: int = 2048, feature_strategy: str = "full",
    feature_layer: int = -1, seed: int | None = None, device=None, **llava_settings,
) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA (CLIP vision tower, MLP projector, Llama decoder) for `tokenizer`.

    The one builder of random LLaVAs: θ0 of the embedded world, the real-shaped test fixture and the
    benchmarks' models of any width. The vocabulary is the tokenizer's unless `vocab_size` is given
    (a benchmark may want a real vocabulary's rows); with `seed`, torch is seeded right before the
    weights are drawn, so the same arguments give the same bytes; `device` builds it there (a 7B-wide
    model built on the CPU takes minutes).
    """
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=vision_intermediate or vision_hidden * 2,
        num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
        image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=text_hidden, intermediate_size=text_intermediate,
        num_hidden_layers=text_layers, num_attention_heads=text_heads,
        num_key_value_heads=text_heads, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy=feature_strategy, vision_feature_layer=feature_layer,
        projector_hidden_act="gelu", **llava_settings,
    )
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.do_sample = False
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    return model


def build_processor(tokenizer: PreTrainedTokenizerFast, world: WorldParams, base: BaseParams) -> LlavaProcessor:
    return llava_processor(tokenizer, world.image_size, base.patch_size,
                           do_resize=True, do_center_crop=True, do_convert_rgb=True)


def build_model(
    tokenizer: PreTrainedTokenizerFast, world: WorldParams, base: BaseParams
) -> LlavaForConditionalGeneration:
    """θ0 before training: the world's image size, `base`'s widths and depths, seeded by `base.seed`."""
    return random_llava(
        tokenizer, image_size=world.image_size, patch_size=base.patch_size, vision_hidden=base.vision_hidden,
        vision_layers=base.vision_layers, vision_heads=base.vision_heads, text_hidden=base.text_hidden,
        text_intermediate=base.text_intermediate, text_layers=base.text_layers, text_heads=base.text_heads,
        seed=base.seed,
    )


# ---------------------------------------------------------------- training


def encode_examples(processor: LlavaProcessor, examples: list[dict]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + answer (image placeholder expanded) and the prompt's length."""
    tok = processor.tokenizer
    n_image = _image_token_count(processor)
    out = []
    for ex in examples:
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ex["prompt"]}]}],
            add_generation_prompt=True, tokenize=False,
        ).replace(IMAGE, IMAGE * n_image)
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        answer_ids = tok(" " + ex["answer"], add_special_tokens=False).input_ids + [tok.eos_token_id]
        out.append((prompt_ids + answer_ids, len(prompt_ids)))
    return out


def _image_token_count(processor: LlavaProcessor) -> int:
    crop = processor.image_processor.crop_size
    n = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    return n + processor.num_additional_image_tokens


def image_prefix_length(encoded: list[tuple[list[int], int]], image_token_id: int) -> int:
    """Length of the prefix every example shares: the chat tag and the image tokens."""
    first = encoded[0][0]
    n = max(i for i, t in enumerate(first) if t == image_token_id) + 1
    if any(seq[:n] != first[:n] for seq, _ in encoded):
        raise ValueError("examples do not share one image prefix; the chat template changed")
    return n


def train_tiny(
    model: LlavaForConditionalGeneration,
    pixel_values: torch.Tensor,
    encoded: list[tuple[list[int], int]],
    image_index: list[int],
    base: BaseParams,
    pad_id: int,
    on_step: Callable[[int, float], None] = lambda step, loss: None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    own_answers: Callable[[], dict[int, tuple[list[int], int]]] | None = None,
) -> list[dict]:
    """Supervised next-token training on the answers (prompt tokens masked). Returns the log.

    Up to `base.examples_per_sequence` examples of one image share a row: the image prefix
    once, then each example's prompt and answer, which sees the prefix and itself only (a
    block mask, and positions that restart after the prefix). Each example thus gets exactly
    the logits it would get alone, for one pass over the image instead of one per example.

    Every CHECKPOINT_EVERY steps `on_checkpoint` gets the training state other than the
    weights (optimizer, schedule, random states, the batches left, the log); given back as
    `resume` with the weights of that step already in `model`, training goes on exactly as
    if it had never stopped (the same θ0, bit for bit, on the same machine and threads).

    After `base.own_answers_step` steps (0: never), `own_answers` (called with the model in eval mode)
    gives encodings that replace some examples' for the rest of training: the enhancement examples
    rewritten with θ0's own answers. The replacements travel in the checkpoint state.
    """
    torch.manual_seed(base.seed)
    rng = random.Random(base.seed)
    prefix = image_prefix_length(encoded, model.config.image_token_id)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=base.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(optim, base.warmup_steps, base.steps)
    rows: list[list[int]] = []
    batches: list[list[int]] = []
    log: list[dict] = []
    first, elapsed = 1, 0.0
    if resume is not None:
        optim.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        rows, batches, log = resume["rows"], resume["batches"], resume["log"]
        first, elapsed = resume["step"] + 1, resume["seconds"]
        replaced = resume.get("replaced", {})
    else:
        replaced = {}
    encoded = _replace(encoded, replaced)
    started = time.perf_counter() - elapsed
    for step in range(first, base.steps + 1):
        if own_answers is not None and base.own_answers_step and step == base.own_answers_step + 1 and not replaced:
            model.eval()
            replaced = own_answers()
            model.train()
            encoded = _replace(encoded, replaced)
        if not batches:
            rows = _rows_by_image(image_index, base.examples_per_sequence, rng)
            lengths = [prefix + sum(len(encoded[i][0]) - prefix for i in row) for row in rows]
            batches = _length_bucketed_batches(lengths, base.batch_size, rng)
        batch = [rows[r] for r in batches.pop()]
        inputs = packed_batch(batch, encoded, prefix, pad_id, model.dtype)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        pixels = pixel_values[[image_index[row[0]] for row in batch]].to(model.device)
        loss = model(**inputs, pixel_values=pixels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"θ0 training diverged at step {step} (loss {value}); lower base.lr")
        if step == 1 or step % 50 == 0 or step == base.steps:
            log.append({"step": step, "loss": round(value, 5), "lr": sched.get_last_lr()[0],
                        "seconds": round(time.perf_counter() - started, 2)})
        on_step(step, value)
        if on_checkpoint is not None and step % CHECKPOINT_EVERY == 0 and step < base.steps:
            on_checkpoint({"step": step, "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                           "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "rows": rows,
                           "batches": batches, "log": log, "seconds": time.perf_counter() - started,
                           "replaced": replaced})
    model.eval()
    return log


def _replace(encoded: list[tuple[list[int], int]], replaced: dict[int, tuple[list[int], int]]) -> list:
    if not replaced:
        return encoded
    out = list(encoded)
    for i, enc in replaced.items():
        out[i] = enc
    return out


def greedy_answers(
    model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, prompts: list[list[int]],
    image_index: list[int], eos_id: int, max_new_tokens: int = 8, batch_size: int = 64,
    tick: Callable[[int], None] = lambda n: None,
) -> list[list[int]]:
    """Greedy answer ids (without the end token) of prompt ids that each begin with the image prefix,
    on their images; prompts of one length go together, so no padding is needed."""
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for length, members in sorted(by_length.items()):
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                ids = torch.tensor([prompts[i] for i in chunk], device=model.device)
                pixels = pixel_values[[image_index[i] for i in chunk]].to(model.device, model.dtype)
                made = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                                      max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_id,
                                      pad_token_id=eos_id)
                for i, row in zip(chunk, made[:, length:].tolist(), strict=True):
                    out[i] = row[:row.index(eos_id)] if eos_id in row else row
                tick(len(chunk))
    return out


def packed_batch(
    rows: list[list[int]], encoded: list[tuple[list[int], int]], prefix: int, pad_id: int,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Model inputs for rows of examples that share an image: ids, answer-only labels,
    positions that restart after the prefix, and a 4-D additive mask in which a token sees
    the prefix and the earlier tokens of its own example (a plain causal mask for one)."""
    ids_rows, label_rows, pos_rows, seg_rows = [], [], [], []
    for row in rows:
        seq0 = encoded[row[0]][0]
        ids, labels = list(seq0[:prefix]), [-100] * prefix
        pos, seg = list(range(prefix)), [0] * prefix
        for number, i in enumerate(row, start=1):
            seq, n_prompt = encoded[i]
            ids += seq[prefix:]
            labels += [-100] * (n_prompt - prefix) + seq[n_prompt:]
            pos += range(prefix, len(seq))
            seg += [number] * (len(seq) - prefix)
        ids_rows.append(ids)
        label_rows.append(labels)
        pos_rows.append(pos)
        seg_rows.append(seg)
    width = max(len(r) for r in ids_rows)

    def pad(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long)

    seg = pad(seg_rows, -1)
    key_seg, query_seg = seg[:, None, :], seg[:, :, None]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key_seg >= 0) & ((key_seg == 0) | (key_seg == query_seg))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves: no empty softmax
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": pad(ids_rows, pad_id), "labels": pad(label_rows, -100),
            "position_ids": pad(pos_rows, 0), "attention_mask": mask[:, None]}


def _rows_by_image(image_index: list[int], per_row: int, rng: random.Random) -> list[list[int]]:
    """One epoch's rows: each image's examples, shuffled, in groups of at most `per_row`."""
    by_image: dict[int, list[int]] = {}
    for i, image in enumerate(image_index):
        by_image.setdefault(image, []).append(i)
    rows = []
    for examples in by_image.values():
        rng.shuffle(examples)
        rows += [examples[k : k + per_row] for k in range(0, len(examples), per_row)]
    return rows


def _length_bucketed_batches(
    lengths: list[int], batch_size: int, rng: random.Random, window: int = 64
) -> list[list[int]]:
    """One epoch of batches; rows of similar length share a batch (less padding: 0.067 s
    instead of ~0.10 s per step here), and both the windows and the batch order stay random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def save_base(model, processor, out: Path, log: list[dict], info: dict) -> None:
    model.save_pretrained(out)  # safetensors
    processor.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps({"log": log, **info}, indent=2) + "\n")
