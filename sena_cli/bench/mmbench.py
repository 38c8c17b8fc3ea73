"""MMBench (Liu et al., 2023) from its published TSV, scored as VLMEvalKit scores it.

The TSV has columns index, question, hint, A, B, C, D (more letters optional), answer,
category, l2-category, split and image. Circular evaluation is in the file itself: every pass
of a question is its own row, with the options in another order and its own answer letter; a
pass's index is the question's index plus k·1,000,000 (VLMEvalKit: g_index = index % 1e6).
Two published layouts, both read here:
- every row carries its image in base64 (MMBench's own dev TSV);
- VLMEvalKit's copy: a pass row's image column holds the main row's index instead.
sena asks every row of the file and scores as VLMEvalKit's circular evaluation with its
`exact_matching` policy (no LLM answer extractor): a question is right only when the answer
matched in every one of its passes is that pass's answer letter. With eval.mmbench.circular:
false only the main rows are asked and scored (vanilla).

Answer matching is VLMEvalKit's can_infer (our own code, checked against VLMEvalKit's in
tests/bench/test_differential.py): a single option letter standing alone among the answer's
last four words (after .()[],:;!*#{} become spaces); else "answer is X"; else the one option
whose text is inside the answer (answers longer than twice all option texts get none). Cells
are read with pandas' default missing values, as VLMEvalKit reads them ("" and "None" are
missing; an empty answer reads as "nan").

Scores are VLMEvalKit's report_acc: Overall and one value per l2-category and category
(MMBench's abbreviations: CP, FP-S, FP-C, LR, RR, AR), as fractions, per split.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from sena_cli import bounded
from sena_cli.artifacts import to_rgb
from sena_cli.bench.external import Tick, generate, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import param
from sena_cli.errors import SenaError

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

REQUIRED = ("index", "question", "A", "B", "answer", "image")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
PASS_OFFSET = 1_000_000
ABBREVIATIONS = {"coarse_perception": "CP", "finegrained_perception (instance-level)": "FP-S",
                 "finegrained_perception (cross-instance)": "FP-C", "logic_reasoning": "LR",
                 "relation_reasoning": "RR", "attribute_reasoning": "AR"}
# pandas' default missing-value strings (read_csv and read_excel): VLMEvalKit's files go through them.
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
_VERBOSE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")


@dataclass
class MMBenchRow:
    index: int
    group: int  # the main row's index
    question: str
    hint: str
    options: dict[str, str]  # letter -> text, in letter order
    answer: str
    category: str
    l2_category: str
    split: str
    image_b64: str
    source: str = field(default="", compare=False)  # the TSV it was read from, for error lines

    @property
    def is_main(self) -> bool:
        return self.index == self.group

    def image(self) -> Image.Image:
        where = f"{self.source or 'MMBench'}: index {self.index}"
        with bounded.open_image(base64.b64decode(self.image_b64), where) as im:  # its pixels sized first
            return to_rgb(im)


def _text(value) -> str:
    import pandas as pd

    return "" if pd.isna(value) else str(value)


def read_mmbench_tsv(path: str | Path) -> list[MMBenchRow]:
    """Every row of an MMBench TSV, sorted by index, pass rows' images resolved."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise SenaError(f"{path}: MMBench TSV not found; fix eval.mmbench.tsv")
    bounded.regular(path, "fix eval.mmbench.tsv")
    if (size := path.stat().st_size) > bounded.limits().max_file_bytes:
        raise bounded.too_big(path, size, "max_file_bytes", "MMBench TSV")
    try:
        df = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        raise SenaError(f"{path}: not a tab-separated MMBench file") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SenaError(f"{path}: missing column(s) {', '.join(missing)}; is this MMBench's dev TSV?")
    if not len(df):
        raise SenaError(f"{path}: no questions")
    letters = [c for c in string.ascii_uppercase if c in df.columns]
    images = {}
    rows = []
    for line, rec in enumerate(df.to_dict("records"), 2):
        index = _whole(rec["index"], "index", path, line)
        group = _whole(rec["g_index"], "g_index", path, line) if "g_index" in rec and not pd.isna(rec["g_index"]) \
            else int(index % 1e6)
        options = {c: str(rec[c]) for c in letters if not pd.isna(rec[c])}
        answer = _text(rec["answer"]).strip()
        if answer not in options:
            raise SenaError(f"{path}: line {line} has answer {answer!r} outside its options")
        images[index] = _text(rec["image"])
        rows.append(MMBenchRow(index, group, _text(rec["question"]), _text(rec.get("hint")), options, answer,
                               _text(rec.get("category")), _text(rec.get("l2-category")),
                               _text(rec.get("split")) or "none", "", str(path)))
    for row in rows:
        row.image_b64 = _resolve_image(images, row.index, path)
    return sorted(rows, key=lambda r: r.index)


