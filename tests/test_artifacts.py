import pytest

from sena_cli.artifacts import atomic_dir, write_jsonl
from sena_cli.frame import read_jsonl


def test_failed_write_keeps_the_old_artifact_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_successful_write_replaces(tmp_path):
    target = tmp_path / "out"
    for text in ("one", "two"):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (target / "a.txt").read_text() == "two"
    write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"b": 2}])
    assert read_jsonl(tmp_path / "r.jsonl") == [{"a": 1}, {"b": 2}]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from sena_cli.artifacts import atomic_dir, atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755  # not mkdtemp's 0700
