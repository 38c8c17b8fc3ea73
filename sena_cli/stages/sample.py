"""Stage `sample`: draw M images for iteration K from the unlabeled pool (method step 1).

The pool is a folder tree of images, or a LLaVA-style JSON/JSONL list of records with an
`image` path relative to `sample.image_root`. All candidates are put in one seeded order
(per source when `sample.stratify_by` is set, then interleaved so sources are drawn
equally, as the reference does for its five datasets); iteration k takes the k-th run of
M *readable* images of that order, so iterations are disjoint and iteration 3 can be drawn
without having run 1 and 2. Unreadable files are skipped, counted and listed.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sena_cli import layout
from sena_cli.artifacts import atomic_dir, to_rgb, write_json, write_jsonl
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.progress import Progress, no_progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Larger images are refused rather than decoded (a decompression bomb must not exhaust memory).
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Candidate:
    id: str  # stable id: the path relative to the pool root, or "<dataset>#<row>"
    path: Path | None  # None for a row of a `datasets` pool
    source: str
    row: Callable[[], Image.Image] | None = None  # loads a dataset row's image


def _confined(root: Path, relative: str, where: str) -> Path:
    """root/relative, refusing paths that leave root ('../', absolute paths, symlinks out)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SenaError(f"{where}: image path '{relative}' leaves the image root {root}; fix the list")
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
            f"sample.pool '{pool}': datasets cannot load it ({exc.__class__.__name__}); fix the path"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise SenaError(f"sample.pool '{pool}': a DatasetDict; point to one split's folder")
    columns = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    if not columns:
        raise SenaError(
            f"sample.pool '{pool}': no Image column in {list(ds.features)}; cast one with datasets.Image()"
        )
    column, field = columns[0], params.sample.stratify_by
    return [Candidate(f"{pool.name}#{i}", None, str(ds[i][field]) if field and field != "path" else "",
                      row=lambda i=i: ds[i][column])
            for i in range(ds.num_rows)]


def list_pool(params: Params, root: Path = Path(".")) -> list[Candidate]:
    pool = root / params.sample.pool
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
            out.append(Candidate(rel, p, source))
        return out
    if pool.is_file() and pool.suffix in (".json", ".jsonl"):
        return _list_from_records(pool, params, root)
    raise SenaError(
        f"sample.pool: '{pool}' is not an image folder, a .json/.jsonl list or a datasets folder/file; fix the path"
    )


def _list_from_records(pool: Path, params: Params, root: Path) -> list[Candidate]:
    try:
        text = pool.read_text()
        records = [json.loads(line) for line in text.splitlines() if line.strip()] if pool.suffix == ".jsonl" \
            else json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SenaError(f"{pool}: not valid JSON ({exc.__class__.__name__}); fix the file") from None
    if not isinstance(records, list):
        raise SenaError(f"{pool}: expected a list of records with an 'image' field")
    image_root = root / params.sample.image_root if params.sample.image_root else pool.parent
    out, seen = [], set()
    field = params.sample.stratify_by
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            continue  # text-only records of a LLaVA list have no image
        rel = rec["image"]
        if rel in seen:
            continue
        seen.add(rel)
        path = _confined(image_root, rel, f"{pool} record {i}")
        source = str(rec.get(field, "")) if field and field != "path" else (rel.split("/")[0] if "/" in rel else "")
        out.append(Candidate(rel, path, source))
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


def inspect_image(path: Path, with_hash: bool = True) -> tuple[dict | None, str | None]:
    """(facts, None) for a readable image, or (None, why it is skipped)."""
    try:
        if not path.is_file():
            return None, "missing"
        if path.stat().st_size == 0:
            return None, "zero-byte file"
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                return None, f"too large ({width}x{height} pixels)"
            im.load()  # decode fully: a truncated file fails here, not in qa
        facts = {"width": width, "height": height}
        if with_hash:
            facts["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return facts, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


def _inspect_row(cand: Candidate) -> tuple[dict | None, str | None]:
    try:
        image = cand.row()
        if image.width * image.height > MAX_PIXELS:
            return None, f"too large ({image.width}x{image.height} pixels)"
        image.load()
        return {"width": image.width, "height": image.height}, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


def _shown_path(path: Path, root: Path) -> str:
    """Relative to the project root when inside it (portable across clones), else absolute."""
    resolved, base = path.resolve(), root.resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(resolved)


def run_sample(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    if k < 1 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: sample runs for iterations 1..loop.iterations ({params.loop.iterations})")
    m = params.sample.images_per_iteration
    candidates = list_pool(params, root)
    needed = m * params.loop.iterations
    if len(candidates) < needed:
        raise SenaError(
            f"sample.pool '{params.sample.pool}': found {len(candidates)} images, need {needed} "
            f"(sample.images_per_iteration {m} x loop.iterations {params.loop.iterations}); add images or lower M"
        )
    started = time.perf_counter()
    tick = progress(f"sampling iteration {k}", m)
    order = seeded_order(candidates, params.sample.seed, bool(params.sample.stratify_by))
    earlier = 0  # readable images given to iterations 1..k-1
    mine: list[dict] = []
    skipped: list[dict] = []
    for cand in order:
        if len(mine) == m:
            break
        current = earlier >= m * (k - 1)
        facts, why = inspect_image(cand.path, with_hash=current) if cand.row is None else _inspect_row(cand)
        if facts is None:
            if current:
                skipped.append({"id": cand.id, "reason": why})
        elif current:
            path = _shown_path(cand.path, root) if cand.path is not None else None
            mine.append({"id": cand.id, "path": path, "source": cand.source, **facts, "_row": cand.row})
            tick(1)
        else:
            earlier += 1
    if len(mine) < m:
        raise SenaError(
            f"sample.pool '{params.sample.pool}': only {earlier + len(mine)} readable images, need {m * k} "
            f"for iterations 1..{k}; {len(skipped)} skipped (unreadable); add images or lower M"
        )
    per_source = {s: sum(r["source"] == s for r in mine) for s in sorted({r["source"] for r in mine})}
    report = {"iteration": k, "images": len(mine), "skipped": len(skipped), "skipped_files": skipped,
              "pool_candidates": len(candidates), "per_source": per_source}
    out_dir = layout.iter_dir(k, root) / "sample"
    with atomic_dir(out_dir) as tmp:
        for i, rec in enumerate(mine):
            load = rec.pop("_row")
            if load is not None:  # dataset rows become files, so every stage reads a path
                name = f"images/{i:06d}.png"
                (tmp / "images").mkdir(exist_ok=True)
                to_rgb(load()).save(tmp / name, format="PNG")
                rec["path"] = (layout.iter_dir(k) / "sample" / name).as_posix()  # relative to the project
                rec["sha256"] = hashlib.sha256((tmp / name).read_bytes()).hexdigest()
        write_jsonl(tmp / "manifest.jsonl", mine)
        write_json(tmp / "report.json", report)
    return {"images": len(mine), "skipped": len(skipped), "sources": len(per_source),
            "output": str(layout.iter_dir(k, root) / "sample"), "seconds": time.perf_counter() - started}
