"""Benchmarks on published data (COCO POPE, COCO CHAIR, AMBER, MMBench, and the judged ones):
read the files named in eval.<benchmark>, ask θK through the model boundary, score with the
benchmark's own rules.

Runners and counters are what the registry (bench/registry.py) calls: run(ctx, vlm, tick)
returns (metrics, per-question records); count(ctx) reads and checks the files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sena_cli.artifacts import to_rgb
from sena_cli.bench import amber as amber_lib
from sena_cli.bench import chair as chair_lib
from sena_cli.bench import coco_pope as pope_lib
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import mmbench as mmb
from sena_cli.bench.pope import parse_yes_no, pope_counts, pope_metrics
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import ANY, TEXT, TEXTS, WHOLE, Each, given, read_json, read_records
from sena_cli.method.prompts import with_suffix
from sena_cli.vlm import VLM

Tick = Callable[[int], None]


def _need(value: str, key: str) -> Path:
    if not value:
        raise SenaError(f"'{key}' is empty; set it to the benchmark's file or folder in params.yaml")
    return Path(value)


def open_benchmark_image(root: Path, name: str, key: str) -> Image.Image:
    """An image under the benchmark's image root (a name that leaves the root is refused)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SenaError(f"{name}: leaves {key} ({root}); benchmark image names must stay under it")
    if not path.is_file():
        raise SenaError(f"{path}: image named by the benchmark is missing; check {key}")
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except (UnidentifiedImageError, OSError):
        raise SenaError(f"{path}: not a readable image") from None


def _generate(vlm: VLM, images, prompts, params: Params, tick: Tick) -> list[str]:
    return vlm.generate(images, prompts, max_new_tokens=params.eval.max_new_tokens,
                        batch_size=params.eval.batch_size, on_batch=tick)


# ---------------------------------------------------------------- COCO POPE

def _pope_files(params: Params) -> list[tuple[str, list[dict]]]:
    files = params.eval.coco_pope.files
    if not files:
        raise SenaError("'eval.coco_pope.files' is empty; list POPE's coco_pope_<split>.json files")
    return [(pope_lib.split_name(Path(f)), pope_lib.read_pope_file(f)) for f in files]


def coco_pope(ctx, vlm: VLM, tick: Tick):
    params = ctx.params
    root = _need(params.eval.coco_pope.image_root, "eval.coco_pope.image_root")
    suffix = params.qa.prompts.short_answer_suffix
    metrics, counts, records = {}, {}, []
    for split, rows in _pope_files(params):
        images = [open_benchmark_image(root, r["image"], "eval.coco_pope.image_root") for r in rows]
        answers = _generate(vlm, images, [with_suffix(r["text"], suffix) for r in rows], params, tick)
        parsed = [parse_yes_no(a, params.eval.yes_no_parsing) for a in answers]
        metrics[split] = pope_metrics(parsed, [r["label"] for r in rows])
        counts[split] = pope_counts(parsed, [r["label"] for r in rows])
        records += [{"benchmark": f"coco_pope_{split}", **r, "answer": a, "parsed": p}
                    for r, a, p in zip(rows, answers, parsed)]
    return {**metrics, "n": counts}, records


def count_coco_pope(ctx) -> int:
    return sum(len(rows) for _, rows in _pope_files(ctx.params))


# ---------------------------------------------------------------- COCO CHAIR

COCO_INSTANCES = {"images": [{"id": WHOLE, "file_name": TEXT}],
                  "annotations": [{"image_id": WHOLE, "category_id": WHOLE}],
                  "categories": [{"id": WHOLE, "name": TEXT}]}
COCO_CAPTIONS = {"annotations": [{"image_id": WHOLE, "caption": TEXT}]}


def _coco_chair_set(params: Params):
    """(images to caption [{id, file_name}], classes per image, reference captions per image)."""
    c = params.eval.coco_chair
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


def coco_chair(ctx, vlm: VLM, tick: Tick, tools=None):
    params = ctx.params
    c = params.eval.coco_chair
    chosen, classes, references = _coco_chair_set(params)
    root = _need(c.image_root, "eval.coco_chair.image_root")
    tokenize, singularize, notes = tools or chair_lib.language_tools()
    chair = chair_lib.CocoChair(chair_lib.read_synonyms(_need(c.synonyms, "eval.coco_chair.synonyms")),
                                tokenize, singularize)
    unknown = sorted({n for names in classes.values() for n in names} - set(chair.node))
    if unknown:
        raise SenaError(f"{c.synonyms}: COCO class {unknown[0]!r} is not in CHAIR's synonym list")
    prompt = params.eval.chair_prompt or params.qa.prompts.describe_instructions[0]
    images = [open_benchmark_image(root, im["file_name"], "eval.coco_chair.image_root") for im in chosen]
    captions = _generate(vlm, images, [prompt] * len(chosen), params, tick)
    said = [chair.mentions(cap) for cap in captions]
    truth = [chair.truth(classes.get(im["id"], []), references.get(im["id"], [])) for im in chosen]
    metrics: dict = {**chair_lib.coco_chair_metrics(said, truth), "n": chair_lib.chair_counts(said, truth)}
    if notes:
        metrics["fallback"] = notes
    records = [{"benchmark": "coco_chair", "image_id": im["id"], "caption": cap, "mentioned": s, "truth": sorted(t)}
               for im, cap, s, t in zip(chosen, captions, said, truth)]
    return metrics, records


