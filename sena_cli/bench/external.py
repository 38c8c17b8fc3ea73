"""Benchmarks on published data (COCO POPE, AMBER, MMBench): read the files named in
eval.<benchmark>, ask θK through the model boundary, score with the benchmark's rules.

Each runner returns (metrics, per-question records) like the world's benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sena_cli.artifacts import to_rgb
from sena_cli.bench import amber as amber_lib
from sena_cli.bench import coco_pope as pope_lib
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import mmbench as mmb
from sena_cli.bench.files import read_json_file, read_jsonl_file
from sena_cli.bench.pope import parse_yes_no, pope_metrics
from sena_cli.config import Params
from sena_cli.errors import SenaError
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


def coco_pope(vlm: VLM, params: Params, tick: Tick):
    root = _need(params.eval.coco_pope.image_root, "eval.coco_pope.image_root")
    suffix = params.qa.prompts.short_answer_suffix
    metrics, records = {}, []
    for split, rows in _pope_files(params):
        images = [open_benchmark_image(root, r["image"], "eval.coco_pope.image_root") for r in rows]
        answers = _generate(vlm, images, [with_suffix(r["text"], suffix) for r in rows], params, tick)
        parsed = [parse_yes_no(a) for a in answers]
        metrics[split] = pope_metrics(parsed, [r["label"] for r in rows])
        records += [{"benchmark": f"coco_pope_{split}", **r, "answer": a, "parsed": p}
                    for r, a, p in zip(rows, answers, parsed)]
    return metrics, records


# ---------------------------------------------------------------- AMBER

def _amber_data(params: Params) -> amber_lib.AmberData:
    a = params.eval.amber
    return amber_lib.read_amber(_need(a.queries, "eval.amber.queries"), _need(a.annotations, "eval.amber.annotations"),
                                _need(a.relation, "eval.amber.relation"), _need(a.safe_words, "eval.amber.safe_words"))


def amber(vlm: VLM, params: Params, tick: Tick, nouns: Callable[[str], list[str]] | None = None,
          similar: amber_lib.Similar | None = None):
    a = params.eval.amber
    data = _amber_data(params)
    root = _need(a.image_root, "eval.amber.image_root")
    # Fail before generating when the language data is missing.
    nouns = nouns or amber_lib.nltk_nouns()
    if similar is None:
        similar = amber_lib.spacy_similarity(a.similarity) if a.similarity > 0 else (lambda x, y: False)
    images = [open_benchmark_image(root, q["image"], "eval.amber.image_root") for q in data.queries]
    answers = _generate(vlm, images, [q["query"] for q in data.queries], params, tick)
    gen = [(q, ans) for q, ans in zip(data.queries, answers) if data.annotation(q["id"])["type"] == "generative"]
    dis = [(q, ans) for q, ans in zip(data.queries, answers) if data.annotation(q["id"])["type"] != "generative"]
    metrics: dict = {}
    if gen:
        metrics.update(amber_lib.score_generative([nouns(ans) for _, ans in gen],
                                                  [data.annotation(q["id"]) for q, _ in gen], data, similar))
    if dis:
        parsed = [parse_yes_no(ans) for _, ans in dis]
        scores = amber_lib.score_discriminative(parsed, [data.annotation(q["id"])["truth"] for q, _ in dis])
        metrics.update({f"discriminative_{k}": v for k, v in scores.items()})
    records = [{"benchmark": "amber", **q, "answer": ans} for q, ans in zip(data.queries, answers)]
    return metrics, records


# ---------------------------------------------------------------- MMBench

def mmbench(vlm: VLM, params: Params, tick: Tick):
    items = mmb.read_mmbench_tsv(_need(params.eval.mmbench.tsv, "eval.mmbench.tsv"))
    circular = params.eval.mmbench.circular
    asks = [(item, options, right) for item in items for options, right in mmb.rotations(item, circular)]
    images = {item.index: item.image() for item in items}
    answers = _generate(vlm, [images[item.index] for item, _, _ in asks],
                        [mmb.prompt(item, options) for item, options, _ in asks], params, tick)
    passes: dict[str, list[bool]] = {}
    records = []
    for (item, options, right), answer in zip(asks, answers):
        choice = mmb.parse_choice(answer, options)
        passes.setdefault(item.index, []).append(choice == right)
        records.append({"benchmark": "mmbench", "index": item.index, "options": options, "answer": answer,
                        "choice": None if choice is None else mmb.LETTERS[choice], "right": mmb.LETTERS[right]})
    return mmb.mmbench_metrics([passes[item.index] for item in items]), records


def count(params: Params, name: str) -> int:
    """How many questions a benchmark asks (for the progress bar); reads and checks its files."""
    if name in JUDGED_COUNTS:
        return JUDGED_COUNTS[name](params)
    if name == "coco_pope":
        return sum(len(rows) for _, rows in _pope_files(params))
    if name == "amber":
        return len(_amber_data(params).queries)
    items = mmb.read_mmbench_tsv(_need(params.eval.mmbench.tsv, "eval.mmbench.tsv"))
    return sum(len(mmb.rotations(item, params.eval.mmbench.circular)) for item in items)


BENCHMARKS = {"coco_pope": coco_pope, "amber": amber, "mmbench": mmbench}


# ---------------------------------------------------------------- judged benchmarks

JUDGED = ("llava_bench", "mm_vet", "mmhal")


def _judged_result(metrics: dict, judge: judge_lib.Judge, name: str) -> dict:
    return {**metrics, "judge_model": judge.model, "prompt_version": judge_lib.PROMPT_VERSIONS[name]}


def _llava_bench_rows(params: Params):
    f = params.eval.llava_bench
    questions = read_jsonl_file(_need(f.questions, "eval.llava_bench.questions"),
                                          ("question_id", "image", "text"), "LLaVA-Bench question file")
    answers = read_jsonl_file(_need(f.answers, "eval.llava_bench.answers"), ("question_id", "text"),
                                        "LLaVA-Bench reference answer file")
    context = read_jsonl_file(_need(f.context, "eval.llava_bench.context"), ("image", "caption"),
                                        "LLaVA-Bench context file")
    reference = {a["question_id"]: a["text"] for a in answers}
    captions = {c["image"]: c["caption"] for c in context}
    for q in questions:
        if q["question_id"] not in reference:
            raise SenaError(f"{f.answers}: no reference answer for question_id {q['question_id']}")
        if q["image"] not in captions:
            raise SenaError(f"{f.context}: no context for image {q['image']}")
    return questions, reference, captions


def llava_bench(vlm: VLM, params: Params, tick: Tick, judge: judge_lib.Judge):
    questions, reference, captions = _llava_bench_rows(params)
    root = _need(params.eval.llava_bench.image_root, "eval.llava_bench.image_root")
    images = [open_benchmark_image(root, q["image"], "eval.llava_bench.image_root") for q in questions]
    answers = _generate(vlm, images, [q["text"] for q in questions], params, tick)
    replies = [judge.ask(judge_lib.llava_bench_prompt(captions[q["image"]], q["text"], reference[q["question_id"]], a))
               for q, a in zip(questions, answers)]
    pairs = [judge_lib.parse_pair_scores(r) for r in replies]
    metrics = judge_lib.llava_bench_metrics(pairs, [q.get("category", "all") for q in questions])
    records = [{"benchmark": "llava_bench", **q, "answer": a, "judge_reply": r}
               for q, a, r in zip(questions, answers, replies)]
    return _judged_result(metrics, judge, "llava_bench"), records


def _mm_vet_items(params: Params) -> list[tuple[str, dict]]:
    path = _need(params.eval.mm_vet.file, "eval.mm_vet.file")
    data = read_json_file(path, "MM-Vet file")
    if not isinstance(data, dict) or not all(isinstance(v, dict) and {"imagename", "question", "answer"} <= set(v)
                                             for v in data.values()):
        raise SenaError(f"{path}: MM-Vet's file maps ids to {{imagename, question, answer, capability}}")
    return list(data.items())


def mm_vet(vlm: VLM, params: Params, tick: Tick, judge: judge_lib.Judge):
    items = _mm_vet_items(params)
    root = _need(params.eval.mm_vet.image_root, "eval.mm_vet.image_root")
    images = [open_benchmark_image(root, v["imagename"], "eval.mm_vet.image_root") for _, v in items]
    answers = _generate(vlm, images, [v["question"] for _, v in items], params, tick)
    replies = [judge.ask(judge_lib.mm_vet_prompt(v["question"], v["answer"], a)) for (_, v), a in zip(items, answers)]
    scores = [judge_lib.parse_unit_score(r) for r in replies]
    metrics = judge_lib.mm_vet_metrics(scores, [v.get("capability", []) for _, v in items])
    records = [{"benchmark": "mm_vet", "id": k, **v, "prediction": a, "judge_reply": r}
               for (k, v), a, r in zip(items, answers, replies)]
    return _judged_result(metrics, judge, "mm_vet"), records


def _mmhal_items(params: Params) -> list[dict]:
    path = _need(params.eval.mmhal.file, "eval.mmhal.file")
    data = read_json_file(path, "MMHal-Bench file")
    keys = {"image_src", "image_content", "question", "gt_answer"}
    if not isinstance(data, list) or not all(isinstance(r, dict) and keys <= set(r) for r in data):
        raise SenaError(f"{path}: MMHal-Bench's file is a list of {{{', '.join(sorted(keys))}, …}}")
    return data


def mmhal(vlm: VLM, params: Params, tick: Tick, judge: judge_lib.Judge):
    items = _mmhal_items(params)
    root = _need(params.eval.mmhal.image_root, "eval.mmhal.image_root")
    images = [open_benchmark_image(root, Path(r["image_src"]).name, "eval.mmhal.image_root") for r in items]
    answers = _generate(vlm, images, [r["question"] for r in items], params, tick)
    replies = [judge.ask(judge_lib.mmhal_prompt(r["image_content"], r["question"], r["gt_answer"], a))
               for r, a in zip(items, answers)]
    ratings = [judge_lib.parse_rating(x) for x in replies]
    records = [{"benchmark": "mmhal", **r, "model_answer": a, "judge_reply": x, "rating": g}
               for r, a, x, g in zip(items, answers, replies, ratings)]
    return _judged_result(judge_lib.mmhal_metrics(ratings), judge, "mmhal"), records


JUDGED_BENCHMARKS = {"llava_bench": llava_bench, "mm_vet": mm_vet, "mmhal": mmhal}
JUDGED_COUNTS = {"llava_bench": lambda p: len(_llava_bench_rows(p)[0]), "mm_vet": lambda p: len(_mm_vet_items(p)),
                 "mmhal": lambda p: len(_mmhal_items(p))}
