"""With a real checkpoint, models/iter0 is a pointer to it, and every stage loads θ0 through it."""

import json
import shutil

import pytest

from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.base import run_base
from sena_cli.vlm import VLM, resolve_model


def test_a_local_checkpoint_becomes_a_pointer_that_loads(micro_project, tmp_path):
    checkpoint = tmp_path / "my-checkpoint"
    shutil.copytree(micro_project / "models" / "iter0", checkpoint)
    project = tmp_path / "project"
    run_base(params_from_dict({"model": {"base": str(checkpoint)}}), root=project)
    files = sorted(p.name for p in (project / "models" / "iter0").iterdir())
    assert files == ["pointer.json"]  # no weights copied
    assert resolve_model(project / "models" / "iter0") == checkpoint
    vlm = VLM.load(project / "models" / "iter0")
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"


def test_a_hub_id_is_stored_as_is(tmp_path):
    run_base(params_from_dict({"model": {"base": "llava-hf/llava-1.5-7b-hf"}}), root=tmp_path)
    pointer = json.loads((tmp_path / "models/iter0/pointer.json").read_text())
    assert pointer == {"base": "llava-hf/llava-1.5-7b-hf"}
    assert resolve_model(tmp_path / "models/iter0") == "llava-hf/llava-1.5-7b-hf"


@pytest.mark.parametrize("base, message", [
    ("./missing-folder", "model directory not found"),
    ("not a model", "not a model folder nor a hub id"),
])
def test_bad_model_base_is_refused(tmp_path, base, message):
    with pytest.raises(SenaError, match=message):
        run_base(params_from_dict({"model": {"base": base}}), root=tmp_path)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
