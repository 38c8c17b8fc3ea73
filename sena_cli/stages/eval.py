"""Stage `eval`: score θK (models/iterK) on the benchmarks in params and write metrics/iterK.json.

Which benchmarks exist, what they read and which of their metrics are headlines is the
benchmark registry's business (sena_cli/bench/registry.py). Metrics keys are stable and nested
(`pope.<split>.<metric>`, `chair.<metric>`, other benchmarks under their own name) so
`dvc metrics diff` compares iterations; the per-question answers go to
data/iterK/eval/answers.jsonl for inspection.

Every batch of answers is journaled (data/iterK/eval.partial/), and so is every finished
benchmark, so a killed run resumes at its first unanswered batch. Under `torchrun`/`accelerate
launch` each generation's batches are dealt out between processes (each on its own device)
and every rank reads the others' answers back in question order (sena_cli/ranks.py), so the
scores and answers equal a one-process run's. Judge calls run on rank 0 only; judged
benchmarks run after the others, so the other ranks are not kept waiting while it judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import torch

from sena_cli import layout
from sena_cli.artifacts import file_identity, fingerprint
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import registry
from sena_cli.config import Params
from sena_cli.frame import ANSWER, METRICS, check_iteration, made_by, publish, read_json, write_checked_json
from sena_cli.progress import Progress, no_progress
from sena_cli.ranks import Ranks, Shards
from sena_cli.tracked import tracked_params
from sena_cli.vlm import VLM, ImageFeatures


def run_eval(
    params: Params, k: int, root: Path = Path("."),
    progress: Progress = no_progress,
) -> dict:
    check_iteration(k, "eval", params.loop.iterations, first=0)
    selected = registry.selected(params)  # [] with a real θ0 is refused before anything starts
    ranks = Ranks.start(layout.eval_work_dir(k, root))  # before any work: the processes must share the project folder
    # Judged benchmarks without a configured judge are skipped, each with one line saying how to enable it.
    # Rank 0 decides (it alone calls the judge); every rank runs what it decided.
    judge: dict = {}
    names, skipped = ranks.from_main(lambda: _runnable(params, selected, k, root, judge))
    benchmarks = [registry.get(name) for name in names]
    ctx = registry.Context(params, root, judge.get("judge") if ranks.is_main else _JudgeOnMain())
    for b in benchmarks:  # each file set and there, or one line naming its key and where to get it
        if b.section is not None:
            registry.check_files(b, ctx.settings(b.name, b.section))
    # Read and check every benchmark file before loading the model and generating.
    counts = {b.name: b.counter()(ctx) for b in benchmarks}
    torch.manual_seed(params.loop.seed)
    vlm = VLM.from_params(params.model, layout.model_dir(k, root), dtype=params.model.dtype, device=ranks.device)
    started = time.perf_counter()
    run_id = fingerprint(tracked_params("eval", k, params, root), names, file_identity(layout.model_dir(k, root)))
    shards = Shards(ranks, run_id)
    results: dict[int, list] = {}
    # Judged benchmarks last: while rank 0 waits for the judge, the others have no batch left to wait for.
    for i in sorted(range(len(benchmarks)), key=lambda i: benchmarks[i].judged):
        b = benchmarks[i]
        tick = progress(b.name, counts[b.name])
        if f"benchmark:{i}" in shards.done:
            tick(counts[b.name])
            continue
        try:
            result, recs = b.runner()(ctx, _SharedGeneration(vlm, shards, i, params.eval.image_feature_cache), tick)
        except _OnMain:  # the judge calls of this benchmark are rank 0's
            continue
        if ranks.is_main:
            results[i] = [b.key, result, recs]
            shards.journal.add(f"benchmark:{i}", results[i])

    def write() -> dict:
        previous = shards.collect([f"benchmark:{i}" for i in range(len(benchmarks)) if i not in results])
        metrics: dict = {}
        records: list[dict] = []
        for i in range(len(benchmarks)):  # in the order of eval.benchmarks
            key, result, recs = results.get(i) or previous[f"benchmark:{i}"]
            metrics[key] = result
            records += recs
        # Checked before either is written: a benchmark that gave NaN publishes nothing.
        fix = "not written; rerun with --debug and report which benchmark gave it"
        with publish(layout.eval_dir(k, root)) as out:
            out.records(layout.answers_file(k, root), records, ANSWER, fix)
            write_checked_json(layout.metrics_file(k, root), metrics, METRICS, fix)
        layout.judge_journal_file(k, root).unlink(missing_ok=True)
        return {"metrics": metrics, "skipped": skipped, "benchmarks run now": len(results),
                "batches run now": shards.run_now, "warnings": outside_project(ctx, benchmarks),
                "seconds": time.perf_counter() - started}

    return ranks.publish(write) or {"metrics": {}, "skipped": {}, "rank": ranks.rank,
                                    "batches run now": shards.run_now, "seconds": time.perf_counter() - started}


def outside_project(ctx: registry.Context, benchmarks: list) -> list[str]:
    """A warning for each file or folder key of the benchmarks run (a text field of the benchmark's section
    that is not a choice) that names a path outside the project: the run will not travel with it."""
    warnings = []
    for b in benchmarks:
        if b.section is None:
            continue
        settings = ctx.settings(b.name, b.section)
        for f in dataclasses.fields(b.section):
            value = getattr(settings, f.name)
            if f.metadata.get("choices") or not isinstance(value, str | list):
                continue
            for path in value if isinstance(value, list) else [value]:
                if isinstance(path, str) and path and layout.in_project(path, ctx.root) is None:
                    warnings.append(layout.travel_warning(f"eval.{b.name}.{f.name}", path))
    return warnings


def _runnable(params: Params, selected: list[str], k: int, root: Path, judge: dict
              ) -> tuple[list[str], dict[str, str]]:
    """(the benchmarks to run, {skipped judged benchmark: why}); puts the judge, if any, in `judge`."""
    benchmarks = [registry.get(name) for name in selected]
    if any(b.judged for b in benchmarks):
        try:
            judge["judge"] = judge_lib.Judge(params.eval.judge, journal=layout.judge_journal_file(k, root),
                                            versions=registry.judge_versions())
        except judge_lib.JudgeUnavailable as why:
            return [b.name for b in benchmarks if not b.judged], {b.name: str(why) for b in benchmarks if b.judged}
    return [b.name for b in benchmarks], {}


class _OnMain(Exception):
    """Raised on ranks other than 0 where a benchmark asks the judge: rank 0 does that part."""


class _JudgeOnMain:
    def ask_all(self, prompts):
        raise _OnMain


class _SharedGeneration:
    """What a benchmark runner sees as the model: each generate() call's batches are dealt out
    between the ranks and journaled (ranks.Shards); every rank gets back all answers, in question order.

    A batch is named by (benchmark, call, batch, hash of its prompts), so a resumed run reuses
    exactly the answers to the same questions, whichever process count wrote them."""

    def __init__(self, vlm: VLM, shards: Shards, benchmark: int, feature_cache: int = 0):
        self.vlm, self.shards, self.benchmark, self.calls = vlm, shards, benchmark, 0
        # One image asked several questions (POPE's three splits, AMBER): its vision features once.
        self.features = ImageFeatures(feature_cache) if feature_cache else None

    def generate(self, images, texts, *, max_new_tokens: int, batch_size: int = 8, on_batch=lambda n: None
                 ) -> list[str]:
        call, self.calls = self.calls, self.calls + 1

        def name(b: int, batch: list[tuple]) -> str:
            digest = hashlib.sha256("\n\0".join(text for _, text in batch).encode()).hexdigest()[:16]
            return f"{self.benchmark}:{call}:{b}:{digest}"

        def answer(batch: list[tuple]) -> list[str]:
            return self.vlm.generate([image for image, _ in batch] if images is not None else None,
                                     [text for _, text in batch], max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, features=self.features)

        found = self.shards.run(list(zip(images if images is not None else [None] * len(texts), texts, strict=True)),
                                batch_size, answer, tick=on_batch, name=name, everyone=True)
        return [a for answers in found for a in answers]


def read_metrics(k: int, root: Path = Path(".")) -> dict | None:
    """metrics/iterK.json, checked (finite numbers and text); None when θk is not evaluated yet."""
    path = layout.metrics_file(k, root)
    return read_json(path, made_by("eval", k), METRICS) if path.is_file() else None


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
