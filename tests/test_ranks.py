"""sena_cli/ranks.py: the shared-folder check, the deal of unfinished chunks, waits that last while ranks live."""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from sena_cli import ranks as ranks_module
from sena_cli.artifacts import Journal, read_journals
from sena_cli.errors import SenaError
from sena_cli.ranks import Ranks, Shards
from tests.helpers import torchrun

START = """
import atexit, os, sys
from pathlib import Path
import torch.distributed as dist
from sena_cli.errors import SenaError
from sena_cli.ranks import Ranks

# Registered first, so it runs last at exit (atexit is last in, first out): after Ranks' own handler.
atexit.register(lambda: os.write(1, f"rank {os.environ['RANK']} at exit: process group "
                                    f"{'still up' if dist.is_initialized() else 'torn down'}\\n".encode()))
root = Path(sys.argv[1])
if sys.argv[2] == "separate":  # each rank on its own "machine": folders that are not shared
    root = root / f"machine{os.environ['RANK']}"
try:
    ranks = Ranks.start(root / "data" / "iter1" / "qa.partial")
except SenaError as exc:
    os.write(1, f"rank {os.environ['RANK']} error: {exc}\\n".encode())  # one write: the ranks share stdout
    sys.exit(1)
os.write(1, f"rank {ranks.rank} of {ranks.world} started, launch {ranks.launch}\\n".encode())
"""


def _launch(tmp_path, how):
    script = tmp_path / "start.py"
    script.write_text(START)
    return torchrun(script, tmp_path / "project", how, cwd=tmp_path, timeout=120)


@pytest.mark.slow  # torchrun, 2 processes
def test_ranks_that_do_not_share_the_project_folder_stop_at_start_in_one_line(tmp_path):
    result = _launch(tmp_path, "separate")
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() if " error: " in line]
    assert len(errors) == 2  # every rank stops, before any work, with the same line
    for line in errors:
        assert line.endswith(f"{tmp_path}/project/machine0/data/iter1/qa.partial: rank 1 on {socket.gethostname()} "
                             "cannot read the file rank 0 wrote there; the processes of one run must share the "
                             "project folder (a filesystem every machine mounts): launch them from such a folder")
    assert not list((tmp_path / "project/machine0/data/iter1/qa.partial").iterdir())  # the token is removed


@pytest.mark.slow  # torchrun, 2 processes
def test_ranks_that_share_the_folder_agree_on_one_launch(tmp_path):
    result = _launch(tmp_path, "shared")
    assert result.returncode == 0, result.stderr[-2000:]
    started = sorted(line for line in result.stdout.splitlines() if "started" in line)
    assert [line.split(",")[0] for line in started] == ["rank 0 of 2 started", "rank 1 of 2 started"]
    assert len({line.split("launch ")[1] for line in started}) == 1
    # Torn down before the interpreter's own teardown, whose gloo threads sometimes abort a finished rank.
    assert sorted(line for line in result.stdout.splitlines() if "at exit" in line) == [
        "rank 0 at exit: process group torn down", "rank 1 at exit: process group torn down"]


def test_unfinished_chunks_are_dealt_afresh_whatever_the_process_count():
    done = {0, 1, 2, 3, 5, 8}  # what a killed run of any process count left
    for world in (1, 2, 3):
        shares = [Ranks(Path("."), rank, world).mine(range(10), done) for rank in range(world)]
        assert sorted(c for share in shares for c in share) == [4, 6, 7, 9]  # each unfinished chunk once
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # an uneven leftover is shared evenly


def _rank0(folder: Path, world: int = 2) -> Ranks:
    """Rank 0 of a `world`-process run, as collect sees it (its collectives are not needed here)."""
    ranks = Ranks(folder, 0, world)
    ranks.run_id = "run"
    for r in range(world):
        ranks.journal_path(r).touch()
    return ranks


def test_a_wait_lasts_as_long_as_the_awaited_rank_is_alive(tmp_path, monkeypatch):
    monkeypatch.setattr(ranks_module, "STALE_AFTER_S", 0.5)
    ranks = _rank0(tmp_path)
    Journal(ranks.journal_path(0), "run").add(0, "from rank 0")

    def rank1():  # alive (its heartbeat) for three times the stale limit, then done
        for _ in range(15):
            os.utime(ranks.journal_path(1))
            time.sleep(0.1)
        Journal(ranks.journal_path(1), "run").add(1, "from rank 1")

    thread = threading.Thread(target=rank1)
    started = time.monotonic()
    thread.start()
    found = ranks.collect([0, 1], done=set())
    thread.join()
    assert found == {0: "from rank 0", 1: "from rank 1"}
    assert time.monotonic() - started > 1.4


def test_a_wait_for_a_rank_that_stopped_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(ranks_module, "STALE_AFTER_S", 0.3)
    ranks = _rank0(tmp_path)
    Journal(ranks.journal_path(0), "run").add(0, "from rank 0")
    with pytest.raises(SenaError, match=r"rank1\.jsonl: rank 1 gave no sign for \d+ s and has not finished its "
                                        r"chunks .* rerun the stage to resume"):
        ranks.collect([0, 1], done=set())


def test_a_journal_line_cut_short_by_a_kill_does_not_swallow_the_next(tmp_path):
    path = tmp_path / "rank0.jsonl"
    Journal(path, "run").add(0, "a")
    with open(path, "a") as f:
        f.write('{"run": "run", "chunk": 1, "da')  # SIGKILL mid-write
    Journal(path, "run").add(2, "c")
    found = _rank0(tmp_path, world=1).collect([0, 2], done=set())
    assert found == {0: "a", 2: "c"}


def test_shards_run_only_the_chunks_the_journals_lack_and_return_all_in_chunk_order(tmp_path):
    items = list("abcdefg")
    Journal(tmp_path / "rank1.jsonl", "run").add(1, "DEF")  # a chunk a killed launch's rank 1 finished
    Journal(tmp_path / "rank0.jsonl", "other run").add(0, "stale")  # another run's line: ignored
    ran, ticks = [], []
    shards = Shards(Ranks(tmp_path), "run")
    out = shards.run(items, 3, lambda chunk: ran.append(chunk) or "".join(chunk).upper(), tick=ticks.append)
    assert out == ["ABC", "DEF", "G"] and ran == [["a", "b", "c"], ["g"]] and shards.run_now == 2
    assert sum(ticks) == len(items)  # done chunks, computed ones: every item once
    again = Shards(Ranks(tmp_path), "run")  # a relaunch redoes nothing and returns the same
    assert again.run(items, 3, lambda chunk: pytest.fail("redone")) == out and again.run_now == 0
    named = Shards(Ranks(tmp_path), "named")
    named.run(items, 4, len, name=lambda i, chunk: f"{i}:{chunk[0]}")
    assert set(read_journals([tmp_path / "rank0.jsonl"], "named")) == {"0:a", "1:e"}


def test_publish_removes_the_folder_only_after_the_outputs_are_written(tmp_path):
    folder = tmp_path / "qa.partial"
    Journal(folder / "rank0.jsonl", "run").add(0, "kept")

    def fails():
        raise SenaError("not written")

    with pytest.raises(SenaError):
        Ranks(folder).publish(fails)
    assert (folder / "rank0.jsonl").is_file()  # the finished chunks stay for the rerun
    assert Ranks(folder).publish(lambda: {"written": True}) == {"written": True}
    assert not folder.exists()
    assert Ranks(folder, rank=1, world=1).publish(lambda: pytest.fail("rank 1 wrote")) is None
