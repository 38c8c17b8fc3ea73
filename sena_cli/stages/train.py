"""Stage `train`: θK = θ(K-1) trained one epoch on iteration K's pairs (method step 5).

trl's DPOTrainer does the training (vlm/dpo.py): sigmoid DPO against the reference log-probs
that `pair` stored, plus the image-content alignment loss. Full-parameter by default with
the vision tower frozen; `train.lora` trains LoRA adapters and merges them, so θK is always a
plain save_pretrained model. Runs the same under `python`, `torchrun` and `accelerate
launch` (DeepSpeed configs in configs/); the global batch is per-device batch × gradient
accumulation × processes.

Outputs: models/iterK (safetensors + processor), data/iterK/train/ (dvclive curves and
summary.json). Checkpoints go to data/iterK/train.partial/ so a killed run resumes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from sena_cli import layout
from sena_cli.artifacts import atomic_dir, file_identity, fingerprint, read_jsonl, sampled_image_loader, write_json
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.method.loss import gradient_accumulation
from sena_cli.progress import Progress, no_progress
from sena_cli.tracked import tracked_params

# What the log and summary keep of trl's metrics, named for people.
LOGGED = {
    "dpo_loss": "dpo_loss", "alignment_loss": "alignment_loss", "loss": "loss",
    "rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected", "learning_rate": "lr",
}
_PAIR_KEYS = ("image", "prompt", "chosen", "rejected", "type")


def read_pairs(k: int, root: Path) -> list[dict]:
    path = layout.iter_dir(k, root) / "pairs" / "pairs.jsonl"
    if not path.is_file():
        raise SenaError(f"{path}: missing; run `sena pair --iter {k}` first")
    try:
        pairs = read_jsonl(path)
    except json.JSONDecodeError as exc:
        raise SenaError(f"{path}: malformed JSON at line {exc.lineno}; rerun `sena pair --iter {k}`") from None
    if not pairs:
        raise SenaError(f"{path}: no pairs to train on; data/iter{k}/pairs/stats.json shows what the filters dropped")
    for i, p in enumerate(pairs, 1):
        missing = [key for key in _PAIR_KEYS if key not in p]
        if missing:
            raise SenaError(f"{path}: line {i} lacks {', '.join(missing)}; rerun `sena pair --iter {k}`")
        if not all(isinstance(p.get(key), int | float) for key in ("ref_chosen_logp", "ref_rejected_logp")):
            raise SenaError(f"{path}: line {i} has no reference log-probs (ref_chosen_logp, ref_rejected_logp); "
                            f"rerun `sena pair --iter {k}`")
    return pairs


def _hardware(params: Params) -> dict:
    """bf16 and gradient checkpointing by device: on CPU both run but cost about 2x per step."""
    from sena_cli.vlm import training_precision

    cuda = torch.cuda.is_available()
    precision = training_precision(params.train.precision)
    checkpointing = params.train.gradient_checkpointing
    checkpointing = cuda if checkpointing == "auto" else checkpointing == "on"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "activation_checkpointing": checkpointing,
            "dataloader_pin_memory": cuda, "use_cpu": not cuda}  # the Trainer runs CPU autocast only when told


def _progress_callback(progress: Progress, k: int):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.tick = progress(f"DPO steps, iteration {k}", state.max_steps)
            self.tick(state.global_step)  # a resumed run starts part-way

        def on_step_end(self, args, state, control, **kwargs):
            self.tick(1)

    return ProgressCallback()


def run_train(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    from accelerate import PartialState

    if k < 1 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: train runs for iterations 1..loop.iterations ({params.loop.iterations})")
    tp = params.train
    pairs = read_pairs(k, root)
    state = PartialState()
    accumulation = gradient_accumulation(tp.global_batch_size, tp.per_device_batch_size, state.num_processes)
    if accumulation is None:
        raise SenaError(
            f"train.global_batch_size {tp.global_batch_size} cannot be reached with train.per_device_batch_size "
            f"{tp.per_device_batch_size} on {state.num_processes} process(es); make it a multiple of "
            f"{tp.per_device_batch_size * state.num_processes}")
    from sena_cli.vlm import VLM

    # fp32 master weights; bf16/fp16 come as autocast (mixed precision): the regime `pair` used.
    vlm = VLM.load(layout.model_dir(k - 1, root), trust_remote_code=params.model.trust_remote_code,
                   dtype="float32", device=torch.device("cpu"), processor_settings=params.model.processor)
    _check_reference(params, k, root, vlm)
    started = time.perf_counter()

    work = layout.train_work_dir(k, root)
    run_id = fingerprint(tracked_params("train", k, params, root), pairs,
                         file_identity(layout.model_dir(k - 1, root)), state.num_processes)
    resume = _prepare_work_dir(work, run_id, state)
    trainer = _build_trainer(params, k, root, vlm, pairs, accumulation, work, resume, progress, state)
    resumed = {"resumed from step": _last_checkpoint_step(work)} if resume else {}
    trainer.train(resume_from_checkpoint=resume or None)
    final_eval = trainer.evaluate() if tp.evaluate_pairs else {}
    _save_model(trainer, params, k, root, state)
    summary = _summary(trainer.state.log_history, final_eval, pairs, tp.per_device_batch_size, accumulation,
                       state.num_processes, time.perf_counter() - started)
    if state.is_main_process:
        with atomic_dir(layout.train_dir(k, root)) as tmp:
            shutil.copytree(work / "live", tmp / "live")
            write_json(tmp / "summary.json", summary)
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    return {**{key: summary[key] for key in ("pairs", "steps", "global_batch", "seconds")},
            **{f"{key} first→last": f"{summary['first'][key]:.4f} → {summary['last'][key]:.4f}"
               for key in ("dpo_loss", "alignment_loss", "reward_accuracy") if key in summary["first"]},
            **({"reward_accuracy on all pairs after": summary["after"]["reward_accuracy"]} if final_eval else {}),
            **resumed, "output": str(layout.model_dir(k, root))}


def _check_reference(params: Params, k: int, root: Path, vlm) -> None:
    """The stored reference log-probs must come from this tokenization and numeric regime."""
    from sena_cli.vlm import training_precision
    from sena_cli.vlm.preference import tokenization_id

    path = layout.iter_dir(k, root) / "pairs" / "reference.json"
    try:
        stored = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SenaError(f"{path}: malformed; rerun `sena pair --iter {k}`") from None
    precision = training_precision(params.train.precision)
    now = tokenization_id(vlm.chat, params.train.max_length, precision)
    if not isinstance(stored, dict) or stored.get("tokenization") != now:
        raise SenaError(f"{path.parent}: the reference log-probs were computed under other tokenization or "
                        f"precision settings (train.max_length, train.precision, model.processor, the model's "
                        f"processor) than this run's ({precision}); rerun `sena pair --iter {k}`")


def _prepare_work_dir(work: Path, run_id: str, state) -> bool:
    """Keep the checkpoints of an interrupted run of the same inputs; anything else starts afresh."""
    resume = False
    if state.is_main_process:
        stamp = work / "run_id"
        # trainer_state.json is the last file a checkpoint gets: without it the save was cut short.
        for partial in (work / "checkpoints").glob("checkpoint-*"):
            if not (partial / "trainer_state.json").is_file():
                shutil.rmtree(partial)
        checkpoints = list((work / "checkpoints").glob("checkpoint-*"))
        if stamp.is_file() and stamp.read_text() == run_id and checkpoints:
            resume = True
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            stamp.write_text(run_id)
    flag = [resume]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(flag, from_process=0)
    return flag[0]


def _last_checkpoint_step(work: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*"))


def _build_trainer(params, k, root, vlm, pairs, accumulation, work, resume, progress, state):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig

    from sena_cli.vlm.dpo import LORA_TARGETS, SenaDPOTrainer, freeze_vision_tower
    from sena_cli.vlm.preference import PreferenceCollator

    tp = params.train
    model = vlm.model
    model.train()
    if tp.freeze_vision_tower:
        freeze_vision_tower(model)
    peft_config = None
    if tp.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=tp.lora_r, lora_alpha=tp.lora_alpha, lora_dropout=tp.lora_dropout,
                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    config = DPOConfig(
        output_dir=str(work / "checkpoints"),
        beta=tp.beta, loss_type=["sigmoid"], max_length=tp.max_length,
        num_train_epochs=tp.epochs, learning_rate=tp.lr, lr_scheduler_type=tp.lr_scheduler,
        warmup_steps=tp.warmup_ratio, weight_decay=tp.weight_decay, max_grad_norm=tp.max_grad_norm,
        per_device_train_batch_size=tp.per_device_batch_size, per_device_eval_batch_size=tp.per_device_batch_size,
        gradient_accumulation_steps=accumulation, seed=tp.seed, data_seed=tp.seed,
        **_hardware(params),
        remove_unused_columns=False,  # the collator needs image paths, types and stored log-probs
        logging_steps=1, report_to="none", disable_tqdm=True,
        save_strategy="steps" if tp.checkpoint_steps else "no", save_steps=max(tp.checkpoint_steps, 1),
        save_total_limit=1, dataloader_num_workers=0,
    )
    callbacks = [_progress_callback(progress, k)]
    if state.is_main_process:
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        live = Live(dir=str(work / "live"), resume=resume, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))
    dataset = Dataset.from_list([{key: p[key] for key in (*_PAIR_KEYS, "ref_chosen_logp", "ref_rejected_logp")}
                                 for p in pairs])
    collator = PreferenceCollator(vlm.processor, vlm.chat, sampled_image_loader(pairs, root, k), tp.max_length)
    trainer = SenaDPOTrainer(
        model=model, args=config, train_dataset=dataset, eval_dataset=dataset, data_collator=collator,
        processing_class=vlm.processor, peft_config=peft_config, callbacks=callbacks,
        alignment_weight=tp.alignment_weight,
    )
    if tp.lora and trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise SenaError("train.lora with DeepSpeed ZeRO-3 cannot merge the sharded adapters; use ZeRO-2 "
                        "(configs/accelerate/zero2.yaml) or full-parameter training")
    trainer.remove_callback(PrinterCallback)  # the progress bar and dvclive report instead
    return trainer


def _save_model(trainer, params: Params, k: int, root: Path, state) -> None:
    """θK as a plain save_pretrained folder, written under a temporary name and renamed."""
    target = layout.model_dir(k, root)
    staging = target.with_name(f".{target.name}.saving")
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    if params.train.lora:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if state.is_main_process:
            merged.save_pretrained(staging)
            trainer.processing_class.save_pretrained(staging)
    else:
        trainer.save_model(str(staging))  # gathers ZeRO-3 shards; writes safetensors and the processor
    if state.is_main_process:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the args live in the train log
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    state.wait_for_everyone()


def _summary(history: list[dict], final_eval: dict, pairs: list[dict], per_device: int, accumulation: int,
             processes: int, seconds: float) -> dict:
    steps = [h for h in history if "dpo_loss" in h and "eval_dpo_loss" not in h]

    def pick(entry: dict, prefix: str = "") -> dict:
        return {name: entry[prefix + key] for key, name in LOGGED.items()
                if prefix + key in entry and math.isfinite(entry[prefix + key])}

    return {
        "pairs": len(pairs), "pairs_des": sum(p["type"] == "des" for p in pairs),
        "steps": len(steps), "global_batch": per_device * accumulation * processes,
        "per_device_batch": per_device, "gradient_accumulation": accumulation, "processes": processes,
        "first": pick(steps[0]) if steps else {}, "last": pick(steps[-1]) if steps else {},
        "after": pick(final_eval, "eval_") if final_eval else {},
        "seconds": round(seconds, 1),
    }
