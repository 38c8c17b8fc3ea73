"""Peak memory of `sena eval` on a POPE file of 10⁶ questions: the file is streamed and answered in
windows (sena_cli/bench/coco_pope.py), so memory does not grow with it by its images (issue 23: such a
file decoded every image before the first batch, 4.8 GB, then `MemoryError:`).

One command builds a micro project (the embedded micro world and its trained θ0) in a temporary
folder, writes a POPE file of N questions over one small COCO-like image, and runs `sena eval --iter 0`
on it (coco_pope only) in a child process, then prints the child's peak resident memory (ru_maxrss):

    python benchmarks/pope_memory.py [--questions 1000000]
    python benchmarks/pope_memory.py --tiny        # 2000 questions: a check that it runs

The child runs the real CLI, stage, benchmark and readers; only the model's `generate` is replaced by
an instant "Yes" (a real model on 10⁶ questions takes hours and its memory does not depend on the
file's length). Also printed: the peak of a child that only imports sena's eval code, the floor that
the file's length adds to. Ends with `RESULT pope_memory_mb <peak of sena eval>`.

Measured (2026-12-03, 2 shared CPU cores, eval.batch_size 64): import alone 865 MB; 2000 questions
1145 MB; 10⁶ questions (123 MiB file) 3123 MB in 1367 s, and 3064 MB in 644 s once answers.jsonl
was written line by line: the images no longer grew with the file, the answers' records (about 2 KB a
question) did, held in memory, journaled as one line for resume and published whole.
Since the records stream (each window's appended to a part file of data/iterK/eval.partial/,
answers.jsonl the parts streamed, POPE's metrics running counts, collected batches let go): import
alone 851 MB; 2000 questions 1130 MB; 10⁶ questions 1154 MB in 490 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import sys
from sena_cli.vlm import VLM

def generate(self, images, texts, *, max_new_tokens, batch_size=8, on_batch=lambda n: None, **kwargs):
    on_batch(len(texts))
    return ["Yes, there is."] * len(texts)

VLM.generate = generate
from sena_cli.cli import app
sys.argv = ["sena", "eval", "--iter", "0"]
app()
"""
IMPORT_ONLY = "import sena_cli.cli, sena_cli.stages.eval, sena_cli.bench.coco_pope, sena_cli.vlm.model"


def child_peak_mb(code: str, cwd: Path) -> tuple[float, int, str]:
    """(peak RSS in MB, exit status, output tail) of `python -c code` in cwd, measured alone."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a fresh child per measurement: RUSAGE_CHILDREN would mix them
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")[-3000:]


def make_project(root: Path, questions: int, batch_size: int) -> None:
    from PIL import Image

    from sena_fixtures.micro import build_micro_project, full_params_yaml, micro_dict

    d = micro_dict()
    build_micro_project(root, d)
    images = root / "val2014"
    images.mkdir()
    Image.new("RGB", (48, 48), "red").save(images / "COCO_val2014_000000000001.jpg")
    path = root / "coco_pope_random.json"
    with open(path, "w") as f:
        for i in range(questions):
            f.write(json.dumps({"question_id": i, "image": "COCO_val2014_000000000001.jpg",
                                "text": f"Is there a thing{i} in the image?", "label": "yes" if i % 2 else "no"})
                    + "\n")
    d["eval"] = {**d.get("eval", {}), "benchmarks": ["coco_pope"], "batch_size": batch_size, "max_new_tokens": 4,
                 "coco_pope": {"files": [str(path)], "image_root": str(images)}}
    (root / "params.yaml").write_text(full_params_yaml(d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tiny", action="store_true", help="2000 questions")
    args = parser.parse_args()
    questions = 2000 if args.tiny else args.questions
    with tempfile.TemporaryDirectory(prefix="sena-pope-memory-") as tmp:
        root = Path(tmp) / "project"
        started = time.perf_counter()
        make_project(root, questions, args.batch_size)
        size = (root / "coco_pope_random.json").stat().st_size
        print(f"project and a {questions}-question POPE file ({size / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        floor, rc, out = child_peak_mb(IMPORT_ONLY, root)
        if rc:
            sys.exit(f"importing sena's eval code failed ({rc}):\n{out}")
        print(f"importing sena's eval code alone: peak {floor:.0f} MB", flush=True)
        started = time.perf_counter()
        peak, rc, out = child_peak_mb(CHILD, root)
        if rc:
            sys.exit(f"sena eval exited {rc}:\n{out}")
        answers = root / "data/iter0/eval/answers.jsonl"
        lines = sum(1 for _ in open(answers))
        print(f"sena eval --iter 0 on {questions} questions: {lines} answers, peak {peak:.0f} MB, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        assert lines == questions, f"{lines} answers for {questions} questions"
    print(f"RESULT pope_memory_mb {peak:.0f}")


if __name__ == "__main__":
    main()
