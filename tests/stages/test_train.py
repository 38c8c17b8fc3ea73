import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from sena_cli.artifacts import open_rgb
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages import train as train_stage
from sena_cli.stages.pair import run_pair
from sena_cli.stages.train import run_train
from sena_cli.vlm import VLM
from sena_cli.vlm.preference import PreferenceCollator, completion_logps
from tests.helpers import project_from, torchrun, write_manifest

DES = "Describe the image concisely."
GEN = "What color is the circle? Answer with a single word or phrase."


def _qa_records(n: int) -> list[dict]:
    records = []
    for i in range(n):
        des = i % 3 == 0
        records.append({
            "id": str(i), "image": f"data/world/pool/{i:05d}.png", "type": "des" if des else "gen",
            "prompt": DES if des else GEN,
            "enhanced_answer": "A red circle and a blue square." if des else ["red", "green", "blue"][i % 3],
            "corrupted_answer": "A yellow cross." if des else ["yellow", "blue", "red"][i % 3]})
    return records


def train_params(micro_dict, **train):
    return params_from_dict({**micro_dict, "train": {"global_batch_size": 4, "per_device_batch_size": 2,
                                                     "lr": 1e-3, "checkpoint_steps": 0, **train}})


@pytest.fixture
def paired_project(micro_project, micro_dict, tmp_path):
    """A project with the micro world, θ0 and iteration 1's pairs (10 pairs, 4 of them `des`)."""
    project_from(micro_project, tmp_path)
    qa = tmp_path / "data" / "iter1" / "qa"
    qa.mkdir(parents=True)
    (qa / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _qa_records(10)))
    write_manifest(tmp_path, 1, [r["image"] for r in _qa_records(10)])
    run_pair(train_params(micro_dict), 1, root=tmp_path)
    return tmp_path


