"""MMHal-Bench: θK answers, a judge rates each answer 0-6 for informativeness and hallucination
given the image's contents and a human answer; the average rating and the hallucination rate
(share rated below 3). The rubric is sena's wording of the published one; change it with its version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sena_cli.bench.external import Tick, generate_windows, judged_result, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import param
from sena_cli.frame import TEXT, TEXTS, given, read_json

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

PROMPT_VERSION = "sena-mmhal-v1"
RULE = (
    "Rate the response to the question about an image, given the image's contents and a standard human "
    "answer, for informativeness and hallucination (claims about the image that are not supported by its "
    "contents). 6: informative, no hallucination; 5: informative, no hallucination, some missing; 4: some "
    "information, no hallucination; 3: little information, no hallucination; 2: informative, with "
    "hallucination; 1: little information, with hallucination; 0: not informative, with hallucination. "
    "End your reply with a line 'Rating: N'."
)


@dataclass
class MMHalFiles:
    file: str = param("", "response_template.json [{question_type, image_src, image_content, question, "
                      "gt_answer}]")
    image_root: str = param("", "images named as the basename of image_src")


def mmhal_prompt(contents: Sequence[str], question: str, truth: str, answer: str) -> str:
    return (f"{RULE}\n\nImage contents: {', '.join(contents)}\nQuestion: {question}\n"
            f"Standard human-generated answer: {truth}\nResponse to rate: {answer}")


def parse_rating(reply: str) -> int | None:
    match = re.findall(r"rating:\s*([0-6])", reply.lower())
    return int(match[-1]) if match else None


def mmhal_metrics(ratings: Sequence[int | None]) -> dict:
    """average rating (0-6) and hallucination rate (share rated below 3), as MMHal-Bench reports."""
    scored = [r for r in ratings if r is not None]
    return {"average_score": sum(scored) / len(scored) if scored else 0.0,
            "hallucination_rate": sum(r < 3 for r in scored) / len(scored) if scored else 0.0,
            "unparsed": len(ratings) - len(scored)}


MMHAL_ITEM = {"image_src": TEXT, "image_content": TEXTS, "question": TEXT, "gt_answer": TEXT}


def _items(ctx) -> list[dict]:
    path = need(ctx.settings("mmhal", MMHalFiles).file, "eval.mmhal.file")
    return read_json(path, given("MMHal-Bench file", "eval.mmhal.file"), [MMHAL_ITEM])


def run(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    items = _items(ctx)
    root = need(ctx.settings("mmhal", MMHalFiles).image_root, "eval.mmhal.image_root")
    answers = generate_windows(vlm, root, [Path(r["image_src"]).name for r in items],
                               [r["question"] for r in items], "eval.mmhal.image_root", params, tick)
    replies = judge.ask_all([mmhal_prompt(r["image_content"], r["question"], r["gt_answer"], a)
                             for r, a in zip(items, answers)])
    ratings = [parse_rating(x) for x in replies]
    records = [{"benchmark": "mmhal", **r, "model_answer": a, "judge_reply": x, "rating": g}
               for r, a, x, g in zip(items, answers, replies, ratings)]
    return judged_result(mmhal_metrics(ratings), judge, PROMPT_VERSION), records


def count(ctx) -> int:
    return len(_items(ctx))


BENCHMARK = Benchmark("mmhal", "mmhal", ("eval.mmhal.*", "eval.judge"),
                      "sena_cli.bench.mmhal:run", "sena_cli.bench.mmhal:count",
                      ("average_score", "hallucination_rate", "unparsed"),
                      (Chart("MMHal-Bench", (("average (0-6)", "average_score"),)),
                       Chart("MMHal-Bench hallucination rate", (("rate", "hallucination_rate"),))), order=22,
                      section=MMHalFiles, judged=True, judge_prompt=RULE, prompt_version=PROMPT_VERSION,
                      source="huggingface.co/datasets/Shengcao1006/MMHal-Bench (response_template.json; the images "
                      "its image_src names)")
