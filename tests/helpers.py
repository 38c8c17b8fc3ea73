"""Test helpers: projects that share the session's micro world (the model families are in tests/families.py)."""

from __future__ import annotations

from pathlib import Path


def project_from(micro_project: Path, root: Path) -> Path:
    """A fresh project folder sharing the micro world (symlinked, read-only use) with its own copy of θ0."""
    import shutil

    (root / "data").mkdir(parents=True)
    (root / "data" / "world").symlink_to(micro_project / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    return root


def write_manifest(root: Path, k: int, paths: list[str]) -> None:
    """data/iterK/sample/manifest.jsonl for images given by path (as `sena sample` records them),
    for tests that script the qa records of images they did not sample."""
    import hashlib

    from sena_cli.artifacts import write_jsonl

    write_jsonl(root / "data" / f"iter{k}" / "sample" / "manifest.jsonl",
                [{"id": p, "path": p, "sha256": hashlib.sha256((root / p).read_bytes()).hexdigest()} for p in paths])


def photo(width: int, height: int, seed: int = 0):
    """A photo-like RGB image: smooth colour gradients and soft shapes with sensor-like noise, so a
    JPEG of it is as large as a camera's (it does not compress to nothing, as a flat colour would)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    out = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        a, b, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        channel = 128 + 60 * np.sin(6.283 * a * x + phase) * np.cos(6.283 * b * y) + 50 * (x - y)
        channel += rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
        out[..., c] = np.clip(channel, 0, 255)
    return Image.fromarray(out)


def paired_iteration(params, root: Path, type_: str, prompt: str, chosen: str, rejected: str) -> None:
    """Iteration 1 sampled, corrupted, asked (one scripted qa record per image: `prompt`, with `chosen`
    as the enhanced answer and `rejected` as the corrupted one) and paired with θ0."""
    from sena_cli.artifacts import write_jsonl
    from sena_cli.frame import read_jsonl
    from sena_cli.stages.noise import run_noise
    from sena_cli.stages.pair import run_pair
    from sena_cli.stages.sample import run_sample

    run_sample(params, 1, root=root)
    run_noise(params, 1, root=root)
    write_jsonl(root / "data/iter1/qa/records.jsonl", [{
        "id": m["id"], "image": m["path"], "type": type_, "prompt": prompt, "enhanced_answer": chosen,
        "corrupted_answer": rejected} for m in read_jsonl(root / "data/iter1/sample/manifest.jsonl")])
    run_pair(params, 1, root=root)
