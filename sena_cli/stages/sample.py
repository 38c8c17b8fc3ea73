"""Stage `sample`: draw M images for iteration K from the unlabeled pool (method step 1).

The pool is a folder tree of images, a LLaVA-style JSON/JSONL list of records with an
`image` path relative to `sample.image_root`, or a `datasets` folder/file with an Image
column. All candidates are put in one seeded order (per source when `sample.stratify_by`
is set, then interleaved so sources are drawn equally, as the reference does for its five
datasets). Iteration k takes the next M *usable* images of that order after those of
iterations 1..k-1: what an earlier iteration's manifest lists is honoured as drawn (so
changing M between iterations never re-draws an image), and an earlier iteration without
a manifest is taken to have drawn the next M with the current M. So iterations are
disjoint and iteration 3 can be drawn without having run 1 and 2.

Usable means: readable (decoded in full here, so a truncated file never reaches `qa`),
within `sample.max_pixels`, `max_side` and `max_aspect_ratio` (checked from the header,
before decoding), and not a copy of an image met earlier (`sample.dedup`). Skipped files
and duplicates are counted and listed in report.json. Images are measured upright (EXIF
orientation applied), as every stage reads them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sena_cli import bounded, layout
from sena_cli.artifacts import shown, to_rgb, write_json
from sena_cli.config import Params, SampleParams
from sena_cli.errors import SenaError, redact
from sena_cli.frame import MANIFEST, check_iteration, given, publish, read_json, read_manifest, read_records, summary
from sena_cli.progress import Progress, no_progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Candidate:
    id: str  # stable id: the path relative to the pool root, or "<dataset>#<row>"
    path: Path | None  # None for a row of a `datasets` pool
    source: str
    row: Callable[[], Image.Image] | None = None  # loads a dataset row's image


def _image_id(relative: str) -> str:
    """The id of a pool file: its relative path, with bytes that are not UTF-8 written \\xNN so the
    id is plain text everywhere (noise seeds, JSON, messages); the manifest's path keeps the bytes."""
    return shown(relative)


