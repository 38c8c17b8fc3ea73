"""The stage frame: what every stage does around its method step, written once.

- `check_iteration`: the `--iter K` range check.
- Reading: `read_json` and `read_records` (JSON lines) read every artifact and benchmark file
  a stage reads, checked against the fields its readers use. Anything wrong is one line that
  names the file, the line and the field, and what to do (the file's `Source`).
- Publishing: `publish(folder)` yields an `Output` whose `records` and `json` check what they
  write against the same fields, in a temporary folder that replaces `folder` only when all
  of it was written and checked: nothing unsound is published, nothing good is replaced.
- `summary`: what a stage returns for the CLI's table.

The fields of each artifact (MANIFEST, QA_RECORD, PAIR, METRICS, …) are declared here once,
for its writer and its readers alike. A field shape is a `Kind`, a dict of fields (a name
ending in '?' may be absent), `[shape]` for a list of them, `Each(shape)` for an object whose
every value has that shape, or `Tree(kind)` for nested objects whose leaves are of one kind.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sena_cli import bounded, layout
from sena_cli.artifacts import atomic_dir, write_json, write_jsonl
from sena_cli.errors import SenaError


def check_iteration(k: int, stage: str, iterations: int, first: int = 1) -> None:
    """`--iter K` of `stage` within first..loop.iterations (`iterations`)."""
    if not first <= k <= iterations:
        raise SenaError(f"--iter {k}: {stage} runs for iterations {first}..loop.iterations ({iterations})")


def remove_leftovers(target: str | Path) -> dict:
    """What an interrupted save of the folder `target` left beside it, removed, for the summary table:
    `.NAME.saving` (the new version half-written; a full disk left it with a raw SafetensorError) and
    `.NAME.old` (the previous version, kept until the new one was in place; put back if `target` is gone)."""
    import shutil

    target = Path(target)
    staging, old = target.with_name(f".{target.name}.saving"), target.with_name(f".{target.name}.old")
    done = {}
    if staging.exists():
        shutil.rmtree(staging)
        done["removed"] = f"{staging} (left by an interrupted save)"
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
            done["removed too"] = f"{old} (the version before, left by an interrupted save)"
        else:
            old.replace(target)
            done["restored"] = f"{target} from {old} (an interrupted save had moved it)"
    return done


def summary(rows: dict, output: str | Path, started: float) -> dict:
    """What a stage returns for the CLI's table: its rows, where it wrote, and its time."""
    return {**rows, "output": str(output), "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Kind:
    words: str  # what the field must be, for the error line
    test: Callable[[Any], bool]
    base: Kind | None = None  # a kind this one narrows: a value not even of the base is named by its words


def within(base: Kind, words: str, test: Callable[[Any], bool]) -> Kind:
    """`base` narrowed to the values that pass `test` (a range, a length)."""
    return Kind(words, lambda v: base.test(v) and test(v), base)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


ANY = Kind("present", lambda v: True)
TEXT = Kind("text", lambda v: isinstance(v, str))
NUMBER = Kind("a finite number", _number)
WHOLE = Kind("a whole number", _whole)
TEXTS = Kind("a list of text", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
WHOLES = Kind("a list of whole numbers", lambda v: isinstance(v, list) and all(map(_whole, v)))
NUMBER_OR_TEXT = Kind("a finite number or text", lambda v: _number(v) or isinstance(v, str))

# Impossible values refused where a stage reads an artifact (issue 23): a hand-edited pairs file
# with ref_chosen_logp 12.5 trained θK with rc 0, and one with 1e300 trained an epoch and then
# blamed train.lr. A log-probability is at most 0; counts, seeds and sizes have their ranges.
SEED_MAX = 2**63 - 1  # method.noise.image_seed's 63-bit seeds
LOGP = within(NUMBER, "a log-probability (a finite number <= 0)", lambda v: v <= 0)
COUNT = within(WHOLE, "a whole number >= 0", lambda v: v >= 0)
SIZE = within(WHOLE, "a whole number >= 1", lambda v: v >= 1)
SIZES = within(WHOLES, "a list of whole numbers >= 1", lambda v: all(x >= 1 for x in v))
SEED = within(WHOLE, f"a whole number in [0, {SEED_MAX}]", lambda v: 0 <= v <= SEED_MAX)
FRACTION = within(NUMBER, "a number in (0, 1]", lambda v: 0 < v <= 1)
# Longer than any answer a model writes within eval.max_new_tokens (131072 tokens at most, a few
# characters each), so a longer one was not generated: it would reach the tokenizer whole.
ANSWER_TEXT = within(TEXT, "text of at most limits.max_text_chars characters",
                     lambda v: len(v) <= bounded.limits().max_text_chars)


def one_of(*values: str) -> Kind:
    return Kind("one of " + ", ".join(map(json.dumps, values)), lambda v: isinstance(v, str) and v in values)


@dataclass(frozen=True)
class Each:
    """An object (of any keys) whose every value has `shape`."""

    shape: Any


@dataclass(frozen=True)
class Tree:
    """Nested objects whose leaves are `leaf` (a metrics file)."""

    leaf: Kind


def _json(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= 40:
        return text
    return text[:37] + "..." + (f" ({len(value)} characters)" if isinstance(value, str) else "")


def _at(where: str, field: str) -> str:
    """'line 3' + 'a.b' -> "line 3: 'a.b'"; the error line's subject."""
    return ": ".join(p for p in (where, f"'{field}'" if field else "") if p)


def fault(value, shape, where: str = "", field: str = "") -> str | None:
    """Why `value` does not have `shape` (naming `where` and the field), or None when it has."""
    if isinstance(shape, Kind):
        if shape.test(value):
            return None
        words = shape.base.words if shape.base and not shape.base.test(value) else shape.words
        return f"{_at(where, field)} must be {words}, got {_json(value)}"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{_at(where, field) or 'the file'} must be a list, got {_json(value)}"
        for i, item in enumerate(value):  # a file that is a list: its items counted from 1, as lines are
            at = (f"item {i + 1}", "") if not where and not field else (where, f"{field}[{i}]")
            if why := fault(item, shape[0], *at):
                return why
        return None
    if not isinstance(value, dict):
        return f"{_at(where, field) or 'the file'} must be a JSON object, got {_json(value)}"
    if isinstance(shape, Each | Tree):
        for key, item in value.items():
            inner = shape.shape if isinstance(shape, Each) else shape if isinstance(item, dict) else shape.leaf
            if why := fault(item, inner, where, f"{field}.{key}" if field else key):
                return why
        return None
    for name, inner in shape.items():
        key = name.rstrip("?")
        if key not in value:
            if name.endswith("?"):
                continue
            return f"{_at(where, field) or 'the file'} has no '{key}'"
        if why := fault(value[key], inner, where, f"{field}.{key}" if field else key):
            return why
    return None


# ---------------------------------------------------------------- the artifacts' fields

SAMPLE_TYPES = ("des", "gen")
MANIFEST = {"id": TEXT, "path": TEXT, "sha256": TEXT, "width?": SIZE, "height?": SIZE, "source?": TEXT}
NOISE_ENTRY = {"id": TEXT, "seed": SEED, "sha256": TEXT, "pictures?": [SIZES], "size?": SIZES}
NOISE_INFO = {"space": TEXT, "timestep": COUNT, "images": COUNT, "sqrt_alpha_bar": FRACTION}
# What `pair` reads of a qa record (qa writes more: the raw and checked questions, the description, …).
QA_RECORD = {"id": TEXT, "image": TEXT, "type": one_of(*SAMPLE_TYPES), "prompt": TEXT,
             "enhanced_answer": ANSWER_TEXT, "corrupted_answer": ANSWER_TEXT}
COUNTS = Each(COUNT)
PAIR = {"id": TEXT, "image": TEXT, "image_sha256": TEXT, "type": one_of(*SAMPLE_TYPES), "prompt": ANSWER_TEXT,
        "chosen": ANSWER_TEXT, "rejected": ANSWER_TEXT, "ref_chosen_logp": LOGP, "ref_chosen_logp_mean": LOGP,
        "ref_rejected_logp": LOGP, "ref_rejected_logp_mean": LOGP}
PAIR_STATS = {"records": COUNT, "pairs": COUNT, "pairs_des": COUNT, "pairs_gen": COUNT, "dropped": COUNTS}
REFERENCE = {"tokenization?": TEXT, "precision?": TEXT}
TRAIN_SUMMARY = {"pairs": COUNT, "steps": COUNT, "global_batch": SIZE, "first": Each(NUMBER),
                 "last": Each(NUMBER), "after": Each(NUMBER), "seconds": NUMBER}
METRICS = Tree(NUMBER_OR_TEXT)
ANSWER = {"benchmark": TEXT}
POINTER = {"base": TEXT, "kind?": one_of("folder", "hub")}


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Source:
    """Who makes a file, for the lines about it: what a missing one needs, and what a bad one needs."""

    missing: str
    fix: str


def made_by(stage: str, k: int | None = None, note: str = "") -> Source:
    """An artifact of `sena STAGE [--iter K]`."""
    command = f"`sena {stage}" + (f" --iter {k}`" if k is not None else "`")
    return Source(f"missing; run {command} first", f"rerun {command}{note}")


def given(what: str, key: str) -> Source:
    """A file the user names in params (a benchmark's, a pool list)."""
    article = "an" if what[0].lower() in "aeiou" else "a"
    return Source(f"{what} not found; fix {key}", f"is this {article} {what}? check {key}")


def _text(path: Path, source: Source) -> str:
    """A whole file as text, sized from its stat (limits.max_file_bytes) and regular, before it is read."""
    if not path.exists():
        raise SenaError(f"{path}: {source.missing}")
    try:
        return bounded.read_text(path, fix=source.fix)
    except UnicodeDecodeError as exc:
        raise SenaError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at byte {exc.start}); "
                        f"{source.fix}") from None


def refuse(path: str | Path, why: str | None, source: Source) -> None:
    """One line naming the file when `why` (a `fault`) says what is wrong with it."""
    if why:
        raise SenaError(f"{path}: {why}; {source.fix}")


def read_json(path: str | Path, source: Source, shape=None):
    """A JSON file checked against `shape`: every fault is one line naming the file and the field."""
    path = Path(path)
    text = _text(path, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SenaError(f"{path}: malformed JSON at line {exc.lineno}; {source.fix}") from None
    if shape is not None:
        refuse(path, fault(data, shape), source)
    return data


def stream_records(path: str | Path, source: Source, shape=None) -> Iterator[dict]:
    """The records of a JSON-lines file, streamed (memory bounded by limits.max_line_bytes, not by the
    file's length), each checked against `shape` (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise SenaError(f"{path}: {source.missing}")
    for n, offset, line in bounded.lines(path, fix=source.fix):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except UnicodeDecodeError as exc:
            raise SenaError(f"{path}: line {n}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at byte "
                            f"{offset + exc.start}); {source.fix}") from None
        except json.JSONDecodeError:
            raise SenaError(f"{path}: malformed JSON at line {n}; {source.fix}") from None
        if shape is not None:
            refuse(path, fault(row, shape, f"line {n}"), source)
        yield row


def read_records(path: str | Path, source: Source, shape=None) -> list:
    """The records of a JSON-lines file, each checked against `shape` (blank lines skipped)."""
    return list(stream_records(path, source, shape))


def read_jsonl(path: str | Path) -> list:
    """The records of a JSON-lines file nobody checks fields of; a malformed line is one line naming the
    file and the line."""
    return read_records(path, Source("missing", "fix or regenerate the file"))


def read_manifest(k: int, root: Path, note: str = "") -> list[dict]:
    """The images iteration k drew (`sena sample --iter k`), each with the fields later stages read."""
    return read_records(layout.manifest_file(k, root), made_by("sample", k, note), MANIFEST)


# ---------------------------------------------------------------- publishing

NOT_PUBLISHED = "not published (the earlier version, if any, is kept); rerun with --debug and report it"


class Output:
    """A stage's output folder while it is written: `path(final)` is where a file published at
    `final` (a path from layout.py inside the folder) is written; `records` and `json` check
    their data first."""

    def __init__(self, folder: Path, tmp: Path):
        self.folder, self.tmp = folder, tmp

    def path(self, final: str | Path) -> Path:
        path = self.tmp / Path(final).relative_to(self.folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def records(self, final: str | Path, rows: Iterable[dict], shape, fix: str = NOT_PUBLISHED) -> None:
        """JSON lines, each checked as it is written (streamed: `rows` may be longer than memory);
        a faulty one refuses the whole file, whose temporary is removed."""
        def checked() -> Iterator[dict]:
            for n, row in enumerate(rows, 1):
                refuse(final, fault(row, shape, f"line {n}"), Source("", fix))
                yield row

        write_jsonl(self.path(final), checked())

    def json(self, final: str | Path, data, shape=None, fix: str = NOT_PUBLISHED) -> None:
        if shape is not None:
            refuse(final, fault(data, shape), Source("", fix))
        write_json(self.path(final), data)


@contextlib.contextmanager
def publish(folder: str | Path) -> Iterator[Output]:
    """Write a stage's output folder under a temporary name; it replaces `folder` on success only."""
    with atomic_dir(folder) as tmp:
        yield Output(Path(folder), tmp)


def write_checked_json(path: str | Path, data, shape, fix: str = NOT_PUBLISHED) -> None:
    """One JSON file (metrics/iterK.json), checked, then written atomically."""
    refuse(path, fault(data, shape), Source("", fix))
    write_json(path, data)
