"""Stage `eval`: score θK (models/iterK) on the benchmarks in params and write metrics/iterK.json.

Which benchmarks exist, what they read and which of their metrics are headlines is the
benchmark registry's business (sena_cli/bench/registry.py). Metrics keys are stable and nested
(`pope.<split>.<metric>`, `chair.<metric>`, other benchmarks under their own name) so
`dvc metrics diff` compares iterations; the per-question answers go to
data/iterK/eval/answers.jsonl for inspection.

Every batch of answers is journaled (data/iterK/eval.partial/), and so is every finished
benchmark, so a killed run resumes at its first unanswered batch. A benchmark's records are not
held: they are appended to a part file of that folder as its runner gives them (ctx.records()),
renamed into place when the benchmark finishes, and the journal names the part; answers.jsonl is
the parts streamed one after another, each line checked, so memory does not grow with a
benchmark's length. Under `torchrun`/`accelerate
launch` each generation's batches are dealt out between processes (each on its own device)
and every rank reads the others' answers back in question order (sena_cli/ranks.py), so the
scores and answers equal a one-process run's. Judge calls run on rank 0 only; judged
benchmarks run after the others, so the other ranks are not kept waiting while it judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from sena_cli import layout
from sena_cli.artifacts import file_identity, fingerprint
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import registry
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import (
    ANSWER,
    METRICS,
    Source,
    check_iteration,
    made_by,
    publish,
    read_json,
    stream_records,
    write_checked_json,
)
from sena_cli.progress import Progress, no_progress
from sena_cli.ranks import Ranks, Shards
from sena_cli.tracked import tracked_params
from sena_cli.vlm import VLM, ImageFeatures, PrefixCache


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
        part = _Part(ranks.folder / f"answers-{run_id}-{i}.jsonl") if ranks.is_main else None
        ctx.sink = part.empty if part is not None else _Discard
        try:
            result, recs = b.runner()(ctx, _SharedGeneration(vlm, shards, i, params.eval.image_feature_cache,
                                                                   params.eval.prefix_cache), tick)
        except _OnMain:  # the judge calls of this benchmark are rank 0's
            continue
        finally:
            ctx.sink = None
        if part is not None:
            results[i] = [b.key, result, part.finish(recs)]
            shards.journal.add(f"benchmark:{i}", results[i])

    def write() -> dict:
        previous = shards.collect([f"benchmark:{i}" for i in range(len(benchmarks)) if i not in results])
        metrics: dict = {}
        parts = []
        for i in range(len(benchmarks)):  # in the order of eval.benchmarks
            key, result, part = results.get(i) or previous[f"benchmark:{i}"]
            metrics[key] = result
            parts.append(_check_part(ranks.folder, part))

        def records():
            for part in parts:
                yield from part if isinstance(part, list) else stream_records(part, _PART)

        # Each checked as it is written, inside the output folder's temporary: a benchmark that gave
        # NaN publishes nothing.
        fix = "not written; rerun with --debug and report which benchmark gave it"
        with publish(layout.eval_dir(k, root)) as out:
            out.records(layout.answers_file(k, root), records(), ANSWER, fix)
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


_RESTART = "delete the data/iterK/eval.partial folder it is in and rerun `sena eval` (its answers are asked again)"
_PART = Source(f"missing; {_RESTART}", f"it changed since it was written; {_RESTART}")


class _Part:
    """One benchmark's records, appended to `path` as its runner gives them (under a temporary name
    until the benchmark finishes; rerunning it starts the file afresh), in answers.jsonl's own format."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.file = None
        self.lines = 0

    def empty(self) -> _Part:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.tmp, "w")  # noqa: SIM115 - closed by finish
        self.lines = 0
        return self

    def extend(self, rows) -> None:
        for row in rows:
            self.file.write(json.dumps(row, sort_keys=True) + "\n")
            self.lines += 1

    def finish(self, recs) -> dict:
        """The part's name, lines and size for the journal, the file renamed into place; `recs` is what
        the runner returned: this part, or a list of records (written now)."""
        if self.file is None:
            self.empty()
        if recs is not self:
            self.extend(recs)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return {"part": self.path.name, "lines": self.lines, "bytes": self.path.stat().st_size}


class _Discard:
    """The records sink on ranks other than 0: only rank 0 publishes."""

    def extend(self, rows) -> None:
        for _ in rows:
            pass


def _check_part(folder: Path, part) -> list | Path:
    """The journaled part of a finished benchmark (a list: an older run journaled its records whole)."""
    if isinstance(part, list):
        return part
    path = folder / part["part"]
    size = path.stat().st_size if path.is_file() else None
    if size != part["bytes"]:
        why = _PART.missing if size is None else f"{size} bytes, not the {part['bytes']} written; {_PART.fix}"
        raise SenaError(f"{path}: {why}")
    return path


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

    def __init__(self, vlm: VLM, shards: Shards, benchmark: int, feature_cache: int = 0, prefix_cache: int = 0):
        self.vlm, self.shards, self.benchmark, self.calls = vlm, shards, benchmark, 0
        # One image asked several questions (POPE's three splits, AMBER): its vision features once, and
        # the key/value cache of its prompt prefix once.
        self.features = ImageFeatures(feature_cache) if feature_cache else None
        self.prefixes = PrefixCache(prefix_cache) if prefix_cache else None

    def generate(self, images, texts, *, max_new_tokens: int, batch_size: int = 8, on_batch=lambda n: None
                 ) -> list[str]:
        call, self.calls = self.calls, self.calls + 1

        def name(b: int, batch: list[tuple]) -> str:
            digest = hashlib.sha256("\n\0".join(text for _, text in batch).encode()).hexdigest()[:16]
            return f"{self.benchmark}:{call}:{b}:{digest}"

        def answer(batch: list[tuple]) -> list[str]:
            return self.vlm.generate([image for image, _ in batch] if images is not None else None,
                                     [text for _, text in batch], max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, features=self.features, prefixes=self.prefixes)

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
