"""Where each image is inside a processor's pixel tensor, in the picture geometry the model sees.

Processors lay images out differently, and the corruption of method step 2 is defined on the
normalised picture (C, H, W) the model receives:
- LLaVA-style (4-D `pixel_values`, one (C, H, W) per image);
- Idefics3/SmolVLM (5-D, (images, tiles, C, H, W), several tiles per image with image
  splitting, padded tiles flagged off in `pixel_attention_mask`): each real tile is a picture;
- Qwen2-VL (flat patches (patches, C·T·P·P) with `image_grid_thw`): each image's patches
  un-patchified to its resized (C, H, W) picture — the T temporal copies of a still image are
  the same picture, so they get the same noise.
`pictures()` reads the pictures of every image of a batch, `with_pictures()` writes them
back in the processor's layout; one round trip gives back the processor's tensor exactly.

`square_padded` gives a LLaVA image processor LLaVA-1.5's `image_aspect_ratio pad`: each image
padded to a square of the processor's mean colour before resizing (LLaVA's expand2square), so
the whole picture is seen instead of its centre crop; the padded picture is what noise corrupts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sena_cli.errors import SenaError


def square_padded(image_processor, on: bool):
    """The CLIP/LLaVA image processor that pads to a square (on) or not, settings otherwise kept.

    transformers' LlavaImageProcessor with do_pad is LLaVA's expand2square: background
    int(mean * 255) per channel, the image pasted at ((side - w) // 2, (side - h) // 2)."""
    import transformers

    name = type(image_processor).__name__
    if name.startswith("LlavaImageProcessor"):
        image_processor.do_pad = on
        return image_processor
    if not on:
        return image_processor
    if not name.startswith("CLIPImageProcessor"):
        raise SenaError(f"model.pad_to_square: on needs a CLIP or LLaVA image processor, the checkpoint has {name}; "
                        "set model.pad_to_square: off")
    cls = getattr(transformers, name.replace("CLIPImageProcessor", "LlavaImageProcessor"))  # same backend (Pil or not)
    return cls.from_dict(image_processor.to_dict(), do_pad=True)


class PixelLayout:
    def __init__(self, processor):
        ip = processor.image_processor
        self.mean = list(getattr(ip, "image_mean", None) or [0.5] * 3)
        self.std = list(getattr(ip, "image_std", None) or [0.5] * 3)
        self.patch = getattr(ip, "patch_size", None)
        self.merge = getattr(ip, "merge_size", None)
        self.temporal = getattr(ip, "temporal_patch_size", None)
        self.processor_name = type(processor).__name__

    def pictures(self, inputs) -> list[list[torch.Tensor]]:
        """Per image of the batch, its pictures (C, H, W) as the model sees them (normalised)."""
        pv = inputs["pixel_values"]
        if "image_grid_thw" in inputs:
            return [[self._unpatchify(rows, thw)] for rows, thw in self._qwen_rows(pv, inputs["image_grid_thw"])]
        if pv.dim() == 5:
            mask = inputs.get("pixel_attention_mask")
            real = [range(pv.shape[1])] * pv.shape[0] if mask is None else \
                [[j for j in range(pv.shape[1]) if bool(mask[i, j].any())] for i in range(pv.shape[0])]
            return [[pv[i, j] for j in real[i]] for i in range(pv.shape[0])]
        if pv.dim() == 4:
            return [[pv[i]] for i in range(pv.shape[0])]
        raise SenaError(f"sena cannot find the images in {self.processor_name}'s pixel tensor of shape "
                        f"{tuple(pv.shape)}; set noise.space: image to corrupt the images before the processor")

    def with_pictures(self, inputs, pictures: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """A copy of the batch's pixel tensor with each image's pictures replaced."""
        pv = inputs["pixel_values"].clone()
        if "image_grid_thw" in inputs:
            start = 0
            for (rows, thw), pics in zip(self._qwen_rows(pv, inputs["image_grid_thw"]), pictures, strict=True):
                pv[start : start + rows.shape[0]] = self._patchify(pics[0], thw).to(pv.dtype)
                start += rows.shape[0]
            return pv
        if pv.dim() == 5:
            mask = inputs.get("pixel_attention_mask")
            for i, pics in enumerate(pictures):
                tiles = [j for j in range(pv.shape[1]) if mask is None or bool(mask[i, j].any())]
                for j, pic in zip(tiles, pics, strict=True):
                    pv[i, j] = pic.to(pv.dtype)
            return pv
        for i, pics in enumerate(pictures):
            pv[i] = pics[0].to(pv.dtype)
        return pv

    # ------------------------------------------------------------ Qwen2-VL patches

    @staticmethod
    def _qwen_rows(pv: torch.Tensor, grids: torch.Tensor):
        start = 0
        for thw in grids.tolist():
            n = thw[0] * thw[1] * thw[2]
            yield pv[start : start + n], thw
            start += n

    def _check_qwen(self, thw) -> None:
        if thw[0] != 1 or not (self.patch and self.merge and self.temporal):
            raise SenaError(f"{self.processor_name}: a patch grid {thw} that is not one still image; "
                            "set noise.space: image")

    def _unpatchify(self, rows: torch.Tensor, thw) -> torch.Tensor:
        self._check_qwen(thw)
        _, gh, gw = thw
        p, m, t = self.patch, self.merge, self.temporal
        x = rows.reshape(gh // m, gw // m, m, m, -1, t, p, p)[:, :, :, :, :, 0]
        return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(-1, gh * p, gw * p)

    def _patchify(self, picture: torch.Tensor, thw) -> torch.Tensor:
        self._check_qwen(thw)
        _, gh, gw = thw
        p, m, t = self.patch, self.merge, self.temporal
        c = picture.shape[0]
        x = picture.reshape(c, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        return x.unsqueeze(5).expand(-1, -1, -1, -1, -1, t, -1, -1).reshape(gh * gw, c * t * p * p)

    # ------------------------------------------------------------ for people

    def to_uint8(self, picture: torch.Tensor) -> np.ndarray:
        """A normalised (C, H, W) picture back to an (H, W, C) uint8 array."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        x = (picture.float() * std + mean).clamp(0, 1)
        return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
