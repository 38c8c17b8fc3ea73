"""Every stage on the model families users bring: LLaVA-1.5, Qwen2-VL and SmolVLM (sena_fixtures/families.py).

Each family's tiny checkpoint (real processor class and published settings, real subword
tokenizer, published chat template) runs sample -> noise -> qa -> pair -> train -> eval on
images of varied sizes and aspect ratios (portrait, panorama, tiny, huge), once per family;
the tests below check what each stage must guarantee on it. docs/models.md maps each
family x stage cell to the test that proves it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import open_rgb
from sena_cli.config import Params, params_from_dict
from sena_cli.errors import SenaError
from sena_cli.frame import read_jsonl
from sena_cli.method.noise import Corruption
from sena_fixtures.families import FAMILIES, PUBLISHED_DTYPES, TEST_PROCESSOR_SETTINGS
from tests.conftest import full_params_yaml
from tests.helpers import torchrun

VARIED = {"portrait": (240, 640), "panorama": (1200, 150), "tiny": (8, 8), "huge": (3000, 2000),
          "square": (400, 400), "photo": (640, 480)}


@dataclass
class FamilyRun:
    name: str
    root: Path
    overrides: dict
    params: Params
    infos: dict


def family_overrides(name: str, micro_dict: dict, **sections) -> dict:
    d = {**micro_dict, "loop": {"iterations": 1}, "model": {"processor": TEST_PROCESSOR_SETTINGS[name]},
         "sample": {"pool": "pool", "images_per_iteration": len(VARIED)},
         "qa": {"batch_size": 3, "max_new_tokens": 8, "self_questioning": False},
         "pair": {"batch_size": 2},
         "train": {"global_batch_size": 2, "per_device_batch_size": 2, "lr": 1e-4, "checkpoint_steps": 0},
         "eval": {**micro_dict["eval"], "max_new_tokens": 6}}
    for key, value in sections.items():
        d[key] = {**d.get(key, {}), **value}
    return d


def make_project(name: str, root: Path, micro_project: Path, overrides: dict) -> Path:
    """A project with the family's θ0, a pool of varied images and the micro world's eval set."""
    (root / "pool").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for image, (w, h) in VARIED.items():
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(root / "pool" / f"{image}.png")
    (root / "data").mkdir()
    # hard links, not a symlink: a pool reached through a link out of the project is refused (it would not
    # travel); the files are shared all the same, read-only use
    shutil.copytree(micro_project / "data" / "world", root / "data" / "world", copy_function=os.link)
    FAMILIES[name](root / "models" / "iter0")
    (root / "params.yaml").write_text(full_params_yaml(overrides))
    return root


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory, micro_project, micro_dict) -> FamilyRun:
    from sena_cli.stages.eval import run_eval
    from sena_cli.stages.noise import run_noise
    from sena_cli.stages.pair import run_pair
    from sena_cli.stages.qa import run_qa
    from sena_cli.stages.sample import run_sample
    from sena_cli.stages.train import run_train

    name = request.param
    overrides = family_overrides(name, micro_dict)
    root = make_project(name, tmp_path_factory.mktemp(name), micro_project, overrides)
    params = params_from_dict(overrides)
    infos = {stage.__name__: stage(params, 1, root=root)
             for stage in (run_sample, run_noise, run_qa, run_pair, run_train, run_eval)}
    return FamilyRun(name, root, overrides, params, infos)


def _vlm(run: FamilyRun, k: int = 0):
    from sena_cli.vlm import VLM

    return VLM.from_params(run.params.model, layout.model_dir(k, run.root), dtype="float32",
                           device=torch.device("cpu"))


def _collator(run: FamilyRun, vlm):
    from sena_cli.vlm.preference import PreferenceCollator

    return PreferenceCollator(vlm.processor, vlm.chat, lambda p: open_rgb(run.root / p), 2048)


# ---------------------------------------------------------------- every stage


def test_every_stage_runs_on_images_of_every_shape(family):
    run, infos = family, family.infos
    assert infos["run_sample"]["images"] == len(VARIED) and infos["run_sample"]["skipped"] == 0
    noised = read_jsonl(run.root / "data/iter1/noised/index.jsonl")
    assert len(noised) == len(VARIED)
    if run.name != "llava-1.5":  # dynamic resolution / tiling: the picture geometry follows the image
        assert len({json.dumps(r["pictures"]) for r in noised}) > 1
    assert infos["run_qa"]["images"] == len(VARIED) and infos["run_qa"]["records"] > 0
    assert infos["run_pair"]["pairs"] > 0
    assert infos["run_train"]["steps"] >= 1
    trained = _vlm(family, k=1)  # θ1 loads like a hub checkpoint
    assert type(trained.model).__name__ == type(_vlm(family).model).__name__
    metrics = json.loads(layout.metrics_file(1, run.root).read_text())
    assert {"pope", "chair", "world_vqa"} <= set(metrics)


def test_training_keeps_the_vision_tower_frozen_and_trains_the_projector(family):
    from safetensors.torch import load_file

    before = load_file(family.root / "models/iter0/model.safetensors")
    after = load_file(family.root / "models/iter1/model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    vision = re.compile(r"(vision_tower|vision_model|visual)\.(?!merger)")
    assert changed and not any(vision.search(name) for name in changed)
    projector = {"llava-1.5": "multi_modal_projector", "qwen2-vl": "visual.merger", "smolvlm": "connector"}
    assert any(projector[family.name] in name for name in changed)


# ---------------------------------------------------------------- one tokenization


def test_prompts_are_the_tokens_generation_sees_and_answers_end_with_the_end_token(family):
    vlm = _vlm(family)
    pairs = read_jsonl(family.root / "data/iter1/pairs/pairs.jsonl")[:2]
    batch = _collator(family, vlm)(pairs)
    tok = vlm.processor.tokenizer
    for j, pair in enumerate(pairs + pairs):
        real = batch["attention_mask"][j].bool()
        ids, completion = batch["input_ids"][j][real], batch["completion_mask"][j][real].bool()
        assert ids[completion][-1].item() == vlm.chat.end_ids[0]  # the last label is the end token
        assert (ids[completion] == vlm.chat.end_ids[0]).sum() == 1
        generation = vlm.pre.inputs([open_rgb(family.root / pair["image"])], [vlm.chat.prompt(pair["prompt"])])
        assert ids[~completion].tolist() == generation["input_ids"][0].tolist()
    expected_end = {"llava-1.5": "</s>", "qwen2-vl": "<|im_end|>", "smolvlm": "<end_of_utterance>"}[family.name]
    assert tok.convert_ids_to_tokens(vlm.chat.end_ids[0]) == expected_end
    start = batch["input_ids"][0][batch["attention_mask"][0].bool()][:2].tolist()
    if tok.bos_token_id is not None:  # BOS once: added by LLaVA's Llama tokenizer, written by SmolVLM's template
        assert start[0] == tok.bos_token_id and start[1] != tok.bos_token_id


def _step0_log_ratios(run: FamilyRun, params: Params, root: Path) -> list[float]:
    """|log πθ0 - stored log πref| per answer, computed the way trl's DPO loss computes it at step 0."""
    from sena_cli.stages import train as train_stage

    pairs = train_stage.read_pairs(1, root)
    vlm = _vlm(run)
    config = train_stage._training_config(params, root / "work", 1, 60)
    trainer = train_stage._build_trainer(params, 1, root, vlm, pairs, config, root / "work", False,
                                         lambda name, total: (lambda n: None), True)
    diffs = []
    for start in range(0, len(pairs), 2):
        batch = trainer.data_collator(pairs[start : start + 2])
        inputs = {k: v for k, v in batch.items() if k not in ("completion_mask", "ref_chosen_logps",
                                                               "ref_rejected_logps", "is_des")}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with torch.no_grad(), trainer.compute_loss_context_manager(), trainer.accelerator.autocast():
            logps = trainer.model(**inputs, labels=labels, use_cache=False, fused_lm_head=True).log_probs.sum(1)
        diffs += (logps.float() - torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])).abs().tolist()
    return diffs


