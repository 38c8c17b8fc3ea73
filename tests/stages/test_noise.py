import hashlib
import json

import pytest
import torch

from sena_cli.artifacts import open_rgb
from sena_cli.config import params_from_dict
from sena_cli.frame import read_jsonl
from sena_cli.method.noise import Corruption, corrupt, corrupt_image, pictures_sha256
from sena_cli.stages.noise import run_noise
from sena_cli.stages.sample import run_sample
from sena_cli.vlm import load_preprocessor


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_noise_records_what_defines_each_corrupted_tensor(micro_project, micro_dict):
    params = params_from_dict({**micro_dict, "loop": {"iterations": 2},
                               "sample": {"pool": "data/world/pool", "images_per_iteration": 6},
                               "noise": {"previews": 2}})
    run_sample(params, 1, root=micro_project)
    info = run_noise(params, 1, root=micro_project)
    out = micro_project / "data" / "iter1" / "noised"
    first = _digest(out)
    run_noise(params, 1, root=micro_project)
    assert _digest(out) == first  # bit-identical rerun
    assert info["images"] == 6 and len(list((out / "previews").iterdir())) == 2
    assert not list(out.glob("*.safetensors"))  # tensors are recomputed by qa, not stored
    index = read_jsonl(out / "index.jsonl")
    manifest = read_jsonl(micro_project / "data/iter1/sample/manifest.jsonl")
    assert [r["id"] for r in index] == [r["id"] for r in manifest]
    pre = load_preprocessor(micro_project / "models" / "iter0")
    rec = manifest[0]
    clean = pre.pictures(open_rgb(micro_project / rec["path"]))
    expected = corrupt(clean[0], params.noise, rec["id"])  # the method's x_t of the model's own tensor
    assert index[0]["pictures"] == [list(clean[0].shape)] == [[3, 48, 48]]
    assert index[0]["sha256"] == pictures_sha256([expected])
    assert not torch.allclose(expected, clean[0], atol=0.1)
    assert json.loads((out / "info.json").read_text())["sqrt_alpha_bar"] == pytest.approx(0.7342, abs=1e-4)


def test_image_space_option_records_the_corrupted_images(micro_project, micro_dict):
    params = params_from_dict({**micro_dict, "loop": {"iterations": 2},
                               "sample": {"pool": "data/world/pool", "images_per_iteration": 3},
                               "noise": {"space": "image", "previews": 1}})
    run_sample(params, 2, root=micro_project)
    run_noise(params, 2, root=micro_project)
    index = read_jsonl(micro_project / "data/iter2/noised/index.jsonl")
    manifest = read_jsonl(micro_project / "data/iter2/sample/manifest.jsonl")
    corruption = Corruption(params, 2, micro_project)
    for rec, item in zip(index, manifest):
        clean = open_rgb(micro_project / item["path"])
        noised = corruption.image(rec["id"], clean)  # checked against the recorded sha256
        assert noised.size == clean.size and list(noised.size) == rec["size"]
        assert corrupt_image(clean, params.noise, rec["id"]).tobytes() == noised.tobytes()
