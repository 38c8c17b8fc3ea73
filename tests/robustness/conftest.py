"""The project the robustness tests break in turn (each test puts back what it broke)."""

import shutil

import pytest

from sena_cli.config import params_from_dict
from sena_fixtures.micro import paired_iteration
from tests.conftest import full_params_yaml


@pytest.fixture(scope="package")
def project(micro_project, micro_dict, tmp_path_factory):
    """A micro project with iteration 1 sampled, corrupted, asked (scripted records) and paired."""
    root = tmp_path_factory.mktemp("robust")
    shutil.copytree(micro_project / "data" / "world", root / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    d = {**micro_dict, "sample": {"images_per_iteration": 6}}
    (root / "params.yaml").write_text(full_params_yaml(d))
    paired_iteration(params_from_dict(d), root, "gen", "What color is the circle?", "red", "blue")
    return root
