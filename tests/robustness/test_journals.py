"""Journals after a real full disk, torn lines, and two runs of one stage at once (the stage lock)."""

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sena_cli.artifacts import Journal, read_journals, stage_lock
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.noise import run_noise
from sena_cli.stages.qa import run_qa
from sena_cli.stages.sample import run_sample
from tests.conftest import full_params_yaml
from tests.robustness.helpers import tree_hash as _tree_hash

RECORDS = "data/iter1/qa/records.jsonl"
PARTIAL = "data/iter1/qa.partial"


def _lines(path):
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


# ---------------------------------------------------------------- the writer and the reader


def test_a_torn_tail_is_cut_before_the_next_line_and_never_read(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "run-a")
    journal.add(0, {"x": 0})
    with open(path, "ab") as f:
        f.write(b'{"run": "run-a", "chunk": 1, "data": {"x"')  # a kill in the middle of a line
    assert read_journals([path], "run-a") == {0: {"x": 0}}
    journal.add(1, {"x": 1})  # the redone chunk starts on a line of its own
    assert [line.endswith(b"\n") for line in _lines(path)] == [True, True]
    assert read_journals([path], "run-a") == {0: {"x": 0}, 1: {"x": 1}}
    # A line that is whole JSON but lost its newline is torn too: reader and writer agree.
    with open(path, "ab") as f:
        f.write(b'{"run": "run-a", "chunk": 2, "data": 2}')
    assert 2 not in read_journals([path], "run-a")
    journal.add(2, 2)
    assert read_journals([path], "run-a") == {0: {"x": 0}, 1: {"x": 1}, 2: 2}
    with open(path, "ab") as f:
        f.write(b'7\n["x"]\n{"run": "run-a"}\n\xff\xfe\n')  # not journal entries: skipped, no crash
    assert read_journals([path], "run-a") == {0: {"x": 0}, 1: {"x": 1}, 2: 2}
    journal.add("reply-3f2a", "yes")  # the judge keys its replies by a hash
    assert read_journals([path], "run-a")["reply-3f2a"] == "yes"


