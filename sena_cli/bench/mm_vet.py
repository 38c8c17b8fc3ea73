"""MM-Vet: θK answers, a judge scores each answer against the ground truth from 0 to 1; the
total and one score per capability. The rubric is sena's wording of the benchmark's published
one; change it with its version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sena_cli.bench.external import Tick, generate_windows, judged_result, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import param
from sena_cli.frame import TEXT, TEXTS, Each, given, read_json

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

PROMPT_VERSION = "sena-mm-vet-v1"
RULE = (
    "Compare the ground truth and the prediction for the question, and give the prediction a correctness "
    "score between 0.0 and 1.0: 1.0 when it matches the ground truth (for answers with several parts, the "
    "share of parts that are right; 'AND' in the ground truth means all parts are needed, 'OR' means any "
    "one is enough). Reply with the score only."
)


@dataclass
class MMVetFiles:
    file: str = param("", "mm-vet.json {id: {imagename, question, answer, capability}}")
    image_root: str = param("", "MM-Vet's images")


def mm_vet_prompt(question: str, truth: str, prediction: str) -> str:
    return f"{RULE}\n\nQuestion: {question}\nGround truth: {truth}\nPrediction: {prediction}\nScore:"


def parse_unit_score(reply: str) -> float | None:
    match = re.search(r"\d+(?:\.\d+)?", reply)
    if not match:
        return None
    value = float(match.group())
    return value if 0.0 <= value <= 1.0 else None


def mm_vet_metrics(scores: Sequence[float | None], capabilities: Sequence[Sequence[str]]) -> dict:
    scored = [i for i, s in enumerate(scores) if s is not None]
    out = {"total": sum(scores[i] for i in scored) / len(scored) if scored else 0.0,
           "unparsed": len(scores) - len(scored)}
    for cap in sorted({c for caps in capabilities for c in caps}):
        idx = [i for i in scored if cap in capabilities[i]]
        out[cap] = sum(scores[i] for i in idx) / len(idx) if idx else 0.0
    return out


MM_VET_ITEM = {"imagename": TEXT, "question": TEXT, "answer": TEXT, "capability?": TEXTS}


def _items(ctx) -> list[tuple[str, dict]]:
    path = need(ctx.settings("mm_vet", MMVetFiles).file, "eval.mm_vet.file")
    return list(read_json(path, given("MM-Vet file", "eval.mm_vet.file"), Each(MM_VET_ITEM)).items())


def run(ctx, vlm: VLM, tick: Tick):
    params, judge = ctx.params, ctx.judge
    items = _items(ctx)
    root = need(ctx.settings("mm_vet", MMVetFiles).image_root, "eval.mm_vet.image_root")
    answers = generate_windows(vlm, root, [v["imagename"] for _, v in items], [v["question"] for _, v in items],
                               "eval.mm_vet.image_root", params, tick)
    replies = judge.ask_all([mm_vet_prompt(v["question"], v["answer"], a)
                             for (_, v), a in zip(items, answers)])
    scores = [parse_unit_score(r) for r in replies]
    metrics = mm_vet_metrics(scores, [v.get("capability", []) for _, v in items])
    records = [{"benchmark": "mm_vet", "id": k, **v, "prediction": a, "judge_reply": r}
               for (k, v), a, r in zip(items, answers, replies)]
    return judged_result(metrics, judge, PROMPT_VERSION), records


def count(ctx) -> int:
    return len(_items(ctx))


BENCHMARK = Benchmark("mm_vet", "mm_vet", ("eval.mm_vet.*", "eval.judge"),
                      "sena_cli.bench.mm_vet:run", "sena_cli.bench.mm_vet:count",
                      ("total", "<capability>", "unparsed"), (Chart("MM-Vet", (("total", "total"),)),), order=21,
                      section=MMVetFiles, judged=True, judge_prompt=RULE, prompt_version=PROMPT_VERSION,
                      source="github.com/yuweihao/MM-Vet (its release mm-vet.zip: mm-vet.json and images/)")
