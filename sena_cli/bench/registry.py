"""Every benchmark sena runs, one record each: the one place that names benchmarks.

`sena eval` runs the records listed in eval.benchmarks; `sena history`, `sena report` and
`dvc plots` take their headline metrics from the records of the benchmarks found in the
metrics files, so any mix of benchmarks gets a full history table and charts.

Adding a benchmark is one record here (plus its scoring code, and a params section in
config.py when it reads files of its own). `check_params` checks eval.benchmarks against the
records (`sena eval`, `sena params`, `sena profile`); config.py does not import benchmarks.
A record names its runner and counter as "module:function" so that this module stays light:
    run(ctx, vlm, tick) -> (metrics dict, per-question records)
    count(ctx) -> questions it will ask; reads and checks its files before the model loads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sena_cli.config import check_value
from sena_cli.errors import SenaError


@dataclass(frozen=True)
class Chart:
    title: str
    series: tuple[tuple[str, str], ...]  # (label, metric key below the benchmark's key)


@dataclass(frozen=True)
class Benchmark:
    name: str  # its name in eval.benchmarks
    key: str  # its top-level key in metrics/iterK.json
    inputs: tuple[str, ...]  # the params keys (or folder) it reads
    run: str  # "module:function", see the module docstring
    count: str
    metrics: tuple[str, ...]  # its metric keys; <split>, <category>, … stand for families
    charts: tuple[Chart, ...]  # its headline metrics, grouped as the report draws them
    judged: bool = False  # needs eval.judge; skipped with a note without one

    @property
    def headlines(self) -> list[str]:
        """Full dotted keys of the headline metrics, e.g. 'coco_pope.adversarial.f1'."""
        return [f"{self.key}.{k}" for chart in self.charts for _, k in chart.series]

    def runner(self):
        return _resolve(self.run)

    def counter(self):
        return _resolve(self.count)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class Context:
    """What a runner gets besides the model: params, the project root, the judge (if any)."""

    params: Any  # sena_cli.config.Params
    root: Path = Path(".")
    judge: Any = None  # sena_cli.bench.judge.Judge for judged benchmarks
    _world: Any = field(default=None, repr=False)
    _world_dev: Any = field(default=None, repr=False)

    @property
    def world(self):
        """The embedded world's held-out files (written by `sena world`), read once."""
        if self._world is None:
            from sena_cli import layout
            from sena_cli.bench.world import WorldEvalSet

            self._world = WorldEvalSet(layout.world_dir(self.root), "eval", self.params.world.eval)
        return self._world

    @property
    def world_dev(self):
        """The world's dev set (other images of the same distribution), read once."""
        if self._world_dev is None:
            from sena_cli import layout
            from sena_cli.bench.world import WorldEvalSet

            self._world_dev = WorldEvalSet(layout.world_dir(self.root), "eval_dev", self.params.world.eval_dev)
        return self._world_dev


def _pope_charts(what: str) -> tuple[Chart, ...]:
    return (Chart(f"{what} accuracy", (("random", "random.accuracy"), ("popular", "popular.accuracy"),
                                         ("adversarial", "adversarial.accuracy"))),
            Chart(f"{what} F1 and yes-ratio (adversarial)", (("F1", "adversarial.f1"),
                                                             ("yes-ratio", "adversarial.yes_ratio"))))


