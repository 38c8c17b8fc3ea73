"""trl's DPOTrainer fed with stored reference log-probs, plus the image-content alignment loss.

trl 1.16 refuses `precompute_ref_log_probs=True` for vision datasets, and without it builds a
second copy of the model as reference. Its loss, though, reads `ref_chosen_logps` /
`ref_rejected_logps` from the batch when its `precompute_ref_logps` flag is set. So this
trainer keeps trl from loading the copy, sets that flag, and lets PreferenceCollator put the
values `pair` stored into every batch: the sigmoid DPO term is trl's own code.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch
import trl.trainer.dpo_trainer as trl_dpo
from accelerate.utils import is_peft_model
from trl import DPOTrainer

from sena_cli.errors import SenaError
from sena_cli.method.loss import alignment_loss

# Parameter-name prefixes of the vision encoder in the architectures sena knows (LLaVA,
# Idefics3/SmolVLM, Qwen2-VL); the projector (multi_modal_projector, connector, merger) stays
# trainable, as in the paper.
_VISION_TOWER = re.compile(r"(^|\.)(vision_tower|vision_model|visual)\.(?!merger)")
# LoRA goes on the language model's attention and MLP projections, never the vision encoder.
LORA_TARGETS = (r"^(?!.*(vision_tower|vision_model|visual))"
                r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


def freeze_vision_tower(model) -> int:
    """Stop gradients into the vision encoder; returns how many tensors were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if _VISION_TOWER.search(name):
            param.requires_grad_(False)
            frozen += 1
    if not frozen:
        raise SenaError(f"cannot find the vision tower of {type(model).__name__}; "
                        "set train.freeze_vision_tower: false to train every parameter")
    return frozen


@contextlib.contextmanager
def _no_reference_copy() -> Iterator[None]:
    """trl builds its reference model with `create_model_from_path`; the stored log-probs replace it."""
    original = trl_dpo.create_model_from_path
    trl_dpo.create_model_from_path = lambda *args, **kwargs: None
    try:
        yield
    finally:
        trl_dpo.create_model_from_path = original


class SenaDPOTrainer(DPOTrainer):
    """Sigmoid DPO against stored reference log-probs + alignment_weight × alignment loss."""

    def __init__(self, *args, alignment_weight: float = 1.0, **kwargs):
        if not isinstance(kwargs.get("model"), torch.nn.Module):
            raise TypeError("pass the policy as a loaded model (model=...), not a path")
        with _no_reference_copy():
            super().__init__(*args, **kwargs)
        self.ref_model = None
        self.precompute_ref_logps = True  # trl's loss reads ref_*_logps from the batch
        self.alignment_weight = alignment_weight

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Restore the weights of a checkpoint the way from_pretrained reads them.

        save_pretrained writes some VLMs under legacy key names (LLaVA: language_model.model.*),
        which the Trainer's own resume loads by raw name, non-strictly: it would warn and go on
        with the weights of the model it started from. Loading through from_pretrained applies
        the key mapping; strict loading makes any mismatch an error.
        """
        model = model if model is not None else self.model
        unwrapped = self.accelerator.unwrap_model(model)
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or is_peft_model(unwrapped):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(unwrapped).from_pretrained(resume_from_checkpoint, dtype=unwrapped.dtype, use_safetensors=True)
        unwrapped.load_state_dict(saved.state_dict(), strict=True)
        del saved

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "ref_chosen_logps" not in inputs:
            raise SenaError("the batch has no stored reference log-probs; rerun `sena pair` for this iteration")
        is_des = inputs.pop("is_des")
        # trl's forward already computes every answer token's log-prob; catch it instead of a second pass.
        captured = {}
        hook = self.accelerator.unwrap_model(model).register_forward_hook(
            lambda module, args, output: captured.setdefault("output", output))
        try:
            dpo = super().compute_loss(model, inputs, return_outputs=return_outputs)
        finally:
            hook.remove()
        if return_outputs:
            dpo, outputs = dpo
        mask = inputs["completion_mask"][:, 1:]
        token_logps = captured["output"].log_probs[:, -mask.size(1):]
        chosen_logps, _ = token_logps.chunk(2, dim=0)
        chosen_mask, _ = mask.chunk(2, dim=0)
        align = alignment_loss(chosen_logps, chosen_mask, is_des.to(chosen_logps.device))
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["dpo_loss"].append(self.accelerator.gather(dpo.detach()).mean().item())
        self._metrics[mode]["alignment_loss"].append(self.accelerator.gather(align.detach()).mean().item())
        loss = dpo + self.alignment_weight * align
        return (loss, outputs) if return_outputs else loss
