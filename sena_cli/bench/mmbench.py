"""MMBench (Liu et al., 2023) dev TSV with circular evaluation.

The TSV has columns index, question, hint, A, B, C, D (E optional), answer, category and
image (base64). Circular evaluation asks each question once per rotation of its options
(A..D shifted by one each time) and counts it right only when every rotation is right.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sena_cli.artifacts import to_rgb
from sena_cli.errors import SenaError

LETTERS = "ABCDE"
REQUIRED = ("index", "question", "A", "B", "answer", "image")
INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class MMBenchItem:
    index: str
    question: str
    hint: str
    options: list[str]  # option texts, A first
    answer: int  # position of the right option
    category: str
    image_b64: str

    def image(self) -> Image.Image:
        with Image.open(io.BytesIO(base64.b64decode(self.image_b64))) as im:
            return to_rgb(im)


def read_mmbench_tsv(path: str | Path) -> list[MMBenchItem]:
    path = Path(path)
    if not path.is_file():
        raise SenaError(f"{path}: MMBench TSV not found; fix eval.mmbench.tsv")
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise SenaError(f"{path}: missing column(s) {', '.join(missing)}; is this MMBench's dev TSV?")
        items = []
        for line, row in enumerate(reader, 2):
            options = [row[c] for c in LETTERS if row.get(c) not in (None, "", "nan")]
            answer = (row["answer"] or "").strip()
            if answer not in LETTERS[: len(options)]:
                raise SenaError(f"{path}: line {line} has answer {answer!r} outside its options")
            try:
                base64.b64decode(row["image"], validate=True)
            except ValueError:
                raise SenaError(f"{path}: line {line}: the image column is not base64") from None
            hint = row.get("hint") or ""
            items.append(MMBenchItem(row["index"], row["question"], "" if hint == "nan" else hint, options,
                                     LETTERS.index(answer), row.get("category") or "", row["image"]))
    if not items:
        raise SenaError(f"{path}: no questions")
    return items


def rotations(item: MMBenchItem, circular: bool) -> list[tuple[list[str], int]]:
    """(options in asked order, position of the right one) for each pass."""
    n = len(item.options)
    shifts = range(n) if circular else range(1)
    return [(item.options[s:] + item.options[:s], (item.answer - s) % n) for s in shifts]


def prompt(item: MMBenchItem, options: list[str]) -> str:
    lines = ([item.hint] if item.hint else []) + [item.question]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    return "\n".join(lines + [INSTRUCTION])


def parse_choice(answer: str, options: list[str]) -> int | None:
    """The chosen option: a standalone letter first, else an option's exact text."""
    letters = LETTERS[: len(options)]
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", answer.strip())
    if match:
        return letters.index(match.group(1))
    text = answer.strip().rstrip(".").lower()
    for i, option in enumerate(options):
        if text == option.strip().rstrip(".").lower():
            return i
    return None


def mmbench_metrics(passes_right: list[list[bool]]) -> dict[str, float]:
    """accuracy: every pass right (circular); first_pass_accuracy: the unrotated pass only."""
    if not passes_right:
        raise ValueError("MMBench needs at least one question")
    return {
        "accuracy": sum(all(p) for p in passes_right) / len(passes_right),
        "first_pass_accuracy": sum(p[0] for p in passes_right) / len(passes_right),
    }