def _confined(root: Path, relative: str, where: str) -> Path:
    """root/relative, refusing paths that leave root ('../', absolute paths, symlinks out)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SenaError(f"{where}: image path '{shown(relative)}' leaves the image root {shown(root)}; fix the list")
    return path


def _is_datasets_pool(pool: Path) -> bool:
    return pool.suffix in (".parquet", ".arrow") or (pool.is_dir() and (pool / "dataset_info.json").is_file())


def _list_from_datasets(pool: Path, params: Params) -> list[Candidate]:
    """A `datasets` pool (save_to_disk folder, parquet or arrow file) with an Image column."""
    import datasets

    try:
        if pool.is_dir():
            ds = datasets.load_from_disk(str(pool))
        else:
            ds = datasets.Dataset.from_parquet(str(pool)) if pool.suffix == ".parquet" \
                else datasets.Dataset.from_file(str(pool))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise SenaError(
            f"sample.pool '{redact(str(pool))}': datasets cannot load it ({exc.__class__.__name__}); fix the path"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise SenaError(f"sample.pool '{redact(str(pool))}': a DatasetDict; point to one split's folder")
    columns = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    if not columns:
        raise SenaError(
            f"sample.pool '{redact(str(pool))}': no Image column in {list(ds.features)}; cast one with datasets.Image()"
        )
    column, field = columns[0], params.sample.stratify_by
    return [Candidate(f"{pool.name}#{i}", None, str(ds[i][field]) if field and field != "path" else "",
                      row=lambda i=i: ds[i][column])
            for i in range(ds.num_rows)]


def in_project(value: str, key: str, root: Path) -> Path:
    """root/value, refused in one line when it resolves outside the project: a run that reads it would
    not travel (a clone elsewhere pulls what DVC tracks in the project, nothing else)."""
    path = root / value
    if not path.resolve().is_relative_to(root.resolve()):
        fix = (f"run `sena pool --add {value}` to copy it into the project's pool/ under DVC" if key == "sample.pool"
               else "put the images under the project and track them with `dvc add` (for a folder of images, "
               "`sena pool --add DIR` does both)")
        where = "outside the project" if layout.in_project(value, root) is None \
            else f"a link out of the project (to {shown(path.resolve())})"
        raise SenaError(f"{key} '{redact(value)}' is {where} ({shown(root.resolve())}), so a clone "
                        f"elsewhere could not read it; {fix}")
    return path


def list_pool(params: Params, root: Path = Path(".")) -> list[Candidate]:
    pool = in_project(params.sample.pool, "sample.pool", root)
    if _is_datasets_pool(pool):
        return _list_from_datasets(pool, params)
    if pool.is_dir():
        files = sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        out = []
        for p in files:
            rel = p.relative_to(pool).as_posix()
            if not p.resolve().is_relative_to(pool.resolve()):
                continue  # a symlink that points out of the pool is not part of it
            source = rel.split("/")[0] if "/" in rel else ""
            out.append(Candidate(_image_id(rel), p, shown(source)))
        return out
    if pool.is_file() and pool.suffix in (".json", ".jsonl"):
        return _list_from_records(pool, params, root)
    raise SenaError(
        f"sample.pool: '{redact(str(pool))}' is not an image folder, a .json/.jsonl list or a datasets "
        "folder/file; fix the path"
    )


def _image_root(pool: Path, params: Params, root: Path) -> Path:
    return in_project(params.sample.image_root, "sample.image_root", root) if params.sample.image_root \
        else pool.parent


def _read_records(pool: Path) -> list:
    source = given("image list", "sample.pool")
    records = read_records(pool, source) if pool.suffix == ".jsonl" else read_json(pool, source)
    if not isinstance(records, list):
        raise SenaError(f"{pool}: expected a list of records with an 'image' field")
    return records


def _list_from_records(pool: Path, params: Params, root: Path) -> list[Candidate]:
    records = _read_records(pool)
    image_root = _image_root(pool, params, root)
    out, seen = [], set()
    field = params.sample.stratify_by
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            continue  # text-only records of a LLaVA list have no image
        rel = rec["image"]
        if rel in seen:
            continue  # the same image under several conversations
        seen.add(rel)
        if "\0" in rel:  # os calls refuse it with "embedded null byte", naming no file
            raise SenaError(f"{pool}: item {i + 1}: 'image' path {shown(rel)!r} holds a NUL byte, which no file "
                            "name can; fix the list")
        path = _confined(image_root, rel, f"{pool} record {i}")
        source = str(rec.get(field, "")) if field and field != "path" else (rel.split("/")[0] if "/" in rel else "")
        out.append(Candidate(_image_id(rel), path, shown(source)))
    return out


def seeded_order(candidates: list[Candidate], seed: int, stratify: bool) -> list[Candidate]:
    """One permutation of the pool; with stratify, sources alternate so each gives an equal share."""
    rng = random.Random(seed)
    if not stratify:
        order = list(candidates)
        rng.shuffle(order)
        return order
    by_source: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_source.setdefault(c.source, []).append(c)
    queues = []
    for source in sorted(by_source):
        items = by_source[source]
        rng.shuffle(items)
        queues.append(items)
    order = []
    for i in range(max(len(q) for q in queues)):
        order += [q[i] for q in queues if i < len(q)]
    return order


# ---------------------------------------------------------------- one image


def _too_big(width: int, height: int, limits: SampleParams) -> str | None:
    """Why an image of this size is refused, from its header alone (never decoded)."""
    if width * height > limits.max_pixels:
        return f"too large ({width}x{height} pixels; sample.max_pixels is {limits.max_pixels})"
    if max(width, height) > limits.max_side:
        return f"a side too long ({width}x{height}; sample.max_side is {limits.max_side})"
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        return f"too elongated ({width}x{height}; sample.max_aspect_ratio is {limits.max_aspect_ratio:g})"
    return None


def inspect_image(path: Path, limits: SampleParams | None = None) -> tuple[dict | None, str | None]:
    """(facts, None) for a usable image, or (None, why it is skipped).

    facts: upright width and height, the file's sha256, and the decoded picture (`_rgb`, for
    the duplicate check; dropped before the manifest is written).
    """
    limits = limits or SampleParams()
    try:
        if not path.exists():
            return None, "missing"
        st = os.stat(path)  # a FIFO, a device or a link to one is never opened (it could block or never end)
        if kind := bounded.irregular(st):
            return None, f"{kind}, not a regular file"
        if st.st_size == 0:
            return None, "zero-byte file"
        if st.st_size > bounded.limits().max_image_bytes:
            return None, (f"too large a file ({st.st_size} bytes; limits.max_image_bytes is "
                          f"{bounded.limits().max_image_bytes})")
        # The limits do not care which way up an image is, so the stored size will do: reading the
        # EXIF orientation of a PNG can mean decoding it.
        with Image.open(path) as im:  # reads the header only
            if why := _too_big(*im.size, limits):
                return None, why
        data = bounded.image_bytes(path)  # hashed and decoded from the same bytes; sized again as read
        with Image.open(io.BytesIO(data)) as im:
            if why := _too_big(*im.size, limits):
                return None, why  # the file changed under us
            im.load()  # decode fully: a truncated file fails here, not in qa
            rgb = to_rgb(im)
        stat = os.stat(path)
        return {"width": rgb.width, "height": rgb.height, "sha256": hashlib.sha256(data).hexdigest(),
                "_file": (stat.st_dev, stat.st_ino), "_rgb": rgb}, None
    except SenaError as exc:  # swapped for a FIFO or grown past limits.max_image_bytes since the stat
        return None, str(exc).partition(": ")[2].partition(";")[0]
    except Image.DecompressionBombError:
        return None, f"too large (over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS} pixels)"
    except UNREADABLE as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


def _inspect_row(cand: Candidate, limits: SampleParams) -> tuple[dict | None, str | None]:
    try:
        image = cand.row()
        if why := _too_big(*image.size, limits):
            return None, why
        image.load()
        rgb = to_rgb(image)
        return {"width": rgb.width, "height": rgb.height, "_rgb": rgb}, None
    except UNREADABLE as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


# ---------------------------------------------------------------- duplicates


def _dct_matrix(n: int = 32) -> np.ndarray:
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))


_DCT = _dct_matrix()
# Two images are one picture under sample.dedup "perceptual" when their perceptual hashes differ
# in at most HASH_BITS bits and their 16x16 thumbnails by at most THUMB_TOLERANCE (mean absolute
# difference, 0-255). Measured (docs/robustness.md): JPEG/WebP re-encodings and half-size copies
# of photos differ by <= 2 bits and <= 0.7; distinct synthetic-world scenes that share a hash
# differ by >= 6.
HASH_BITS = 4
THUMB_TOLERANCE = 2.0
_BANDS = [(0, 13), (13, 26), (26, 39), (39, 52), (52, 64)]  # HASH_BITS + 1 bands: a close pair shares one


def perceptual_hash(rgb: Image.Image) -> int:
    """64-bit DCT hash (pHash, as imagehash.phash): the low frequencies of a 32x32 grey copy against their median."""
    grey = np.asarray(rgb.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:8, :8]
    return int.from_bytes(np.packbits(low.flatten() > np.median(low)).tobytes(), "big")


def _thumbnail(rgb: Image.Image) -> np.ndarray:
    return np.asarray(rgb.resize((16, 16), Image.Resampling.BOX), dtype=np.float64)


def _bands(h: int) -> list[tuple[int, int]]:
    return [(i, (h >> lo) & ((1 << (hi - lo)) - 1)) for i, (lo, hi) in enumerate(_BANDS)]


class Duplicates:
    """What has been drawn so far, by every key `sample.dedup` compares; `first(id, facts)` names
    the earlier image this one copies (and how), or records it as new."""

    def __init__(self, dedup: str):
        self.dedup = dedup
        self.keys: dict[tuple, str] = {}
        self.index: dict[tuple[int, int], list[tuple[int, np.ndarray, str]]] = {}

    def first(self, image_id: str, facts: dict) -> tuple[str, str] | None:
        rgb = facts["_rgb"]
        keys = []
        if "_file" in facts:
            keys += [("the same file as", facts["_file"]), ("the same bytes as", facts["sha256"])]
        if self.dedup in ("pixels", "perceptual"):
            pixels = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
            keys.append(("the same pixels as", pixels))
        for key in keys:
            if key in self.keys:
                return self.keys[key], key[0]
        if self.dedup == "perceptual":
            phash, thumb = perceptual_hash(rgb), _thumbnail(rgb)
            for band in _bands(phash):
                for other_hash, other_thumb, other_id in self.index.get(band, []):
                    if bin(phash ^ other_hash).count("1") <= HASH_BITS and \
                            np.abs(thumb - other_thumb).mean() <= THUMB_TOLERANCE:
                        return other_id, "the same picture as"
            for band in _bands(phash):
                self.index.setdefault(band, []).append((phash, thumb, image_id))
        for key in keys:
            self.keys[key] = image_id
        return None


# ---------------------------------------------------------------- the draw


def _earlier_draws(k: int, root: Path) -> dict[int, list[str]]:
    """Ids drawn by iterations 1..k-1 whose manifests exist."""
    return {j: [r["id"] for r in read_manifest(j, root, f" (iteration {k}'s draw skips what it drew)")]
            for j in range(1, k) if layout.manifest_file(j, root).is_file()}


def _shown_path(path: Path, root: Path) -> str:
    """Relative to the project root (portable across clones): the pool and its image root are inside it
    (`in_project`), and a file that resolves outside it is not drawn."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def run_sample(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    check_iteration(k, "sample", params.loop.iterations)
    sp = params.sample
    m = sp.images_per_iteration
    candidates = list_pool(params, root)
    needed = m * params.loop.iterations
    if len(candidates) < needed:
        raise SenaError(
            f"sample.pool '{redact(sp.pool)}': found {len(candidates)} images, need {needed} "
            f"(sample.images_per_iteration {m} x loop.iterations {params.loop.iterations}); add images or lower M"
        )
    started = time.perf_counter()
    tick = progress(f"sampling iteration {k}", m)
    order = seeded_order(candidates, sp.seed, bool(sp.stratify_by))
    earlier = _earlier_draws(k, root)
    drawn_before = {i for ids in earlier.values() for i in ids}
    seen = Duplicates(sp.dedup)

    def inspect(cand: Candidate):
        return inspect_image(cand.path, sp) if cand.row is None else _inspect_row(cand, sp)

    # What earlier manifests list is theirs: met first, so a copy of it elsewhere is a duplicate.
    for cand in order:
        if cand.id in drawn_before and (facts := inspect(cand)[0]) is not None:
            seen.first(cand.id, facts)
    # Iterations still to draw, in order: earlier ones without a manifest take the next M each.
    to_draw = [j for j in range(1, k) if j not in earlier] + [k]
    counts = dict.fromkeys(to_draw, 0)
    mine: list[dict] = []
    skipped: list[dict] = []
    duplicates: list[dict] = []
    at = 0
    for cand in order:
        if at == len(to_draw):
            break
        if cand.id in drawn_before:
            continue
        j = to_draw[at]
        facts, why = inspect(cand)
        if facts is None:
            if j == k:
                skipped.append({"id": cand.id, "reason": why})
            continue
        if copy := seen.first(cand.id, facts):
            if j == k:
                duplicates.append({"id": cand.id, "reason": f"{copy[1]} {copy[0]}"})
            continue
        counts[j] += 1
        if j == k:
            path = _shown_path(cand.path, root) if cand.path is not None else None
            mine.append({"id": cand.id, "path": path, "source": cand.source, "_row": cand.row,
                         **{key: v for key, v in facts.items() if not key.startswith("_")}})
            tick(1)
        if counts[j] == m:
            at += 1
    if len(mine) < m:
        raise SenaError(
            f"sample.pool '{redact(sp.pool)}': only {len(drawn_before) + sum(counts.values())} usable, "
            "distinct images, "
            f"need {len(drawn_before) + m * len(to_draw)} for iterations 1..{k}; {len(skipped)} skipped, "
            f"{len(duplicates)} duplicates in iteration {k}'s share; add images or lower M"
        )
    per_source = {s: sum(r["source"] == s for r in mine) for s in sorted({r["source"] for r in mine})}
    report = {"iteration": k, "images": len(mine), "skipped": len(skipped), "skipped_files": skipped,
              "duplicates": len(duplicates), "duplicate_files": duplicates, "dedup": sp.dedup,
              "earlier_draws_honoured": {str(j): len(ids) for j, ids in earlier.items()},
              "pool_candidates": len(candidates), "per_source": per_source}
    with publish(layout.sample_dir(k, root)) as out:
        for i, rec in enumerate(mine):
            load = rec.pop("_row")
            if load is not None:  # dataset rows become files, so every stage reads a path
                image = out.path(layout.sampled_image_file(k, i, root))
                to_rgb(load()).save(image, format="PNG")
                rec["path"] = layout.sampled_image_file(k, i).as_posix()  # relative to the project
                rec["sha256"] = hashlib.sha256(image.read_bytes()).hexdigest()
        out.records(layout.manifest_file(k, root), mine, MANIFEST)
        out.json(layout.sample_report_file(k, root), report)
    return summary({"images": len(mine), "skipped": len(skipped), "duplicates": len(duplicates),
                    "sources": len(per_source)}, layout.sample_dir(k, root), started)


