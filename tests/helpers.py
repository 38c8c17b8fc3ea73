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