def count_coco_chair(ctx) -> int:
    params = ctx.params
    chair_lib.read_synonyms(_need(params.eval.coco_chair.synonyms, "eval.coco_chair.synonyms"))
    return len(_coco_chair_set(params)[0])


# ---------------------------------------------------------------- AMBER

def _amber_data(params: Params) -> amber_lib.AmberData:
    a = params.eval.amber
    return amber_lib.read_amber(_need(a.queries, "eval.amber.queries"), _need(a.annotations, "eval.amber.annotations"),
                                _need(a.relation, "eval.amber.relation"), _need(a.safe_words, "eval.amber.safe_words"))


def amber(ctx, vlm: VLM, tick: Tick, nouns: Callable[[str], list[str]] | None = None,
          similar: amber_lib.Similar | None = None):
    params = ctx.params
    a = params.eval.amber
    data = _amber_data(params)
    root = _need(a.image_root, "eval.amber.image_root")
    notes = {}
    if nouns is None:
        nouns, note = amber_lib.nltk_nouns()
        if note:
            notes["generative_nouns"] = note
    if similar is None:
        similar, note = amber_lib.spacy_similarity(a.similarity)
        if note:
            notes["generative_similarity"] = note
    images = [open_benchmark_image(root, q["image"], "eval.amber.image_root") for q in data.queries]
    answers = _generate(vlm, images, [q["query"] for q in data.queries], params, tick)
    generative = [data.annotation(q["id"])["type"] == "generative" for q in data.queries]
    found = [nouns(ans) if gen else None for ans, gen in zip(answers, generative)]
    metrics = amber_lib.score(answers, found, [q["id"] for q in data.queries], data, similar, a.yes_no_parsing)
    if notes and any(generative):
        metrics["fallback"] = notes
    records = [{"benchmark": "amber", **q, "answer": ans} for q, ans in zip(data.queries, answers)]
    return metrics, records


def count_amber(ctx) -> int:
    return len(_amber_data(ctx.params).queries)


# ---------------------------------------------------------------- MMBench

def _mmbench_rows(params: Params) -> tuple[list[mmb.MMBenchRow], list[mmb.MMBenchRow]]:
    rows = mmb.read_mmbench_tsv(_need(params.eval.mmbench.tsv, "eval.mmbench.tsv"))
    return rows, mmb.asked_rows(rows, params.eval.mmbench.circular)


def mmbench(ctx, vlm: VLM, tick: Tick):
    params = ctx.params
    rows, asked = _mmbench_rows(params)
    cache: dict = {}
    answers = _generate(vlm, [mmb.image_of(r, cache) for r in asked], [mmb.prompt(r) for r in asked], params, tick)
    matched = {r.index: mmb.match_option(mmb.as_read_back(a), r.options) for r, a in zip(asked, answers)}
    hits = mmb.group_hits(asked, matched)
    records = [{"benchmark": "mmbench", "index": r.index, "question_index": r.group, "options": r.options,
                "answer": a, "matched": matched[r.index], "right": r.answer, "question_right": hits[r.group]}
               for r, a in zip(asked, answers)]
    return mmb.report(rows, hits), records


def count_mmbench(ctx) -> int:
    return len(_mmbench_rows(ctx.params)[1])


# ---------------------------------------------------------------- judged benchmarks

def _judged_result(metrics: dict, judge: judge_lib.Judge, name: str) -> dict:
    return {**metrics, "judge_model": judge.model, "prompt_version": judge_lib.PROMPT_VERSIONS[name]}


LLAVA_QUESTION = {"question_id": ANY, "image": TEXT, "text": TEXT, "category?": TEXT}
LLAVA_ANSWER = {"question_id": ANY, "text": TEXT}
LLAVA_CONTEXT = {"image": TEXT, "caption": TEXT}


