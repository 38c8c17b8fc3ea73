"""LLaVA-Bench (in-the-wild): θK answers, a judge compares its answer with the reference (GPT-4's)
given the image's caption; relative_score = sum of θK's scores / sum of the reference's.
The rubric is sena's wording of the benchmark's published one; change it with its version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sena_cli.bench.external import Tick, generate_windows, judged_result, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import param
from sena_cli.errors import SenaError
from sena_cli.frame import ANY, TEXT, given, read_records

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

PROMPT_VERSION = "sena-llava-bench-v1"
RULE = (
    "We would like your feedback on two AI assistants' answers to the user question above, given a "
    "description of the image. Rate the helpfulness, relevance, accuracy and level of detail of each. "
    "Each assistant gets an overall score from 1 to 10, higher is better. On the first line write only "
    "the two scores, for Assistant 1 and Assistant 2, separated by a space. Then explain your evaluation, "
    "avoiding bias from the order of the answers."
)


@dataclass
class LlavaBenchFiles:
    questions: str = param("", "questions.jsonl {question_id, image, text, category}")
    answers: str = param("", "answers_gpt4.jsonl {question_id, text}: the reference answers")
    context: str = param("", "context.jsonl {id, image, caption}")
    image_root: str = param("", "LLaVA-Bench's images")


def llava_bench_prompt(caption: str, question: str, reference: str, answer: str) -> str:
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n[Assistant 1]\n{reference}\n\n"
            f"[End of Assistant 1]\n\n[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{RULE}")


def parse_pair_scores(reply: str) -> tuple[float, float] | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", reply.strip().splitlines()[0] if reply.strip() else "")
    return (float(numbers[0]), float(numbers[1])) if len(numbers) >= 2 else None


def llava_bench_metrics(pairs: Sequence[tuple[float, float] | None], categories: Sequence[str]) -> dict:
    """relative_score = sum of the model's scores / sum of the reference's, overall and per category;
    unparseable judge replies are counted and left out."""
    def relative(idx):
        ref = sum(pairs[i][0] for i in idx)
        return sum(pairs[i][1] for i in idx) / ref if ref else 0.0

    scored = [i for i, p in enumerate(pairs) if p is not None]
    out = {"relative_score": relative(scored), "unparsed": len(pairs) - len(scored)}
    for cat in sorted(set(categories)):
        out[f"relative_score_{cat}"] = relative([i for i in scored if categories[i] == cat])
    return out


LLAVA_QUESTION = {"question_id": ANY, "image": TEXT, "text": TEXT, "category?": TEXT}
LLAVA_ANSWER = {"question_id": ANY, "text": TEXT}
LLAVA_CONTEXT = {"image": TEXT, "caption": TEXT}


def _rows(ctx):
    f = ctx.settings("llava_bench", LlavaBenchFiles)
    questions = read_records(need(f.questions, "eval.llava_bench.questions"),
                             given("LLaVA-Bench question file", "eval.llava_bench.questions"), LLAVA_QUESTION)
    answers = read_records(need(f.answers, "eval.llava_bench.answers"),
                           given("LLaVA-Bench reference answer file", "eval.llava_bench.answers"), LLAVA_ANSWER)
    context = read_records(need(f.context, "eval.llava_bench.context"),
                           given("LLaVA-Bench context file", "eval.llava_bench.context"), LLAVA_CONTEXT)
    reference = {a["question_id"]: a["text"] for a in answers}
    captions = {c["image"]: c["caption"] for c in context}
    for q in questions:
        if q["question_id"] not in reference:
            raise SenaError(f"{f.answers}: no reference answer for question_id {q['question_id']}")
        if q["image"] not in captions:
            raise SenaError(f"{f.context}: no context for image {q['image']}")
    return questions, reference, captions


def run(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    questions, reference, captions = _rows(ctx)
    root = need(ctx.settings("llava_bench", LlavaBenchFiles).image_root, "eval.llava_bench.image_root")
    answers = generate_windows(vlm, root, [q["image"] for q in questions], [q["text"] for q in questions],
                               "eval.llava_bench.image_root", params, tick)
    replies = judge.ask_all([llava_bench_prompt(captions[q["image"]], q["text"],
                                                           reference[q["question_id"]], a)
                             for q, a in zip(questions, answers)])
    pairs = [parse_pair_scores(r) for r in replies]
    metrics = llava_bench_metrics(pairs, [q.get("category", "all") for q in questions])
    records = [{"benchmark": "llava_bench", **q, "answer": a, "judge_reply": r}
               for q, a, r in zip(questions, answers, replies)]
    return judged_result(metrics, judge, PROMPT_VERSION), records


def count(ctx) -> int:
    return len(_rows(ctx)[0])


BENCHMARK = Benchmark("llava_bench", "llava_bench", ("eval.llava_bench.*", "eval.judge"),
                      "sena_cli.bench.llava_bench:run", "sena_cli.bench.llava_bench:count",
                      ("relative_score", "relative_score_<category>", "unparsed"),
                      (Chart("LLaVA-Bench relative score", (("relative", "relative_score"),)),), order=20,
                      section=LlavaBenchFiles, judged=True, judge_prompt=RULE, prompt_version=PROMPT_VERSION,
                      source="huggingface.co/datasets/liuhaotian/llava-bench-in-the-wild (questions.jsonl, "
                      "answers_gpt4.jsonl, context.jsonl, images/)")