def test_step0_log_ratios_are_zero_on_every_pair(family):
    diffs = _step0_log_ratios(family, family.params, family.root)
    assert diffs and max(diffs) == 0.0
    summary = json.loads((family.root / "data/iter1/train/summary.json").read_text())
    assert summary["first"]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_bf16_reference_and_training_share_one_regime(family, tmp_path):
    """train.precision bf16 on CPU: pair's reference under fp32 weights + bf16 autocast equals the
    trainer's step 0 exactly; the other regime (bf16 weights) would not."""
    from sena_cli.stages.pair import run_pair

    root = shutil.copytree(family.root, tmp_path / "p", symlinks=True)
    params = params_from_dict(family_overrides(family.name, family.overrides, train={"precision": "bf16"}))
    run_pair(params, 1, root=root)
    assert json.loads((root / "data/iter1/pairs/reference.json").read_text())["precision"] == "bf16"
    assert max(_step0_log_ratios(family, params, root)) == 0.0
    # the regime matters: bf16 weights give other log-probs than fp32 weights under bf16 autocast
    from sena_cli.vlm.preference import completion_logps

    vlm = _vlm(family)
    pairs = read_jsonl(root / "data/iter1/pairs/pairs.jsonl")[:2]
    batch = _collator(family, vlm)(pairs)
    sums, _ = completion_logps(vlm.model.to(torch.bfloat16), batch)
    stored = torch.tensor([p["ref_chosen_logp"] for p in pairs] + [p["ref_rejected_logp"] for p in pairs])
    assert (sums - stored).abs().max() > 0


