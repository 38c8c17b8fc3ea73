"""POPE on COCO (Li et al., 2023) in its published format.

Each split is a file of JSON lines {"question_id", "image", "text", "label"} (the POPE
repository names them coco_pope_<split>.json); images are COCO val2014 files under
eval.coco_pope.image_root. Scored with POPE's own yes/no parsing (bench/pope.py).
"""

from __future__ import annotations

from pathlib import Path

from sena_cli.bench.files import read_jsonl_file
from sena_cli.errors import SenaError

KEYS = ("question_id", "image", "text", "label")


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    for split in ("random", "popular", "adversarial"):
        if split in stem:
            return split
    return stem


def read_pope_file(path: str | Path) -> list[dict]:
    rows = read_jsonl_file(path, KEYS, "POPE question file", "fix eval.coco_pope.files")
    for i, row in enumerate(rows, 1):
        if row["label"] not in ("yes", "no"):
            raise SenaError(f"{path}: question {i} has label {row['label']!r}; POPE labels are 'yes' or 'no'")
    if not rows:
        raise SenaError(f"{path}: no questions")
    return rows
