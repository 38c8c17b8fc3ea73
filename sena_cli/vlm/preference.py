"""Preference batches and answer log-probs: one tokenization for `pair` and `train`.

Both stages build their batches with trl's DataCollatorForVisionPreference, so the reference
log-probs that `pair` stores count exactly the tokens that the policy's log-probs count
inside trl's DPO loss (prompt rendered by the chat template, answer = what the conversation
adds after the generation prompt, end-of-turn included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

# Batch keys that are not model inputs; trl drops the first three itself.
NON_MODEL_KEYS = ("completion_mask", "ref_chosen_logps", "ref_rejected_logps", "is_des")


def preference_example(image: Image.Image, prompt: str, chosen: str, rejected: str) -> dict:
    """One pair in trl's conversational vision layout."""
    return {
        "images": [image],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
    }


@dataclass
class PreferenceCollator:
    """Pair rows (image path, prompt, chosen, rejected, type, stored log-probs) -> a trl batch.

    Adds `ref_chosen_logps` / `ref_rejected_logps` when the rows carry them (trl's loss reads
    them when its precompute flag is set) and `is_des` for the alignment loss.
    """

    processor: object
    load_image: Callable[[str], Image.Image]
    max_length: int | None = None

    def __post_init__(self):
        self._trl = DataCollatorForVisionPreference(processor=self.processor, max_length=self.max_length)

    def __call__(self, rows: Sequence[dict]) -> dict:
        examples = [preference_example(self.load_image(r["image"]), r["prompt"], r["chosen"], r["rejected"])
                    for r in rows]
        batch = self._trl(examples)
        if all("ref_chosen_logp" in r for r in rows):
            batch["ref_chosen_logps"] = torch.tensor([float(r["ref_chosen_logp"]) for r in rows])
            batch["ref_rejected_logps"] = torch.tensor([float(r["ref_rejected_logp"]) for r in rows])
        batch["is_des"] = torch.tensor([float(r.get("type") == "des") for r in rows])
        return batch


@torch.inference_mode()
def completion_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence of a preference batch (chosen rows, then rejected): the sum of the answer's
    token log-probs and its token count."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k not in NON_MODEL_KEYS}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model(**inputs, use_cache=False).logits.float()
    ids = inputs["input_ids"]
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].to(device).to(token_logps.dtype)
    return (token_logps * mask).sum(dim=1).cpu(), mask.sum(dim=1).cpu()
