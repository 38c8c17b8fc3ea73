"""Where every artifact lives. Stages ask here; nothing else builds these paths.

Work folders (`*.partial`) sit beside, not inside, a stage's output: DVC empties a stage's
outputs before it runs, and a rerun must find the work a killed run finished.
"""

from __future__ import annotations

import os
from pathlib import Path

WORLD_DIR = Path("data/world")


def in_project(value: str, root: Path = Path(".")) -> str | None:
    """A path the params give (absolute, ~, or relative to the project root) as a project-relative posix
    path when it lies inside the project, else None: a run that records it outside does not travel."""
    full = Path(os.path.abspath(root / Path(value).expanduser()))
    base = Path(os.path.abspath(root))
    return full.relative_to(base).as_posix() if full.is_relative_to(base) else None


def travel_warning(key: str, value: str, fix: str = "put it under the project and track it with `dvc add`") -> str:
    """What a run says when a params key names a file outside the project (it cannot be in DVC or git)."""
    return (f"{key} '{value}' is outside the project: this run will not travel (a clone on another machine has "
            f"it only at that same path); {fix}")


def world_dir(root: Path = Path(".")) -> Path:
    return root / WORLD_DIR


def pool_fingerprint_file(root: Path = Path(".")) -> Path:
    """Names and sizes of the files `sample` draws from (stage `pool`); DVC reruns sample when it changes."""
    return root / "data" / "pool.json"


def code_dir(root: Path = Path(".")) -> Path:
    """data/code/COMMAND.json: the fingerprint of the code each command runs (stage `code`); stages depend on it."""
    return root / "data" / "code"


def code_file(command: str, root: Path = Path(".")) -> Path:
    return code_dir(root) / f"{command}.json"


def iter_dir(k: int, root: Path = Path(".")) -> Path:
    return root / "data" / f"iter{k}"


def lock_file(stage: str, k: int | None, rank: int = 0, root: Path = Path(".")) -> Path:
    """The lock one run of `sena STAGE [--iter K]` holds (one per process of a launch)."""
    folder = iter_dir(k, root) if k is not None else Path(root) / "data"
    return folder / (f".{stage}.lock" if rank == 0 else f".{stage}.rank{rank}.lock")


# ---------------------------------------------------------------- sample


def sample_dir(k: int, root: Path = Path(".")) -> Path:
    return iter_dir(k, root) / "sample"


def manifest_file(k: int, root: Path = Path(".")) -> Path:
    """The images iteration k drew: one JSON line each (id, path, sha256, size)."""
    return sample_dir(k, root) / "manifest.jsonl"


def sample_report_file(k: int, root: Path = Path(".")) -> Path:
    return sample_dir(k, root) / "report.json"


def sampled_image_file(k: int, i: int, root: Path = Path(".")) -> Path:
    """The i-th image of a `datasets` pool drawn for iteration k, written as a file."""
    return sample_dir(k, root) / "images" / f"{i:06d}.png"


# ---------------------------------------------------------------- noise


def noised_dir(k: int, root: Path = Path(".")) -> Path:
    return iter_dir(k, root) / "noised"


def noise_index_file(k: int, root: Path = Path(".")) -> Path:
    """Per image: the noise seed, the corrupted pictures' shapes and sha256 (qa recomputes them)."""
    return noised_dir(k, root) / "index.jsonl"


def noise_info_file(k: int, root: Path = Path(".")) -> Path:
    return noised_dir(k, root) / "info.json"


def noise_previews_dir(k: int, root: Path = Path(".")) -> Path:
    """A few clean | corrupted pictures side by side, for people."""
    return noised_dir(k, root) / "previews"


def noise_preview_file(k: int, i: int, root: Path = Path(".")) -> Path:
    return noise_previews_dir(k, root) / f"{i:03d}.png"


# ---------------------------------------------------------------- qa


def qa_dir(k: int, root: Path = Path(".")) -> Path:
    return iter_dir(k, root) / "qa"


def qa_records_file(k: int, root: Path = Path(".")) -> Path:
    return qa_dir(k, root) / "records.jsonl"


def qa_stats_file(k: int, root: Path = Path(".")) -> Path:
    return qa_dir(k, root) / "stats.json"


