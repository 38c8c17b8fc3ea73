"""POPE on COCO (Li et al., 2023) in its published format.

Each split is a file of JSON lines {"question_id", "image", "text", "label"} (the POPE
repository names them coco_pope_<split>.json); images are COCO val2014 files under
eval.coco_pope.image_root. Scored with POPE's own yes/no parsing (bench/pope.py). Its section,
runner and record are below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sena_cli.bench import pope
from sena_cli.bench.external import Tick, generate, need, open_benchmark_image
from sena_cli.bench.record import Benchmark
from sena_cli.config import param
from sena_cli.errors import SenaError
from sena_cli.frame import ANY, TEXT, given, one_of, read_records
from sena_cli.method.prompts import with_suffix
from sena_cli.vlm import VLM

ROW = {"question_id": ANY, "image": TEXT, "text": TEXT, "label": one_of("yes", "no")}


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    for split in ("random", "popular", "adversarial"):
        if split in stem:
            return split
    return stem


def read_pope_file(path: str | Path) -> list[dict]:
    rows = read_records(path, given("POPE question file", "eval.coco_pope.files"), ROW)
    if not rows:
        raise SenaError(f"{path}: no questions")
    return rows


@dataclass
class CocoPopeFiles:
    files: list[str] = param([], "POPE's question files, one per split (coco_pope_random.json, …), JSON lines")
    image_root: str = param("", "COCO val2014 images")


def _files(ctx) -> list[tuple[str, list[dict]]]:
    files = ctx.settings("coco_pope", CocoPopeFiles).files
    if not files:
        raise SenaError("'eval.coco_pope.files' is empty; list POPE's coco_pope_<split>.json files")
    return [(split_name(Path(f)), read_pope_file(f)) for f in files]


def run(ctx, vlm: VLM, tick: Tick):
    params = ctx.params
    root = need(ctx.settings("coco_pope", CocoPopeFiles).image_root, "eval.coco_pope.image_root")
    suffix = params.qa.prompts.short_answer_suffix
    metrics, counts, records = {}, {}, []
    for split, rows in _files(ctx):
        images = [open_benchmark_image(root, r["image"], "eval.coco_pope.image_root") for r in rows]
        answers = generate(vlm, images, [with_suffix(r["text"], suffix) for r in rows], params, tick)
        parsed = [pope.parse_yes_no(a, params.eval.yes_no_parsing) for a in answers]
        metrics[split] = pope.pope_metrics(parsed, [r["label"] for r in rows])
        counts[split] = pope.pope_counts(parsed, [r["label"] for r in rows])
        records += [{"benchmark": f"coco_pope_{split}", **r, "answer": a, "parsed": p}
                    for r, a, p in zip(rows, answers, parsed)]
    return {**metrics, "n": counts}, records


def count(ctx) -> int:
    return sum(len(rows) for _, rows in _files(ctx))


BENCHMARK = Benchmark("coco_pope", "coco_pope", ("eval.coco_pope.files", "eval.coco_pope.image_root"),
                      "sena_cli.bench.coco_pope:run", "sena_cli.bench.coco_pope:count",
                      pope.METRICS, pope.charts("COCO POPE"), order=10, section=CocoPopeFiles,
                      source="the question files from github.com/AoiDragon/POPE (output/coco/coco_pope_random.json, "
                      "_popular, _adversarial); the images: COCO val2014, images.cocodataset.org/zips/val2014.zip")
