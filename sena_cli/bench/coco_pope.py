"""POPE on COCO (Li et al., 2023) in its published format.

Each split is a file of JSON lines {"question_id", "image", "text", "label"} (the POPE
repository names them coco_pope_<split>.json); images are COCO val2014 files under
eval.coco_pope.image_root. Scored with POPE's own yes/no parsing (bench/pope.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from sena_cli.errors import SenaError

KEYS = ("question_id", "image", "text", "label")


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    for split in ("random", "popular", "adversarial"):
        if split in stem:
            return split
    return stem


def read_pope_file(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SenaError(f"{path}: POPE question file not found; fix eval.coco_pope.files")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SenaError(f"{path}: line {i} is not JSON; POPE files hold one JSON object per line") from None
        missing = [k for k in KEYS if k not in row] if isinstance(row, dict) else list(KEYS)
        if missing:
            raise SenaError(f"{path}: line {i} lacks {', '.join(missing)}; is this a POPE question file?")
        if row["label"] not in ("yes", "no"):
            raise SenaError(f"{path}: line {i} has label {row['label']!r}; POPE labels are 'yes' or 'no'")
        rows.append(row)
    if not rows:
        raise SenaError(f"{path}: no questions")
    return rows