def test_train_refuses_pairs_made_under_other_tokenization_settings(family, tmp_path):
    from sena_cli.stages.train import run_train

    root = shutil.copytree(family.root, tmp_path / "p", symlinks=True)
    shutil.rmtree(root / "models" / "iter1")
    params = params_from_dict(family_overrides(family.name, family.overrides, train={"max_length": 4096}))
    with pytest.raises(SenaError, match="rerun `sena pair --iter 1`"):
        run_train(params, 1, root=root)
    assert not (root / "models" / "iter1").exists()


def test_theta1_is_saved_in_the_dtype_of_a_16_bit_base(family, tmp_path):
    """θ0 in the family's published dtype (fp16 LLaVA-1.5, bf16 Qwen2-VL and SmolVLM): θ1 is saved in it,
    every weight in θ0's dtype and θ0's size; train.save_dtype float32 (the old behaviour) doubles it."""
    from sena_cli.stages.train import run_train
    from sena_cli.vlm import cast_saved_weights, saved_dtypes

    root = shutil.copytree(family.root, tmp_path / "p", symlinks=True)
    shutil.rmtree(root / "models" / "iter1")
    theta0, theta1 = root / "models/iter0", root / "models/iter1"
    assert cast_saved_weights(theta0, {}, PUBLISHED_DTYPES[family.name]) is None

    def size(folder):
        return sum(p.stat().st_size for p in folder.glob("*.safetensors"))

    run_train(params_from_dict(family_overrides(family.name, family.overrides, train={"save_dtype": "float32"})),
              1, root=root)
    fp32 = size(theta1)
    assert set(saved_dtypes(theta1)[0].values()) == {"float32"}
    run_train(family.params, 1, root=root)
    assert saved_dtypes(theta1) == saved_dtypes(theta0) and saved_dtypes(theta1)[1] == PUBLISHED_DTYPES[family.name]
    assert abs(size(theta1) - size(theta0)) < 1024 and fp32 > 1.9 * size(theta1)
    from sena_cli.vlm import VLM

    VLM.from_params(family.params.model, theta1, dtype="auto", device=torch.device("cpu"))  # loads as saved
    print(f"\n{family.name} {PUBLISHED_DTYPES[family.name]} θ0 {size(theta0):,} B; θ1 saved float32 {fp32:,} B, "
          f"saved as base {size(theta1):,} B")