def _trainer(project, params, rows, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig

    from sena_cli.vlm.dpo import SenaDPOTrainer

    vlm = VLM.load(project / "models" / "iter0", dtype="float32")
    config = DPOConfig(output_dir=str(tmp_path / "out"), beta=params.train.beta, report_to="none",
                       remove_unused_columns=False, activation_checkpointing=False, bf16=False,
                       per_device_train_batch_size=len(rows))
    collator = PreferenceCollator(vlm.processor, vlm.chat, lambda path: open_rgb(project / path))
    trainer = SenaDPOTrainer(model=vlm.model, args=config, train_dataset=Dataset.from_list(rows),
                             data_collator=collator, processing_class=vlm.processor,
                             alignment_weight=params.train.alignment_weight)
    return trainer, collator


def _hand_losses(model, batch, rows, beta):
    sums, counts = completion_logps(model, batch)
    n = len(rows)
    chosen, rejected = sums[:n], sums[n:]
    ref_c = torch.tensor([r["ref_chosen_logp"] for r in rows])
    ref_r = torch.tensor([r["ref_rejected_logp"] for r in rows])
    dpo = -F.logsigmoid(beta * ((chosen - ref_c) - (rejected - ref_r))).mean().item()
    is_des = torch.tensor([float(r["type"] == "des") for r in rows])
    align = -(is_des * chosen / counts[:n]).mean().item()
    return dpo, align


@pytest.mark.parametrize("types", [("des", "gen", "gen"), ("gen", "gen", "gen")])
def test_loss_is_dpo_on_stored_reference_plus_alignment(paired_project, micro_dict, tmp_path, types):
    params = train_params(micro_dict, beta=0.5, alignment_weight=0.7)
    # Reference values far from the policy's, so the DPO term is not just log 2.
    rows = [{"image": f"data/world/pool/{i:05d}.png", "prompt": DES if t == "des" else GEN, "type": t,
             "chosen": "A red circle." if t == "des" else "red", "rejected": "A blue cross." if t == "des" else "blue",
             "ref_chosen_logp": -3.0 - i, "ref_rejected_logp": -6.0 + 2 * i} for i, t in enumerate(types)]
    trainer, collator = _trainer(paired_project, params, rows, tmp_path)
    trainer.model.eval()
    dpo, align = _hand_losses(trainer.model, collator(rows), rows, beta=0.5)
    loss = trainer.compute_loss(trainer.model, collator(rows))
    logged = trainer.loss_terms["eval"]
    assert logged["dpo_loss"][-1] == pytest.approx(dpo, rel=1e-4)
    assert logged["alignment_loss"][-1] == pytest.approx(align, rel=1e-4, abs=1e-7)
    assert loss.item() == pytest.approx(dpo + 0.7 * align, rel=1e-4)
    if "des" in types:
        assert align > 0.1  # -log-probs of a real description, averaged over 3 rows
    else:
        assert align == 0.0 and loss.item() == pytest.approx(dpo, rel=1e-6)


def test_stored_reference_equals_the_policy_before_training(paired_project, micro_dict, tmp_path):
    """pair and train tokenize identically: at θ0 the log-ratios against the stored values are 0."""
    params = train_params(micro_dict)
    rows = [json.loads(line) for line in (paired_project / "data/iter1/pairs/pairs.jsonl").read_text().splitlines()]
    trainer, collator = _trainer(paired_project, params, rows, tmp_path)
    trainer.model.eval()
    sums, _ = completion_logps(trainer.model, collator(rows))
    stored = torch.tensor([r["ref_chosen_logp"] for r in rows] + [r["ref_rejected_logp"] for r in rows])
    assert torch.allclose(sums, stored, atol=1e-4)
    trainer.compute_loss(trainer.model, collator(rows))
    assert trainer.loss_terms["eval"]["dpo_loss"][-1] == pytest.approx(math.log(2), abs=1e-5)


def test_the_trainer_holds_no_second_model(paired_project, micro_dict, tmp_path, monkeypatch):
    """trl builds a reference copy of a full-parameter VLM; sena's reference is the stored log-probs:
    building the trainer loads no weights and leaves the policy the only model of its class in memory."""
    import gc

    from transformers import PreTrainedModel

    def models() -> int:
        gc.collect()
        return sum(type(o).__name__ == model_class for o in gc.get_objects())

    model_class = type(VLM.load(paired_project / "models" / "iter0").model).__name__
    before = models()
    loads = []
    original = PreTrainedModel.from_pretrained.__func__
    monkeypatch.setattr(PreTrainedModel, "from_pretrained",
                        classmethod(lambda cls, *a, **kw: loads.append(a) or original(cls, *a, **kw)))
    params = train_params(micro_dict)
    rows = [json.loads(line) for line in (paired_project / "data/iter1/pairs/pairs.jsonl").read_text().splitlines()]
    trainer, _ = _trainer(paired_project, params, rows, tmp_path)
    assert len(loads) == 1  # the policy, loaded by the test's own VLM.load
    assert models() == before + 1  # the policy; no reference copy
    assert trainer.ref_model is None


def test_the_reference_log_probs_come_from_the_pairs_file(paired_project, micro_dict):
    """At θ0 the stored values are the policy's own (first DPO loss log 2, margin 0). Lower every stored
    chosen log-prob by 1: the first step sees a chosen log-ratio of +1, so its DPO loss is −log σ(β) and
    its reward margin β, which only the pairs file can tell the trainer."""
    pairs = paired_project / "data/iter1/pairs/pairs.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    pairs.write_text("".join(json.dumps({**r, "ref_chosen_logp": r["ref_chosen_logp"] - 1.0}) + "\n" for r in rows))
    run_train(train_params(micro_dict, beta=0.5), 1, root=paired_project)
    first = json.loads((paired_project / "data/iter1/train/summary.json").read_text())["first"]
    assert first["dpo_loss"] == pytest.approx(-F.logsigmoid(torch.tensor(0.5)).item(), abs=1e-5)
    assert first["reward_margin"] == pytest.approx(0.5, abs=1e-5)
    assert first["reward_chosen"] == pytest.approx(0.5, abs=1e-5)


def test_a_warm_up_over_the_whole_run_warms_up_over_every_step(paired_project, micro_dict):
    """train.warmup_ratio 1.0: the learning rate rises linearly from 0 over all 3 optimizer steps
    (transformers alone reads 1.0 as one step of warm-up: the second step would use the full rate)."""
    run_train(train_params(micro_dict, warmup_ratio=1.0, lr=1e-3), 1, root=paired_project)
    tsv = paired_project / "data/iter1/train/live/plots/metrics/learning_rate.tsv"
    rates = [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:]]
    assert rates == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3])  # the rate each of steps 1, 2, 3 used