# ---------------------------------------------------------------- the pool's fingerprint


def pool_fingerprint(params: Params, root: Path = Path(".")) -> dict:
    """Names and sizes of every file the draw reads: the pool's files, and for a JSON list the
    images it names. DVC reruns `sample` when this changes (dvc.yaml stage `pool`)."""
    pool = in_project(params.sample.pool, "sample.pool", root)
    listed: list[tuple[str, int]] = []

    def add(path: Path, name: str) -> None:
        try:
            listed.append((name, path.stat().st_size))
        except OSError:
            listed.append((name, -1))  # missing: the draw would skip it

    if pool.is_dir():
        for p in sorted(pool.rglob("*")):
            if p.is_file():
                add(p, "pool/" + p.relative_to(pool).as_posix())
    elif pool.is_file():
        add(pool, "pool")
        if pool.suffix in (".json", ".jsonl"):
            for cand in _list_from_records(pool, params, root):
                add(cand.path, "image/" + cand.id)
    else:
        raise SenaError(f"sample.pool: '{redact(str(pool))}' not found; fix the path")
    digest = hashlib.sha256(json.dumps(listed).encode()).hexdigest()
    return {"pool": params.sample.pool, "image_root": params.sample.image_root, "files": len(listed),
            "bytes": sum(max(size, 0) for _, size in listed), "sha256": digest}


def run_pool(params: Params, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    started = time.perf_counter()
    info = pool_fingerprint(params, root)
    write_json(layout.pool_fingerprint_file(root), info)
    return summary({"files": info["files"], "bytes": info["bytes"]}, layout.pool_fingerprint_file(root), started)
