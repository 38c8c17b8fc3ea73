"""Running a failing command through the real CLI and checking it touched nothing."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sena_cli.cli import app

runner = CliRunner()


def tree_hash(root: Path, allow: tuple[str, ...] = ()) -> str:
    """A fingerprint of every artifact file (data/, models/, metrics/), but those under `allow`."""
    h = hashlib.sha256()
    for top in ("data", "models", "metrics"):
        for p in sorted((root / top).rglob("*")) if (root / top).exists() else []:
            name = p.relative_to(root).as_posix()
            if p.is_file() and not p.is_symlink() and not name.startswith(allow):
                h.update(name.encode() + p.read_bytes())
    return h.hexdigest()


def fails(project: Path, monkeypatch, args: list[str], expected: str, params_text: str | bytes | None = None,
          allow: tuple[str, ...] = ()) -> str:
    """Run `sena ARGS` in the project; assert one error line containing `expected`, no traceback, a
    non-zero exit and every artifact unchanged (but those under `allow`); returns the output."""
    monkeypatch.chdir(project)
    original = (project / "params.yaml").read_bytes()
    if params_text is not None:
        text = params_text if isinstance(params_text, bytes) else params_text.encode()
        (project / "params.yaml").write_bytes(text)
    before = tree_hash(project, allow)
    try:
        result = runner.invoke(app, args)
    finally:
        (project / "params.yaml").write_bytes(original)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and expected in " ".join(lines), result.output
    assert tree_hash(project, allow) == before, "a failed command changed an artifact"
    return " ".join(lines)


def params_with(project: Path, **edits) -> str:
    """The project's params.yaml with `a__b=value` set at a.b."""
    data = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in edits.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return yaml.safe_dump(data)


@contextmanager
def theta1(project: Path) -> Iterator[None]:
    """A θ1 already published (a copy of θ0) for the test, removed after."""
    shutil.copytree(project / "models/iter0", project / "models/iter1")
    try:
        yield
    finally:
        shutil.rmtree(project / "models/iter1")
