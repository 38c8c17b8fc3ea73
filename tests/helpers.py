"""Test helpers: projects that share the session's micro world (the model families, scripted models, photos and
paired iterations are in the sena_fixtures package, which the benchmarks use too)."""

from __future__ import annotations

from pathlib import Path

from sena_fixtures.micro import write_manifest  # noqa: F401 - the tests import it from here


def project_from(micro_project: Path, root: Path) -> Path:
    """A fresh project folder sharing the micro world (symlinked, read-only use) with its own copy of θ0."""
    import shutil

    (root / "data").mkdir(parents=True)
    (root / "data" / "world").symlink_to(micro_project / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    return root
