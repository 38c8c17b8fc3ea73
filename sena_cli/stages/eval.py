"""Stage `eval`: score θK (models/iterK) on the benchmarks in params and write metrics/iterK.json.

Metrics keys are stable and nested (`pope.<split>.<metric>`, `chair.<metric>`, other
benchmarks under their own name) so `dvc metrics diff` compares iterations; the
per-question answers go to data/iterK/eval/answers.jsonl for inspection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sena_cli import layout
from sena_cli.artifacts import Journal, file_identity, fingerprint, write_json, write_jsonl
from sena_cli.bench import external
from sena_cli.bench import judge as judge_lib
from sena_cli.bench import world as world_bench
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
    # Judged benchmarks without a configured judge are skipped, each with one line saying how to enable it.
    skipped, judge = {}, None
    names = list(params.eval.benchmarks)
    if any(name in external.JUDGED for name in names):
        try:
            judge = judge_lib.Judge(params.eval.judge)
        except judge_lib.JudgeUnavailable as why:
            skipped = {name: str(why) for name in names if name in external.JUDGED}
            names = [name for name in names if name not in skipped]
    data = None
    if any(name in world_bench.BENCHMARKS for name in names):
        data = world_bench.WorldEvalSet(layout.world_dir(root))
    # Read and check every benchmark file before loading the model and generating.
    counts = {name: world_bench.question_count(data, params, name) if name in world_bench.BENCHMARKS
              else external.count(params, name) for name in names}
    torch.manual_seed(params.loop.seed)
    vlm = VLM.load(layout.model_dir(k, root), trust_remote_code=params.model.trust_remote_code,
                   dtype=params.model.dtype)
    metrics: dict = {}
    records: list[dict] = []
    started = time.perf_counter()
    # Each finished benchmark is journaled: a killed run resumes at the first unfinished one.
    run_id = fingerprint(tracked_params("eval", k, params, root), names, file_identity(layout.model_dir(k, root)))
    journal = Journal(layout.iter_dir(k, root) / "eval.partial.jsonl", run_id)
    done = journal.done()
    for i, name in enumerate(names):
        tick = progress(name, counts[name])
        if i in done:
            key, result, recs = done[i]
            tick(counts[name])
        else:
            if name in world_bench.BENCHMARKS:
                key, fn = world_bench.BENCHMARKS[name]
                result, recs = fn(vlm, data, params, tick)
            elif name in external.JUDGED_BENCHMARKS:
                key, (result, recs) = name, external.JUDGED_BENCHMARKS[name](vlm, params, tick, judge)
            else:
                key, (result, recs) = name, external.BENCHMARKS[name](vlm, params, tick)
            journal.add(i, [key, result, recs])
        metrics[key] = result
        records += recs
    write_jsonl(layout.eval_dir(k, root) / "answers.jsonl", records)
    write_json(layout.metrics_file(k, root), metrics)
    journal.path.unlink(missing_ok=True)
    return {"metrics": metrics, "skipped": skipped, "benchmarks run now": len(names) - len(done),
            "seconds": time.perf_counter() - started}


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
