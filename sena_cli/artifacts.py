"""Atomic writes: an interrupted stage leaves the old artifact or none, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file

from sena_cli import layout
from sena_cli.errors import SenaError


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared like any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; a bad line raises JSONDecodeError whose lineno is the file's line."""
    text = Path(path).read_text()
    records, offset = [], 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise json.JSONDecodeError(exc.msg, text, offset + min(exc.pos, len(line.rstrip("\n")))) from None
        offset += len(line)
    return records


def fingerprint(*parts) -> str:
    """A short hash of everything a resumable run depends on (params, inputs, model identity)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(folder: str | Path, pattern: str = "*") -> list:
    """Names, sizes and modification times: cheap identity of a model folder (no hashing of GBs)."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(folder).glob(pattern)) if p.is_file()]


class Journal:
    """Finished chunks of long work, one fsynced JSON line each: a killed run resumes from it.

    Each line carries the run's fingerprint; lines of a run with other params, inputs or
    model are ignored, and so is a line cut short by a kill (that chunk is redone).
    """

    def __init__(self, path: str | Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id

    def add(self, chunk: int, data) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"run": self.run_id, "chunk": chunk, "data": data}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def done(self) -> dict[int, object]:
        return read_journals([self.path], self.run_id)


def read_journals(paths, run_id: str) -> dict[int, object]:
    done = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        for line in Path(path).read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("run") == run_id:
                done[entry["chunk"]] = entry["data"]
    return done


# ---------------------------------------------------------------- inputs shared by stages


def read_manifest(k: int, root: Path) -> list[dict]:
    path = layout.iter_dir(k, root) / "sample" / "manifest.jsonl"
    if not path.is_file():
        raise SenaError(f"{path}: missing; run `sena sample --iter {k}` first")
    return read_jsonl(path)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: 16/32-bit greyscale scaled (not clipped) to 8 bits, CMYK and
    palette converted, transparency composited over white (not turned black)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    if not path.is_file():
        raise SenaError(f"{path}: image listed in the sample manifest is missing; rerun `sena sample`")
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SenaError(f"{path}: unreadable image ({exc.__class__.__name__}); replace it and rerun") from None


class NoisedImages:
    """The corrupted copies written by `sena noise`, by image id."""

    def __init__(self, folder: Path):
        index_file = folder / "index.jsonl"
        if not index_file.is_file():
            raise SenaError(f"{index_file}: missing; run `sena noise` for this iteration first")
        self.folder = folder
        self.index = {r["id"]: r for r in read_jsonl(index_file)}
        self._shards: dict[str, dict] = {}

    def tensor(self, image_id: str):  # -> torch.Tensor | None
        rec = self._lookup(image_id)
        if "shard" not in rec:
            return None
        if rec["shard"] not in self._shards:
            self._shards = {rec["shard"]: load_file(self.folder / rec["shard"])}  # one shard in memory
        return self._shards[rec["shard"]][rec["key"]]

    def image(self, image_id: str):
        rec = self._lookup(image_id)
        return open_rgb(self.folder / rec["image"]) if "image" in rec else None

    def _lookup(self, image_id: str) -> dict:
        if image_id not in self.index:
            raise SenaError(f"{self.folder}: no corrupted copy of '{image_id}'; rerun `sena noise`")
        return self.index[image_id]
