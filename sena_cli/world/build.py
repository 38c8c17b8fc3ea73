"""Write the embedded world: unlabeled pool, θ0's instruction set, held-out evaluation sets.

Layout under `out` (data/world):
  pool/NNNNN.png               unlabeled images for the self-evolution loop
  truth/pool.jsonl             their ground truth: never read by the loop's stages
  instruct/images/NNNNN.png    images of θ0's instruction set
  instruct/train.jsonl         {image, task, prompt, answer}; enhancement examples also {question,
                               description, given}, so `sena base` can ask them with θ0's own answer
  eval/images/NNNNN.png        held-out images: the test set (world.eval), what the benchmarks report
  eval/truth.jsonl             their ground truth (read by the world benchmarks only)
  eval/pope_<split>.jsonl      POPE format: {question_id, image, text, label}
  eval/vqa.jsonl               colour/shape questions {question_id, image, text, answer, kind}
  eval/cooccurrence.json       object frequencies and co-occurrence counts of the instruct set
  eval_dev/...                 the same for the dev set (world.eval_dev): other images of the same
                               distribution, where settings are chosen (benchmark world_dev)
  eval_cal/...                 the same for the calibration set (world.eval_cal, benchmark world_cal)
Everything is a function of world params and the qa prompts: same params, same bytes.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

from sena_cli.artifacts import atomic_dir, write_json, write_jsonl
from sena_cli.config import Params
from sena_cli.world.instruct import instruction_examples, reading_examples
from sena_cli.world.language import ask
from sena_cli.world.scenes import Scene, draw_scene, object_names, sample_scene

POPE_SPLITS = ("random", "popular", "adversarial")


def _scenes(world, seed_tag: str, count: int) -> list[Scene]:
    rng = random.Random(f"{world.seed}-{seed_tag}")
    return [sample_scene(rng, world) for _ in range(count)]


def _save_images(scenes: list[Scene], folder: Path, world, tick: Callable[[int], None], prefix: str = "") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, scene in enumerate(scenes):
        name = f"{prefix}{i:05d}.png"
        # optimize=False and no metadata: PNG bytes depend only on the pixels.
        draw_scene(scene, world.image_size, world.hard_fade).save(folder / name, format="PNG")
        names.append(name)
        tick(1)
    return names


def cooccurrence_stats(scenes: list[Scene]) -> dict:
    freq = collections.Counter(n for s in scenes for n in s.names)
    pairs = collections.Counter()
    for s in scenes:
        for a, b in combinations(sorted(s.names), 2):
            pairs[f"{a}|{b}"] += 1
    return {"frequency": dict(sorted(freq.items())), "pairs": dict(sorted(pairs.items()))}


def pope_questions(scenes: list[Scene], image_names: list[str], params: Params, stats: dict,
                   split: str = "eval") -> dict[str, list]:
    """POPE's three splits: the same positives; negatives drawn at random, among the most
    frequent objects, or among the objects that co-occur most with the ones present."""
    world = params.world
    names = object_names(world)
    freq = stats["frequency"]
    pairs = stats["pairs"]

    def cooc(a: str, b: str) -> int:
        return pairs.get("|".join(sorted((a, b))), 0)

    ev = getattr(world, split)
    per_label = ev.pope_questions_per_label
    out: dict[str, list] = {split: [] for split in POPE_SPLITS}
    rng = random.Random(f"{world.seed}-pope" + ("" if split == "eval" else f"-{split}"))
    for scene, image in zip(scenes[: ev.pope_images], image_names):
        present = list(scene.names)
        absent = [n for n in names if n not in present]
        positives = rng.sample(present, min(per_label, len(present)))
        k = len(positives)
        negatives = {
            "random": rng.sample(absent, k),
            "popular": sorted(absent, key=lambda n: (-freq.get(n, 0), n))[:k],
            "adversarial": sorted(absent, key=lambda n: (-sum(cooc(n, p) for p in present), -freq.get(n, 0), n))[:k],
        }
        for split in POPE_SPLITS:
            for name, label in [(n, "yes") for n in positives] + [(n, "no") for n in negatives[split]]:
                q = ask("exists", scene, world, name=name)
                out[split].append({"question_id": len(out[split]), "image": image, "text": q.text, "label": label})
    return out


def vqa_questions(scenes: list[Scene], image_names: list[str], params: Params, split: str = "eval") -> list[dict]:
    """Short-answer questions with one right answer (colour, shape, quadrant colour, count, position)."""
    world = params.world
    rng = random.Random(f"{world.seed}-vqa")
    out = []
    for scene, image in zip(scenes[: getattr(world, split).vqa_images], image_names):
        options = [ask("colour", scene, world, shape=s) for s in world.shapes]
        options += [ask("shape", scene, world, colour=c) for c in world.colours]
        options += [ask("quadrant_colour", scene, world, quadrant=o.quadrant) for o in scene.objects]
        options += [ask("count", scene, world)] + [ask("position", scene, world, name=n) for n in scene.names]
        options = [q for q in options if q.answer is not None]
        for q in rng.sample(options, min(2, len(options))):
            out.append({"question_id": len(out), "image": image, "text": q.text, "answer": q.answer, "kind": q.kind})
    return out


def build_world(params: Params, out: str | Path, tick: Callable[[int], None] = lambda n: None) -> dict:
    """Write the whole world into `out` atomically; returns counts for the summary."""
    world = params.world
    pool = _scenes(world, "pool", world.pool_images)
    instruct = _scenes(world, "instruct", world.instruct_images)
    # test (eval/) and dev (eval_dev/): disjoint draws of the same distribution
    held_out = {split: _scenes(world, split.replace("_", "-"), _held_out_count(getattr(world, split)))
                for split in HELD_OUT}
    with atomic_dir(out) as tmp:
        pool_names = _save_images(pool, tmp / "pool", world, tick)
        write_jsonl(tmp / "truth" / "pool.jsonl",
                    [{"image": n, **s.to_dict()} for n, s in zip(pool_names, pool)])

        inst_names = _save_images(instruct, tmp / "instruct" / "images", world, tick)
        rng = random.Random(f"{world.seed}-instructions")
        examples = []
        for name, scene in zip(inst_names, instruct):
            for ex in instruction_examples(scene, world, params.qa.prompts, rng, world.instruct_examples_per_image):
                examples.append({"image": name, **ex})
        examples += _reading_examples(instruct, tmp / "instruct" / "images", params, tick)
        write_jsonl(tmp / "instruct" / "train.jsonl", examples)
        write_jsonl(tmp / "instruct" / "truth.jsonl",
                    [{"image": n, **s.to_dict()} for n, s in zip(inst_names, instruct)])

        stats = cooccurrence_stats(instruct)
        counts = {}
        for split, scenes in held_out.items():
            folder = tmp / split
            names = _save_images(scenes, folder / "images", world, tick)
            write_jsonl(folder / "truth.jsonl", [{"image": n, **s.to_dict()} for n, s in zip(names, scenes)])
            write_json(folder / "cooccurrence.json", stats)
            pope = pope_questions(scenes, names, params, stats, split)
            for pope_split, rows in pope.items():
                write_jsonl(folder / f"pope_{pope_split}.jsonl", rows)
            vqa = vqa_questions(scenes, names, params, split)
            write_jsonl(folder / "vqa.jsonl", vqa)
            counts[f"{HELD_OUT[split]} images"] = len(scenes)
            counts[f"{HELD_OUT[split]} POPE questions per split"] = len(pope["random"])
    return {
        "pool images": len(pool),
        "instruction images": len(instruct),
        **({"blank reading images": reading_images(world)} if world.reading_share else {}),
        "instruction examples": len(examples),
        **counts,
    }


def _reading_examples(instruct: list[Scene], folder: Path, params: Params, tick: Callable[[int], None]) -> list[dict]:
    """`world.reading_share` of the instruction scenes again, drawn blank (their background only), each with
    enhancement examples that only the scene's description answers (instruct.reading_examples). Its own
    rng, and no draw at share 0: the default world is drawn exactly as before the parameter existed."""
    world = params.world
    if not world.reading_share:
        return []
    rng = random.Random(f"{world.seed}-reading")
    chosen = rng.sample(instruct, reading_images(world))
    names = _save_images([Scene((), s.background) for s in chosen], folder, world, tick, prefix="blank-")
    return [{"image": name, **ex} for name, scene in zip(names, chosen)
            for ex in reading_examples(scene, world, params.qa.prompts, rng, world.instruct_examples_per_image)]


def reading_images(world) -> int:
    return round(world.reading_share * world.instruct_images)


# folder (and params section) -> the set's name. The calibration set is where θ0 is checked against
# docs/world.md's targets; neither the study's choices (dev) nor its results (test) see it.
HELD_OUT = {"eval": "test", "eval_dev": "dev", "eval_cal": "calibration"}


def _held_out_count(ev) -> int:
    return max(ev.pope_images, ev.chair_images, ev.vqa_images, ev.question_images)


def total_images(params: Params) -> int:
    w = params.world
    held_out = sum(_held_out_count(getattr(w, split)) for split in HELD_OUT)
    return w.pool_images + w.instruct_images + reading_images(w) + held_out
