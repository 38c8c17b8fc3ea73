"""Size, time and peak memory of `sena report` on big photos (issue 17: six 6000×4000 photos once made a
282 MB page in 158 s and 2.4 GB).

A project whose iteration 1 drew N photos of W×H (photo-like: gradients and noise, saved as JPEG
quality 90) is sampled, corrupted, asked (scripted qa records) and paired with the tiny θ0 of the
test fixtures (sena_fixtures/micro.py), for each `noise.space` (pixel_values: the pictures the
model sees; image: the photo itself, corrupted); then `sena report` runs as a subprocess and the
script prints the page's size, the command's wall time and its peak resident memory.

    python benchmarks/report_photos.py [--photos 6] [--width 6000] [--height 4000]
    python benchmarks/report_photos.py --tiny      # 2 photos of 320x240, θ0 trained 2 steps: a check that it runs

Last line: RESULT report_photos_mb <largest page, MB>
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACES = ("pixel_values", "image")


def setup(tmp: Path, photos: int, width: int, height: int, tiny: bool) -> None:
    """θ0, the photos and one project per noise.space (run in a child: the parent stays small, so the
    peak memory a child reports is its own, not inherited from a large parent)."""
    from sena_cli.config import params_from_dict
    from sena_fixtures.micro import build_micro_project, full_params_yaml, micro_dict, paired_iteration, photo

    micro = micro_dict()
    if tiny:  # θ0 only has to exist: the report shows its pairs, whatever it answers
        micro["base"]["steps"] = 2
        micro["world"]["instruct_images"] = 16
    build_micro_project(tmp / "base", micro)
    (tmp / "photos").mkdir()
    for i in range(photos):
        photo(width, height, seed=i).save(tmp / "photos" / f"{i}.jpg", quality=90)
    for space in SPACES:
        root = tmp / space
        (root / "models").mkdir(parents=True)
        os.symlink(tmp / "base/models/iter0", root / "models" / "iter0")
        shutil.copytree(tmp / "photos", root / "photos", copy_function=os.link)  # a pool is inside the project
        d = {**micro, "loop": {"iterations": 1}, "noise": {"space": space},
             "sample": {"pool": "photos", "images_per_iteration": photos}}
        (root / "params.yaml").write_text(full_params_yaml(d))
        paired_iteration(params_from_dict(d), root, "des", "Describe the image concisely.",
                         "A smooth colour gradient.", "A grey square.")
        (root / "metrics").mkdir()
        (root / "metrics/iter0.json").write_text('{"pope": {"random": {"accuracy": 0.5, "f1": 0.5}}}\n')


def _run(args: list[str], cwd: Path) -> float:
    """Run a child to its end; returns its own peak resident memory in MB (wait4's rusage of that child)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            raise SystemExit(log.read()[-5000:].decode(errors="replace"))
    return usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--tiny", action="store_true", help="2 photos of 320x240, θ0 trained 2 steps")
    ap.add_argument("--setup", type=Path, help=argparse.SUPPRESS)  # the child's part
    args = ap.parse_args()
    if args.tiny:
        args.photos, args.width, args.height = 2, 320, 240
    if args.setup:
        setup(args.setup, args.photos, args.width, args.height, args.tiny)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _run([sys.executable, __file__, "--setup", str(tmp), "--photos", str(args.photos), "--width",
              str(args.width), "--height", str(args.height), *(["--tiny"] if args.tiny else [])], REPO)
        size = sum(p.stat().st_size for p in (tmp / "photos").iterdir()) / args.photos / 1e6
        print(f"{args.photos} photos of {args.width}x{args.height}, JPEG {size:.1f} MB each")
        largest = 0.0
        for space in SPACES:
            started = time.perf_counter()
            peak = _run([sys.executable, "-m", "sena_cli", "report"], tmp / space)
            seconds = time.perf_counter() - started
            mb = (tmp / space / "report/index.html").stat().st_size / 1e6
            largest = max(largest, mb)
            print(f"noise.space {space}: page {mb:.3f} MB, `sena report` {seconds:.1f} s, peak RSS {peak:.0f} MB")
    print(f"RESULT report_photos_mb {largest:.3f}")


if __name__ == "__main__":
    main()
