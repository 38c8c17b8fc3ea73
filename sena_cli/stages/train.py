"""Stage `train`: θK = θ(K-1) trained one epoch on iteration K's pairs (method step 5).

trl's DPOTrainer does the training (vlm/dpo.py): sigmoid DPO against the reference log-probs
that `pair` stored, plus the image-content alignment loss. Full-parameter by default with
the vision tower frozen; `train.lora` trains LoRA adapters and merges them, so θK is always a
plain save_pretrained model. Runs the same under `python`, `torchrun` and `accelerate
launch` (DeepSpeed configs in configs/); the global batch is per-device batch × gradient
accumulation × processes.

Start-up order, for scale: every refusal (no pairs, an unreachable global batch, pairs made
under other tokenization settings, LoRA with ZeRO-3) comes before any weights load; the
training config (trl's DPOConfig, which makes transformers' DeepSpeed config under a DeepSpeed
launch) exists before the model loads, so under ZeRO-3 from_pretrained loads it sharded
(deepspeed.zero.Init) instead of every rank holding the whole fp32 model in host memory.

Outputs: models/iterK (safetensors + processor), data/iterK/train/ (dvclive curves and
summary.json). θK replaces models/iterK only when every logged loss is finite, its summary is
computed, and every floating tensor of the written weights is finite; otherwise one line names
train.lr and train.beta and models/iterK is left as it was. Checkpoints go to
data/iterK/train.partial/ so a killed run resumes (with the same process count: DeepSpeed's
checkpoints are partitioned by rank). A checkpoint holds the weights and the optimizer's
states, 12-16 bytes per trained parameter (~110 GB for a full-parameter 7B model under
ZeRO-3): `train.checkpoint_steps` trades that cost against the steps a kill may lose. After θK is
saved they are removed, or, with `train.keep_checkpoints`, the last one is moved to
data/iterK/train.checkpoints/ (neither folder is a DVC output, so no checkpoint reaches the cache).

Dtype: training holds fp32 master weights under autocast whatever the checkpoint's dtype; θK is
then saved in `train.save_dtype`, by default each weight in θ(K-1)'s dtype, so a bf16 base gives a
bf16 θK of the base's size (half the fp32 save) in models/, the DVC cache and the remote.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from sena_cli import bounded, layout
from sena_cli.artifacts import file_identity, fingerprint, resumable_dir, sampled_image_loader
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import (
    PAIR,
    REFERENCE,
    TRAIN_SUMMARY,
    check_iteration,
    made_by,
    publish,
    read_json,
    read_records,
    remove_leftovers,
)
from sena_cli.method.loss import gradient_accumulation
from sena_cli.progress import Progress, no_progress
from sena_cli.ranks import Ranks
from sena_cli.tracked import tracked_params

# What the log and summary keep of trl's metrics, named for people.
LOGGED = {
    "dpo_loss": "dpo_loss", "alignment_loss": "alignment_loss", "loss": "loss",
    "rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected", "learning_rate": "lr",
}
_PAIR_KEYS = ("image", "prompt", "chosen", "rejected", "type")
# Logged values that must stay finite: one that is not means training diverged.
LOSSES = ("loss", "dpo_loss", "alignment_loss", "eval_loss", "eval_dpo_loss", "eval_alignment_loss")


def read_pairs(k: int, root: Path) -> list[dict]:
    pairs = read_records(layout.pairs_file(k, root), made_by("pair", k), PAIR)
    if not pairs:
        raise SenaError(f"{layout.pairs_file(k, root)}: no pairs to train on; {layout.pairs_stats_file(k, root)} "
                        "shows what the filters dropped")
    return pairs


def _hardware(params: Params, deepspeed: bool = False) -> dict:
    """bf16 and gradient checkpointing by device: on CPU both run but cost about 2x per step.

    Under DeepSpeed the mixed precision is DeepSpeed's torch_autocast (deepspeed_config below), so
    the Trainer's own bf16/fp16 flags stay off."""
    from sena_cli.vlm import training_precision

    cuda = torch.cuda.is_available()
    precision = training_precision(params.train.precision)
    checkpointing = params.train.gradient_checkpointing
    checkpointing = cuda if checkpointing == "auto" else checkpointing == "on"
    return {"bf16": precision == "bf16" and not deepspeed, "fp16": precision == "fp16" and not deepspeed,
            "activation_checkpointing": checkpointing,
            "dataloader_pin_memory": cuda, "use_cpu": not cuda}  # the Trainer runs CPU autocast only when told