# ---------------------------------------------------------------- corrupted inputs


def test_corrupted_inputs_are_recomputed_bit_identical_at_a_hundredth_of_the_storage(family):
    from sena_cli.vlm import Preprocessor

    noised_dir = family.root / "data/iter1/noised"
    index = read_jsonl(noised_dir / "index.jsonl")
    pre = Preprocessor.from_params(family.params.model, layout.model_dir(0, family.root))
    manifest = {r["id"]: r for r in read_jsonl(family.root / "data/iter1/sample/manifest.jsonl")}
    pixel_bytes = sum(4 * sum(math.prod(s) for s in r["pictures"]) for r in index)
    stored = sum(p.stat().st_size for p in noised_dir.iterdir() if p.is_file())  # previews are for people
    assert stored <= pixel_bytes / 100
    corruption = Corruption(family.params, 1, family.root)
    for rec in index:
        clean = pre.pictures(open_rgb(family.root / manifest[rec["id"]]["path"]))
        noised = corruption.transform([clean], [rec["id"]])[0]  # raises unless bit-identical to noise's
        assert [list(p.shape) for p in noised] == rec["pictures"]
        assert all(not torch.allclose(a, b, atol=0.1) for a, b in zip(clean, noised))
    tampered = dict(index[0], sha256="0" * 64)
    corruption.records[tampered["id"]] = tampered
    with pytest.raises(SenaError, match="rerun `sena noise --iter 1`"):
        corruption.transform([pre.pictures(open_rgb(family.root / manifest[tampered["id"]]["path"]))],
                             [tampered["id"]])


def test_pixel_layout_round_trips_and_qwen_still_images_get_one_noise(family):
    from sena_cli.method.noise import corrupt_pictures

    vlm = _vlm(family)
    images = [open_rgb(family.root / "pool" / f"{n}.png") for n in ("portrait", "panorama")]
    inputs = vlm.pre.inputs(images, [vlm.chat.prompt("Describe the image.")] * 2)
    pictures = vlm.pre.layout.pictures(inputs)
    assert torch.equal(vlm.pre.layout.with_pictures(inputs, pictures), inputs["pixel_values"])
    noised = [corrupt_pictures(p, family.params.noise, str(i)) for i, p in enumerate(pictures)]
    written = vlm.pre.layout.with_pictures(inputs, noised)
    assert [[q.shape for q in p] for p in vlm.pre.layout.pictures({**inputs, "pixel_values": written})] == \
        [[q.shape for q in p] for p in noised]
    if family.name == "qwen2-vl":  # each patch row holds the image twice (temporal patch 2): same noise
        rows = written.reshape(written.shape[0], 3, 2, 14, 14)
        assert torch.equal(rows[:, :, 0], rows[:, :, 1])
        assert pictures[0][0].shape[-2:] == tuple(14 * g for g in inputs["image_grid_thw"][0, 1:].tolist())
    if family.name == "smolvlm":  # image splitting: the panorama has more tiles than the global view
        assert len(pictures[1]) > 1


# ---------------------------------------------------------------- limits and processes


