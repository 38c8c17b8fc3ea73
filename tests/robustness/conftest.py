"""The project the robustness tests break in turn (each test puts back what it broke)."""

import shutil

import pytest

from sena_cli.artifacts import read_jsonl, write_jsonl
from sena_cli.config import params_from_dict
from sena_cli.stages.noise import run_noise
from sena_cli.stages.pair import run_pair
from sena_cli.stages.sample import run_sample
from tests.conftest import full_params_yaml


@pytest.fixture(scope="package")
def project(micro_project, micro_dict, tmp_path_factory):
    """A micro project with iteration 1 sampled, corrupted, asked (scripted records) and paired."""
    root = tmp_path_factory.mktemp("robust")
    shutil.copytree(micro_project / "data" / "world", root / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    d = {**micro_dict, "sample": {"images_per_iteration": 6}}
    (root / "params.yaml").write_text(full_params_yaml(d))
    params = params_from_dict(d)
    run_sample(params, 1, root=root)
    run_noise(params, 1, root=root)
    write_jsonl(root / "data/iter1/qa/records.jsonl", [{
        "id": m["id"], "image": m["path"], "type": "gen", "prompt": "What color is the circle?",
        "enhanced_answer": "red", "corrupted_answer": "blue"}
        for m in read_jsonl(root / "data/iter1/sample/manifest.jsonl")])
    run_pair(params, 1, root=root)
    return root
