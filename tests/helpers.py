"""Test helpers: projects that share the session's micro world (the model families, scripted models, photos and
paired iterations are in the sena_fixtures package, which the benchmarks use too)."""

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
