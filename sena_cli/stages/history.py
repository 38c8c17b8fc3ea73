"""Stage `history`: the headline metrics of θ0…θK in one table, for `dvc plots` against iteration.

Reads metrics/iterK.json for K = 0..loop.iterations and writes metrics/history.csv, one row
per iteration with the keys below (missing keys are left empty).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sena_cli import layout
from sena_cli.artifacts import atomic_write_text
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.progress import Progress, no_progress

HEADLINE = (
    "pope.random.accuracy", "pope.popular.accuracy", "pope.adversarial.accuracy", "pope.adversarial.f1",
    "pope.adversarial.yes_ratio", "chair.chair_s", "chair.chair_i", "chair.recall", "chair.caption_f1",
    "world_vqa.accuracy",
)


def history_file(root: Path = Path(".")) -> Path:
    return root / "metrics" / "history.csv"


def _get(metrics: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return ""
        metrics = metrics[part]
    return metrics


def run_history(params: Params, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    rows = []
    for k in range(params.loop.iterations + 1):
        path = layout.metrics_file(k, root)
        if not path.is_file():
            raise SenaError(f"{path}: missing; run `sena eval --iter {k}` first")
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise SenaError(f"{path}: malformed JSON; rerun `sena eval --iter {k}`") from None
        rows.append({"iteration": k, **{key: _get(metrics, key) for key in HEADLINE}})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["iteration", *HEADLINE], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(history_file(root), buf.getvalue())
    return {"iterations": len(rows), "output": str(history_file(root))}
