"""Every script in benchmarks/ runs at its tiny size and ends with a `RESULT <name> <value>` line.

Nothing else runs the benchmark scripts, so they rot unseen (qa_throughput.py once crashed on the landed
code). Each runs as a subprocess, as a person runs it; a crash, a missing or malformed last line, or a
value that is not a finite number (gpu_scale.py prints `nan` when its runs failed) fails the test. A new
script must be listed in TINY (its tiny arguments) or SKIPPED (why it cannot run here).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
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


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_its_tiny_size_and_ends_with_a_result_line(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *TINY[script]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing"
    match = RESULT.fullmatch(lines[-1].strip())
    assert match, f"{script}: the last line is not `RESULT <name> <value>`: {lines[-1]!r}"
    assert math.isfinite(float(match.group(2))), f"{script}: {lines[-1]!r}\n{proc.stdout[-3000:]}"