def deepspeed_config(params: Params) -> dict | None:
    """The DeepSpeed config of a DeepSpeed launch, with sena's one numeric regime laid over it.

    `accelerate launch --config_file configs/accelerate/zero*.yaml` names a DeepSpeed JSON file
    (ACCELERATE_DEEPSPEED_CONFIG_FILE). Its precision is set here from train.precision: fp32 master
    weights under torch.autocast (DeepSpeed's `torch_autocast`), the regime `sena pair` computed the
    reference log-probs in, instead of DeepSpeed's bf16/fp16 modes, which hold the weights
    themselves in 16 bits and would make step 0's log-ratios differ from 0. None without DeepSpeed.
    """
    import json

    from sena_cli.vlm import training_precision

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() not in ("1", "true", "yes"):
        return None
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if not path:
        raise SenaError("a DeepSpeed launch without a DeepSpeed config file: set deepspeed_config_file in the "
                        "accelerate config (see configs/accelerate/zero2.yaml)")
    try:
        config = json.loads(bounded.read_text(path, "max_checkpoint_file_bytes", "DeepSpeed config"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SenaError(f"{path}: DeepSpeed config unreadable ({exc.__class__.__name__}); fix it") from None
    if not isinstance(config, dict):
        raise SenaError(f"{path}: a DeepSpeed config is a JSON object; fix it")
    precision = training_precision(params.train.precision)
    config["bf16"] = {**(config.get("bf16") or {}), "enabled": False}
    config["fp16"] = {**(config.get("fp16") or {}), "enabled": False}
    config["torch_autocast"] = {**(config.get("torch_autocast") or {}), "enabled": precision != "fp32",
                                "dtype": "float16" if precision == "fp16" else "bfloat16"}
    return config


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
    check_iteration(k, "train", params.loop.iterations)
    tp = params.train
    pairs = read_pairs(k, root)
    work = layout.train_work_dir(k, root)
    timeout_s = collective_timeout_s(layout.model_dir(k - 1, root))
    ranks = Ranks.start(work, timeout_s=timeout_s, heartbeat=False)  # the processes must share the project folder
    leftovers = ranks.from_main(lambda: remove_leftovers(layout.model_dir(k, root)))
    accumulation = gradient_accumulation(tp.global_batch_size, tp.per_device_batch_size, ranks.world)
    if accumulation is None:
        raise SenaError(
            f"train.global_batch_size {tp.global_batch_size} cannot be reached with train.per_device_batch_size "
            f"{tp.per_device_batch_size} on {ranks.world} process(es); make it a multiple of "
            f"{tp.per_device_batch_size * ranks.world}")
    from sena_cli.vlm import VLM, Preprocessor

    # The processor alone tells whether the stored reference log-probs fit this run.
    pre = Preprocessor.from_params(params.model, layout.model_dir(k - 1, root))
    _check_reference(params, k, root, pre.chat)
    # Before the model: under a DeepSpeed launch this makes transformers' DeepSpeed config, so
    # that ZeRO-3 loads the weights sharded (from_pretrained honours is_deepspeed_zero3_enabled()).
    config = _training_config(params, work, accumulation, timeout_s)
    if config.deepspeed is not None:
        _deepspeed_comm()
    if tp.lora and _zero3():
        raise SenaError("train.lora with DeepSpeed ZeRO-3 cannot merge the sharded adapters; use ZeRO-2 "
                        "(configs/accelerate/zero2.yaml) or full-parameter training")
    started = time.perf_counter()
    run_id = fingerprint(tracked_params("train", k, params, root), pairs,
                         file_identity(layout.model_dir(k - 1, root)), ranks.world)
    save_as = _save_dtypes(params, k, root)
    resume = ranks.from_main(lambda: _prepare_work_dir(work, run_id))
    # fp32 master weights, autocast to train.precision inside the Trainer or DeepSpeed: the regime
    # in which `pair` computed the reference log-probs (vlm/model.py, deepspeed_config above).
    vlm = VLM.from_params(params.model, layout.model_dir(k - 1, root), dtype="float32", device=torch.device("cpu"))
    # ZeRO-3 (deepspeed.zero.Init under from_pretrained) leaves each rank its shard only.
    sharded = {"weights sharded at load": True} if any(hasattr(p, "ds_id") for p in vlm.model.parameters()) else {}
    trainer = _build_trainer(params, k, root, vlm, pairs, config, work, resume, progress, ranks.is_main)
    resumed = {"resumed from step": _last_checkpoint_step(work)} if resume else {}
    trainer.train(resume_from_checkpoint=resume or None)
    final_eval = trainer.evaluate() if tp.evaluate_pairs else {}
    # θK is written only once its log is sound and summarised, and its weights are finite (_save_model).
    summary = _summary(trainer.state.log_history, final_eval, pairs, tp.per_device_batch_size, accumulation,
                       ranks.world, time.perf_counter() - started)
    _refuse_divergence(trainer.state.log_history + [final_eval], params, k, root, work, ranks)
    _save_model(trainer, params, k, root, ranks, work, save_as)
    kept = {}
    if ranks.is_main:  # the other ranks leave: nothing below needs them
        with publish(layout.train_dir(k, root)) as out:
            shutil.copytree(work / "live", out.path(layout.train_live_dir(k, root)))
            out.json(layout.train_summary_file(k, root), summary, TRAIN_SUMMARY)
        kept = _keep_checkpoints(params, k, root, work)
        shutil.rmtree(work, ignore_errors=True)
    return {**_rows(summary), "saved as": save_as[1], **sharded, **resumed, **leftovers, **kept,
            "output": str(layout.model_dir(k, root))}


def _save_dtypes(params: Params, k: int, root: Path) -> tuple[dict[str, str], str]:
    """What each floating weight of θK is saved as (train.save_dtype): ({name: dtype}, the default).

    `base`: each weight in θ(K-1)'s dtype, read from its safetensors headers (a hub id: its config's
    dtype); float32 when nothing says. Otherwise every floating weight in the named dtype."""
    from sena_cli.vlm import saved_dtypes

    if params.train.save_dtype != "base":
        return {}, params.train.save_dtype
    names, most = saved_dtypes(layout.model_dir(k - 1, root))
    return names, most or "float32"


def _keep_checkpoints(params: Params, k: int, root: Path, work: Path) -> dict:
    """train.keep_checkpoints: the last checkpoint moved out of the work folder (which is then removed)."""
    kept = layout.train_checkpoints_dir(k, root)
    shutil.rmtree(kept, ignore_errors=True)  # an earlier run's: it is not this θK's
    checkpoints = sorted((work / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not params.train.keep_checkpoints or not checkpoints:
        return {}
    kept.mkdir(parents=True)
    os.replace(checkpoints[-1], kept / checkpoints[-1].name)
    return {"checkpoint kept": str(kept / checkpoints[-1].name)}


def _rows(summary: dict) -> dict:
    """The CLI's table of a training summary; a metric that was not logged (or not finite) is left out."""
    first, last, after = summary["first"], summary["last"], summary["after"]
    return {**{key: summary[key] for key in ("pairs", "steps", "global_batch", "seconds")},
            **{f"{key} first→last": f"{first[key]:.4f} → {last[key]:.4f}"
               for key in ("dpo_loss", "alignment_loss", "reward_accuracy") if key in first and key in last},
            **({"reward_accuracy on all pairs after": after["reward_accuracy"]} if "reward_accuracy" in after else {})}


def _diverged(params: Params, k: int, root: Path, what: str) -> SenaError:
    tp = params.train
    return SenaError(f"θ{k} not written: {what}; lower train.lr ({tp.lr:g}) or train.beta ({tp.beta:g}), or check "
                     f"θ{k - 1} ({layout.model_dir(k - 1, root)}), and rerun `sena train --iter {k}`; "
                     f"{layout.model_dir(k, root)} is left as it was")


def _refuse_divergence(history: list[dict], params: Params, k: int, root: Path, work: Path, ranks: Ranks) -> None:
    """A NaN or infinite loss anywhere in the log: θK is not written (every rank sees the same log)."""
    for entry in history:
        bad = [key for key in LOSSES if isinstance(entry.get(key), float) and not math.isfinite(entry[key])]
        if bad:
            if ranks.is_main:  # its checkpoints would only diverge again
                shutil.rmtree(work, ignore_errors=True)
            step = entry.get("step", "the end")
            raise _diverged(params, k, root, f"training diverged ({bad[0]} is {entry[bad[0]]} at step {step})")


def collective_timeout_s(model: Path) -> float:
    """How long a rank may wait in one of training's collectives: the longest wait is on another
    rank's file work (DDP: rank 0 writes the whole checkpoint; the final save), so 30 minutes plus
    writing a checkpoint (~16 bytes per parameter, 8x the 16-bit weights) at a slow 100 MB/s."""
    from sena_cli.vlm import resolve_model

    target = resolve_model(model)
    weights = sum(p.stat().st_size for p in target.glob("*.safetensors")) if isinstance(target, Path) else 0
    if not weights:  # a hub id: its files are in transformers' cache, wherever that is; assume 7B in 16 bits
        weights = 14 * 10**9
    return 30 * 60 + 8 * weights / 100e6


def _deepspeed_comm() -> None:
    """DeepSpeed's own view of the process group, before ZeRO-3 shards the weights at load time.
    accelerate sets it up on GPUs; on CPU (gloo) nothing does, and ZeRO-3 would see a world of one."""
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def _zero3() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _check_reference(params: Params, k: int, root: Path, chat) -> None:
    """The stored reference log-probs must come from this tokenization and numeric regime."""
    from sena_cli.vlm import training_precision
    from sena_cli.vlm.preference import tokenization_id

    path = layout.reference_file(k, root)
    stored = read_json(path, made_by("pair", k), REFERENCE)
    precision = training_precision(params.train.precision)
    now = tokenization_id(chat, params.train.max_length, precision)
    if stored.get("tokenization") != now:
        raise SenaError(f"{path.parent}: the reference log-probs were computed under other tokenization or "
                        f"precision settings (train.max_length, train.precision, model.processor, the model's "
                        f"processor) than this run's ({precision}); rerun `sena pair --iter {k}`")


def _prepare_work_dir(work: Path, run_id: str) -> bool:
    """Keep the checkpoints of an interrupted run of the same inputs; anything else starts afresh (rank 0)."""
    # trainer_state.json is the last file a checkpoint gets: without it, or with it cut short (a kill while
    # it was written leaves an empty or partial file), the save was cut short.
    for partial in (work / "checkpoints").glob("checkpoint-*"):
        if not _complete_state(partial / "trainer_state.json"):
            shutil.rmtree(partial)
    return resumable_dir(work, run_id, lambda w: any((w / "checkpoints").glob("checkpoint-*")))


def _complete_state(path: Path) -> bool:
    try:
        return isinstance(json.loads(bounded.read_text(path)), dict)
    except (OSError, ValueError):  # missing, or cut short by a kill while it was written
        return False


def _last_checkpoint_step(work: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*"))


def _training_config(params: Params, work: Path, accumulation: int, timeout_s: float):
    from sena_cli.vlm.dpo import SenaDPOConfig  # trl's DPOConfig, the warm-up as a share of the steps

    tp = params.train
    deepspeed = deepspeed_config(params)
    return SenaDPOConfig(
        output_dir=str(work / "checkpoints"), deepspeed=deepspeed,
        beta=tp.beta, loss_type=["sigmoid"], max_length=tp.max_length,
        num_train_epochs=tp.epochs, learning_rate=tp.lr, lr_scheduler_type=tp.lr_scheduler,
        warmup_ratio=tp.warmup_ratio, weight_decay=tp.weight_decay, max_grad_norm=tp.max_grad_norm,
        per_device_train_batch_size=tp.per_device_batch_size, per_device_eval_batch_size=tp.per_device_batch_size,
        gradient_accumulation_steps=accumulation, seed=tp.seed, data_seed=tp.seed,
        **_hardware(params, deepspeed=deepspeed is not None),
        remove_unused_columns=False,  # the collator needs image paths, types and stored log-probs
        logging_steps=1, report_to="none", disable_tqdm=True,
        save_strategy="steps" if tp.checkpoint_steps else "no", save_steps=max(tp.checkpoint_steps, 1),
        save_total_limit=1, dataloader_num_workers=0, ddp_timeout=int(timeout_s),
    )


def _build_trainer(params, k, root, vlm, pairs, config, work, resume, progress, is_main):
    from datasets import Dataset
    from transformers import PrinterCallback

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
    callbacks = [_progress_callback(progress, k)]
    if is_main:
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
    trainer.remove_callback(PrinterCallback)  # the progress bar and dvclive report instead
    return trainer


def _save_model(trainer, params: Params, k: int, root: Path, ranks: Ranks, work: Path,
                save_as: tuple[dict[str, str], str]) -> None:
    """θK as a plain save_pretrained folder, written under a temporary name, checked, cast to its
    saved dtype (`save_as`, from _save_dtypes), and renamed.

    Rank 0 writes alone after the collective gather; the other ranks do not wait for the write.
    Every floating tensor written is checked finite before the rename (read back one at a time:
    seconds per GB), so a NaN θK never replaces models/iterK; nor does one that float16 cannot hold."""
    from sena_cli.vlm import cast_saved_weights, non_finite_weight

    target = layout.model_dir(k, root)
    staging = target.with_name(f".{target.name}.saving")
    if ranks.is_main:
        shutil.rmtree(staging, ignore_errors=True)
    ranks.barrier()  # a short wait; DeepSpeed's fallback save writes from every rank
    if params.train.lora:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if ranks.is_main:
            merged.save_pretrained(staging)
            trainer.processing_class.save_pretrained(staging)
    else:
        trainer.save_model(str(staging))  # gathers ZeRO-3 shards; writes safetensors and the processor
    if ranks.is_main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the args live in the train log
        if name := non_finite_weight(staging):
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            raise _diverged(params, k, root, f"its weight {name} is not finite after training")
        if name := cast_saved_weights(staging, *save_as):
            shutil.rmtree(staging, ignore_errors=True)
            raise SenaError(f"θ{k} not written: its weight {name} overflows {save_as[0].get(name, save_as[1])}; "
                            f"set train.save_dtype to bfloat16 or float32 and rerun `sena train --iter {k}`; "
                            f"{layout.model_dir(k, root)} is left as it was")
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)


def _summary(history: list[dict], final_eval: dict, pairs: list[dict], per_device: int, accumulation: int,
             processes: int, seconds: float) -> dict:
    steps = [h for h in history if "dpo_loss" in h and "eval_dpo_loss" not in h]

    def pick(entry: dict, prefix: str = "") -> dict:  # what was logged, and finite
        return {name: value for key, name in LOGGED.items()
                if isinstance(value := entry.get(prefix + key), int | float) and math.isfinite(value)}

    return {
        "pairs": len(pairs), "pairs_des": sum(p["type"] == "des" for p in pairs),
        "steps": len(steps), "global_batch": per_device * accumulation * processes,
        "per_device_batch": per_device, "gradient_accumulation": accumulation, "processes": processes,
        "first": pick(steps[0]) if steps else {}, "last": pick(steps[-1]) if steps else {},
        "after": pick(final_eval, "eval_") if final_eval else {},
        "seconds": round(seconds, 1),
    }