POPE_METRICS = ("<split>.accuracy", "<split>.precision", "<split>.recall", "<split>.f1", "<split>.yes_ratio")
AMBER_BLOCKS = ("discriminative", "existence", "attribute", "state", "number", "action", "relation")
W = "sena_cli.bench.world"
X = "sena_cli.bench.external"

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("world_pope", "pope", ("data/world/eval",), f"{W}:run_pope", f"{W}:count_pope", POPE_METRICS,
              _pope_charts("POPE")),
    Benchmark("world_chair", "chair", ("data/world/eval", "eval.chair_prompt"), f"{W}:run_chair",
              f"{W}:count_chair", ("chair_s", "chair_i", "recall", "caption_f1"),
              (Chart("CHAIR (lower is better)", (("CHAIR_s", "chair_s"), ("CHAIR_i", "chair_i"))),
               Chart("Caption recall and F1", (("recall", "recall"), ("caption F1", "caption_f1"))))),
    Benchmark("world_vqa", "world_vqa", ("data/world/eval",), f"{W}:run_vqa", f"{W}:count_vqa",
              ("accuracy", "accuracy_<kind>"), (Chart("World VQA accuracy", (("accuracy", "accuracy"),)),)),
    Benchmark("world_questions", "world_questions", ("data/world/eval",), f"{W}:run_questions",
              f"{W}:count_questions", ("well_formed", "answerable", "distinct_forms"),
              (Chart("Self-questions", (("well-formed", "well_formed"), ("answerable", "answerable"))),)),
    Benchmark("world_dev", "world_dev", ("data/world/eval_dev", "eval.chair_prompt"), f"{W}:run_dev",
              f"{W}:count_dev", tuple(f"pope.{m}" for m in POPE_METRICS) + ("chair.chair_s", "chair.chair_i",
                                                                             "chair.recall", "chair.caption_f1"),
              (Chart("Dev set (where settings are chosen)", (("POPE adv. F1", "pope.adversarial.f1"),
                                                             ("CHAIR_i", "chair.chair_i"))),)),
    Benchmark("coco_pope", "coco_pope", ("eval.coco_pope.files", "eval.coco_pope.image_root"),
              f"{X}:coco_pope", f"{X}:count_coco_pope", POPE_METRICS, _pope_charts("COCO POPE")),
    Benchmark("coco_chair", "coco_chair", ("eval.coco_chair.captions", "eval.coco_chair.instances",
                                           "eval.coco_chair.synonyms", "eval.coco_chair.image_root",
                                           "eval.chair_prompt"),
              f"{X}:coco_chair", f"{X}:count_coco_chair", ("chair_s", "chair_i", "recall", "fallback.<part>"),
              (Chart("COCO CHAIR (lower is better)", (("CHAIR_s", "chair_s"), ("CHAIR_i", "chair_i"))),
               Chart("COCO CHAIR recall (sena's)", (("recall", "recall"),)))),
    Benchmark("amber", "amber", ("eval.amber.queries", "eval.amber.annotations", "eval.amber.relation",
                                 "eval.amber.safe_words", "eval.amber.image_root"),
              f"{X}:amber", f"{X}:count_amber",
              ("generative.<chair|cover|hal|cog>", *(f"{b}.<accuracy|precision|recall|f1>" for b in AMBER_BLOCKS),
               "fallback.<part>"),
              (Chart("AMBER generative (%)", (("CHAIR", "generative.chair"), ("Cover", "generative.cover"),
                                              ("Hal", "generative.hal"), ("Cog", "generative.cog"))),
               Chart("AMBER discriminative (%)", (("accuracy", "discriminative.accuracy"),
                                                  ("F1", "discriminative.f1"))))),
    Benchmark("mmbench", "mmbench", ("eval.mmbench.tsv",), f"{X}:mmbench", f"{X}:count_mmbench",
              ("overall", "<l2-category>", "<category>", "<split>.<…> (several splits)"),
              (Chart("MMBench (circular)", (("overall", "overall"),)),)),
    Benchmark("llava_bench", "llava_bench", ("eval.llava_bench.*", "eval.judge"), f"{X}:llava_bench",
              f"{X}:count_llava_bench", ("relative_score", "relative_score_<category>", "unparsed"),
              (Chart("LLaVA-Bench relative score", (("relative", "relative_score"),)),), judged=True),
    Benchmark("mm_vet", "mm_vet", ("eval.mm_vet.*", "eval.judge"), f"{X}:mm_vet", f"{X}:count_mm_vet",
              ("total", "<capability>", "unparsed"), (Chart("MM-Vet", (("total", "total"),)),), judged=True),
    Benchmark("mmhal", "mmhal", ("eval.mmhal.*", "eval.judge"), f"{X}:mmhal", f"{X}:count_mmhal",
              ("average_score", "hallucination_rate", "unparsed"),
              (Chart("MMHal-Bench", (("average (0-6)", "average_score"),)),
               Chart("MMHal-Bench hallucination rate", (("rate", "hallucination_rate"),))), judged=True),
)

BY_NAME = {b.name: b for b in BENCHMARKS}
NAMES = [b.name for b in BENCHMARKS]


def get(name: str) -> Benchmark:
    if name not in BY_NAME:
        raise SenaError(f"'eval.benchmarks' has {name!r}; allowed: {', '.join(NAMES)}")
    return BY_NAME[name]


def check_params(params, source: str = "params") -> None:
    """eval.benchmarks names registered benchmarks: config's own field check, the registry's names as choices."""
    check_value(list[str], params.eval.benchmarks, "eval.benchmarks", {"choices": NAMES}, source)


def ran(metrics_files: list[dict]) -> list[Benchmark]:
    """The benchmarks whose key appears in any of the metrics, in registry order."""
    keys = {key for metrics in metrics_files for key in metrics}
    return [b for b in BENCHMARKS if b.key in keys]


def metric(metrics: dict, dotted: str) -> float | None:
    """The number at a dotted key ('coco_pope.adversarial.f1'), or None."""
    for part in dotted.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return metrics if isinstance(metrics, int | float) and not isinstance(metrics, bool) else None


def headline_keys(metrics: list[dict]) -> list[str]:
    """The headline metrics of the benchmarks that ran, in registry order, each present somewhere."""
    keys = [key for b in ran(metrics) for key in b.headlines]
    return [key for key in dict.fromkeys(keys) if any(metric(m, key) is not None for m in metrics)]