def test_train_writes_a_plain_model_and_a_dvclive_log(paired_project, micro_dict):
    params = train_params(micro_dict)
    info = run_train(params, 1, root=paired_project)
    out = paired_project / "models" / "iter1"
    assert info["steps"] == 3 and info["global_batch"] == 4
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    before = load_file(paired_project / "models/iter0/model.safetensors")
    after = load_file(out / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert not any("vision_tower" in name for name in changed)  # frozen
    assert any("multi_modal_projector" in name for name in changed)
    assert any("language_model" in name for name in changed)
    vlm = VLM.load(out)  # AutoModelForImageTextToText + AutoProcessor
    assert vlm.generate([Image.open(paired_project / "data/world/pool/00000.png")], [GEN], max_new_tokens=3)

    summary = json.loads((paired_project / "data/iter1/train/summary.json").read_text())
    assert summary["first"]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)  # θ0 is the reference
    assert summary["first"]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert summary["after"]["dpo_loss"] < math.log(2)
    assert summary["after"]["reward_accuracy"] > 0.5
    assert summary["pairs_des"] == 4
    plots = paired_project / "data/iter1/train/live/plots/metrics"
    alignment = [float(line.split("\t")[-1]) for line in (plots / "alignment_loss.tsv").read_text().splitlines()[1:]]
    assert any(value > 0 for value in alignment)  # des pairs were in some batch
    for name in ("dpo_loss", "alignment_loss", "rewards/accuracies", "rewards/margins", "rewards/chosen",
                 "rewards/rejected", "learning_rate"):
        lines = (plots / f"{name}.tsv").read_text().splitlines()
        assert lines[0].startswith("step\t") and len(lines) == 1 + 3, name
    assert not (paired_project / "data/iter1/train.partial").exists()


def test_lora_output_is_merged_into_a_plain_model(paired_project, micro_dict):
    params = train_params(micro_dict, lora=True, lora_r=4, lora_alpha=8)
    run_train(params, 1, root=paired_project)
    out = paired_project / "models" / "iter1"
    assert not (out / "adapter_config.json").exists()
    before = load_file(paired_project / "models/iter0/model.safetensors")
    after = load_file(out / "model.safetensors")
    assert set(before) == set(after)  # same parameter names: no lora_A/lora_B left
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("language_model" in name and "proj" in name for name in changed)
    VLM.load(out)


def test_an_interrupted_run_resumes_from_its_checkpoint(paired_project, micro_dict, monkeypatch):
    params = train_params(micro_dict, checkpoint_steps=2)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(train_stage, "_save_model", crash)
    with pytest.raises(RuntimeError):
        run_train(params, 1, root=paired_project)
    assert not (paired_project / "models" / "iter1").exists()
    assert [p.name for p in (paired_project / "data/iter1/train.partial/checkpoints").glob("checkpoint-*")] == [
        "checkpoint-3"]
    monkeypatch.undo()
    info = run_train(params, 1, root=paired_project)
    assert info["resumed from step"] == 3
    assert (paired_project / "models/iter1/model.safetensors").is_file()


def _header_dtypes(folder):
    """{dtype name in the safetensors header: tensors} of a saved model, read without the weights."""
    header = {}
    for file in folder.glob("*.safetensors"):
        with open(file, "rb") as f:
            header.update(json.loads(f.read(int.from_bytes(f.read(8), "little"))))
    header.pop("__metadata__", None)
    counts = {}
    for entry in header.values():
        counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + 1
    return counts