def qa_work_dir(k: int, root: Path = Path(".")) -> Path:
    """Journals of an unfinished `sena qa --iter k`."""
    return iter_dir(k, root) / "qa.partial"


# ---------------------------------------------------------------- pair


def pairs_dir(k: int, root: Path = Path(".")) -> Path:
    return iter_dir(k, root) / "pairs"


def pairs_file(k: int, root: Path = Path(".")) -> Path:
    return pairs_dir(k, root) / "pairs.jsonl"


def pairs_stats_file(k: int, root: Path = Path(".")) -> Path:
    return pairs_dir(k, root) / "stats.json"


def reference_file(k: int, root: Path = Path(".")) -> Path:
    """What the stored reference log-probs were computed under (tokenization, precision); `train` checks it."""
    return pairs_dir(k, root) / "reference.json"


def pairs_work_dir(k: int, root: Path = Path(".")) -> Path:
    """Journals of an unfinished `sena pair --iter k`."""
    return iter_dir(k, root) / "pairs.partial"


# ---------------------------------------------------------------- train


def model_dir(k: int, root: Path = Path(".")) -> Path:
    """θk; models/iter0 is θ0."""
    return root / "models" / f"iter{k}"


def train_dir(k: int, root: Path = Path(".")) -> Path:
    """Training log of θk (dvclive curves, summary); θk itself is model_dir(k)."""
    return iter_dir(k, root) / "train"


def train_live_dir(k: int, root: Path = Path(".")) -> Path:
    """dvclive's log of θk's training (plots/metrics/<name>.tsv per logged metric)."""
    return train_dir(k, root) / "live"


def train_curve_file(k: int, name: str, root: Path = Path(".")) -> Path:
    """One logged metric of θk's training against the optimizer step (`rewards/margins` -> …/rewards/margins.tsv)."""
    return train_live_dir(k, root) / "plots" / "metrics" / f"{name}.tsv"


def train_summary_file(k: int, root: Path = Path(".")) -> Path:
    return train_dir(k, root) / "summary.json"


def base_work_dir(root: Path = Path(".")) -> Path:
    """The last checkpoint of an unfinished training of the embedded θ0; not a DVC output, so a rerun of
    `sena base` resumes from it."""
    return iter_dir(0, root) / "base.partial"


def train_work_dir(k: int, root: Path = Path(".")) -> Path:
    """Checkpoints of an unfinished training run of θk; not a DVC output, so a rerun can resume."""
    return iter_dir(k, root) / "train.partial"


def train_checkpoints_dir(k: int, root: Path = Path(".")) -> Path:
    """The last checkpoint of θk's training, kept after θk is saved when train.keep_checkpoints asks; not a
    DVC output."""
    return iter_dir(k, root) / "train.checkpoints"


# ---------------------------------------------------------------- eval and after


def metrics_file(k: int, root: Path = Path(".")) -> Path:
    return root / "metrics" / f"iter{k}.json"


def eval_dir(k: int, root: Path = Path(".")) -> Path:
    """Per-question answers of θk's evaluation, kept beside the metrics for inspection."""
    return iter_dir(k, root) / "eval"


def answers_file(k: int, root: Path = Path(".")) -> Path:
    return eval_dir(k, root) / "answers.jsonl"


def eval_work_dir(k: int, root: Path = Path(".")) -> Path:
    """Journals of an unfinished `sena eval --iter k`."""
    return iter_dir(k, root) / "eval.partial"


def judge_journal_file(k: int, root: Path = Path(".")) -> Path:
    """Every judge reply of an unfinished run of `sena eval --iter k` (not a DVC output)."""
    return iter_dir(k, root) / "eval.judge.partial.jsonl"


def history_file(root: Path = Path(".")) -> Path:
    return root / "metrics" / "history.csv"


def history_dir(root: Path = Path(".")) -> Path:
    """One file per headline metric (iteration, value), for `dvc plots`."""
    return root / "metrics" / "history"


def history_metric_file(key: str, root: Path = Path(".")) -> Path:
    return history_dir(root) / f"{key}.csv"


def report_file(root: Path = Path(".")) -> Path:
    return root / "report" / "index.html"
