"""`sena eval` under several processes: the questions are shared, the scores and answers are a one-process run's."""

import re

import pytest

from sena_cli.config import params_from_dict
from sena_cli.stages.eval import run_eval
from tests.bench.test_judge import KEY, FakeJudge, _write_benchmarks, endpoint  # noqa: F401 - the fixture
from tests.conftest import full_params_yaml
from tests.helpers import project_from, torchrun

OUTPUTS = ("metrics/iter0.json", "data/iter0/eval/answers.jsonl")


@pytest.mark.slow  # torchrun, 2 processes
def test_two_processes_share_the_questions_and_write_what_one_writes(micro_project, micro_dict, tmp_path,
                                                                     endpoint, monkeypatch):  # noqa: F811
    files = _write_benchmarks(tmp_path)
    d = {**micro_dict, "eval": {**micro_dict["eval"], **files, "batch_size": 3,
                                "judge": {"base_url": endpoint, "model": "fake-judge-1"},
                                "benchmarks": ["world_pope", "mm_vet", "world_chair"]}}
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    single = project_from(micro_project, tmp_path / "single")
    one = run_eval(params_from_dict(d), 0, root=single)
    assert one["skipped"] == {} and len(FakeJudge.requests) == 2
    FakeJudge.requests.clear()

    project = project_from(micro_project, tmp_path / "p")
    (project / "params.yaml").write_text(full_params_yaml(d))
    proc = torchrun("-m", "sena_cli", "eval", "--iter", "0", cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in OUTPUTS:
        assert (project / out).read_bytes() == (single / out).read_bytes(), out
    assert len(FakeJudge.requests) == 2  # the judge is asked by rank 0 only
    assert not (project / "data/iter0/eval.partial").exists()
    # Both ranks generated: each prints how many batches it ran, together all of them.
    runs = sorted(map(int, re.findall(r"batches run now:? (\d+)", proc.stdout + proc.stderr)))
    assert len(runs) == 2 and min(runs) > 0 and sum(runs) == one["batches run now"], runs

