"""Preference batches and answer log-probs: one tokenization for `pair` and `train`.

Both stages build their batches with PreferenceCollator, whose tokens are ChatFormat's (the
prompt exactly as generation saw it, the answer as the model writes it after the prompt,
ending with the model's end-of-turn token), in trl's DPO batch layout: chosen rows then
rejected rows, `completion_mask` on the answer tokens. The log-probs come from trl's own fused
LM head, the code trl's DPO loss runs, so the stored reference log-probs of `pair` count exactly
what the policy's log-probs count inside training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from sena_cli.errors import SenaError
from sena_cli.vlm.chat import ChatFormat

# Batch keys that are not model inputs (trl drops the first three itself; the trainer pops is_des).
NON_MODEL_KEYS = ("completion_mask", "ref_chosen_logps", "ref_rejected_logps", "is_des")
TOO_LONG = ("{n} pair(s) have more than train.max_length = {limit} tokens (the longest: {longest}, of which "
            "{image} image tokens); raise train.max_length, or give the processor fewer image tokens with "
            "model.processor (e.g. size.longest_edge, the max pixels, for Qwen2-VL; size or do_image_splitting "
            "for SmolVLM)")


@dataclass
class PreferenceCollator:
    """Pair rows (image path, prompt, chosen, rejected, type, stored log-probs) -> a DPO batch.

    Adds `ref_chosen_logps` / `ref_rejected_logps` when the rows carry them (trl's loss reads
    them when its precompute flag is set) and `is_des` for the alignment loss. A sequence longer
    than `max_length` is refused, never truncated (a cut would drop the answer or image tokens).
    """

    processor: object
    chat: ChatFormat
    load_image: Callable[[str], Image.Image]
    max_length: int | None = None

    def _encode(self, rows: Sequence[dict]):
        prompts = [self.chat.prompt(r["prompt"]) for r in rows]
        processed = self.processor(
            images=[[self.load_image(r["image"])] for r in rows] * 2, text=prompts * 2, padding=True,
            padding_side="left", return_tensors="pt", **self.chat.encode_kwargs(prompts[0]))
        completions = [self.chat.completion_ids(p, self.chat.completion(r["prompt"], r[side]))
                       for side in ("chosen", "rejected") for p, r in zip(prompts, rows)]
        return processed, completions

    def lengths(self, rows: Sequence[dict]) -> list[tuple[int, int]]:
        """(tokens of the longer of chosen and rejected, image tokens) per pair, without a forward pass."""
        processed, completions = self._encode(rows)
        prompt_lengths = processed["attention_mask"].sum(dim=1).tolist()
        image_tokens = _image_token_counts(self.processor, processed)
        n = len(rows)
        return [(max(prompt_lengths[i] + len(completions[i]), prompt_lengths[i] + len(completions[n + i])),
                 image_tokens[i]) for i in range(n)]

    def __call__(self, rows: Sequence[dict]) -> dict:
        processed, completions = self._encode(rows)
        pad = self.processor.tokenizer.pad_token_id
        pad = self.chat.end_ids[0] if pad is None else pad
        mask = processed["attention_mask"].bool()
        sequences, completion_masks, mm_types = [], [], []
        for j, completion in enumerate(completions):
            prompt = processed["input_ids"][j][mask[j]].tolist()
            sequences.append(prompt + completion)
            completion_masks.append([0] * len(prompt) + [1] * len(completion))
            if "mm_token_type_ids" in processed:  # Qwen2-VL marks image tokens; answers are text
                mm_types.append(processed["mm_token_type_ids"][j][mask[j]].tolist() + [0] * len(completion))
        longest = max(len(s) for s in sequences)
        if self.max_length is not None and longest > self.max_length:
            too_long = sum(len(s) > self.max_length for s in sequences)
            image = max(_image_token_counts(self.processor, processed))
            raise SenaError(TOO_LONG.format(n=too_long, limit=self.max_length, longest=longest, image=image))

        def right_pad(rows_, value):
            return torch.tensor([r + [value] * (longest - len(r)) for r in rows_])

        batch = {key: value for key, value in processed.items()
                 if key not in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")}
        batch["input_ids"] = right_pad(sequences, pad)
        batch["attention_mask"] = right_pad([[1] * len(s) for s in sequences], 0)
        batch["completion_mask"] = right_pad(completion_masks, 0)
        if mm_types:
            batch["mm_token_type_ids"] = right_pad(mm_types, 0)
        if all("ref_chosen_logp" in r for r in rows):
            batch["ref_chosen_logps"] = torch.tensor([float(r["ref_chosen_logp"]) for r in rows])
            batch["ref_rejected_logps"] = torch.tensor([float(r["ref_rejected_logp"]) for r in rows])
        batch["is_des"] = torch.tensor([float(r.get("type") == "des") for r in rows])
        return batch


def _image_token_counts(processor, processed) -> list[int]:
    """Tokens standing for the image in each processed prompt."""
    token = getattr(processor, "image_token", None)
    image_id = getattr(processor, "image_token_id", None)
    if image_id is None and token is not None:
        image_id = processor.tokenizer.convert_tokens_to_ids(token)
    if image_id is None:
        return [0] * processed["input_ids"].shape[0]
    return (processed["input_ids"] == image_id).sum(dim=1).tolist()


def fused_log_probs(model) -> None:
    """Give the model trl's fused LM head (what trl's DPO loss calls), once."""
    from accelerate.utils import is_peft_model
    from trl.trainer.utils import add_fused_lm_head

    target = model.get_base_model() if is_peft_model(model) else model
    if "forward" not in vars(target):  # add_fused_lm_head (ours, or trl's DPOTrainer's) sets it on the instance
        add_fused_lm_head(target)


@torch.inference_mode()
def completion_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence of a preference batch (chosen rows, then rejected): the sum of the answer's
    token log-probs and its token count, as trl's DPO loss computes them."""
    fused_log_probs(model)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k not in NON_MODEL_KEYS}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
    completion_mask = batch["completion_mask"].to(device)
    labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
    log_probs = model(**inputs, labels=labels, use_cache=False, fused_lm_head=True).log_probs.float()
    mask = completion_mask[:, 1:]
    log_probs = log_probs[:, -mask.size(1):]
    return (log_probs * mask).sum(dim=1).cpu(), mask.sum(dim=1).cpu()


def tokenization_id(chat: ChatFormat, max_length: int | None, precision: str) -> str:
    """What the stored reference log-probs depend on besides the weights: template, tokenizer, image
    processor, end tokens, length limit and numeric regime. `train` refuses pairs made under another."""
    import hashlib
    import json

    tok = chat.processor.tokenizer
    ip = chat.processor.image_processor
    vocab = hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()
    parts = {"template": chat.processor.chat_template, "vocab": vocab, "prefix": chat.prefix_text,
             "special_tokens": chat.add_special_tokens, "end_ids": list(chat.end_ids),
             "image_processor": ip.to_dict() if hasattr(ip, "to_dict") else repr(ip),
             "processor": type(chat.processor).__name__, "max_length": max_length, "precision": precision}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
