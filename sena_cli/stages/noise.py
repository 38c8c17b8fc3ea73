"""Stage `noise`: the corrupted copy of every sampled image (method step 2).

With `noise.space: pixel_values` (the reference's way) each image goes through θ(K-1)'s
image processor and the normalised tensor is corrupted by forward diffusion at t =
`noise.timestep`; the tensors are stored in safetensors shards so `qa` feeds exactly
these values to the model. With `noise.space: image` the 0-255 image is corrupted
(scaled to [-1, 1]) and stored as PNG. A few clean|corrupted previews are written
for people. Noise is seeded per image id: a rerun is bit-identical.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from sena_cli import layout
from sena_cli.artifacts import atomic_dir, open_rgb, read_manifest, write_json, write_jsonl
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.method.noise import corrupt, first_image, scheduler, tensor_to_uint8
from sena_cli.progress import Progress, no_progress
from sena_cli.vlm import load_processor

SHARD_SIZE = 256


def run_noise(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    if k < 1 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: noise runs for iterations 1..loop.iterations ({params.loop.iterations})")
    manifest = read_manifest(k, root)
    tick = progress(f"corrupting iteration {k}", len(manifest))
    np_ = params.noise
    sched = scheduler(np_)
    started = time.perf_counter()
    processor = None
    if np_.space == "pixel_values":
        processor = load_processor(layout.model_dir(k - 1, root), trust_remote_code=params.model.trust_remote_code)
        ip = processor.image_processor
        mean, std = getattr(ip, "image_mean", None) or [0.5] * 3, getattr(ip, "image_std", None) or [0.5] * 3
    out_dir = layout.iter_dir(k, root) / "noised"
    with atomic_dir(out_dir) as tmp:
        index, shard, shard_no = [], {}, 0
        (tmp / "previews").mkdir()
        for i, rec in enumerate(manifest):
            image = open_rgb(root / rec["path"])
            if processor is not None:
                clean = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
                noised = corrupt(clean, np_, rec["id"], sched).contiguous()
                key = f"img{i:06d}"
                shard[key] = noised
                index.append({"id": rec["id"], "shard": f"shard-{shard_no:05d}.safetensors", "key": key,
                              "shape": list(noised.shape)})
                if len(shard) == SHARD_SIZE:
                    save_file(shard, tmp / f"shard-{shard_no:05d}.safetensors")
                    shard, shard_no = {}, shard_no + 1
                preview = tuple(tensor_to_uint8(first_image(t), mean, std) for t in (clean, noised))
            else:
                x0 = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
                noised = corrupt(x0, np_, rec["id"], sched)
                arr = ((noised.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                name = f"img{i:06d}.png"
                (tmp / "images").mkdir(exist_ok=True)
                Image.fromarray(arr).save(tmp / "images" / name)
                index.append({"id": rec["id"], "image": f"images/{name}"})
                preview = (np.asarray(image), arr)
            if i < np_.previews:
                a, b = preview
                h = max(a.shape[0], b.shape[0])
                side = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
                side[: a.shape[0], : a.shape[1]] = a
                side[: b.shape[0], a.shape[1] :] = b
                Image.fromarray(side).save(tmp / "previews" / f"{i:03d}.png")
            tick(1)
        if shard:
            save_file(shard, tmp / f"shard-{shard_no:05d}.safetensors")
        write_jsonl(tmp / "index.jsonl", index)
        write_json(tmp / "info.json", {"space": np_.space, "timestep": np_.timestep, "images": len(index),
                                       "sqrt_alpha_bar": float(sched.alphas_cumprod[np_.timestep].sqrt()),
                                       # how to turn a stored tensor back into a picture (sena report)
                                       "image_mean": list(mean) if processor is not None else None,
                                       "image_std": list(std) if processor is not None else None})
    return {"images": len(index), "space": np_.space, "timestep": np_.timestep,
            "output": str(out_dir), "seconds": time.perf_counter() - started}
