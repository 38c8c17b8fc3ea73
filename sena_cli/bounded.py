"""The one bounded reader: every file sena opens is sized before it is trusted (issue 23).

- Regular files only: a FIFO, a device, a socket, or a symlink to one is refused from `os.stat`
  before it is opened, and it is opened with O_NONBLOCK and checked again on the open descriptor,
  so a FIFO swapped in between the two cannot hang the read.
- A size limit checked before reading: from the stat (a whole file, a JSON-lines file, an image's
  bytes), from a safetensors file's 8-byte header length, or from an image's header dimensions
  (PIL reads the header lazily; `im.size` is checked before any pixel is decoded).
- JSON lines streamed with a cap per line, so a file's length never grows memory by itself.
- Text sized in characters before it reaches a tokenizer.

Each limit is a params key (`limits.*`, declared in config.py); `configure` installs a run's
values (the CLI does, once params are read); until then the defaults below hold.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from sena_cli.errors import SenaError

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """The limits a run reads under (the `limits.*` params; these are their defaults)."""

    max_image_bytes: int = 256 * MIB
    max_image_pixels: int = 178_956_970  # PIL's own Image.MAX_IMAGE_PIXELS
    max_file_bytes: int = 1024 * MIB
    max_line_bytes: int = 16 * MIB
    max_text_chars: int = 2_000_000
    max_checkpoint_file_bytes: int = 64 * MIB
    max_safetensors_header_bytes: int = 100_000_000  # the safetensors library's own limit
    max_template_seconds: float = 10.0


_LIMITS = [Limits()]


def limits() -> Limits:
    """The limits in force."""
    return _LIMITS[0]


def configure(values) -> Limits:
    """Install a run's limits (`params.limits`, or any object with Limits' fields); returns the old ones."""
    old = _LIMITS[0]
    _LIMITS[0] = replace(Limits(), **{f: getattr(values, f) for f in Limits.__dataclass_fields__})
    return old


@contextlib.contextmanager
def limited(**values) -> Iterator[Limits]:
    """Limits changed for a block (tests, benchmarks)."""
    old = _LIMITS[0]
    _LIMITS[0] = replace(old, **values)
    try:
        yield _LIMITS[0]
    finally:
        _LIMITS[0] = old


def _shown(path) -> str:
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return "not a regular file"


def irregular(st: os.stat_result) -> str | None:
    """What a stat says a path is when it is not a regular file ("a FIFO (named pipe)", …), else None."""
    return None if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)


def _mib(n: int) -> str:
    return f"{n / MIB:.4g} MiB" if n >= MIB else f"{n} bytes"


def too_big(path, size: int, key: str, what: str = "") -> SenaError:
    """The one line of a file over a limit: the file, its size, the key and the fix."""
    limit = getattr(limits(), key)
    return SenaError(f"{_shown(path)}: {what or 'file'} of {_mib(size)}, more than limits.{key} "
                     f"({_mib(limit)}); replace it, or raise limits.{key} if it is right")


def regular(path, fix: str = "replace it with the file") -> os.stat_result:
    """The stat of `path` (symlinks followed), refused in one line unless it is a regular file.
    A missing file raises FileNotFoundError for the caller to name its cause."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise SenaError(f"{_shown(path)}: {_kind(st.st_mode)}, not a regular file; sena reads regular files "
                        f"only; {fix}")
    return st


@contextlib.contextmanager
def open_bounded(path, key: str = "max_file_bytes", what: str = "", fix: str = "replace it with the file"
                 ) -> Iterator[tuple[BinaryIO, int]]:
    """(binary file, size) of a regular file no larger than limits.<key>; refused before it is read."""
    limit = getattr(limits(), key)
    st = regular(path, fix)
    if st.st_size > limit:
        raise too_big(path, st.st_size, key, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)  # what was opened: a FIFO swapped in after the stat is caught here, unblocked
        if not stat.S_ISREG(st.st_mode):
            raise SenaError(f"{_shown(path)}: {_kind(st.st_mode)}, not a regular file; sena reads regular "
                            f"files only; {fix}")
        if st.st_size > limit:
            raise too_big(path, st.st_size, key, what)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_bytes(path, key: str = "max_file_bytes", what: str = "", fix: str = "replace it with the file") -> bytes:
    """A regular file's bytes, at most limits.<key> of them (a file that grew while read is refused)."""
    limit = getattr(limits(), key)
    with open_bounded(path, key, what, fix) as (f, size):
        # sized from the stat (a read of limit + 1 allocates that much at once, for every small image);
        # then on, to limit + 1, only if the file grew
        data = f.read(min(size, limit) + 1)
        if len(data) > size:
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise too_big(path, len(data), key, what)
    return data


