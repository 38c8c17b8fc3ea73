"""The image-content alignment loss of step 5 (the DPO term is trl's).

alignment = −mean over the batch of (is_des · token-mean log πθ(chosen)): it keeps the
likelihood of the model's own clean-image descriptions up. Non-`des` pairs count as zeros
in the mean, so the term's effective weight is the share of `des` pairs in the batch
(method.md, step 5).
"""

from __future__ import annotations

import torch


def alignment_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor, is_des: torch.Tensor) -> torch.Tensor:
    """chosen_token_logps, chosen_mask: (batch, tokens); is_des: (batch,) of 0/1."""
    mask = chosen_mask.to(chosen_token_logps.dtype)
    token_mean = (chosen_token_logps * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return -(is_des.to(token_mean.dtype) * token_mean).mean()


def gradient_accumulation(global_batch: int, per_device_batch: int, processes: int) -> int | None:
    """Steps of accumulation that make per_device × steps × processes = global, or None if none does."""
    per_step = per_device_batch * processes
    if global_batch % per_step:
        return None
    return global_batch // per_step
