import hashlib
import json

import torch
from safetensors.torch import load_file

from sena_cli.config import params_from_dict
from sena_cli.method.noise import corrupt
from sena_cli.stages.noise import run_noise
from sena_cli.stages.sample import run_sample
from sena_cli.vlm import load_processor


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_noise_stores_the_corrupted_processor_tensors(micro_project, micro_dict):
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
    index = [json.loads(line) for line in (out / "index.jsonl").open()]
    manifest = [json.loads(line) for line in (micro_project / "data/iter1/sample/manifest.jsonl").open()]
    assert [r["id"] for r in index] == [r["id"] for r in manifest]
    processor = load_processor(micro_project / "models" / "iter0")
    from PIL import Image

    rec = manifest[0]
    clean = processor.image_processor(images=[Image.open(micro_project / rec["path"]).convert("RGB")],
                                      return_tensors="pt")["pixel_values"][0]
    stored = load_file(out / index[0]["shard"])[index[0]["key"]]
    assert torch.equal(stored, corrupt(clean, params.noise, rec["id"]))
    assert not torch.allclose(stored, clean, atol=0.1)


def test_image_space_option_writes_pngs(micro_project, micro_dict):
    params = params_from_dict({**micro_dict, "loop": {"iterations": 2},
                               "sample": {"pool": "data/world/pool", "images_per_iteration": 3},
                               "noise": {"space": "image", "previews": 1}})
    run_sample(params, 2, root=micro_project)
    run_noise(params, 2, root=micro_project)
    index = [json.loads(line) for line in (micro_project / "data/iter2/noised/index.jsonl").open()]
    assert all((micro_project / "data/iter2/noised" / r["image"]).is_file() for r in index)
