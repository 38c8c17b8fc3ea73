"""Diffusion corruption, step 2 of the method: q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

diffusers' DDPMScheduler holds the schedule (sigmoid betas 1e-5 -> 5e-3 over 1000 steps
by default, so sqrt(abar_600) = 0.7342); noise is drawn from a generator seeded per
image, so a rerun gives the same corrupted tensor bit for bit. `Corruption` is the other half:
`qa` and `report` recompute what `sena noise` recorded (the tensors are not stored) and check it
against the recorded sha256; it lives here, with the method, so that artifacts.py stays I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import image_sha256
from sena_cli.config import NoiseParams
from sena_cli.errors import SenaError
from sena_cli.frame import NOISE_ENTRY, NOISE_INFO, made_by, read_json, read_records

if TYPE_CHECKING:  # diffusers imports torch._dynamo (~4 CPU-s): only the stages that corrupt pay for it
    from diffusers import DDPMScheduler


def scheduler(params: NoiseParams) -> DDPMScheduler:
    from diffusers import DDPMScheduler

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


def pictures_sha256(pictures: Sequence[torch.Tensor]) -> str:
    """Identity of one image's pictures, bit for bit (float32)."""
    h = hashlib.sha256()
    for pic in pictures:
        h.update(str(tuple(pic.shape)).encode())
        h.update(pic.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class Corruption:
    """What `sena noise` recorded for iteration K, and the corrupted inputs recomputed from it.

    For `pixel_values`, `transform` is a VLM pixel transform: each image's pictures, corrupted with
    its seed, checked against the recorded sha256. For `image`, `image(id, clean)` gives the
    corrupted image, checked the same way.
    """

    def __init__(self, params, k: int, root: Path):
        folder = layout.noised_dir(k, root)
        self.folder = folder
        self.params = params.noise
        self.k = k
        self.records = {r["id"]: r for r in read_records(layout.noise_index_file(k, root), made_by("noise", k),
                                                         NOISE_ENTRY)}
        self.sched = scheduler(self.params)
        # Settings edited since `sena noise` ran (by hand, without DVC) would make every recomputed
        # input differ: name the setting, not a processor or library version.
        info_file = layout.noise_info_file(k, root)
        info = read_json(info_file, made_by("noise", k), NOISE_INFO) if info_file.is_file() else None
        if info and info["timestep"] != self.params.timestep:
            raise SenaError(f"{info_file}: written with noise.timestep {info['timestep']}, params now say "
                            f"{self.params.timestep}; rerun `sena noise --iter {k}` (and the stages after it), "
                            "or put the value back")
        if info and abs(info["sqrt_alpha_bar"] - sqrt_alpha_bar(self.params, self.sched)) > 1e-6:
            raise SenaError(f"{info_file}: written with another noise schedule (noise.beta_start, beta_end, "
                            f"beta_schedule or num_train_timesteps changed since); rerun `sena noise --iter {k}` "
                            "(and the stages after it), or put the values back")
        info_space = "pictures" if any("pictures" in r for r in self.records.values()) else "size"
        expected = "pictures" if self.params.space == "pixel_values" else "size"
        if self.records and info_space != expected:
            raise SenaError(f"{folder}: written for another noise.space; rerun `sena noise --iter {k}`")

    def _record(self, image_id: str) -> dict:
        if image_id not in self.records:
            raise SenaError(f"{self.folder}: no corrupted copy of '{image_id}'; rerun `sena noise --iter {self.k}`")
        return self.records[image_id]

    def _mismatch(self, image_id: str) -> SenaError:
        return SenaError(f"{self.folder}: the corrupted input of '{image_id}' recomputed now differs from the one "
                         f"`sena noise` defined (another processor, model.processor setting or library version); "
                         f"rerun `sena noise --iter {self.k}`")

    def transform(self, pictures, keys):
        out = []
        for pics, key in zip(pictures, keys, strict=True):
            noised = corrupt_pictures(pics, self.params, key, self.sched)
            if pictures_sha256(noised) != self._record(key).get("sha256"):
                raise self._mismatch(key)
            out.append(noised)
        return out

    def image(self, image_id: str, clean: Image.Image) -> Image.Image:
        noised = corrupt_image(clean, self.params, image_id, self.sched)
        if image_sha256(noised) != self._record(image_id).get("sha256"):
            raise self._mismatch(image_id)
        return noised
