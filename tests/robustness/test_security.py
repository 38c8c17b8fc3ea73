"""Security defaults: no remote code unless asked, safetensors only, the judge key only in the request."""


from typer.testing import CliRunner

from sena_cli.cli import app
from sena_cli.config import Params
from sena_cli.vlm import VLM
from tests.bench.test_judge import KEY, FakeJudge, _write_benchmarks, endpoint  # noqa: F401 - fixture
from tests.conftest import full_params_yaml
from tests.helpers import project_from


def test_models_load_without_remote_code_and_from_safetensors_only(micro_project, monkeypatch):
    import transformers

    seen = {}
    original = transformers.AutoModelForImageTextToText.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    assert Params().model.trust_remote_code is False
    VLM.load(micro_project / "models" / "iter0")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_the_judge_key_never_reaches_output_or_files(micro_project, micro_dict, tmp_path, endpoint,  # noqa: F811
                                                      monkeypatch):
    project = project_from(micro_project, tmp_path / "project")
    files = _write_benchmarks(tmp_path)
    eval_params = {**micro_dict["eval"], **files, "benchmarks": ["llava_bench", "mmhal"],
                   "judge": {"base_url": endpoint, "model": "fake-judge-1"}}
    (project / "params.yaml").write_text(full_params_yaml({**micro_dict, "eval": eval_params}))
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["eval", "--iter", "0"])
    assert result.exit_code == 0, result.output
    assert "fake-judge-1" in result.output and KEY not in result.output
    assert FakeJudge.requests and all(r["auth"] == f"Bearer {KEY}" for r in FakeJudge.requests)
    for path in project.rglob("*"):
        if path.is_file() and "world" not in path.parts:
            assert KEY not in path.read_text(errors="ignore"), path
