"""Stage `base`: θ0 in models/iter0.

`model.base: embedded` trains the tiny θ0 on the world. Any other value is a checkpoint
folder or hub id: models/iter0 is then a pointer to it (pointer.json), so the weights are
not copied into the DVC cache; every stage loads θ0 through the pointer.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sena_cli import bounded, layout
from sena_cli.artifacts import atomic_dir, decode, file_identity, fingerprint, resumable_dir
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import POINTER, publish, read_jsonl
from sena_cli.method.prompts import with_suffix
from sena_cli.progress import Progress, no_progress
from sena_cli.tracked import tracked_params
from sena_cli.world import tiny
from sena_cli.world.build import HELD_OUT


def vocabulary_texts(params: Params, examples: list[dict], world: Path) -> list[str]:
    """Every text θ0 must read or write: the instruction set, the eval questions, all prompts."""
    p = params.qa.prompts
    texts = [t for ex in examples for t in (ex["prompt"], ex["answer"])]
    for held_out in HELD_OUT:  # the test, dev and calibration sets
        for split in ("random", "popular", "adversarial"):
            texts += [r["text"] for r in read_jsonl(world / held_out / f"pope_{split}.jsonl")]
        texts += [r["text"] + " " + r["answer"] for r in read_jsonl(world / held_out / "vqa.jsonl")]
    texts += [p.question_generate, p.question_check, p.enhance, p.enhance_yes_no]
    texts += [with_suffix(d, p.short_description_suffix) for d in p.describe_instructions]
    texts += [p.short_answer_suffix, "Yes No"]
    return texts


def pixel_tensor(processor, paths: list[Path], tick: Callable[[int], None], chunk: int = 512) -> torch.Tensor:
    parts = []
    for start in range(0, len(paths), chunk):
        fix = "rebuild the world with `sena world`"
        images = [decode(bounded.image_bytes(p, fix), p, fix) for p in paths[start : start + chunk]]
        parts.append(processor.image_processor(images=images, return_tensors="pt").pixel_values)
        tick(len(images))
    return torch.cat(parts)


def point_to_checkpoint(params: Params, root: Path) -> dict:
    """models/iter0 = a pointer to the user's checkpoint: a hub id (transformers downloads it into its
    own cache when a stage first loads it) or a folder: inside the project, recorded relative to it (also
    when model.base gives it absolute), so the pointer works in any clone; outside it, as model.base
    writes it, with a warning that the run will not travel."""
    from sena_cli.vlm import POINTER_FILE, check_model_dir, looks_local
    from sena_cli.vlm.model import check_hub_model, check_vlm_config

    base = params.model.base
    local = Path(base).expanduser()
    full = local if local.is_absolute() else root / local
    if looks_local(base) or full.exists():
        resolved, project = full.resolve(), root.resolve()
        for output in ("models", "data", "metrics", "report"):
            if resolved.is_relative_to(project / output):
                raise SenaError(f"model.base '{base}' is inside the project's {output}/ folder, which the pipeline "
                                "rewrites (`sena base` replaces models/iter0); copy the checkpoint elsewhere and "
                                "point there")
        check_model_dir(full)
        check_vlm_config(full, params.model.trust_remote_code)
        inside = layout.in_project(base, root)  # recorded relative to the project, so any clone finds it
        target, kind = inside if inside is not None else local.as_posix(), "folder"
        warnings = [] if inside is not None else [layout.travel_warning(
            "model.base", base, "give its hub id (any machine downloads it), or put the folder under the project "
            "(not models/ or data/) and track it with `dvc add`")]
    else:
        check_hub_model(base)
        check_vlm_config(base, params.model.trust_remote_code)
        target, kind, warnings = base, "hub", []
    with publish(layout.model_dir(0, root)) as out:
        out.json(layout.model_dir(0, root) / POINTER_FILE, {"base": target, "kind": kind}, POINTER)
    return {"θ0": target, "output": str(layout.model_dir(0, root) / POINTER_FILE), "warnings": warnings}


def run_base(
    params: Params, root: Path = Path("."), progress: Progress = no_progress
) -> dict:
    """Build tokenizer, processor and model from the world, train, save to models/iter0."""
    if params.model.base != "embedded":
        return point_to_checkpoint(params, root)
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

    work = layout.base_work_dir(root)
    warnings: list[str] = []
    resume = _resume_state(work, fingerprint(tracked_params("base", None, params, root),
                                             file_identity(world / "instruct")), model, warnings)
    own: dict = {}

    def own_answers() -> dict[int, tuple[list[int], int]]:
        replaced, own["answers"] = enhancement_with_own_answers(params, model, processor, examples, pixels, index,
                                                                progress)
        return replaced

    step_tick = progress("training θ0", params.base.steps)
    step_tick(resume["step"] if resume else 0)  # a resumed run starts part-way
    started = time.perf_counter()
    log = tiny.train_tiny(model, pixels, encoded, [index[ex["image"]] for ex in examples], params.base,
                          tokenizer.pad_token_id, on_step=lambda step, loss: step_tick(1), resume=resume,
                          on_checkpoint=lambda state: _save_state(work, model, state), own_answers=own_answers)
    seconds = time.perf_counter() - started
    info = {"train_seconds": round(seconds + (resume["seconds"] if resume else 0.0), 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocabulary": len(tokenizer), "examples": len(examples), "steps": params.base.steps,
            **({"own answers": own["answers"]} if own else {})}
    from sena_cli.vlm import non_finite_weight

    with atomic_dir(layout.model_dir(0, root)) as tmp:
        tiny.save_base(model, processor, tmp, log, info)
        if name := non_finite_weight(tmp):
            raise SenaError(f"θ0 not written: its weight {name} is not finite after training; lower base.lr "
                            f"({params.base.lr:g}) and rerun `sena base`; {layout.model_dir(0, root)} is left as "
                            "it was")
    shutil.rmtree(work, ignore_errors=True)
    resumed = {"resumed from step": resume["step"]} if resume else {}
    return {**info, **resumed, "final loss": log[-1]["loss"], "output": str(layout.model_dir(0, root)),
            **({"warnings": warnings} if warnings else {})}


def enhancement_with_own_answers(params: Params, model, processor, examples: list[dict], pixels: torch.Tensor,
                                 index: dict[str, int], progress: Progress = no_progress
                                 ) -> tuple[dict[int, tuple[list[int], int]], dict]:
    """θ0 answers the question of each answer-enhancement example itself (greedy, as `sena qa` answers), and
    the example is rewritten to ask the enhancement of that answer: the request the method makes, with θ0's
    own errors rather than drawn ones (docs/world.md). Returns the new encodings by example and, per task,
    how many own answers were right (θ0's accuracy at that step)."""
    from sena_cli.world.instruct import enhancement_prompt
    from sena_cli.world.language import answers_match

    chosen = [i for i, ex in enumerate(examples) if ex.get("question")]
    asked = tiny.encode_examples(processor, [{"prompt": examples[i]["question"], "answer": ""} for i in chosen])
    tokenizer = processor.tokenizer
    answers = tiny.greedy_answers(model, pixels, [seq[:n] for seq, n in asked],
                                  [index[examples[i]["image"]] for i in chosen], tokenizer.eos_token_id,
                                  tick=progress("θ0 answers its enhancement questions", len(chosen)))
    rewritten, stats = [], {}
    for i, ids in zip(chosen, answers, strict=True):
        ex, text = examples[i], tokenizer.decode(ids, skip_special_tokens=True).strip()
        rewritten.append({**ex, "prompt": enhancement_prompt(params.qa.prompts, ex, text)})
        truth = ex["answer"].removeprefix("Improved Answer:").strip()
        counts = stats.setdefault(ex["task"], {"examples": 0, "right": 0})
        counts["examples"] += 1
        counts["right"] += answers_match(text, truth)
    return dict(zip(chosen, tiny.encode_examples(processor, rewritten), strict=True)), stats


def _resume_state(work: Path, run_id: str, model, warnings: list[str]) -> dict | None:
    """The training state of an interrupted run of the same inputs, its weights loaded into `model`;
    anything else (no checkpoint, other params or another world) starts afresh in an empty `work`."""
    from safetensors.torch import load_model

    checkpoint = work / "checkpoint"
    if not resumable_dir(work, run_id, lambda w: (checkpoint / "state.pt").is_file()):
        return None
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        state = torch.load(checkpoint / "state.pt", weights_only=True)  # tensors and plain values only
        load_model(model, checkpoint / "model.safetensors")
        return state
    except Exception as exc:  # a damaged checkpoint costs the steps it held, never the run
        model.load_state_dict(initial)  # load_model may have copied some tensors before it failed
        warnings.append(f"{checkpoint}: unreadable ({type(exc).__name__}); θ0 trained from step 0")
        resumable_dir(work, run_id, lambda w: False)  # emptied, stamped afresh
        return None


def _save_state(work: Path, model, state: dict) -> None:
    """One checkpoint, replaced whole: the weights in safetensors, the rest of the state beside them."""
    from safetensors.torch import save_model

    with atomic_dir(work / "checkpoint") as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
