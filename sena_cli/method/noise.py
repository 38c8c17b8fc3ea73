"""Diffusion corruption, step 2 of the method: q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

diffusers' DDPMScheduler holds the schedule (sigmoid betas 1e-5 -> 5e-3 over 1000 steps
by default, so sqrt(abar_600) = 0.7342); noise is drawn from a generator seeded per
image, so a rerun gives the same corrupted tensor bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from diffusers import DDPMScheduler

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
    sched = sched or scheduler(params)
    generator = torch.Generator().manual_seed(image_seed(params.seed, image_id))
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    t = torch.tensor([params.timestep], dtype=torch.long)
    return sched.add_noise(x0.float().unsqueeze(0), eps.unsqueeze(0), t)[0].to(x0.dtype)


def tensor_to_uint8(chw: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised (C, H, W) tensor back to an (H, W, C) uint8 picture."""
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    x = (chw.float() * std + mean).clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def first_image(pixels: torch.Tensor) -> torch.Tensor:
    """(C, H, W) of the first image, whatever the processor's layout (4-D LLaVA, 5-D Idefics3)."""
    while pixels.dim() > 3:
        pixels = pixels[0]
    return pixels
