"""Atomic writes: an interrupted stage leaves the old artifact or none, never half of one.

Also the journals that let a killed stage resume, the per-stage lock that keeps two runs of one
stage apart, and the one way every stage reads an image.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from sena_cli import bounded, layout
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


def atomic_write_text(path: str | Path, text: str | Iterable[str]) -> None:
    """Write `text` (a string, or pieces written one after another, never joined) under a temporary
    name, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                f.writelines(text)
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
    # line by line: a million answers are never one string in memory
    atomic_write_text(path, (json.dumps(r, sort_keys=True) + "\n" for r in records))


def fingerprint(*parts) -> str:
    """A short hash of everything a resumable run depends on (params, inputs, model identity)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(folder: str | Path, pattern: str = "*") -> list:
    """Names, sizes and modification times: cheap identity of a model folder (no hashing of GBs)."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(folder).glob(pattern)) if p.is_file()]


def resumable_dir(work: Path, run_id: str, holds_progress: Callable[[Path], bool]) -> bool:
    """True when `work` belongs to an interrupted run of the same inputs (its `run_id` stamp) and
    `holds_progress(work)`; otherwise `work` is emptied and stamped for this run, and False."""
    stamp = work / "run_id"
    if stamp.is_file() and stamp.read_text() == run_id and holds_progress(work):
        return True
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stamp.write_text(run_id)
    return False