def _whole(value, column: str, path: Path, line: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise SenaError(f"{path}: line {line} has {column} {value!r}; indices are whole numbers")
    return int(number)


def _resolve_image(images: dict[int, str], index: int, path: Path) -> str:
    value = images[index]
    if not value:
        raise SenaError(f"{path}: index {index}: the image column is empty")
    if 0 < len(value) <= 64:  # VLMEvalKit's layout: the index of the row that holds the image
        try:
            ref = int(value)
        except ValueError:
            raise SenaError(f"{path}: index {index}: image column {value!r} is neither base64 nor an index") from None
        if ref not in images or len(images[ref]) <= 64:
            raise SenaError(f"{path}: index {index}: image refers to index {ref}, which has no image")
        value = images[ref]
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SenaError(f"{path}: index {index}: the image column is not base64") from None
    return value


def asked_rows(rows: list[MMBenchRow], circular: bool) -> list[MMBenchRow]:
    """The rows sena asks: every pass of every question whose main row is in the file, or the main rows."""
    mains = {r.index for r in rows if r.is_main}
    return [r for r in rows if r.group in mains and (circular or r.is_main)]


def prompt(row: MMBenchRow) -> str:
    lines = ([row.hint] if row.hint else []) + [row.question]
    lines += [f"{letter}. {text}" for letter, text in row.options.items()]
    return "\n".join(lines + [INSTRUCTION])


def image_of(row: MMBenchRow, cache: dict[str, Image.Image]) -> Image.Image:
    if row.image_b64 not in cache:
        try:
            cache[row.image_b64] = row.image()
        except (UnidentifiedImageError, OSError):
            raise SenaError(f"{row.source or 'MMBench'}: index {row.index}: the image is not a readable picture"
                            ) from None
    return cache[row.image_b64]


# ---------------------------------------------------------------- VLMEvalKit's answer matching

def as_read_back(prediction: str) -> str:
    """A prediction as VLMEvalKit reads it back from its file: pandas' missing values become 'nan'."""
    return "nan" if prediction in PANDAS_NA else prediction


def match_option(answer: str, options: dict[str, str]) -> str | None:
    """The option letter VLMEvalKit's can_infer finds in an answer ('Z' for a refusal), or None."""
    letter = _match_letter(answer, options)
    return letter if letter else _match_text(answer, options)


def _match_letter(answer: str, options: dict[str, str]) -> str | None:
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    spaced = answer
    for ch in ".()[],:;!*#{}":
        spaced = spaced.replace(ch, " ")
    words = spaced.split()
    present = [c for c in options if c in words]
    if len(present) == 1:
        letter = present[0]
        if words.index(letter) > len(words) - 5:  # among the last four words
            return letter
    elif not present and "Z" in words:
        return "Z"
    found = _VERBOSE.search(answer)
    if found and found.group(1).upper() in options:
        return found.group(1).upper()
    return None


def _match_text(answer: str, options: dict[str, str]) -> str | None:
    answer = answer.lower()
    if len(answer) > 2 * sum(len(text) for text in options.values()):
        return None
    hits = [letter for letter, text in options.items() if text.lower() in answer]
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------- scores

def group_hits(rows: list[MMBenchRow], matched: dict[int, str | None]) -> dict[int, bool]:
    """Per question (main index): right in every pass asked (VLMEvalKit's exact-matching circular rule)."""
    hits: dict[int, bool] = {}
    for row in rows:
        if row.index in matched:
            hits[row.group] = hits.get(row.group, True) and matched[row.index] == row.answer
    return hits


def report(rows: list[MMBenchRow], hits: dict[int, bool]) -> dict:
    """VLMEvalKit's report_acc over the main rows: Overall, then l2-categories, then categories."""
    mains = [r for r in rows if r.is_main and r.index in hits]
    if not mains:
        raise SenaError("MMBench: no question was scored")
    splits = sorted({r.split for r in mains})
    out: dict = {}
    for split in splits:
        part = [r for r in mains if r.split == split]
        scores = {"overall": _mean([hits[r.index] for r in part])}
        for attr in ("l2_category", "category"):
            for value in sorted({getattr(r, attr) for r in mains if getattr(r, attr)}):
                chosen = [hits[r.index] for r in part if getattr(r, attr) == value]
                if chosen:
                    scores[ABBREVIATIONS.get(value, value)] = _mean(chosen)
        out[split] = scores
    return out[splits[0]] if len(splits) == 1 else out


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values)


# ---------------------------------------------------------------- the benchmark: section, runner, record

@dataclass
class MMBenchFiles:
    tsv: str = param("", "MMBench's dev TSV or VLMEvalKit's MMBench_DEV_EN.tsv (images inside, base64)")
    circular: bool = param(True, "VLMEvalKit's circular evaluation (all passes right); false = the main "
                           "rows, each asked once")


def _rows(ctx) -> tuple[list[MMBenchRow], list[MMBenchRow]]:
    f = ctx.settings("mmbench", MMBenchFiles)
    rows = read_mmbench_tsv(need(f.tsv, "eval.mmbench.tsv"))
    return rows, asked_rows(rows, f.circular)


def run(ctx, vlm: VLM, tick: Tick):
    params = ctx.params
    rows, asked = _rows(ctx)
    cache: dict = {}
    answers = generate(vlm, [image_of(r, cache) for r in asked], [prompt(r) for r in asked], params, tick)
    matched = {r.index: match_option(as_read_back(a), r.options) for r, a in zip(asked, answers)}
    hits = group_hits(asked, matched)
    records = [{"benchmark": "mmbench", "index": r.index, "question_index": r.group, "options": r.options,
                "answer": a, "matched": matched[r.index], "right": r.answer, "question_right": hits[r.group]}
               for r, a in zip(asked, answers)]
    return report(rows, hits), records


def count(ctx) -> int:
    return len(_rows(ctx)[1])


BENCHMARK = Benchmark("mmbench", "mmbench", ("eval.mmbench.tsv",),
                      "sena_cli.bench.mmbench:run", "sena_cli.bench.mmbench:count",
                      ("overall", "<l2-category>", "<category>", "<split>.<…> (several splits)"),
                      (Chart("MMBench (circular)", (("overall", "overall"),)),), order=13, section=MMBenchFiles,
                      source="VLMEvalKit's MMBench_DEV_EN.tsv (opencompass.openxlab.space/utils/VLMEval/"
                      "MMBench_DEV_EN.tsv) or the dev TSV of github.com/open-compass/MMBench")
