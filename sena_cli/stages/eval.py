"""Stage `eval`: score θK (models/iterK) on the benchmarks in params and write metrics/iterK.json.

Which benchmarks exist, what they read and which of their metrics are headlines is the
benchmark registry's business (sena_cli/bench/registry.py). Metrics keys are stable and nested
(`pope.<split>.<metric>`, `chair.<metric>`, other benchmarks under their own name) so
`dvc metrics diff` compares iterations; the per-question answers go to
data/iterK/eval/answers.jsonl for inspection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sena_cli import layout
from sena_cli.artifacts import Journal, file_identity, fingerprint, write_json, write_jsonl
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import registry
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.progress import Progress, no_progress
from sena_cli.tracked import tracked_params
from sena_cli.vlm import VLM


def run_eval(
    params: Params, k: int, root: Path = Path("."),
    progress: Progress = no_progress,
) -> dict:
    if k < 0 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: must be between 0 and loop.iterations ({params.loop.iterations})")
    benchmarks = [registry.get(name) for name in params.eval.benchmarks]
    # Judged benchmarks without a configured judge are skipped, each with one line saying how to enable it.
    skipped, judge = {}, None
    if any(b.judged for b in benchmarks):
        try:
            judge = judge_lib.Judge(params.eval.judge, journal=_judge_journal(k, root))
        except judge_lib.JudgeUnavailable as why:
            skipped = {b.name: str(why) for b in benchmarks if b.judged}
            benchmarks = [b for b in benchmarks if not b.judged]
    ctx = registry.Context(params, root, judge)
    # Read and check every benchmark file before loading the model and generating.
    counts = {b.name: b.counter()(ctx) for b in benchmarks}
    torch.manual_seed(params.loop.seed)
    vlm = VLM.load(layout.model_dir(k, root), trust_remote_code=params.model.trust_remote_code,
                   dtype=params.model.dtype, processor_settings=params.model.processor)
    metrics: dict = {}
    records: list[dict] = []
    started = time.perf_counter()
    # Each finished benchmark is journaled: a killed run resumes at the first unfinished one
    # (and a judged one, at its first unjudged question).
    names = [b.name for b in benchmarks]
    run_id = fingerprint(tracked_params("eval", k, params, root), names, file_identity(layout.model_dir(k, root)))
    journal = Journal(layout.iter_dir(k, root) / "eval.partial.jsonl", run_id)
    done = journal.done()
    for i, b in enumerate(benchmarks):
        tick = progress(b.name, counts[b.name])
        if i in done:
            key, result, recs = done[i]
            tick(counts[b.name])
        else:
            result, recs = b.runner()(ctx, vlm, tick)
            key = b.key
            journal.add(i, [key, result, recs])
        metrics[key] = result
        records += recs
    write_jsonl(layout.eval_dir(k, root) / "answers.jsonl", records)
    write_json(layout.metrics_file(k, root), metrics)
    journal.path.unlink(missing_ok=True)
    _judge_journal(k, root).unlink(missing_ok=True)
    return {"metrics": metrics, "skipped": skipped, "benchmarks run now": len(names) - len(done),
            "seconds": time.perf_counter() - started}


def _judge_journal(k: int, root: Path) -> Path:
    """Every judge reply of an unfinished run of `sena eval --iter k` (not a DVC output)."""
    return layout.iter_dir(k, root) / "eval.judge.partial.jsonl"


def read_metrics(k: int, root: Path = Path(".")) -> dict | None:
    path = layout.metrics_file(k, root)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
