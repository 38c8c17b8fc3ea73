"""CHAIR on COCO (Rohrbach et al., 2018): θK captions COCO images, scored with CHAIR's own
synonym list and rules (bench/chair.py, shared with world_chair). Its section, runner and record.
"""

from __future__ import annotations

from dataclasses import dataclass

from sena_cli.bench import chair as chair_lib
from sena_cli.bench.external import Tick, generate_windows, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import BIG, param
from sena_cli.errors import SenaError
from sena_cli.frame import TEXT, WHOLE, given, read_json
from sena_cli.vlm import VLM


@dataclass
class CocoChairFiles:
    instances: list[str] = param([], "COCO instance files of the images captioned (CHAIR: train2014 and "
                                 "val2014)")
    captions: list[str] = param([], "COCO caption files (captions_val2014.json, …)")
    synonyms: str = param("", "data/synonyms.txt of CHAIR's repository (LisaAnne/Hallucination)")
    image_root: str = param("", "COCO images, named by the instance files' file_name")
    images: int = param(500, "the first N images by id in the instance files", 1, BIG)


COCO_INSTANCES = {"images": [{"id": WHOLE, "file_name": TEXT}],
                  "annotations": [{"image_id": WHOLE, "category_id": WHOLE}],
                  "categories": [{"id": WHOLE, "name": TEXT}]}
COCO_CAPTIONS = {"annotations": [{"image_id": WHOLE, "caption": TEXT}]}


def _coco_chair_set(ctx):
    """(images to caption [{id, file_name}], classes per image, reference captions per image)."""
    c = ctx.settings("coco_chair", CocoChairFiles)
    if not c.instances or not c.captions:
        raise SenaError("'eval.coco_chair.instances' and 'eval.coco_chair.captions' must list COCO's "
                        "instances_*.json and captions_*.json files")
    names, images, classes, references = {}, {}, {}, {}
    for path in c.instances:
        data = read_json(path, given("COCO instances file", "eval.coco_chair.instances"), COCO_INSTANCES)
        names.update({cat["id"]: cat["name"] for cat in data["categories"]})
        images.update({im["id"]: im for im in data["images"]})
        for a in data["annotations"]:
            classes.setdefault(a["image_id"], []).append(a["category_id"])
    for path in c.captions:
        data = read_json(path, given("COCO captions file", "eval.coco_chair.captions"), COCO_CAPTIONS)
        for a in data["annotations"]:
            references.setdefault(a["image_id"], []).append(a["caption"])
    chosen = [images[i] for i in sorted(images)[: c.images]]
    if not chosen:
        raise SenaError(f"{c.instances[0]}: no images listed")
    for i, cats in classes.items():
        for cat in cats:
            if cat not in names:
                raise SenaError(f"{c.instances[0]}: image {i} has category {cat}, which no instances file defines")
    return chosen, {i: [names[cat] for cat in cats] for i, cats in classes.items()}, references


def run(ctx, vlm: VLM, tick: Tick, tools=None):
    params = ctx.params
    c = ctx.settings("coco_chair", CocoChairFiles)
    chosen, classes, references = _coco_chair_set(ctx)
    root = need(c.image_root, "eval.coco_chair.image_root")
    tokenize, singularize, notes = tools or chair_lib.language_tools()
    chair = chair_lib.CocoChair(chair_lib.read_synonyms(need(c.synonyms, "eval.coco_chair.synonyms")),
                                tokenize, singularize)
    unknown = sorted({n for names in classes.values() for n in names} - set(chair.node))
    if unknown:
        raise SenaError(f"{c.synonyms}: COCO class {unknown[0]!r} is not in CHAIR's synonym list")
    prompt = params.eval.chair_prompt or params.qa.prompts.describe_instructions[0]
    captions = generate_windows(vlm, root, [im["file_name"] for im in chosen], [prompt] * len(chosen),
                                "eval.coco_chair.image_root", params, tick)
    said = [chair.mentions(cap) for cap in captions]
    truth = [chair.truth(classes.get(im["id"], []), references.get(im["id"], [])) for im in chosen]
    metrics: dict = {**chair_lib.coco_chair_metrics(said, truth), "n": chair_lib.chair_counts(said, truth)}
    if notes:
        metrics["fallback"] = notes
    records = [{"benchmark": "coco_chair", "image_id": im["id"], "caption": cap, "mentioned": s, "truth": sorted(t)}
               for im, cap, s, t in zip(chosen, captions, said, truth)]
    return metrics, records


def count(ctx) -> int:
    chair_lib.read_synonyms(need(ctx.settings("coco_chair", CocoChairFiles).synonyms, "eval.coco_chair.synonyms"))
    return len(_coco_chair_set(ctx)[0])


BENCHMARK = Benchmark(
    "coco_chair", "coco_chair", ("eval.coco_chair.captions", "eval.coco_chair.instances", "eval.coco_chair.synonyms",
                                 "eval.coco_chair.image_root", "eval.chair_prompt"),
    "sena_cli.bench.coco_chair:run", "sena_cli.bench.coco_chair:count",
    ("chair_s", "chair_i", "recall", "fallback.<part>"),
    (Chart("COCO CHAIR (lower is better)", (("CHAIR_s", "chair_s"), ("CHAIR_i", "chair_i"))),
     Chart("COCO CHAIR recall (sena's)", (("recall", "recall"),))), order=11, section=CocoChairFiles)
