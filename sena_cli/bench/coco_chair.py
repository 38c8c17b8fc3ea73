"""CHAIR on COCO (Rohrbach et al., 2018): θK captions COCO images, scored with CHAIR's own
synonym list and rules (bench/chair.py, shared with world_chair). Its section, runner and record.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sena_cli.bench import chair as chair_lib
from sena_cli.bench.external import Tick, generate_windows, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import BIG, param
from sena_cli.errors import SenaError
from sena_cli.frame import TEXT, WHOLE, given, read_json

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM


@dataclass
class CocoChairFiles:
    instances: list[str] = param([], "COCO instance files of the images captioned (CHAIR: train2014 and "
                                 "val2014)")
    captions: list[str] = param([], "COCO caption files (captions_val2014.json, …)")
    synonyms: str = param("", "data/synonyms.txt of CHAIR's repository (LisaAnne/Hallucination)")
    image_root: str = param("", "COCO images, named by the instance files' file_name")
    images: int = param(500, "the first N images by id in the instance files", 1, BIG)
    language_standins: bool = param(False, "without NLTK's word_tokenize (or its punkt data), split words by a "
                                    "regular expression (flagged under coco_chair.fallback; not CHAIR's numbers); "
                                    "false = refused in one line saying how to install it")


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


def language(ctx):
    """CHAIR's (tokenize, singularize, notes), refused in one line without NLTK unless
    eval.coco_chair.language_standins is set (Pattern's stand-in is only noted)."""
    tokenize, singularize, notes = chair_lib.language_tools()
    if "tokenize" in notes and not ctx.settings("coco_chair", CocoChairFiles).language_standins:
        fetch = chair_lib.NLTK_DATA if importlib.util.find_spec("nltk") else chair_lib.NLTK_INSTALL
        raise SenaError(f"eval.coco_chair: CHAIR's tokenizer needs NLTK and its punkt data, missing here; install "
                        f"them ({fetch}), or set eval.coco_chair.language_standins: true to "
                        "score with sena's stand-in (not CHAIR's numbers)")
    return tokenize, singularize, notes


def run(ctx, vlm: VLM, tick: Tick, tools=None):
    params = ctx.params
    c = ctx.settings("coco_chair", CocoChairFiles)
    chosen, classes, references = _coco_chair_set(ctx)
    root = need(c.image_root, "eval.coco_chair.image_root")
    tokenize, singularize, notes = tools or language(ctx)
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
    images = _coco_chair_set(ctx)[0]
    language(ctx)  # after the files' own checks, before the model loads
    return len(images)


BENCHMARK = Benchmark(
    "coco_chair", "coco_chair", ("eval.coco_chair.captions", "eval.coco_chair.instances", "eval.coco_chair.synonyms",
                                 "eval.coco_chair.image_root", "eval.chair_prompt"),
    "sena_cli.bench.coco_chair:run", "sena_cli.bench.coco_chair:count",
    ("chair_s", "chair_i", "recall", "fallback.<part>"),
    (Chart("COCO CHAIR (lower is better)", (("CHAIR_s", "chair_s"), ("CHAIR_i", "chair_i"))),
     Chart("COCO CHAIR recall (sena's)", (("recall", "recall"),))), order=11, section=CocoChairFiles,
    source="COCO 2014 annotations (instances_val2014.json, captions_val2014.json in "
    "images.cocodataset.org/annotations/annotations_trainval2014.zip), data/synonyms.txt of "
    "github.com/LisaAnne/Hallucination, and the images: images.cocodataset.org/zips/val2014.zip")
