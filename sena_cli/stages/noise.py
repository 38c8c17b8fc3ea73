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

Before any of that, every image's length is checked against `train.max_length`: its image tokens
(the processor's count for its size) with the chat template's tokens must leave room for an answer,
so a Qwen2-VL photo of 2691 tokens under the paper's 2048 is refused here, naming model.processor
and train.max_length, and not after qa, the most expensive stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import image_sha256, open_manifest_image
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import NOISE_ENTRY, NOISE_INFO, check_iteration, publish, read_manifest, summary
from sena_cli.method.noise import (
    corrupt_image,
    corrupt_pictures,
    image_seed,
    pictures_sha256,
    scheduler,
    sqrt_alpha_bar,
)
from sena_cli.progress import Progress, no_progress


def run_noise(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    from sena_cli.vlm import Preprocessor

    check_iteration(k, "noise", params.loop.iterations)
    manifest = read_manifest(k, root)
    np_ = params.noise
    started = time.perf_counter()
    pre = None  # `noise.space: image` corrupts before any processor, and needs θ(K-1) only for the length check
    model = layout.model_dir(k - 1, root)
    if np_.space == "pixel_values" or model.exists():  # dvc repro always has it (a dep of noise@K)
        processor = Preprocessor.from_params(params.model, model)
        refuse_too_long(processor, manifest, params.train.max_length, k, root)  # before any work, and before qa
        pre = processor if np_.space == "pixel_values" else None
    tick = progress(f"corrupting iteration {k}", len(manifest))
    sched = scheduler(np_)
    with publish(layout.noised_dir(k, root)) as out:
        index = []
        out.path(layout.noise_previews_dir(k, root)).mkdir()
        for i, rec in enumerate(manifest):
            image = open_manifest_image(root, rec, k)
            entry = {"id": rec["id"], "seed": image_seed(np_.seed, rec["id"])}
            if np_.space == "pixel_values":
                clean = pre.pictures(image)
                noised = corrupt_pictures(clean, np_, rec["id"], sched)
                _refuse_non_finite(noised, rec["id"])
                entry.update(pictures=[list(p.shape) for p in noised], sha256=pictures_sha256(noised))
                shown = [pre.layout.to_uint8(p) for p in (clean[-1], noised[-1])]
            else:
                noised_image = corrupt_image(image, np_, rec["id"], sched)
                entry.update(size=list(noised_image.size), sha256=image_sha256(noised_image))
                shown = [np.asarray(image), np.asarray(noised_image)]
            index.append(entry)
            if i < np_.previews:
                _preview(*shown).save(out.path(layout.noise_preview_file(k, i, root)))
            tick(1)
        out.records(layout.noise_index_file(k, root), index, NOISE_ENTRY)
        out.json(layout.noise_info_file(k, root), {
            "space": np_.space, "timestep": np_.timestep, "images": len(index),
            "sqrt_alpha_bar": sqrt_alpha_bar(np_, sched),
            "processor": type(pre.processor).__name__ if pre else None}, NOISE_INFO)
    return summary({"images": len(index), "space": np_.space, "timestep": np_.timestep},
                   layout.noised_dir(k, root), started)


def refuse_too_long(pre, manifest: list[dict], max_length: int, k: int, root: Path) -> None:
    """Every image short enough to make a pair within train.max_length, known before qa (the costly
    stage) runs: its image tokens (the processor's count for its size, Preprocessor.image_tokens) plus
    the chat template's own tokens and a one-token answer, the shortest pair it can give. `pair`
    checks the real pairs again; this refuses only what cannot fit whatever the questions and answers."""
    sizes = [(rec["width"], rec["height"]) if "width" in rec and "height" in rec
             else open_manifest_image(root, rec, k).size for rec in manifest]
    if not sizes:
        return
    template = pre.prompt_tokens("")  # the placeholder's own token stands for the answer's one
    counts = pre.image_tokens(sizes)
    over = [i for i, n in enumerate(counts) if n + template > max_length]
    if not over:
        return
    worst = max(over, key=lambda i: counts[i])
    (w, h), n = sizes[worst], counts[worst]
    raise SenaError(
        f"noise: {len(over)} of iteration {k}'s {len(sizes)} images cannot make a pair within train.max_length = "
        f"{max_length} tokens (the largest, {manifest[worst]['path']} at {w}x{h}, is {n} image tokens for "
        f"{type(pre.processor).__name__}, {n + template} with the chat template and a one-token answer); give the "
        "processor fewer image tokens with model.processor (e.g. size.longest_edge, the max pixels, for Qwen2-VL; "
        "size or do_image_splitting for SmolVLM) or raise train.max_length, then rerun noise (qa has not run)")


def _refuse_non_finite(pictures, image_id: str) -> None:
    """Corrupted pictures must be numbers: a schedule that gives NaN or inf would train on garbage."""
    import torch

    if not all(torch.isfinite(p).all() for p in pictures):
        raise SenaError(f"noise: the corrupted pictures of '{image_id}' are not finite numbers; check "
                        "noise.beta_start, noise.beta_end, noise.beta_schedule and noise.num_train_timesteps")


def _preview(clean: np.ndarray, noised: np.ndarray) -> Image.Image:
    """clean | corrupted side by side (the last picture: the whole image as the model sees it)."""
    h = max(clean.shape[0], noised.shape[0])
    side = np.zeros((h, clean.shape[1] + noised.shape[1], 3), np.uint8)
    side[: clean.shape[0], : clean.shape[1]] = clean
    side[: noised.shape[0], clean.shape[1] :] = noised
    return Image.fromarray(side)
