"""A few DPO steps of a tiny LLaVA through sena's trainer, under torchrun; used by test_deepspeed_cpu.py.

    torchrun --nproc_per_node 2 tests/deepspeed_steps.py MODEL_DIR OUT.json [configs/deepspeed/zeroN.json]

With a DeepSpeed config the Trainer resolves its "auto" values (batch, accumulation, clipping,
precision) from the training arguments, as `sena train` does under `accelerate launch`; without
one it is plain DDP (gloo on CPU). Rank 0 writes the per-step losses to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from PIL import Image
from transformers import PrinterCallback
from trl import DPOConfig

from sena_cli.vlm import VLM
from sena_cli.vlm.dpo import SenaDPOTrainer, freeze_vision_tower
from sena_cli.vlm.preference import PreferenceCollator

ANSWERS = [("A red circle and a blue square.", "A green cross."), ("A green cross.", "A red circle."),
           ("A blue square.", "A red circle and a blue square."), ("A red circle.", "A green cross.")]


def main() -> None:
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    deepspeed = sys.argv[3] if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    if deepspeed and not torch.cuda.is_available():
        # On GPUs accelerate starts DeepSpeed's communication; with use_cpu it starts torch's only, and
        # zero.Init (ZeRO-3's sharded loading) would then see a world of one process.
        import deepspeed as ds

        ds.init_distributed(dist_backend="gloo")
    config = DPOConfig(
        output_dir=str(out.parent / f"{out.stem}-work"), beta=0.1, loss_type=["sigmoid"], max_length=512,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=8, learning_rate=5e-3,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, bf16=False, activation_checkpointing=False,
        report_to="none", remove_unused_columns=False, save_strategy="no", disable_tqdm=True, logging_steps=1,
        dataloader_num_workers=0, dataloader_pin_memory=False, seed=0, data_seed=0, deepspeed=deepspeed,
        use_cpu=not torch.cuda.is_available(),  # else accelerate counts one process on a CPU machine
    )  # the training arguments exist before the model is loaded, as ZeRO-3 needs
    vlm = VLM.load(model_dir, dtype="float32", device=torch.device("cpu"))
    sharded_at_load = any(hasattr(p, "ds_id") for p in vlm.model.parameters())  # built under zero.Init
    vlm.model.train()
    freeze_vision_tower(vlm.model)
    rows = [{"image": f"img{i % 4}.png", "prompt": "Describe the image concisely.", "chosen": c, "rejected": r,
             "type": "des" if i % 2 else "gen", "ref_chosen_logp": -8.0 - i % 3, "ref_rejected_logp": -7.0}
            for i, (c, r) in enumerate(ANSWERS * 4)]
    collator = PreferenceCollator(vlm.processor, vlm.chat, lambda p: Image.open(model_dir / p).convert("RGB"), 512)
    trainer = SenaDPOTrainer(model=vlm.model, args=config, train_dataset=Dataset.from_list(rows),
                             data_collator=collator, processing_class=vlm.processor, alignment_weight=1.0)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    if trainer.is_world_process_zero():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        out.write_text(json.dumps({"losses": losses, "deepspeed": trainer.is_deepspeed_enabled,
                                   "sharded_at_load": sharded_at_load,
                                   "processes": trainer.accelerator.num_processes}))


if __name__ == "__main__":
    main()
