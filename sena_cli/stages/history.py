"""Stage `history`: the headline metrics of θ0…θK in one table, for `dvc plots` against iteration.

Reads metrics/iterK.json for K = 0..loop.iterations. The columns are the headline metrics
(bench/registry.py) of the benchmarks found in those files, so any set of benchmarks gets a
full table; a headline no iteration has is left out. Writes:
- metrics/history.csv: one row per iteration, one column per headline metric;
- metrics/history/<metric>.csv: one file per headline metric (iteration, value), which the
  top-level `plots:` of dvc.yaml draws one chart each (DVC plots a file's last column).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from sena_cli import layout
from sena_cli.artifacts import atomic_write_text
from sena_cli.bench import registry
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import METRICS, made_by, publish, read_json, summary
from sena_cli.progress import Progress, no_progress


def read_all_metrics(params: Params, root: Path) -> dict[int, dict]:
    return {k: read_json(layout.metrics_file(k, root), made_by("eval", k), METRICS)
            for k in range(params.loop.iterations + 1)}


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def run_history(params: Params, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    started = time.perf_counter()
    metrics = read_all_metrics(params, root)
    keys = registry.headline_keys(list(metrics.values()))
    if not keys:
        raise SenaError(f"{layout.metrics_file(0, root)}: no headline metric of any registered benchmark; "
                        "check eval.benchmarks and rerun `sena eval`")

    def cell(k, key):
        value = registry.metric(metrics[k], key)
        return "" if value is None else value

    with publish(layout.history_dir(root)) as out:
        for key in keys:
            out.path(layout.history_metric_file(key, root)).write_text(
                _csv(["iteration", key], [[k, cell(k, key)] for k in metrics if cell(k, key) != ""]))
    atomic_write_text(layout.history_file(root), _csv(["iteration", *keys], [[k, *(cell(k, key) for key in keys)]
                                                                            for k in metrics]))
    return {**summary({"iterations": len(metrics), "headline metrics": len(keys)}, layout.history_file(root),
                      started), "columns": keys}
