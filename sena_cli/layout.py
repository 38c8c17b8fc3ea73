"""Where every artifact lives. Stages ask here; nothing else builds these paths."""

from __future__ import annotations

from pathlib import Path

WORLD_DIR = Path("data/world")


def world_dir(root: Path = Path(".")) -> Path:
    return root / WORLD_DIR


def pool_fingerprint_file(root: Path = Path(".")) -> Path:
    """Names and sizes of the files `sample` draws from (stage `pool`); DVC reruns sample when it changes."""
    return root / "data" / "pool.json"


def iter_dir(k: int, root: Path = Path(".")) -> Path:
    return root / "data" / f"iter{k}"


def model_dir(k: int, root: Path = Path(".")) -> Path:
    """θk; models/iter0 is θ0."""
    return root / "models" / f"iter{k}"


def metrics_file(k: int, root: Path = Path(".")) -> Path:
    return root / "metrics" / f"iter{k}.json"


def eval_dir(k: int, root: Path = Path(".")) -> Path:
    """Per-question answers of θk's evaluation, kept beside the metrics for inspection."""
    return root / "data" / f"iter{k}" / "eval"


def train_dir(k: int, root: Path = Path(".")) -> Path:
    """Training log of θk (dvclive curves, summary); θk itself is model_dir(k)."""
    return root / "data" / f"iter{k}" / "train"


def train_work_dir(k: int, root: Path = Path(".")) -> Path:
    """Checkpoints of an unfinished training run of θk; not a DVC output, so a rerun can resume."""
    return root / "data" / f"iter{k}" / "train.partial"
