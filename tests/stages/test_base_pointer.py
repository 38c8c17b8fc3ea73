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


def _sena_base(project, base, env):
    import os
    import subprocess
    import sys

    from tests.conftest import full_params_yaml

    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(full_params_yaml({"model": {"base": base}}))
    return subprocess.run([sys.executable, "-m", "sena_cli", "base"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, timeout=120)


def test_a_hub_id_in_the_local_cache_is_stored_as_is(micro_project, tmp_path):
    """A hub id is kept as the pointer (transformers loads it from its cache); offline and cached works."""
    repo = tmp_path / "hub" / "models--llava-hf--llava-1.5-7b-hf"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    shutil.copy(micro_project / "models/iter0/config.json", repo / "snapshots" / ("0" * 40) / "config.json")
    result = _sena_base(tmp_path / "p", "llava-hf/llava-1.5-7b-hf", {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr
    pointer = json.loads((tmp_path / "p/models/iter0/pointer.json").read_text())
    assert pointer == {"base": "llava-hf/llava-1.5-7b-hf", "kind": "hub"}
    assert resolve_model(tmp_path / "p/models/iter0") == "llava-hf/llava-1.5-7b-hf"


def test_an_unreachable_hub_id_fails_fast_in_one_line(tmp_path):
    import time

    started = time.perf_counter()
    result = _sena_base(tmp_path / "p", "llava-hf/llava-1.5-7b-hf", {"HF_HUB_CACHE": str(tmp_path / "empty")})
    assert result.returncode != 0 and time.perf_counter() - started < 60
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the local Hugging Face cache" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "p" / "models").exists()


def test_a_relative_checkpoint_path_works_in_another_clone(micro_project, tmp_path):
    for clone in ("a", "b"):
        shutil.copytree(micro_project / "models" / "iter0", tmp_path / clone / "checkpoints" / "mine")
        run_base(params_from_dict({"model": {"base": "checkpoints/mine"}}), root=tmp_path / clone)
    pointer = (tmp_path / "a/models/iter0/pointer.json").read_bytes()
    assert pointer == (tmp_path / "b/models/iter0/pointer.json").read_bytes()  # nothing machine-specific
    assert resolve_model(tmp_path / "b/models/iter0") == tmp_path / "b" / "checkpoints" / "mine"
    shutil.rmtree(tmp_path / "b" / "checkpoints")
    with pytest.raises(SenaError, match="not there"):
        resolve_model(tmp_path / "b/models/iter0")


@pytest.mark.parametrize("base, message", [
    ("./missing-folder", "model directory not found"),
    ("not a model", "model directory not found"),
    ("models/iter0", "inside the project's models/ folder"),
])
def test_bad_model_base_is_refused(micro_project, tmp_path, base, message):
    shutil.copytree(micro_project / "models" / "iter0", tmp_path / "models" / "iter0")
    before = sorted(p.name for p in (tmp_path / "models" / "iter0").iterdir())
    with pytest.raises(SenaError, match=message):
        run_base(params_from_dict({"model": {"base": base}}), root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "models" / "iter0").iterdir()) == before  # θ0 untouched


def test_a_checkpoint_that_is_not_a_vlm_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path / "llm")
    with pytest.raises(SenaError, match="model type 'llama' is not an image-text-to-text model"):
        run_base(params_from_dict({"model": {"base": str(tmp_path / "llm")}}), root=tmp_path / "p")


def test_a_checkpoint_whose_code_is_not_in_transformers_is_refused_by_base(micro_project, tmp_path):
    """An `auto_map` checkpoint (its own modelling code) is refused by `sena base` itself, not later by
    `qa`, unless model.trust_remote_code says the user trusts it."""
    checkpoint = tmp_path / "custom"
    shutil.copytree(micro_project / "models" / "iter0", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(model_type="my_vlm", auto_map={"AutoConfig": "modeling_my_vlm.MyConfig"})
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(SenaError, match=r"the checkpoint's code is not part of transformers \(auto_map\); sena runs "
                                        r"it only with model.trust_remote_code: true"):
        run_base(params_from_dict({"model": {"base": str(checkpoint)}}), root=tmp_path / "p")
    assert not (tmp_path / "p" / "models").exists()