def test_a_write_that_hits_a_file_size_limit_leaves_only_whole_lines(tmp_path):
    """RLIMIT_FSIZE in a child process: the write stops part-way, as on a full disk."""
    path = tmp_path / "j.jsonl"
    script = textwrap.dedent(f"""
        import errno, resource
        from sena_cli.artifacts import Journal
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        journal = Journal({str(path)!r}, "run-a")
        for chunk in range(10):
            try:
                journal.add(chunk, "x" * 60)
            except OSError as exc:
                print(errno.errorcode[exc.errno], exc.filename, chunk)
                break
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "EFBIG" and out[1] == str(path)
    lines = _lines(path)
    assert len(lines) == int(out[2]) and all(line.endswith(b"\n") for line in lines)  # the failed line was cut off
    assert sorted(read_journals([path], "run-a")) == list(range(int(out[2])))


# ---------------------------------------------------------------- qa on a full disk, through the CLI


@pytest.fixture(scope="module")
def qa_project(micro_project, micro_dict, tmp_path_factory):
    """Iteration 1 sampled and corrupted (8 images, qa chunks of 1), and a reference qa run."""
    root = tmp_path_factory.mktemp("journals")
    project = root / "p"
    project.mkdir()
    shutil.copytree(micro_project / "data" / "world", project / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", project / "models" / "iter0")
    d = {**micro_dict, "loop": {"iterations": 1}, "sample": {"images_per_iteration": 8},
         # Fixed questions: the micro θ0 asks none of its own, and the records should not be empty.
         "qa": {"batch_size": 1, "max_new_tokens": 16, "self_questioning": False}}
    (project / "params.yaml").write_text(full_params_yaml(d))
    params = params_from_dict(d)
    run_sample(params, 1, root=project)
    run_noise(params, 1, root=project)
    reference = root / "reference"
    shutil.copytree(project, reference)
    assert run_qa(params, 1, root=reference)["records"] == 16
    return project, (reference / RECORDS).read_bytes()


def _sena(args):
    return [sys.executable, "-m", "sena_cli", *args]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _userns_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_qa_on_a_full_disk_fails_in_one_line_and_the_first_rerun_finishes(qa_project, tmp_path):
    """A real full disk: a 4 KiB tmpfs (about four of the eight journal lines) mounted over
    qa.partial in a user+mount namespace (ENOSPC). Where namespaces are not allowed, a file-size
    limit (RLIMIT_FSIZE 3 KiB, about three lines) on the qa process stops the write the same way (EFBIG)."""
    how = "tmpfs" if _userns_tmpfs() else "fsize"
    source, reference = qa_project
    project = tmp_path / "p"
    shutil.copytree(source, project, symlinks=True)
    partial = project / PARTIAL
    partial.mkdir()
    saved = tmp_path / "partial-after-failure"
    if how == "tmpfs":
        # Everything in one namespace: the mount (and what the failed run left on it) lives as long as it.
        script = (f"mount -t tmpfs -o size=4k tmpfs {PARTIAL} && "
                  f"{' '.join(_sena(['qa', '--iter', '1']))} > ../first.out 2>&1; echo $? > ../first.rc; "
                  f"cp -a {PARTIAL}/. {saved}/")
        saved.mkdir()
        subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=project, env=_env(), check=True)
        first_rc, first_out = int((tmp_path / "first.rc").read_text()), (tmp_path / "first.out").read_text()
        shutil.copytree(saved, partial, dirs_exist_ok=True)
        expected = "no space left on the device writing data/iter1/qa.partial/rank0.jsonl"
    else:
        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (3072, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        first = subprocess.run(_sena(["qa", "--iter", "1"]), cwd=project, env=_env(), preexec_fn=limit,
                               capture_output=True, text=True)
        first_rc, first_out = first.returncode, first.stdout + first.stderr
        expected = "file size limit reached writing data/iter1/qa.partial/rank0.jsonl"
    errors = [line for line in first_out.splitlines() if line.startswith("error:")]
    assert first_rc == 1 and len(errors) == 1 and expected in errors[0], first_out
    assert "Traceback" not in first_out
    assert not (project / RECORDS).exists()  # nothing published
    lines = _lines(partial / "rank0.jsonl")
    assert 1 <= len(lines) < 8 and all(line.endswith(b"\n") for line in lines)  # no torn line kept
    # The torn line a kill (or a file system that keeps the partial write) leaves is handled too.
    with open(partial / "rank0.jsonl", "ab") as f:
        f.write(lines[-1][: len(lines[-1]) // 2])
    second = subprocess.run(_sena(["qa", "--iter", "1"]), cwd=project, env=_env(), capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr  # the FIRST rerun finishes
    assert re.search(r"chunks run now\s*│\s*(\d+)", second.stdout).group(1) == str(8 - len(lines))  # redone: 0
    assert (project / RECORDS).read_bytes() == reference


# ---------------------------------------------------------------- two runs at once


def test_a_second_run_while_the_lock_is_held_stops_in_one_line_and_touches_nothing(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sena_cli.artifacts import stage_lock
        with stage_lock("qa", 1, Path({str(tmp_path)!r})):
            print("held", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = tmp_path / "data/iter1/.qa.lock"
        assert lock.read_text() == f"{holder.pid}\n"
        with pytest.raises(SenaError) as err, stage_lock("qa", 1, tmp_path):
            pass
        assert str(err.value) == (f"{lock}: another `sena qa --iter 1` is running (pid {holder.pid}); "
                                  "wait for it to finish, or stop it, then rerun")
        assert lock.read_text() == f"{holder.pid}\n"  # the loser did not write to it
        with stage_lock("qa", 2, tmp_path), stage_lock("noise", 1, tmp_path):
            pass  # other stages and iterations are not held up
        with stage_lock("qa", 1, tmp_path, rank=1):  # rank 1 of a multi-process launch: its own lock...
            with pytest.raises(SenaError, match="another `sena qa --iter 1` is running"), \
                    stage_lock("qa", 1, tmp_path, rank=1):
                pass  # ...which stops rank 1 of a second launch
    finally:
        holder.communicate("")
    assert not (tmp_path / "data/iter1").exists()  # released: the file and the folder made for it are gone
    with stage_lock("qa", 1, tmp_path):
        pass


@pytest.mark.slow
def test_two_real_qa_runs_at_once(qa_project, tmp_path):
    """The first `sena qa` is stopped (SIGSTOP) while it holds the lock, so the second provably
    runs beside it; the second says so in one line and changes nothing; the first then finishes."""
    source, reference = qa_project
    project = tmp_path / "p"
    shutil.copytree(source, project, symlinks=True)
    lock = project / "data/iter1/.qa.lock"
    first = subprocess.Popen(_sena(["qa", "--iter", "1"]), cwd=project, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)
        before = _tree_hash(project)
        second = subprocess.run(_sena(["qa", "--iter", "1"]), cwd=project, env=_env(), capture_output=True, text=True)
        out = second.stdout + second.stderr
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert second.returncode == 1 and len(errors) == 1, out
        assert errors[0] == (f"error: data/iter1/.qa.lock: another `sena qa --iter 1` is running (pid {first.pid}); "
                             "wait for it to finish, or stop it, then rerun")
        assert _tree_hash(project) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert (project / RECORDS).read_bytes() == reference
    assert not lock.exists()
