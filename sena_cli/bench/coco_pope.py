"""POPE on COCO (Li et al., 2023) in its published format.

Each split is a file of JSON lines {"question_id", "image", "text", "label"} (the POPE
repository names them coco_pope_<split>.json); images are COCO val2014 files under
eval.coco_pope.image_root. Scored with POPE's own yes/no parsing (bench/pope.py). Its section,
runner and record are below.

A file is streamed (sena_cli/bounded.py) and answered in windows of eval.batch_size × WINDOW
questions, each window's images opened for it and let go after it, so memory does not grow with
the file's length by its images: a file of 10⁶ questions is answered as one of 10³ is. Nor by its
answers: the metrics are running confusion counts, and each window's records go to ctx.records()
(under stage eval, a file they are appended to).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from sena_cli.bench import pope
from sena_cli.bench.external import WINDOW, Tick, generate, need, open_benchmark_image
from sena_cli.bench.record import Benchmark
from sena_cli.config import param
from sena_cli.errors import SenaError
from sena_cli.frame import ANSWER_TEXT, ANY, TEXT, given, one_of, stream_records
from sena_cli.method.prompts import with_suffix

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

# The question is sized (limits.max_text_chars) here, before any model loads or tokenizer sees it.
ROW = {"question_id": ANY, "image": TEXT, "text": ANSWER_TEXT, "label": one_of("yes", "no")}


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    for split in ("random", "popular", "adversarial"):
        if split in stem:
            return split
    return stem


def stream_pope_file(path: str | Path) -> Iterator[dict]:
    """A POPE file's questions, checked and streamed (one line in memory at a time)."""
    empty = True
    for row in stream_records(path, given("POPE question file", "eval.coco_pope.files"), ROW):
        empty = False
        yield row
    if empty:
        raise SenaError(f"{path}: no questions")


def read_pope_file(path: str | Path) -> list[dict]:
    return list(stream_pope_file(path))


def windows(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while window := list(islice(rows, size)):
        yield window


@dataclass
class CocoPopeFiles:
    files: list[str] = param([], "POPE's question files, one per split (coco_pope_random.json, …), JSON lines")
    image_root: str = param("", "COCO val2014 images")


def _files(ctx) -> list[tuple[str, str]]:
    files = ctx.settings("coco_pope", CocoPopeFiles).files
    if not files:
        raise SenaError("'eval.coco_pope.files' is empty; list POPE's coco_pope_<split>.json files")
    return [(split_name(Path(f)), f) for f in files]


def run(ctx, vlm: VLM, tick: Tick):
    params = ctx.params
    root = need(ctx.settings("coco_pope", CocoPopeFiles).image_root, "eval.coco_pope.image_root")
    suffix = params.qa.prompts.short_answer_suffix
    metrics, counts, records = {}, {}, ctx.records()
    for split, path in _files(ctx):
        confusion = pope.Confusion()  # running counts: nothing kept per question
        for rows in windows(stream_pope_file(path), params.eval.batch_size * WINDOW):
            images = [open_benchmark_image(root, r["image"], "eval.coco_pope.image_root") for r in rows]
            answers = generate(vlm, images, [with_suffix(r["text"], suffix) for r in rows], params, tick)
            del images
            window = [pope.parse_yes_no(a, params.eval.yes_no_parsing) for a in answers]
            confusion.add(window, [r["label"] for r in rows])
            records.extend({"benchmark": f"coco_pope_{split}", **r, "answer": a, "parsed": p}
                           for r, a, p in zip(rows, answers, window))
        metrics[split] = confusion.metrics()
        counts[split] = confusion.counts()
    return {**metrics, "n": counts}, records


def count(ctx) -> int:
    """Questions in every file, each read and checked (streamed) before the model loads."""
    return sum(sum(1 for _ in stream_pope_file(path)) for _, path in _files(ctx))


BENCHMARK = Benchmark("coco_pope", "coco_pope", ("eval.coco_pope.files", "eval.coco_pope.image_root"),
                      "sena_cli.bench.coco_pope:run", "sena_cli.bench.coco_pope:count",
                      pope.METRICS, pope.charts("COCO POPE"), order=10, section=CocoPopeFiles,
                      source="the question files from github.com/AoiDragon/POPE (output/coco/coco_pope_random.json, "
                      "_popular, _adversarial); the images: COCO val2014, images.cocodataset.org/zips/val2014.zip")
