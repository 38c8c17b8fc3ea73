"""Diffusion corruption, step 2 of the method: q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

diffusers' DDPMScheduler holds the schedule (sigmoid betas 1e-5 -> 5e-3 over 1000 steps
by default, so sqrt(abar_600) = 0.7342); noise is drawn from a generator seeded per
image, so a rerun gives the same corrupted tensor bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from sena_cli.config import NoiseParams


def scheduler(params: NoiseParams) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=params.num_train_timesteps, beta_start=params.beta_start,
        beta_end=params.beta_end, beta_schedule=params.beta_schedule,
    )


def image_seed(base_seed: int, image_id: str) -> int:
    """A stable 63-bit seed from the run's seed and the image's id (not Python's salted hash)."""
    digest = hashlib.sha256(f"{base_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def corrupt(x0: torch.Tensor, params: NoiseParams, image_id: str, sched: DDPMScheduler | None = None) -> torch.Tensor:
    """x_t for one image's tensor (any shape), with noise seeded by (noise.seed, image_id)."""
    return corrupt_pictures([x0], params, image_id, sched)[0]


def corrupt_pictures(pictures: Sequence[torch.Tensor], params: NoiseParams, image_id: str,
                     sched: DDPMScheduler | None = None) -> list[torch.Tensor]:
    """x_t for each picture of one image (a tiled image has several), noise drawn in order from
    one generator seeded by (noise.seed, image_id): the same pictures give the same x_t bit for bit."""
    sched = sched or scheduler(params)
    generator = torch.Generator().manual_seed(image_seed(params.seed, image_id))
    t = torch.tensor([params.timestep], dtype=torch.long)
    out = []
    for x0 in pictures:
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        out.append(sched.add_noise(x0.float().unsqueeze(0), eps.unsqueeze(0), t)[0].to(x0.dtype))
    return out


def sqrt_alpha_bar(params: NoiseParams, sched: DDPMScheduler | None = None) -> float:
    sched = sched or scheduler(params)
    return float(sched.alphas_cumprod[params.timestep].sqrt())


def corrupt_image(image: Image.Image, params: NoiseParams, image_id: str,
                  sched: DDPMScheduler | None = None) -> Image.Image:
    """`noise.space: image`: the 0-255 RGB image corrupted in [-1, 1] and rounded back to 8 bits."""
    x0 = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    xt = corrupt(x0, params, image_id, sched)
    return Image.fromarray(((xt.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
