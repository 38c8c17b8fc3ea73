"""The data stages on a second architecture: Idefics3 (SmolVLM), whose pixel_values are 5-D."""

import json
import shutil

import torch
from PIL import Image
from safetensors.torch import load_file

from sena_cli.artifacts import read_jsonl, write_jsonl
from sena_cli.config import params_from_dict
from sena_cli.stages.noise import run_noise
from sena_cli.stages.pair import run_pair
from sena_cli.stages.qa import run_qa
from sena_cli.stages.sample import run_sample
from sena_cli.vlm import VLM
from tests.helpers import build_tiny_idefics3


def test_sample_noise_qa_pair_on_idefics3(micro_project, micro_dict, tmp_path):
    shutil.copytree(micro_project / "data" / "world" / "pool", tmp_path / "pool")
    build_tiny_idefics3(tmp_path / "models" / "iter0")
    params = params_from_dict({**micro_dict, "loop": {"iterations": 1},
                               "sample": {"pool": "pool", "images_per_iteration": 5},
                               "qa": {"batch_size": 2, "max_new_tokens": 6, "check_with_image": False}})
    run_sample(params, 1, root=tmp_path)
    run_noise(params, 1, root=tmp_path)
    index = read_jsonl(tmp_path / "data/iter1/noised/index.jsonl")
    stored = load_file(tmp_path / "data/iter1/noised" / index[0]["shard"])[index[0]["key"]]
    assert stored.dim() == 4  # (images, C, H, W) per sample: 5-D once batched
    info = run_qa(params, 1, root=tmp_path)
    assert info["images"] == 5
    stats = json.loads((tmp_path / "data/iter1/qa/stats.json").read_text())
    assert stats["images_with_questions"] + stats["dropped_no_question"] + stats["dropped_word"] == 5
    run_pair(params, 1, root=tmp_path)
    assert (tmp_path / "data/iter1/pairs/pairs.jsonl").is_file()

    vlm = VLM.load(tmp_path / "models" / "iter0")
    names = sorted(p.name for p in (tmp_path / "pool").iterdir())[:3]
    images = [Image.open(tmp_path / "pool" / n).convert("RGB") for n in names]
    texts = ["Describe the image concisely.", "What color is the circle?",
             "Ask one question about the content of this image."]
    batched = vlm.generate(images, texts, max_new_tokens=5, batch_size=3)
    assert batched == [vlm.generate([im], [t], max_new_tokens=5, batch_size=1)[0] for im, t in zip(images, texts)]
    noisy = [torch.randn_like(stored) for _ in images]
    assert len(vlm.generate(images, texts, max_new_tokens=5, batch_size=3, pixel_values=noisy)) == 3
    rows = [{"image": n, "prompt": t, "chosen": c, "rejected": "square", "type": "gen"}
            for n, t, c in zip(names, texts, ["red", "blue", "Yes"])]
    scores = vlm.preference_logps(rows, lambda name: Image.open(tmp_path / "pool" / name).convert("RGB"))
    assert all(c < 0 and r < 0 and c <= c_mean for c, c_mean, r, _ in scores)


def test_train_on_idefics3_freezes_its_vision_model(micro_project, micro_dict, tmp_path):
    from sena_cli.stages.train import run_train

    shutil.copytree(micro_project / "data" / "world" / "pool", tmp_path / "pool")
    build_tiny_idefics3(tmp_path / "models" / "iter0")
    write_jsonl(tmp_path / "data/iter1/qa/records.jsonl", [
        {"id": str(i), "image": f"pool/{i:05d}.png", "type": "gen" if i % 2 else "des",
         "prompt": "What color is the circle?", "enhanced_answer": "red", "corrupted_answer": "blue"}
        for i in range(4)])
    params = params_from_dict({**micro_dict, "train": {"global_batch_size": 2, "per_device_batch_size": 2,
                                                       "lr": 1e-3, "checkpoint_steps": 0}})
    run_pair(params, 1, root=tmp_path)
    info = run_train(params, 1, root=tmp_path)
    assert info["steps"] == 2
    before = load_file(tmp_path / "models/iter0/model.safetensors")
    after = load_file(tmp_path / "models/iter1/model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and not any("vision_model" in name for name in changed)
    assert any("connector" in name for name in changed)
    VLM.load(tmp_path / "models" / "iter1")
