"""Throughput of `sena qa` (step 3): batched generation vs one image at a time (the reference's way).

Same model, same images, same prompts; both runs are greedy. Prints images/s of each and
ends with `RESULT qa_speedup <batched / one-at-a-time>`.

    python benchmarks/qa_throughput.py [--images 64] [--batch-size 32] [--model models/iter0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from PIL import Image

from sena_cli import layout
from sena_cli.config import load_params
from sena_cli.method.noise import corrupt, scheduler
from sena_cli.stages.qa import qa_chunk
from sena_cli.vlm import VLM


class InMemoryNoised:
    """Corrupted copies made on the fly, as `sena noise` would store them."""

    def __init__(self, vlm: VLM, params, items, images):
        sched = scheduler(params.noise)
        self.tensors = {}
        for item, image in zip(items, images):
            clean = vlm.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
            self.tensors[item["id"]] = corrupt(clean, params.noise, item["id"], sched)

    def tensor(self, image_id):
        return self.tensors[image_id]

    def image(self, image_id):
        return None


def run(vlm, params, items, images, noised, batch_size: int) -> tuple[float, list]:
    p = dataclasses.replace(params, qa=dataclasses.replace(params.qa, batch_size=batch_size))
    started = time.perf_counter()
    records = []
    for s in range(0, len(items), batch_size):
        recs, _ = qa_chunk(vlm, p, items[s : s + batch_size], images[s : s + batch_size], noised)
        records += recs
    return len(items) / (time.perf_counter() - started), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default=str(layout.model_dir(0)))
    ap.add_argument("--pool", default="data/world/pool")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    vlm = VLM.load(args.model)
    paths = sorted(Path(args.pool).glob("*.png"))[: args.images]
    if len(paths) < args.images:
        raise SystemExit(f"{args.pool}: {len(paths)} images, need {args.images}; run `dvc repro world` first")
    items = [{"id": p.name, "path": str(p)} for p in paths]
    images = [Image.open(p).convert("RGB") for p in paths]
    noised = InMemoryNoised(vlm, params, items, images)
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
