"""The embedded world's benchmarks, scored against its ground truth.

- world_pope: POPE's three splits (random, popular, adversarial) on held-out images.
- world_chair: CHAIR on captions of held-out images (prompt: eval.chair_prompt).
- world_vqa: colour/shape/position-colour questions answered in a word.
- world_questions: does "ask a question about this image" give a question of the
  world's forms that the image can answer?
- world_dev: world_pope and world_chair on the dev set, where settings are chosen.
- world_cal: world_pope, world_chair and world_vqa on the calibration set, where θ0 is checked
  against docs/world.md's targets (neither dev nor test).
world_pope and world_chair also report co-occurrence hallucination: "yes" to an absent partner of
a present object against "yes" to any other absent object, and the share of a caption's chances
to name an absent partner that it takes.
Each returns (metrics, per-question records). Callable on any VLM. The records at the end
are what the benchmark registry (bench/registry.py) finds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from sena_cli import bounded, layout
from sena_cli.artifacts import decode
from sena_cli.bench import pope
from sena_cli.bench.chair import chair_counts, chair_metrics
from sena_cli.bench.pope import parse_yes_no, pope_counts, pope_metrics
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import read_jsonl
from sena_cli.method.prompts import with_suffix
from sena_cli.progress import Tick
from sena_cli.world.build import POPE_SPLITS
from sena_cli.world.language import answers_match, ask, parse_question
from sena_cli.world.scenes import Scene, absent_partners

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM


class WorldEvalSet:
    """The held-out files written by `sena world`: the test set (`eval`) or the dev set (`eval_dev`)."""

    def __init__(self, world_dir: Path, split: str = "eval", sizes=None):
        self.root = Path(world_dir) / split
        self.sizes = sizes  # world.eval or world.eval_dev: how many images each benchmark takes
        truth_file = self.root / "truth.jsonl"
        if not truth_file.is_file():
            raise SenaError(f"{truth_file}: missing; run `sena world` first")
        self.truth = {r["image"]: Scene.from_dict(r) for r in read_jsonl(truth_file)}
        self._images: dict[str, Image.Image] = {}

    def image(self, name: str) -> Image.Image:
        if name not in self._images:
            path = self.root / "images" / name
            self._images[name] = decode(bounded.image_bytes(path, "rebuild it with `sena world`"), path,
                                        "rebuild it with `sena world`")
        return self._images[name]

    def rows(self, name: str) -> list[dict]:
        path = self.root / name
        if not path.is_file():
            raise SenaError(f"{path}: missing; rerun `sena world`")
        return read_jsonl(path)


def _answer(vlm: VLM, data: WorldEvalSet, rows: list[dict], prompts: list[str], params: Params, tick: Tick):
    return vlm.generate([data.image(r["image"]) for r in rows], prompts,
                        max_new_tokens=params.eval.max_new_tokens, batch_size=params.eval.batch_size,
                        on_batch=tick)


def world_pope(vlm: VLM, data: WorldEvalSet, params: Params, tick: Tick):
    suffix = params.qa.prompts.short_answer_suffix
    metrics, counts, records = {}, {}, []
    for split in POPE_SPLITS:
        rows = data.rows(f"pope_{split}.jsonl")
        answers = _answer(vlm, data, rows, [with_suffix(r["text"], suffix) for r in rows], params, tick)
        parsed = [parse_yes_no(a, params.eval.yes_no_parsing) for a in answers]
        metrics[split] = pope_metrics(parsed, [r["label"] for r in rows])
        counts[split] = pope_counts(parsed, [r["label"] for r in rows])
        records += [{"benchmark": f"pope_{split}", **r, "answer": a, "parsed": p}
                    for r, a, p in zip(rows, answers, parsed)]
    metrics["partner"], counts["partner"] = pope_partner_rates(records, data.truth, params)
    return {**metrics, "n": counts}, records


def pope_partner_rates(records: list[dict], truth: dict[str, Scene], params: Params):
    """How often "yes" is said of an absent co-occurrence partner of a present object, and of any other
    absent object: each (image, object) negative once, over the three splits. The ratio of the two is
    the co-occurrence hallucination the method targets (POPE's adversarial split, isolated)."""
    said: dict[tuple[str, str], bool] = {}
    for r in records:
        parsed = parse_question(r["text"], params.world)
        if r["label"] == "no" and parsed and parsed[0] == "exists":
            said.setdefault((r["image"], parsed[1]["name"]), r["parsed"] == "yes")
    partner, other = [], []
    for (image, name), yes in said.items():
        (partner if name in absent_partners(truth[image].names, params.world) else other).append(yes)
    rates = {"yes_rate": sum(partner) / len(partner) if partner else 0.0,
             "other_yes_rate": sum(other) / len(other) if other else 0.0}
    return rates, {"yes_rate": len(partner), "other_yes_rate": len(other)}


def _sizes(data: WorldEvalSet, params: Params):
    return data.sizes or params.world.eval


def chair_images(data: WorldEvalSet, params: Params) -> list[str]:
    return sorted(data.truth)[: _sizes(data, params).chair_images]


def mentions(text: str, params: Params) -> list[str]:
    """Every '<colour> <shape>' the caption names, repeats included (CHAIR counts each mention)."""
    w = params.world
    pattern = r"\b(" + "|".join(w.colours) + r") (" + "|".join(w.shapes) + r")s?\b"
    return [f"{colour} {shape}" for colour, shape in re.findall(pattern, text.lower())]


def world_chair(vlm: VLM, data: WorldEvalSet, params: Params, tick: Tick):
    prompt = params.eval.chair_prompt or params.qa.prompts.describe_instructions[0]
    names = chair_images(data, params)
    rows = [{"image": n} for n in names]
    captions = _answer(vlm, data, rows, [prompt] * len(rows), params, tick)
    said = [mentions(c, params) for c in captions]
    truth = [data.truth[n].names for n in names]
    records = [{"benchmark": "chair", "image": n, "caption": c, "mentioned": s, "truth": t}
               for n, c, s, t in zip(names, captions, said, truth)]
    partner, partner_n = caption_partner_rates(said, truth, params)
    counts = {**chair_counts(said, truth), "partner": partner_n}
    return {**chair_metrics(said, truth), "partner": partner, "n": counts}, records


def caption_partner_rates(said: list[list[str]], truth: list[list[str]], params: Params):
    """rate: share of a caption's chances to name an absent partner (one per image and absent partner)
    that it takes; share: share of its hallucinated mentions that are absent partners."""
    chances = taken = wrong = wrong_partner = 0
    for mentioned, real in zip(said, truth):
        mates = set(absent_partners(list(real), params.world))
        chances += len(mates)
        taken += len(mates & set(mentioned))
        bad = [m for m in mentioned if m not in real]
        wrong += len(bad)
        wrong_partner += sum(m in mates for m in bad)
    return ({"rate": taken / chances if chances else 0.0, "share": wrong_partner / wrong if wrong else 0.0},
            {"rate": chances, "share": wrong})


def world_vqa(vlm: VLM, data: WorldEvalSet, params: Params, tick: Tick):
    rows = data.rows("vqa.jsonl")
    suffix = params.qa.prompts.short_answer_suffix
    answers = _answer(vlm, data, rows, [with_suffix(r["text"], suffix) for r in rows], params, tick)
    right = [answers_match(a, r["answer"]) for r, a in zip(rows, answers)]
    metrics = {"accuracy": sum(right) / len(rows)}
    for kind in sorted({r["kind"] for r in rows}):
        hits = [ok for ok, r in zip(right, rows) if r["kind"] == kind]
        metrics[f"accuracy_{kind}"] = sum(hits) / len(hits)
    records = [{"benchmark": "vqa", **r, "prediction": a, "correct": ok} for r, a, ok in zip(rows, answers, right)]
    return metrics, records


def question_quality(question: str, scene: Scene, params: Params) -> tuple[bool, bool]:
    """(well_formed, answerable): a question of the world's forms, and one the scene answers."""
    parsed = parse_question(question, params.world)
    if parsed is None:
        return False, False
    kind, slots = parsed
    return True, ask(kind, scene, params.world, **slots).answer is not None


def world_questions(vlm: VLM, data: WorldEvalSet, params: Params, tick: Tick):
    names = sorted(data.truth)[: _sizes(data, params).question_images]
    rows = [{"image": n} for n in names]
    questions = _answer(vlm, data, rows, [params.qa.prompts.question_generate] * len(rows), params, tick)
    quality = [question_quality(q, data.truth[n], params) for q, n in zip(questions, names)]
    kinds = {parse_question(q, params.world)[0] for q, (ok, _) in zip(questions, quality) if ok}
    metrics = {
        "well_formed": sum(w for w, _ in quality) / len(names),
        "answerable": sum(a for _, a in quality) / len(names),
        "distinct_forms": float(len(kinds)),
    }
    records = [{"benchmark": "questions", "image": n, "question": q, "well_formed": w, "answerable": a}
               for n, q, (w, a) in zip(names, questions, quality)]
    return metrics, records


# ---------------------------------------------------------------- what the registry calls

def _test(ctx) -> WorldEvalSet:
    """The world's held-out test files (written by `sena world`), read once per evaluation."""
    return ctx.once("world", lambda: WorldEvalSet(layout.world_dir(ctx.root), "eval", ctx.params.world.eval))


def _dev(ctx) -> WorldEvalSet:
    """The world's dev set (other images of the same distribution), read once per evaluation."""
    return ctx.once("world_dev", lambda: WorldEvalSet(layout.world_dir(ctx.root), "eval_dev",
                                                      ctx.params.world.eval_dev))


def run_pope(ctx, vlm: VLM, tick: Tick):
    return world_pope(vlm, _test(ctx), ctx.params, tick)


def run_chair(ctx, vlm: VLM, tick: Tick):
    return world_chair(vlm, _test(ctx), ctx.params, tick)


def run_vqa(ctx, vlm: VLM, tick: Tick):
    return world_vqa(vlm, _test(ctx), ctx.params, tick)


def run_questions(ctx, vlm: VLM, tick: Tick):
    return world_questions(vlm, _test(ctx), ctx.params, tick)


def count_pope(ctx) -> int:
    return sum(len(_test(ctx).rows(f"pope_{s}.jsonl")) for s in POPE_SPLITS)


def count_chair(ctx) -> int:
    return len(chair_images(_test(ctx), ctx.params))


def count_vqa(ctx) -> int:
    return len(_test(ctx).rows("vqa.jsonl"))


def count_questions(ctx) -> int:
    return min(len(_test(ctx).truth), ctx.params.world.eval.question_images)


def run_dev(ctx, vlm: VLM, tick: Tick):
    """POPE and CHAIR on the dev set: where settings are chosen, so that the test set stays unseen."""
    pope, pope_records = world_pope(vlm, _dev(ctx), ctx.params, tick)
    chair, chair_records = world_chair(vlm, _dev(ctx), ctx.params, tick)
    records = [{**r, "benchmark": f"dev_{r['benchmark']}"} for r in pope_records + chair_records]
    return {"pope": pope, "chair": chair}, records


def _cal(ctx) -> WorldEvalSet:
    """The calibration set: where θ0 is checked against docs/world.md's targets, seen by nothing else."""
    return ctx.once("world_cal", lambda: WorldEvalSet(layout.world_dir(ctx.root), "eval_cal",
                                                      ctx.params.world.eval_cal))


def run_cal(ctx, vlm: VLM, tick: Tick):
    """POPE, CHAIR and short answers on the calibration set (docs/world.md: θ0's calibration targets)."""
    data = _cal(ctx)
    pope_m, pope_records = world_pope(vlm, data, ctx.params, tick)
    chair_m, chair_records = world_chair(vlm, data, ctx.params, tick)
    vqa_m, vqa_records = world_vqa(vlm, data, ctx.params, tick)
    records = [{**r, "benchmark": f"cal_{r['benchmark']}"} for r in pope_records + chair_records + vqa_records]
    return {"pope": pope_m, "chair": chair_m, "vqa": {**vqa_m, "n": {"accuracy": len(vqa_records)}}}, records


def count_cal(ctx) -> int:
    return (sum(len(_cal(ctx).rows(f"pope_{s}.jsonl")) for s in POPE_SPLITS)
            + len(chair_images(_cal(ctx), ctx.params)) + len(_cal(ctx).rows("vqa.jsonl")))


def count_dev(ctx) -> int:
    return (sum(len(_dev(ctx).rows(f"pope_{s}.jsonl")) for s in POPE_SPLITS)
            + len(chair_images(_dev(ctx), ctx.params)))


W = "sena_cli.bench.world"  # the records name their runner and counter as "module:function"
WORLD = "drawn by `sena world` (the embedded default's synthetic world)"
CHAIR_METRICS = ("chair_s", "chair_i", "recall", "caption_f1", "partner.rate", "partner.share")
POPE_METRICS = (*pope.METRICS, "partner.yes_rate", "partner.other_yes_rate")
PARTNER_CHART = Chart("Co-occurrence hallucination (lower is better)",
                      (("POPE yes to an absent partner", "partner.yes_rate"),
                       ("POPE yes to another absent object", "partner.other_yes_rate")))
BENCHMARKS = (
    Benchmark("world_pope", "pope", ("data/world/eval",),
              f"{W}:run_pope", f"{W}:count_pope", POPE_METRICS, (*pope.charts("POPE"), PARTNER_CHART),
              order=0, source=WORLD, embedded_default=True),
    Benchmark("world_chair", "chair", ("data/world/eval", "eval.chair_prompt"),
              f"{W}:run_chair", f"{W}:count_chair", CHAIR_METRICS,
              (Chart("CHAIR (lower is better)", (("CHAIR_s", "chair_s"), ("CHAIR_i", "chair_i"))),
               Chart("Caption recall and F1", (("recall", "recall"), ("caption F1", "caption_f1"))),
               Chart("Captions naming an absent partner (lower is better)",
                     (("share of chances taken", "partner.rate"),))), order=1,
              source=WORLD, embedded_default=True),
    Benchmark("world_vqa", "world_vqa", ("data/world/eval",),
              f"{W}:run_vqa", f"{W}:count_vqa", ("accuracy", "accuracy_<kind>"),
              (Chart("World VQA accuracy", (("accuracy", "accuracy"),)),), order=2, source=WORLD,
              embedded_default=True),
    Benchmark("world_questions", "world_questions", ("data/world/eval",),
              f"{W}:run_questions", f"{W}:count_questions",
              ("well_formed", "answerable", "distinct_forms"),
              (Chart("Self-questions", (("well-formed", "well_formed"), ("answerable", "answerable"))),), order=3,
              source=WORLD, embedded_default=True),
    Benchmark("world_dev", "world_dev", ("data/world/eval_dev", "eval.chair_prompt"),
              f"{W}:run_dev", f"{W}:count_dev",
              tuple(f"pope.{m}" for m in POPE_METRICS) + tuple(f"chair.{m}" for m in CHAIR_METRICS),
              (Chart("Dev set (where settings are chosen)", (("POPE adv. F1", "pope.adversarial.f1"),
                                                             ("CHAIR_i", "chair.chair_i"))),), order=4,
              source=WORLD),
    Benchmark("world_cal", "world_cal", ("data/world/eval_cal", "eval.chair_prompt"),
              f"{W}:run_cal", f"{W}:count_cal",
              tuple(f"pope.{m}" for m in POPE_METRICS) + tuple(f"chair.{m}" for m in CHAIR_METRICS)
              + ("vqa.accuracy",),
              (Chart("Calibration set (θ0 against docs/world.md's targets)",
                     (("POPE adv. F1", "pope.adversarial.f1"), ("CHAIR_i", "chair.chair_i"))),), order=5,
              source=WORLD),
)
