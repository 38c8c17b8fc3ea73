"""Stage `noise`: the corrupted copy of every sampled image (method step 2), defined and checked.

With `noise.space: pixel_values` (the reference's way) each image goes through θ(K-1)'s
processor and every picture the model sees of it (one for LLaVA, each tile for SmolVLM, the
resized image for Qwen2-VL: vlm/pixels.py) is corrupted by forward diffusion at t =
`noise.timestep`, with noise seeded by (noise.seed, image id). With `noise.space: image` the
0-255 image is corrupted instead (scaled to [-1, 1]) and then processed.

The corrupted tensors are not stored: they would cost 1.4 MB (LLaVA-1.5) to 30 MB (Qwen2-VL,
SmolVLM) per image in the DVC cache and on every remote. `qa` recomputes them, bit for bit,
from what this stage records per image — the seed, the picture shapes and the sha256 of the
corrupted pictures — and refuses to go on if its recomputation differs. A few clean |
corrupted previews in the model's geometry are written for people.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import NOISE_INDEX, atomic_dir, image_sha256, open_rgb, read_manifest, write_json, write_jsonl
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.method.noise import corrupt_image, corrupt_pictures, image_seed, scheduler, sqrt_alpha_bar
from sena_cli.progress import Progress, no_progress
from sena_cli.vlm.pixels import pictures_sha256


def run_noise(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    from sena_cli.vlm import load_preprocessor

    if k < 1 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: noise runs for iterations 1..loop.iterations ({params.loop.iterations})")
    manifest = read_manifest(k, root)
    tick = progress(f"corrupting iteration {k}", len(manifest))
    np_ = params.noise
    sched = scheduler(np_)
    started = time.perf_counter()
    pre = None  # `noise.space: image` corrupts before any processor
    if np_.space == "pixel_values":
        pre = load_preprocessor(layout.model_dir(k - 1, root), trust_remote_code=params.model.trust_remote_code,
                                settings=params.model.processor)
    out_dir = layout.iter_dir(k, root) / "noised"
    with atomic_dir(out_dir) as tmp:
        index = []
        (tmp / "previews").mkdir()
        for i, rec in enumerate(manifest):
            image = open_rgb(root / rec["path"])
            entry = {"id": rec["id"], "seed": image_seed(np_.seed, rec["id"])}
            if np_.space == "pixel_values":
                clean = pre.pictures(image)
                noised = corrupt_pictures(clean, np_, rec["id"], sched)
                entry.update(pictures=[list(p.shape) for p in noised], sha256=pictures_sha256(noised))
                shown = [pre.layout.to_uint8(p) for p in (clean[-1], noised[-1])]
            else:
                noised_image = corrupt_image(image, np_, rec["id"], sched)
                entry.update(size=list(noised_image.size), sha256=image_sha256(noised_image))
                shown = [np.asarray(image), np.asarray(noised_image)]
            index.append(entry)
            if i < np_.previews:
                _preview(*shown).save(tmp / "previews" / f"{i:03d}.png")
            tick(1)
        write_jsonl(tmp / NOISE_INDEX, index)
        write_json(tmp / "info.json", {
            "space": np_.space, "timestep": np_.timestep, "images": len(index),
            "sqrt_alpha_bar": sqrt_alpha_bar(np_, sched),
            "processor": type(pre.processor).__name__ if pre else None})
    return {"images": len(index), "space": np_.space, "timestep": np_.timestep,
            "output": str(out_dir), "seconds": time.perf_counter() - started}


def _preview(clean: np.ndarray, noised: np.ndarray) -> Image.Image:
    """clean | corrupted side by side (the last picture: the whole image as the model sees it)."""
    h = max(clean.shape[0], noised.shape[0])
    side = np.zeros((h, clean.shape[1] + noised.shape[1], 3), np.uint8)
    side[: clean.shape[0], : clean.shape[1]] = clean
    side[: noised.shape[0], clean.shape[1] :] = noised
    return Image.fromarray(side)