def _llava_bench_rows(params: Params):
    f = params.eval.llava_bench
    questions = read_records(_need(f.questions, "eval.llava_bench.questions"),
                             given("LLaVA-Bench question file", "eval.llava_bench.questions"), LLAVA_QUESTION)
    answers = read_records(_need(f.answers, "eval.llava_bench.answers"),
                           given("LLaVA-Bench reference answer file", "eval.llava_bench.answers"), LLAVA_ANSWER)
    context = read_records(_need(f.context, "eval.llava_bench.context"),
                           given("LLaVA-Bench context file", "eval.llava_bench.context"), LLAVA_CONTEXT)
    reference = {a["question_id"]: a["text"] for a in answers}
    captions = {c["image"]: c["caption"] for c in context}
    for q in questions:
        if q["question_id"] not in reference:
            raise SenaError(f"{f.answers}: no reference answer for question_id {q['question_id']}")
        if q["image"] not in captions:
            raise SenaError(f"{f.context}: no context for image {q['image']}")
    return questions, reference, captions


def llava_bench(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    questions, reference, captions = _llava_bench_rows(params)
    root = _need(params.eval.llava_bench.image_root, "eval.llava_bench.image_root")
    images = [open_benchmark_image(root, q["image"], "eval.llava_bench.image_root") for q in questions]
    answers = _generate(vlm, images, [q["text"] for q in questions], params, tick)
    replies = judge.ask_all([judge_lib.llava_bench_prompt(captions[q["image"]], q["text"],
                                                           reference[q["question_id"]], a)
                             for q, a in zip(questions, answers)])
    pairs = [judge_lib.parse_pair_scores(r) for r in replies]
    metrics = judge_lib.llava_bench_metrics(pairs, [q.get("category", "all") for q in questions])
    records = [{"benchmark": "llava_bench", **q, "answer": a, "judge_reply": r}
               for q, a, r in zip(questions, answers, replies)]
    return _judged_result(metrics, judge, "llava_bench"), records


MM_VET_ITEM = {"imagename": TEXT, "question": TEXT, "answer": TEXT, "capability?": TEXTS}


def _mm_vet_items(params: Params) -> list[tuple[str, dict]]:
    path = _need(params.eval.mm_vet.file, "eval.mm_vet.file")
    return list(read_json(path, given("MM-Vet file", "eval.mm_vet.file"), Each(MM_VET_ITEM)).items())


def mm_vet(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    items = _mm_vet_items(params)
    root = _need(params.eval.mm_vet.image_root, "eval.mm_vet.image_root")
    images = [open_benchmark_image(root, v["imagename"], "eval.mm_vet.image_root") for _, v in items]
    answers = _generate(vlm, images, [v["question"] for _, v in items], params, tick)
    replies = judge.ask_all([judge_lib.mm_vet_prompt(v["question"], v["answer"], a)
                             for (_, v), a in zip(items, answers)])
    scores = [judge_lib.parse_unit_score(r) for r in replies]
    metrics = judge_lib.mm_vet_metrics(scores, [v.get("capability", []) for _, v in items])
    records = [{"benchmark": "mm_vet", "id": k, **v, "prediction": a, "judge_reply": r}
               for (k, v), a, r in zip(items, answers, replies)]
    return _judged_result(metrics, judge, "mm_vet"), records


MMHAL_ITEM = {"image_src": TEXT, "image_content": TEXTS, "question": TEXT, "gt_answer": TEXT}


def _mmhal_items(params: Params) -> list[dict]:
    path = _need(params.eval.mmhal.file, "eval.mmhal.file")
    return read_json(path, given("MMHal-Bench file", "eval.mmhal.file"), [MMHAL_ITEM])


def mmhal(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    items = _mmhal_items(params)
    root = _need(params.eval.mmhal.image_root, "eval.mmhal.image_root")
    images = [open_benchmark_image(root, Path(r["image_src"]).name, "eval.mmhal.image_root") for r in items]
    answers = _generate(vlm, images, [r["question"] for r in items], params, tick)
    replies = judge.ask_all([judge_lib.mmhal_prompt(r["image_content"], r["question"], r["gt_answer"], a)
                             for r, a in zip(items, answers)])
    ratings = [judge_lib.parse_rating(x) for x in replies]
    records = [{"benchmark": "mmhal", **r, "model_answer": a, "judge_reply": x, "rating": g}
               for r, a, x, g in zip(items, answers, replies, ratings)]
    return _judged_result(judge_lib.mmhal_metrics(ratings), judge, "mmhal"), records


def count_llava_bench(ctx) -> int:
    return len(_llava_bench_rows(ctx.params)[0])


def count_mm_vet(ctx) -> int:
    return len(_mm_vet_items(ctx.params))


def count_mmhal(ctx) -> int:
    return len(_mmhal_items(ctx.params))
