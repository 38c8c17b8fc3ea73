"""Bytes `sena noise` stores per image, per model family, against the pixel tensor it stands for.

For each family of sena_fixtures/families.py (real processor classes with their published settings),
`sena noise` runs on photo-like images of common sizes; the script prints, per family, the
bytes of data/iter1/noised/ per image without and with the previews (a fixed handful, for
people), the float32 pixel tensor the model gets for the same image, and their ratio. Before,
the tensors themselves were stored: the ratio was 1.

    python benchmarks/noise_storage.py [--images 24] [--previews 8]
    python benchmarks/noise_storage.py --tiny      # LLaVA-1.5 only, 2 images: a check that it runs

Last line: RESULT noise_storage_ratio <largest ratio without previews, over the families>
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.frame import read_jsonl
from sena_cli.stages.noise import run_noise
from sena_cli.stages.sample import run_sample
from sena_fixtures.families import FAMILIES

SIZES = [(640, 480), (480, 640), (1024, 768), (1920, 1080), (500, 375), (800, 800)]  # COCO-like photos


def measure(name: str, images: int, previews: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pool").mkdir()
        rng = np.random.RandomState(0)
        for i in range(images):
            w, h = SIZES[i % len(SIZES)]
            Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(root / "pool" / f"{i:04d}.png")
        FAMILIES[name](root / "models" / "iter0")
        params = params_from_dict({"loop": {"iterations": 1}, "noise": {"previews": previews},
                                   "sample": {"pool": "pool", "images_per_iteration": images}})
        run_sample(params, 1, root=root)
        run_noise(params, 1, root=root)
        out = root / "data/iter1/noised"
        index = read_jsonl(out / "index.jsonl")
        tensor = sum(4 * sum(math.prod(s) for s in r["pictures"]) for r in index) / images
        records = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / images
        shown = sum(p.stat().st_size for p in (out / "previews").iterdir())
        return {"family": name, "tensor": tensor, "stored": records, "previews": shown, "ratio": records / tensor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--previews", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="LLaVA-1.5 only, 2 images, 1 preview")
    args = ap.parse_args()
    if args.tiny:
        args.images, args.previews = 2, 1
    rows = [measure(name, args.images, args.previews) for name in (["llava-1.5"] if args.tiny else FAMILIES)]
    print(f"{'family':<10} {'pixel tensor/image':>19} {'stored/image':>13} {'ratio':>9} "
          f"{'previews (all)':>15} {'per image at M=6000':>20}")
    for r in rows:
        at_scale = r["stored"] + r["previews"] / 6000
        print(f"{r['family']:<10} {r['tensor']:>17,.0f} B {r['stored']:>11,.0f} B {r['ratio']:>9.2e} "
              f"{r['previews']:>13,} B {at_scale:>18,.0f} B")
    print(f"RESULT noise_storage_ratio {max(r['ratio'] for r in rows):.2e}")


if __name__ == "__main__":
    main()
