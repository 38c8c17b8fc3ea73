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

    def add(self, chunk: int | str, data) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"run": self.run_id, "chunk": chunk, "data": data}) + "\n"
        with open(self.path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end:  # a line cut short by a kill must not swallow this one
                f.seek(end - 1)
                line = ("" if f.read(1) == b"\n" else "\n") + line
            f.write(line.encode())  # append mode: always at the end
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


NOISE_INDEX = "index.jsonl"


def image_sha256(image: Image.Image) -> str:
    """Identity of an image's decoded RGB pixels."""
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


class Corruption:
    """What `sena noise` recorded for iteration K, and the corrupted inputs recomputed from it.

    For `pixel_values`, `transform` is a VLM pixel transform: each image's pictures, corrupted with
    its seed, checked against the recorded sha256. For `image`, `image(id, clean)` gives the
    corrupted image, checked the same way.
    """

    def __init__(self, params, k: int, root: Path):
        from sena_cli.method.noise import scheduler

        folder = layout.iter_dir(k, root) / "noised"
        index_file = folder / NOISE_INDEX
        if not index_file.is_file():
            raise SenaError(f"{index_file}: missing; run `sena noise --iter {k}` first")
        self.folder = folder
        self.params = params.noise
        self.k = k
        self.records = {r["id"]: r for r in read_jsonl(index_file)}
        self.sched = scheduler(self.params)
        info_space = "pictures" if any("pictures" in r for r in self.records.values()) else "size"
        expected = "pictures" if self.params.space == "pixel_values" else "size"
        if self.records and info_space != expected:
            raise SenaError(f"{folder}: written for another noise.space; rerun `sena noise --iter {k}`")

    def _record(self, image_id: str) -> dict:
        if image_id not in self.records:
            raise SenaError(f"{self.folder}: no corrupted copy of '{image_id}'; rerun `sena noise --iter {self.k}`")
        return self.records[image_id]

    def _mismatch(self, image_id: str) -> SenaError:
        return SenaError(f"{self.folder}: the corrupted input of '{image_id}' recomputed now differs from the one "
                         f"`sena noise` defined (another processor, model.processor setting or library version); "
                         f"rerun `sena noise --iter {self.k}`")

    def transform(self, pictures, keys):
        from sena_cli.method.noise import corrupt_pictures
        from sena_cli.vlm.pixels import pictures_sha256

        out = []
        for pics, key in zip(pictures, keys, strict=True):
            noised = corrupt_pictures(pics, self.params, key, self.sched)
            if pictures_sha256(noised) != self._record(key).get("sha256"):
                raise self._mismatch(key)
            out.append(noised)
        return out

    def image(self, image_id: str, clean: Image.Image) -> Image.Image:
        from sena_cli.method.noise import corrupt_image

        noised = corrupt_image(clean, self.params, image_id, self.sched)
        if image_sha256(noised) != self._record(image_id).get("sha256"):
            raise self._mismatch(image_id)
        return noised