def test_over_long_sequences_are_refused_before_any_forward_pass(family, tmp_path, monkeypatch):
    """With the family's published processor settings and a huge photo, pair refuses in one line
    naming train.max_length and model.processor, before the model runs once."""
    from sena_cli.stages.pair import run_pair
    from sena_cli.vlm import preference

    root = shutil.copytree(family.root, tmp_path / "p", symlinks=True)
    limit = {"llava-1.5": 500, "qwen2-vl": 2048, "smolvlm": 1000}[family.name]  # qwen2-vl: the paper's 2048
    params = params_from_dict(family_overrides(family.name, family.overrides, model={"processor": {}},
                                               train={"max_length": limit}))
    monkeypatch.setattr(preference, "completion_logps",
                        lambda *a, **k: pytest.fail("a forward pass ran before the length check"))
    with pytest.raises(SenaError, match=r"train\.max_length = \d+ tokens.*model\.processor"):
        run_pair(params, 1, root=root)


def test_qa_under_two_processes_writes_what_one_writes(family, tmp_path):
    root = shutil.copytree(family.root, tmp_path / "p", symlinks=True)
    shutil.rmtree(root / "data" / "iter1" / "qa")
    result = torchrun("-m", "sena_cli", "qa", "--iter", "1", cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "data/iter1/qa/records.jsonl").read_bytes() == \
        (family.root / "data/iter1/qa/records.jsonl").read_bytes()


# ---------------------------------------------------------------- LLaVA-1.5 as it was trained

VICUNA_V1_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the human's questions. USER: <image>\n{} ASSISTANT:")


def expand2square(image: Image.Image, background: tuple) -> Image.Image:
    """LLaVA's llava/mm_utils.py expand2square, as the reference runs it (image_aspect_ratio pad)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


@pytest.mark.parametrize("family", ["llava-1.5"], indirect=True)
def test_llava15_is_fed_as_trained_padded_to_a_square_with_the_vicuna_v1_conversation(family, micro_project):
    """llava-1.5's defaults: the vicuna_v1 prompt, answers ending </s>, non-square images padded
    (not centre-cropped); each turned off by its own key; the embedded θ0 keeps its own format."""
    from transformers import CLIPImageProcessor

    from sena_cli.vlm import load_preprocessor

    vlm = _vlm(family)
    assert vlm.chat.prompt("What is it?") == VICUNA_V1_PROMPT.format("What is it?")
    assert vlm.chat.completion("What is it?", "A cat.") == " A cat.</s>"
    # the pixels of a portrait: the independent expand2square + the checkpoint's processor, no crop
    clip = CLIPImageProcessor.from_pretrained(layout.model_dir(0, family.root))
    for name in ("portrait", "panorama"):
        image = open_rgb(family.root / "pool" / f"{name}.png")
        padded = expand2square(image, tuple(int(x * 255) for x in clip.image_mean))
        expected = clip(padded, do_center_crop=False, return_tensors="pt").pixel_values[0]
        assert expected.shape == (3, 336, 336)
        assert torch.equal(vlm.pre.pictures(image)[0], expected)
        cropped = load_preprocessor(layout.model_dir(0, family.root), pad_to_square="off").pictures(image)[0]
        assert not torch.equal(cropped, expected)
        assert torch.equal(cropped, clip(image, return_tensors="pt").pixel_values[0])
    # the stages ran with it: noise recorded the padded pictures' identity, θ1 is saved as fed
    off = load_preprocessor(layout.model_dir(0, family.root), conversation="checkpoint")
    assert off.chat.prompt("What is it?") == "USER: <image>\nWhat is it? ASSISTANT:"
    assert load_preprocessor(layout.model_dir(1, family.root), conversation="checkpoint").chat.prompt("Hi") == \
        VICUNA_V1_PROMPT.format("Hi")
    embedded = load_preprocessor(micro_project / "models" / "iter0")
    assert "A chat between" not in embedded.chat.prompt("Hi")
    assert type(embedded.processor.image_processor).__name__ == "CLIPImageProcessor"
    with pytest.raises(SenaError, match="model.conversation: vicuna_v1"):
        from sena_fixtures.families import build_qwen2vl

        load_preprocessor(build_qwen2vl(family.root.parent / "qwen-for-vicuna"), conversation="vicuna_v1")
