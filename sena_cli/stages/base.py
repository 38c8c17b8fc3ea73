"""Stage `base`: train θ0 of the embedded default into models/iter0.

Only for `model.base: embedded`. With a real checkpoint, θ0 is that checkpoint and this
stage is not part of the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import atomic_dir, read_jsonl
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.method.prompts import with_suffix
from sena_cli.progress import Progress, no_progress
from sena_cli.world import tiny


def vocabulary_texts(params: Params, examples: list[dict], world: Path) -> list[str]:
    """Every text θ0 must read or write: the instruction set, the eval questions, all prompts."""
    p = params.qa.prompts
    texts = [t for ex in examples for t in (ex["prompt"], ex["answer"])]
    for split in ("random", "popular", "adversarial"):
        texts += [r["text"] for r in read_jsonl(world / "eval" / f"pope_{split}.jsonl")]
    texts += [r["text"] + " " + r["answer"] for r in read_jsonl(world / "eval" / "vqa.jsonl")]
    texts += [p.question_generate, p.question_check, p.enhance, p.enhance_yes_no]
    texts += [with_suffix(d, p.short_description_suffix) for d in p.describe_instructions]
    texts += [p.short_answer_suffix, "Yes No"]
    return texts


def pixel_tensor(processor, paths: list[Path], tick: Callable[[int], None], chunk: int = 512) -> torch.Tensor:
    parts = []
    for start in range(0, len(paths), chunk):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + chunk]]
        parts.append(processor.image_processor(images=images, return_tensors="pt").pixel_values)
        tick(len(images))
    return torch.cat(parts)


def run_base(
    params: Params, root: Path = Path("."), progress: Progress = no_progress
) -> dict:
    """Build tokenizer, processor and model from the world, train, save to models/iter0."""
    if params.model.base != "embedded":
        raise SenaError(
            f"model.base is '{params.model.base}': θ0 is your checkpoint, so `sena base` has nothing to "
            "train; set model.base: embedded to build the tiny θ0"
        )
    torch.set_num_threads(params.base.threads)
    world = layout.world_dir(root)
    train_file = world / "instruct" / "train.jsonl"
    if not train_file.is_file():
        raise SenaError(f"{train_file}: missing; run `sena world` first")
    examples = read_jsonl(train_file)
    tokenizer = tiny.build_tokenizer(vocabulary_texts(params, examples, world))
    processor = tiny.build_processor(tokenizer, params.world, params.base)
    model = tiny.build_model(tokenizer, params.world, params.base)

    names = sorted({ex["image"] for ex in examples})
    index = {n: i for i, n in enumerate(names)}
    pixels = pixel_tensor(processor, [world / "instruct" / "images" / n for n in names],
                          progress("preparing images", len(names)))
    encoded = tiny.encode_examples(processor, examples)
    unknown = sum(seq.count(tokenizer.unk_token_id) for seq, _ in encoded)
    if unknown:
        raise RuntimeError(f"{unknown} unknown tokens in the instruction set: the vocabulary is incomplete")

    step_tick = progress("training θ0", params.base.steps)
    started = time.perf_counter()
    log = tiny.train_tiny(model, pixels, encoded, [index[ex["image"]] for ex in examples], params.base,
                          tokenizer.pad_token_id, on_step=lambda step, loss: step_tick(1))
    seconds = time.perf_counter() - started
    info = {"train_seconds": round(seconds, 1), "parameters": sum(p.numel() for p in model.parameters()),
            "vocabulary": len(tokenizer), "examples": len(examples), "steps": params.base.steps}
    with atomic_dir(layout.model_dir(0, root)) as tmp:
        tiny.save_base(model, processor, tmp, log, info)
    return {**info, "final loss": log[-1]["loss"], "output": str(layout.model_dir(0, root))}