def test_theta_k_is_saved_in_the_base_dtype_unless_told(paired_project, micro_dict):
    """A bf16 θ0 gives a bf16 θ1 of θ0's size (trained in fp32 under autocast); save_dtype float32 gives fp32."""
    from sena_cli.vlm import cast_saved_weights

    theta0 = paired_project / "models/iter0"
    assert _header_dtypes(theta0).keys() == {"F32"}  # the micro θ0 as built
    assert cast_saved_weights(theta0, {}, "bfloat16") is None
    assert _header_dtypes(theta0).keys() == {"BF16"}
    info = run_train(train_params(micro_dict), 1, root=paired_project)
    theta1 = paired_project / "models/iter1"
    assert info["saved as"] == "bfloat16"
    assert _header_dtypes(theta1) == _header_dtypes(theta0)
    assert json.loads((theta1 / "config.json").read_text()).get("dtype", "bfloat16") == "bfloat16"
    size = (theta1 / "model.safetensors").stat().st_size
    assert abs(size - (theta0 / "model.safetensors").stat().st_size) < 1024
    before, after = load_file(theta0 / "model.safetensors"), load_file(theta1 / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)  # trained, not copied
    VLM.load(theta1, dtype="float32")

    run_train(train_params(micro_dict, save_dtype="float32"), 1, root=paired_project)
    assert _header_dtypes(theta1).keys() == {"F32"}
    assert (theta1 / "model.safetensors").stat().st_size > 1.9 * size


def test_a_weight_float16_cannot_hold_is_refused_not_saved_as_infinity(tmp_path):
    from safetensors.torch import save_file

    from sena_cli.vlm import cast_saved_weights

    save_file({"small": torch.ones(3), "huge": torch.full((2,), 1e6)}, str(tmp_path / "model.safetensors"))
    before = (tmp_path / "model.safetensors").read_bytes()
    assert cast_saved_weights(tmp_path, {}, "float16") == "huge"
    assert (tmp_path / "model.safetensors").read_bytes() == before  # left as it was
    assert cast_saved_weights(tmp_path, {"huge": "float32"}, "float16") is None  # each weight its own dtype
    assert _header_dtypes(tmp_path) == {"F16": 1, "F32": 1}


def test_an_overflow_in_the_saved_dtype_leaves_theta_k_unwritten(paired_project, micro_dict, monkeypatch):
    import sena_cli.vlm

    monkeypatch.setattr(sena_cli.vlm, "cast_saved_weights", lambda folder, dtypes, default: "lm_head.weight")
    with pytest.raises(SenaError) as err:
        run_train(train_params(micro_dict, save_dtype="float16"), 1, root=paired_project)
    assert str(err.value) == ("θ1 not written: its weight lm_head.weight overflows float16; set train.save_dtype to "
                              f"bfloat16 or float32 and rerun `sena train --iter 1`; {paired_project / 'models/iter1'} "
                              "is left as it was")
    assert not (paired_project / "models/iter1").exists() and not list((paired_project / "models").glob(".iter1*"))


def test_the_base_dtype_is_read_per_weight_from_the_headers_and_the_most_bytes_decide(tmp_path):
    from safetensors.torch import save_file

    from sena_cli.vlm import saved_dtypes

    save_file({"big": torch.zeros(100, dtype=torch.bfloat16), "norm": torch.zeros(10),
               "ids": torch.zeros(50, dtype=torch.int64)}, str(tmp_path / "model.safetensors"))
    assert saved_dtypes(tmp_path) == ({"big": "bfloat16", "norm": "float32"}, "bfloat16")  # 200 bytes against 40
    assert saved_dtypes(tmp_path / "empty") == ({}, None)


def test_checkpoints_are_removed_after_the_save_unless_kept(paired_project, micro_dict):
    run_train(train_params(micro_dict, checkpoint_steps=2), 1, root=paired_project)
    assert not (paired_project / "data/iter1/train.partial").exists()
    assert not (paired_project / "data/iter1/train.checkpoints").exists()
    info = run_train(train_params(micro_dict, checkpoint_steps=2, keep_checkpoints=True), 1, root=paired_project)
    kept = list((paired_project / "data/iter1/train.checkpoints").iterdir())
    assert [p.name for p in kept] == ["checkpoint-3"] and info["checkpoint kept"] == str(kept[0])
    assert (kept[0] / "trainer_state.json").is_file()
    assert not (paired_project / "data/iter1/train.partial").exists()
    run_train(train_params(micro_dict, checkpoint_steps=2), 1, root=paired_project)
    assert not (paired_project / "data/iter1/train.checkpoints").exists()  # an earlier run's is not this θ1's


