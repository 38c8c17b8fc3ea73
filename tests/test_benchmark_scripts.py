"""Every script in benchmarks/ runs at its tiny size and ends with a `RESULT <name> <value>` line.

Nothing else runs the benchmark scripts, so they rot unseen (qa_throughput.py once crashed on the landed
code). Each runs as `python benchmarks/SCRIPT.py ARGS` would run it (its `__main__`, its argv, from an
empty folder), but inside the test process (runpy), so torch and transformers are imported once per worker
rather than once per script; what a script starts itself (the memory benchmarks' one process per mode,
torchrun's ranks) still runs as its own process. A crash or a nonzero exit, a missing or malformed last
line, or a value that is not a finite number (gpu_scale.py prints `nan` when its runs failed) fails the
test. A new script must be listed in TINY (its tiny arguments) or SKIPPED (why it cannot run here).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

TINY = {
    "gpu_families.py": ["--tiny"],
    "gpu_scale.py": ["--tiny", "--layers", "1", "--batch", "2", "--new-tokens", "4", "--pairs", "2",
                     "--pair-batch", "2", "--train-pairs", "1"],
    "noise_storage.py": ["--tiny"],
    "pope_memory.py": ["--tiny"],
    "qa_throughput.py": ["--tiny", "--threads", "1"],
    "report_photos.py": ["--tiny"],
    "train_memory.py": ["--tiny"],
    "train_memory_model.py": ["--tiny"],
    "train_startup_memory.py": ["--tiny"],
}
SKIPPED = {
    "gpu_session.sh": "GPU-only: it needs nvidia-smi, the machine's CUDA torch and wheels in .whl/; what it runs, "
                      "gpu_scale.py, runs here at its tiny size",
}
RESULT = re.compile(r"RESULT ([A-Za-z0-9_]+) (\S+)")


def test_every_benchmark_script_has_a_tiny_run_or_a_stated_reason():
    scripts = {p.name for p in BENCHMARKS.iterdir() if p.is_file() and p.suffix in (".py", ".sh")}
    assert scripts == set(TINY) | set(SKIPPED), "list each benchmark in TINY or SKIPPED of this file"


def _run_script(script: str) -> tuple[int | str | None, str]:
    """Run benchmarks/SCRIPT as `__main__` with argv, in this process: (exit code or message, stdout)."""
    out = io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
        except SystemExit as e:  # argparse errors, sys.exit(message) when a child process failed
            code = e.code
    return code, out.getvalue()


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_its_tiny_size_and_ends_with_a_result_line(script, tmp_path, monkeypatch):
    import torch

    for name, value in {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}.items():
        monkeypatch.setenv(name, value)  # for the processes a script starts
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *TINY[script]])
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])  # as `python benchmarks/SCRIPT.py` has it
    threads = torch.get_num_threads()
    try:
        code, stdout = _run_script(script)
    finally:
        torch.set_num_threads(threads)  # qa_throughput.py sets its own
    assert code in (0, None), f"{script} exited {code!r}:\n{stdout[-3000:]}"
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing"
    match = RESULT.fullmatch(lines[-1].strip())
    assert match, f"{script}: the last line is not `RESULT <name> <value>`: {lines[-1]!r}"
    assert math.isfinite(float(match.group(2))), f"{script}: {lines[-1]!r}\n{stdout[-3000:]}"
