"""Throughput of `sena qa` (step 3): batched generation vs one image at a time (the reference's way).

Same model, same images, same prompts; both runs are greedy. Prints images/s of each and
ends with `RESULT qa_speedup <batched / one-at-a-time>`.

    python benchmarks/qa_throughput.py [--images 64] [--batch-size 32] [--model models/iter0]
    python benchmarks/qa_throughput.py --tiny      # an untrained micro θ0, 4 random images: a check that it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from sena_cli import layout
from sena_cli.config import load_params, params_from_dict
from sena_cli.method.noise import corrupt_image, corrupt_pictures, scheduler
from sena_cli.stages.qa import qa_chunk
from sena_cli.vlm import VLM


class InMemoryNoised:
    """What qa_chunk asks of `sena noise`'s record: each image's corrupted pictures (`transform`, for
    noise.space pixel_values) or its corrupted image (`image`, for noise.space image), made on the fly with
    the seeds `sena noise` uses; qa's own check against the recorded sha256 is what this skips."""

    def __init__(self, params):
        self.params = params.noise
        self.sched = scheduler(params.noise)

    def transform(self, pictures, keys):
        return [corrupt_pictures(pics, self.params, key, self.sched) for pics, key in zip(pictures, keys, strict=True)]

    def image(self, image_id, clean):
        return corrupt_image(clean, self.params, image_id, self.sched)


def run(vlm, params, items, images, noised, batch_size: int) -> tuple[float, list]:
    p = dataclasses.replace(params, qa=dataclasses.replace(params.qa, batch_size=batch_size))
    started = time.perf_counter()
    records = []
    for s in range(0, len(items), batch_size):
        recs, _ = qa_chunk(vlm, p, items[s : s + batch_size], images[s : s + batch_size], noised)
        records += recs
    return len(items) / (time.perf_counter() - started), records


def tiny_setup(folder: Path) -> tuple:
    """An untrained micro θ0 (the world's builders, sena_fixtures' micro sizes) and 4 random images. An
    untrained θ0 asks no question, so qa's fixed questions stand in: every image reaches the corrupted answers."""
    import numpy as np

    from sena_cli.world import tiny
    from sena_fixtures.families import corpus
    from sena_fixtures.micro import micro_dict

    params = params_from_dict({**micro_dict(), "qa": {"max_new_tokens": 4, "self_questioning": False}})
    tok = tiny.build_tokenizer(corpus())
    processor = tiny.build_processor(tok, params.world, params.base)
    tiny.build_model(tok, params.world, params.base).save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    rng = np.random.default_rng(0)
    size = params.world.image_size
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return params, folder / "model", folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default=str(layout.model_dir(0)))
    ap.add_argument("--pool", default="data/world/pool")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="an untrained micro θ0 on 4 random images, batch 4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            params, args.model, args.pool = tiny_setup(Path(tmp))
            args.images, args.batch_size = 4, 4
        else:
            params = load_params(args.params)
        vlm = VLM.load(args.model)
        paths = sorted(Path(args.pool).glob("*.png"))[: args.images]
        if len(paths) < args.images:
            raise SystemExit(f"{args.pool}: {len(paths)} images, need {args.images}; run `dvc repro world` first")
        items = [{"id": p.name, "path": str(p)} for p in paths]
        images = [Image.open(p).convert("RGB") for p in paths]
    noised = InMemoryNoised(params)
    run(vlm, params, items[:4], images[:4], noised, 4)  # warm-up
    single, single_records = run(vlm, params, items, images, noised, 1)
    batched, batched_records = run(vlm, params, items, images, noised, args.batch_size)
    same = sum(a == b for a, b in zip(single_records, batched_records))
    print(f"model {args.model}, {len(items)} images, {args.threads} threads")
    print(f"one image at a time : {single:.2f} images/s")
    print(f"batch {args.batch_size:<12}: {batched:.2f} images/s")
    print(f"records identical   : {same}/{max(len(single_records), len(batched_records))}")
    print(f"RESULT qa_speedup {batched / single:.2f}")


if __name__ == "__main__":
    main()
