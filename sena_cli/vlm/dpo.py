"""trl's DPOTrainer fed with stored reference log-probs, plus the image-content alignment loss.

trl's public surface used here: DPOConfig (beta, the sigmoid loss, max_length; the warm-up
through TrainingArguments' `get_warmup_steps`), the trainer's constructor, its overridable
`compute_loss` and `log`, and the per-token `log_probs` its fused LM head returns (documented
at trl.trainer.utils.add_fused_lm_head, which `pair` calls too), read through a PyTorch
forward hook because trl's loss returns only the scalar; a second forward would double the
cost, and trl's own "sft" term is a token mean over every pair, not the `des` pairs only.

Two trl internals remain, because trl 1.16 has no public way to train a full-parameter VLM
against precomputed reference log-probs: `precompute_ref_log_probs=True` is refused for vision
datasets (trl PR #5867), and without it trl loads a second copy of the model as reference. So
this trainer (1) keeps trl from loading the copy by replacing `create_model_from_path` in
trl.trainer.dpo_trainer while the constructor runs, and refuses to go on if a copy appeared
anyway; (2) sets trl's `precompute_ref_logps` attribute, under which trl's loss reads
`ref_chosen_logps` / `ref_rejected_logps` from the batch, where PreferenceCollator puts the
values `pair` stored: the sigmoid DPO term is trl's own code. (`_load_from_checkpoint` below
is transformers' internal.) A trl that changes any of these fails tests/stages/test_train.py:
test_the_trainer_holds_no_second_model (1), test_the_reference_log_probs_come_from_the_pairs_
file (2) and test_loss_is_dpo_on_stored_reference_plus_alignment (2 and the hooked log-probs);
vlm/versions.py admits only the trl and transformers minor versions they ran on.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import trl.trainer.dpo_trainer as trl_dpo
from accelerate.utils import is_peft_model
from trl import DPOConfig, DPOTrainer

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


@dataclass
class SenaDPOConfig(DPOConfig):
    """trl's DPOConfig with the warm-up given as a share of the run's optimizer steps.

    transformers reads `warmup_steps` >= 1 as a number of steps, so the share 1.0 (warm up over
    the whole run) passed there means one step. `get_warmup_steps` is what the Trainer (and
    transformers' DeepSpeed config) asks with the run's optimizer steps; it counts from the share.
    """

    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of the optimizer steps spent warming up "
                                                                "the learning rate linearly from 0, in [0, 1]."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio is a share of the optimizer steps, in [0, 1]; got {self.warmup_ratio}")
        if self.warmup_steps:
            raise ValueError("give the warm-up as warmup_ratio, not warmup_steps")

    def get_warmup_steps(self, num_training_steps: int) -> int:
        return math.ceil(num_training_steps * self.warmup_ratio)


class SenaDPOTrainer(DPOTrainer):
    """Sigmoid DPO against stored reference log-probs + alignment_weight × alignment loss."""

    def __init__(self, *args, alignment_weight: float = 1.0, **kwargs):
        if not isinstance(kwargs.get("model"), torch.nn.Module):
            raise TypeError("pass the policy as a loaded model (model=...), not a path")
        with _no_reference_copy():
            super().__init__(*args, **kwargs)
        if self.ref_model is not None:  # trl built its copy some other way: twice the memory, never used
            raise SenaError(f"trl built a reference copy of {type(self.model).__name__} although sena trains "
                            "against the stored reference log-probs; use the trl version vlm/versions.py names")
        self.precompute_ref_logps = True  # trl's loss reads ref_*_logps from the batch (module docstring)
        self.alignment_weight = alignment_weight
        # The two terms of the loss, averaged over the micro-batches between two logs (see `log`).
        self.loss_terms: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list),
                                                                      "eval": defaultdict(list)}

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
        # (A public PyTorch hook on the model trl calls; trl's loss returns only the scalar.)
        captured = {}
        hook = self.accelerator.unwrap_model(model).register_forward_hook(
            lambda module, args, output: captured.setdefault("output", output))
        try:
            dpo = super().compute_loss(model, inputs, return_outputs=return_outputs)
        finally:
            hook.remove()
        if return_outputs:
            dpo, outputs = dpo
        token_logps = getattr(captured.get("output"), "log_probs", None)
        if token_logps is None:
            raise SenaError("trl's DPO loss ran no fused forward of the policy to read the answer log-probs from; "
                            "use the trl version vlm/versions.py names")
        mask = inputs["completion_mask"][:, 1:]
        chosen_logps, _ = token_logps[:, -mask.size(1):].chunk(2, dim=0)
        chosen_mask, _ = mask.chunk(2, dim=0)
        align = alignment_loss(chosen_logps, chosen_mask, is_des.to(chosen_logps.device))
        terms = self.loss_terms["train" if self.model.training else "eval"]
        terms["dpo_loss"].append(self.accelerator.gather(dpo.detach()).mean().item())
        terms["alignment_loss"].append(self.accelerator.gather(align.detach()).mean().item())
        loss = dpo + self.alignment_weight * align
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the two terms' means since the last log (eval_-prefixed in evaluation), as trl adds its own."""
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + name: sum(values) / len(values) for name, values in self.loss_terms[mode].items()
                     if values})
        self.loss_terms[mode].clear()
        super().log(logs, start_time)