def test_refusals(paired_project, micro_dict):
    pairs = paired_project / "data/iter1/pairs/pairs.jsonl"
    with pytest.raises(SenaError, match="train.global_batch_size 6 cannot be reached .* multiple of 4"):
        run_train(train_params(micro_dict, global_batch_size=6, per_device_batch_size=4), 1, root=paired_project)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    del rows[1]["ref_rejected_logp"]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SenaError, match="line 2 has no 'ref_rejected_logp'"):
        run_train(train_params(micro_dict), 1, root=paired_project)
    pairs.write_text("")
    with pytest.raises(SenaError, match="no pairs to train on"):
        run_train(train_params(micro_dict), 1, root=paired_project)
    pairs.unlink()
    with pytest.raises(SenaError, match="run `sena pair --iter 1` first"):
        run_train(train_params(micro_dict), 1, root=paired_project)
    with pytest.raises(SenaError, match="--iter 0"):
        run_train(train_params(micro_dict), 0, root=paired_project)


def test_every_refusal_comes_before_any_weights_load(paired_project, micro_dict, monkeypatch):
    """At 7B a refusal after loading costs minutes and tens of GB per rank: none waits for the weights."""
    import sena_cli.vlm

    def no_load(*args, **kwargs):
        raise AssertionError("weights loaded before a refusal")

    monkeypatch.setattr(sena_cli.vlm.VLM, "load", no_load)
    with pytest.raises(SenaError, match="global_batch_size 6 cannot be reached"):
        run_train(train_params(micro_dict, global_batch_size=6, per_device_batch_size=4), 1, root=paired_project)
    monkeypatch.setattr(train_stage, "_zero3", lambda: True)  # as under a ZeRO-3 DeepSpeed launch
    with pytest.raises(SenaError, match="train.lora with DeepSpeed ZeRO-3"):
        run_train(train_params(micro_dict, lora=True), 1, root=paired_project)
    with pytest.raises(SenaError, match="other tokenization or precision settings"):
        run_train(train_params(micro_dict, max_length=300), 1, root=paired_project)
    (paired_project / "data/iter1/pairs/pairs.jsonl").write_text("")
    with pytest.raises(SenaError, match="no pairs to train on"):
        run_train(train_params(micro_dict), 1, root=paired_project)


def test_the_training_config_exists_before_the_model_loads(paired_project, micro_dict, monkeypatch):
    """DPOConfig makes transformers' DeepSpeed config under a DeepSpeed launch; from_pretrained loads
    sharded under ZeRO-3 only if it exists first. The weights load in fp32 here (DDP/autocast)."""
    import sena_cli.vlm

    order = []
    config, load = train_stage._training_config, sena_cli.vlm.VLM.load
    monkeypatch.setattr(train_stage, "_training_config", lambda *a: order.append("config") or config(*a))
    monkeypatch.setattr(sena_cli.vlm.VLM, "load",
                        lambda *a, **kw: order.append(("load", kw["dtype"])) or load(*a, **kw))
    run_train(train_params(micro_dict), 1, root=paired_project)
    assert order == ["config", ("load", "float32")]


def test_a_deepspeed_launch_gets_the_one_numeric_regime(micro_params, monkeypatch, tmp_path):
    """Under DeepSpeed, train.precision becomes DeepSpeed's torch_autocast (fp32 weights), never its
    bf16/fp16 modes, whatever the config file says; without a DeepSpeed launch nothing is set."""
    import dataclasses
    import json as json_

    assert train_stage.deepspeed_config(micro_params) is None
    config_file = tmp_path / "zero.json"
    config_file.write_text(json_.dumps({"bf16": {"enabled": True}, "fp16": {"enabled": "auto"},
                                        "zero_optimization": {"stage": 3}}))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config_file))
    for precision, autocast, dtype in (("bf16", True, "bfloat16"), ("fp16", True, "float16"),
                                       ("fp32", False, "bfloat16")):
        params = dataclasses.replace(micro_params, train=dataclasses.replace(micro_params.train, precision=precision))
        ds = train_stage.deepspeed_config(params)
        assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False
        assert ds["torch_autocast"] == {"enabled": autocast, "dtype": dtype}
        assert ds["zero_optimization"] == {"stage": 3}
        assert train_stage._hardware(params, deepspeed=True)["bf16"] is False  # the Trainer's own flags stay off
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(SenaError, match="missing.json: DeepSpeed config unreadable"):
        train_stage.deepspeed_config(micro_params)


