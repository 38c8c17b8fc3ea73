"""POPE on COCO (Li et al., 2023) in its published format.

Each split is a file of JSON lines {"question_id", "image", "text", "label"} (the POPE
repository names them coco_pope_<split>.json); images are COCO val2014 files under
eval.coco_pope.image_root. Scored with POPE's own yes/no parsing (bench/pope.py).
"""

from __future__ import annotations

from pathlib import Path

from sena_cli.errors import SenaError
from sena_cli.frame import ANY, TEXT, given, one_of, read_records

ROW = {"question_id": ANY, "image": TEXT, "text": TEXT, "label": one_of("yes", "no")}


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    for split in ("random", "popular", "adversarial"):
        if split in stem:
            return split
    return stem


def read_pope_file(path: str | Path) -> list[dict]:
    rows = read_records(path, given("POPE question file", "eval.coco_pope.files"), ROW)
    if not rows:
        raise SenaError(f"{path}: no questions")
    return rows