class Journal:
    """Finished chunks of long work, one fsynced JSON line each: a killed run resumes from it.

    Each line carries the run's fingerprint; lines of a run with other params, inputs or
    model are ignored, and so is a line cut short (that chunk is redone). A write that fails
    (disk full) is cut back off, and a torn tail left by a kill is cut off before the next
    line is added, so a line is never glued to half of another.
    """

    def __init__(self, path: str | Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id

    def add(self, chunk: int | str, data) -> None:
        line = (json.dumps({"run": self.run_id, "chunk": chunk, "data": data}) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "a+b", buffering=0) as f:
                end = _cut_torn_tail(f.fileno())
                try:
                    view = memoryview(line)
                    while view:
                        view = view[f.write(view):]
                    os.fsync(f.fileno())
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(f.fileno(), end)
                    raise
        except OSError as exc:
            if exc.filename is None:  # write() and fsync() errors name no file; the user needs it
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
            raise

    def done(self) -> dict[int | str, object]:
        return read_journals([self.path], self.run_id)


def _cut_torn_tail(fd: int) -> int:
    """Cut the file back to its last newline; returns its size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


JOURNAL_FIX = "delete it (its work is redone) and rerun the stage"


def journal_entries(data: bytes, run_id: str) -> Iterator[tuple[int | str, object]]:
    """(chunk, data) of each whole line of run `run_id` in a journal's bytes; a line without its
    newline (torn by a kill or a full disk: the writer cuts it off, the chunk is redone) or that is
    not a journal entry is skipped."""
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(entry, dict) and entry.get("run") == run_id and isinstance(entry.get("chunk"), int | str):
            yield entry["chunk"], entry.get("data")


def read_journals(paths, run_id: str) -> dict[int | str, object]:
    """Finished chunks of run `run_id` in these journals (the newest entry of a chunk wins)."""
    done = {}
    for path in paths:
        if Path(path).is_file():  # bounded: a journal swapped for a link to /dev/zero or grown huge is refused
            done.update(journal_entries(bounded.read_bytes(path, what="journal", fix=JOURNAL_FIX), run_id))
    return done


@contextlib.contextmanager
def stage_lock(stage: str, k: int | None = None, root: Path = Path("."), rank: int = 0) -> Iterator[None]:
    """Hold data/iterK/.STAGE.lock (data/.STAGE.lock for stages without K) while a stage runs.

    A second `sena STAGE --iter K` on the same project stops in one line, before it touches
    anything. flock is released by the kernel when a process dies, so a killed run leaves no
    stale lock; the file is removed on release, and so are folders made only to hold it.
    The processes of one multi-process launch hold one lock each (`rank`), so they do not
    stop each other while each of them stops its counterpart in a second launch.
    """
    path = layout.lock_file(stage, k, rank, root)
    folder = path.parent
    command = f"sena {stage}" + (f" --iter {k}" if k is not None else "")
    made = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            made.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        while fd is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                fd = None
                raise SenaError(f"{path}: another `{command}` is running (pid {holder}); "
                                "wait for it to finish, or stop it, then rerun") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                break  # a file system without locks (some network mounts): run unguarded
            if not os.path.exists(path) or not os.path.samestat(os.fstat(fd), os.stat(path)):
                os.close(fd)  # the holder finished and removed the file between our open and lock
                fd = None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # before unlocking: a waiter then sees a fresh file, never a stale one
            os.close(fd)
        for parent in reversed(made):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if still empty


# ---------------------------------------------------------------- images


def shown(path: str | Path) -> str:
    """A path for a message: bytes that are not UTF-8 (kept by surrogateescape) shown as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


_ORIENTATION = ExifTags.Base.Orientation


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, upright: the EXIF orientation applied (a camera's portrait shot
    is stored sideways), 16/32-bit greyscale scaled (not clipped) to 8 bits, CMYK and palette
    converted, transparency composited over white (not turned black)."""
    im = upright(im)
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


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 5..8 swap width and height); 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except (SyntaxError, ValueError, OSError, TypeError, KeyError, struct.error):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(im: Image.Image) -> Image.Image:
    """`im` turned as its EXIF orientation says (the same image when it is already upright)."""
    if orientation(im) == 1:
        return im
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def open_rgb(path: Path) -> Image.Image:
    if not path.exists():
        raise SenaError(f"{shown(path)}: image listed in the sample manifest is missing; rerun `sena sample`")
    return decode(bounded.image_bytes(path), path, "replace it and rerun")


def decode(data: bytes, path: Path, fix: str) -> Image.Image:
    """An image's bytes as upright RGB, its header's size checked (limits.max_image_pixels) before decoding."""
    try:
        with bounded.open_image(data, path) as im:
            return to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SenaError(f"{shown(path)}: unreadable image ({exc.__class__.__name__}); {fix}") from None


def _show_id(record) -> str:
    return shown(record.get("id", "?")) if isinstance(record, dict) else "?"


def open_manifest_image(root: Path, record: dict, k: int | None = None) -> Image.Image:
    """A sampled image as RGB, checked against its manifest record (`path`, `sha256`).

    The bytes hashed are the bytes decoded, so an image edited or replaced after `sena sample`
    is refused in one line instead of silently feeding a different picture to the stage.
    """
    rerun = f"`sena sample --iter {k}`" if k is not None else "`sena sample`"
    if not isinstance(record, dict) or not all(isinstance(record.get(f), str) for f in ("path", "sha256")):
        raise SenaError(f"a sample manifest record ({_show_id(record)}) has no 'path' or 'sha256'; rerun {rerun}")
    path = Path(root) / record["path"]
    try:  # a regular file within limits.max_image_bytes (a FIFO, /dev/zero or a 3 GiB tail is refused)
        data = bounded.image_bytes(path, f"rerun {rerun}")
    except FileNotFoundError:
        raise SenaError(_missing_image(path, Path(root), rerun)) from None
    except OSError as exc:
        raise SenaError(f"{shown(path)}: cannot be read ({exc.strerror}); fix it or rerun {rerun}") from None
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise SenaError(f"{shown(path)}: changed since it was sampled (sha256 differs from the manifest); "
                        f"rerun {rerun}")
    return decode(data, path, f"rerun {rerun}")


def _missing_image(path: Path, root: Path, rerun: str) -> str:
    """Why a sampled image is gone, by the first folder above it that is gone: the embedded world
    (rebuilt by `sena world`), a pool folder moved away (put back), or the one file (draw again)."""
    gone = path
    while not gone.parent.exists() and gone.parent != gone.parent.parent:
        gone = gone.parent
    if gone == path:
        return f"{shown(path)}: image listed in the sample manifest is missing; rerun {rerun}"
    world = layout.world_dir(root)
    if gone == world or world in gone.parents:
        return (f"{shown(gone)}: the embedded world is gone (the pool of {shown(path)}); rebuild it with "
                "`sena world` or restore it with `dvc pull`")
    return (f"{shown(gone)}: folder missing, so the sampled {shown(path)} cannot be read (was the pool moved?); "
            f"put it back, or point sample.pool to its new place and rerun {rerun}")


def sampled_image_loader(rows: list[dict], root: Path, k: int):
    """path -> image for rows that carry `image` and `image_sha256` (pairs): each read checked
    against the sha256 its sample manifest recorded."""
    by_path = {r["image"]: r for r in rows}

    def load(path: str) -> Image.Image:
        row = by_path.get(path, {})
        return open_manifest_image(root, {"id": row.get("id", path), "path": path,
                                          "sha256": row.get("image_sha256")}, k)

    return load


def image_sha256(image: Image.Image) -> str:
    """Identity of an image's decoded RGB pixels."""
    return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()
