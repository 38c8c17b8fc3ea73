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
from sena_cli.artifacts import write_json, write_jsonl
from sena_cli.bench import world as world_bench
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.progress import Progress, no_progress
from sena_cli.vlm import VLM


def run_eval(
    params: Params, k: int, root: Path = Path("."),
    progress: Progress = no_progress,
) -> dict:
    if k < 0 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: must be between 0 and loop.iterations ({params.loop.iterations})")
    torch.manual_seed(params.loop.seed)
    vlm = VLM.load(layout.model_dir(k, root), trust_remote_code=params.model.trust_remote_code,
                   dtype=params.model.dtype)
    data = world_bench.WorldEvalSet(layout.world_dir(root))
    metrics: dict = {}
    records: list[dict] = []
    started = time.perf_counter()
    for name in params.eval.benchmarks:
        key, fn = world_bench.BENCHMARKS[name]
        tick = progress(name, world_bench.question_count(data, params, name))
        metrics[key], recs = fn(vlm, data, params, tick)
        records += recs
    write_jsonl(layout.eval_dir(k, root) / "answers.jsonl", records)
    write_json(layout.metrics_file(k, root), metrics)
    return {"metrics": metrics, "seconds": time.perf_counter() - started}


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