def test_the_processor_alone_tells_the_tokenization_of_the_loaded_model(micro_project, tmp_path):
    """train checks pairs/reference.json with the processor only: it must match the loaded model's."""
    import shutil

    from sena_cli.vlm import load_preprocessor
    from sena_cli.vlm.preference import tokenization_id

    folder = micro_project / "models" / "iter0"
    assert tokenization_id(load_preprocessor(folder).chat, 2048, "fp32") == \
        tokenization_id(VLM.load(folder).chat, 2048, "fp32")
    # Without generation_config.json, from_pretrained takes the end token from config.json, not the tokenizer.
    bare = shutil.copytree(folder, tmp_path / "iter0")
    (bare / "generation_config.json").unlink()
    config = json.loads((bare / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 5
    (bare / "config.json").write_text(json.dumps(config))
    assert load_preprocessor(bare).chat.end_ids == VLM.load(bare).chat.end_ids == (5,)


def test_collective_timeout_grows_with_the_model(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    for folder, size in ((small, 10**6), (big, 10**9)):
        folder.mkdir()
        with open(folder / "model.safetensors", "wb") as f:
            f.truncate(size)
    assert train_stage.collective_timeout_s(small) == pytest.approx(30 * 60 + 0.08)
    assert train_stage.collective_timeout_s(big) == pytest.approx(30 * 60 + 80)  # 8 GB written at 100 MB/s


@pytest.mark.slow  # torchrun, 2 processes
def test_two_processes_train_what_one_trains(paired_project, micro_dict, tmp_path):
    """DDP over 2 processes (gloo on CPU) under torchrun: the same global batches (10 pairs, 2 a step,
    no padding of a last uneven batch), so the same θ1 as one process accumulating two micro-batches."""
    import shutil

    from tests.conftest import full_params_yaml

    d = {**micro_dict, "train": {"global_batch_size": 2, "per_device_batch_size": 1, "lr": 1e-3,
                                 "checkpoint_steps": 0}}
    single = shutil.copytree(paired_project, tmp_path / "single", symlinks=True)
    run_train(params_from_dict(d), 1, root=single)
    (paired_project / "params.yaml").write_text(full_params_yaml(d))
    proc = torchrun("-m", "sena_cli", "train", "--iter", "1", cwd=paired_project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((paired_project / "data/iter1/train/summary.json").read_text())
    assert summary["processes"] == 2 and summary["gradient_accumulation"] == 1 and summary["steps"] == 5
    ours = load_file(paired_project / "models/iter1/model.safetensors")
    theirs = load_file(single / "models/iter1/model.safetensors")
    assert max((ours[k] - theirs[k]).abs().max().item() for k in theirs) < 1e-5
    assert not (paired_project / "data/iter1/train.partial").exists()


def test_a_checkpoint_whose_trainer_state_was_cut_short_is_not_resumed(tmp_path):
    """A kill while trainer_state.json (a checkpoint's last file) is written leaves it empty or partial;
    resuming from it would crash inside transformers, so the run resumes from the last whole checkpoint."""
    work = tmp_path / "train.partial"
    assert train_stage._prepare_work_dir(work, "run-a") is False  # a fresh folder, stamped for this run
    for step, state in ((2, json.dumps({"global_step": 2})), (3, ""), (4, '{"global_step": 4, "log_hi')):
        (work / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (work / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (work / "checkpoints" / "checkpoint-5").mkdir()  # cut before trainer_state.json was created
    assert train_stage._prepare_work_dir(work, "run-a") is True
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert train_stage._last_checkpoint_step(work) == 2