def read_text(path, key: str = "max_file_bytes", what: str = "", fix: str = "replace it with the file") -> str:
    """A regular file as UTF-8 text, at most limits.<key> bytes (UnicodeDecodeError for the caller)."""
    return read_bytes(path, key, what, fix).decode("utf-8")


def lines(path, fix: str = "replace it with the file") -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, its first byte's offset, bytes without the newline) of a regular file, streamed: at most
    limits.max_line_bytes per line, whatever the file's length."""
    cap = limits().max_line_bytes
    with _open_stream(path, fix) as f:
        n = offset = 0
        while True:
            line = f.readline(cap + 2)  # the line, its "\r\n", and one byte more says it is longer
            if not line:
                return
            n += 1
            body = line.rstrip(b"\r\n")
            if len(body) > cap:
                raise SenaError(f"{_shown(path)}: line {n} is longer than limits.max_line_bytes ({_mib(cap)}); "
                                f"{fix}, or raise limits.max_line_bytes if it is right")
            yield n, offset, body
            offset += len(line)


@contextlib.contextmanager
def _open_stream(path, fix: str) -> Iterator[BinaryIO]:
    """A regular file opened for streaming (any length: memory is bounded per line)."""
    regular(path, fix)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SenaError(f"{_shown(path)}: {_kind(st.st_mode)}, not a regular file; sena reads regular "
                            f"files only; {fix}")
        f = os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


# ---------------------------------------------------------------- images


def check_pixels(path, width: int, height: int) -> None:
    """An image's header dimensions against limits.max_image_pixels, before any pixel is decoded."""
    limit = limits().max_image_pixels
    if width * height > limit:
        raise SenaError(f"{_shown(path)}: image of {width}x{height} pixels ({width * height}), more than "
                        f"limits.max_image_pixels ({limit}); shrink it, or raise limits.max_image_pixels")


_PIL_LIMIT = threading.Lock()


def image_bytes(path, fix: str = "replace it with the file") -> bytes:
    """An image file's bytes, refused from its stat when over limits.max_image_bytes."""
    return read_bytes(path, "max_image_bytes", "image", fix)


def open_image(data: bytes, path):
    """A PIL image (lazy: header only) of `data`, its dimensions checked against
    limits.max_image_pixels before the caller decodes it. PIL's own bomb check is ours instead."""
    from PIL import Image

    with _PIL_LIMIT:  # PIL's own bomb check (a warning, then an error at twice its limit) gives way to ours
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        check_pixels(path, *im.size)
    except BaseException:
        im.close()
        raise
    return im


# ---------------------------------------------------------------- checkpoints and text


def safetensors_header_length(path, f: BinaryIO, size: int) -> int | str:
    """The JSON header length of an open .safetensors file (its first 8 bytes), or why it is unusable
    (a fault for the caller's line): over limits.max_safetensors_header_bytes, or past the file's end."""
    head = f.read(8)
    if len(head) < 8:
        return f"cut short ({size} bytes, less than the 8-byte header length)"
    n = int.from_bytes(head, "little")
    limit = limits().max_safetensors_header_bytes
    if n > limit:
        return (f"damaged or hostile (its header claims {n} bytes, more than limits.max_safetensors_header_bytes, "
                f"{limit})")
    if 8 + n > size:
        return f"cut short (its header claims {n} bytes; the file has {size})"
    return n


# The small files of a checkpoint that transformers reads whole (config, tokenizer, chat template):
# each sized against limits.max_checkpoint_file_bytes before transformers opens it.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.json", "chat_template.jinja",
                    "video_preprocessor_config.json")


def check_checkpoint_files(folder) -> None:
    """Each small file of a checkpoint folder that exists: a regular file within
    limits.max_checkpoint_file_bytes (a 1 GB config.json or a tokenizer.json of endless merges is
    refused here, not inside transformers)."""
    folder = Path(folder)
    paths = [*(folder / name for name in CHECKPOINT_FILES), *sorted(folder.glob("additional_chat_templates/*"))]
    for path in paths:
        if not os.path.lexists(path):
            continue
        try:
            st = regular(path, "replace it with the checkpoint's own file")
        except FileNotFoundError:
            raise SenaError(f"{_shown(path)}: a broken link; replace it with the checkpoint's own file") from None
        if st.st_size > limits().max_checkpoint_file_bytes:
            raise too_big(path, st.st_size, "max_checkpoint_file_bytes", f"checkpoint file {path.name}")


def check_text(text: str, what: str) -> str:
    """`text` if it has at most limits.max_text_chars characters; else one line naming `what`.
    Called before a tokenizer sees text: a 100 MB question aborted the process inside it."""
    limit = limits().max_text_chars
    if len(text) > limit:
        raise SenaError(f"{what}: text of {len(text)} characters, more than limits.max_text_chars ({limit}); "
                        "shorten it, or raise limits.max_text_chars")
    return text
