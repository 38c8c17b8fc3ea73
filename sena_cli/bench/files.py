"""Reading benchmark files: one-line errors naming the file, the line and the parameter to fix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sena_cli.errors import SenaError


def read_json_file(path: str | Path, what: str, fix: str = "fix its path in params.yaml"):
    path = Path(path)
    if not path.is_file():
        raise SenaError(f"{path}: {what} not found; {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise SenaError(f"{path}: {what} is not valid JSON") from None


def read_jsonl_file(path: str | Path, keys: Sequence[str], what: str,
                    fix: str = "fix its path in params.yaml") -> list[dict]:
    """Rows of a JSON-lines benchmark file, each with at least `keys`."""
    path = Path(path)
    if not path.is_file():
        raise SenaError(f"{path}: {what} not found; {fix}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SenaError(f"{path}: line {i} is not JSON; a {what} holds one JSON object per line") from None
        missing = [k for k in keys if k not in row] if isinstance(row, dict) else list(keys)
        if missing:
            raise SenaError(f"{path}: line {i} lacks {', '.join(missing)}; is this a {what}?")
        rows.append(row)
    return rows
