"""The same params and seed give byte-identical artifacts on the same machine."""


from sena_cli.config import params_from_dict
from sena_cli.stages.noise import run_noise
from sena_cli.stages.pair import run_pair
from sena_cli.stages.qa import run_qa
from sena_cli.stages.sample import run_sample
from tests.helpers import project_from


def _run(micro_project, micro_dict, root):
    project_from(micro_project, root)
    params = params_from_dict({**micro_dict, "sample": {"images_per_iteration": 5}})
    for stage in (run_sample, run_noise, run_qa, run_pair):
        stage(params, 1, root=root)
    return root


def test_two_runs_write_the_same_bytes(micro_project, micro_dict, tmp_path):
    a = _run(micro_project, micro_dict, tmp_path / "a")
    b = _run(micro_project, micro_dict, tmp_path / "b")
    files = [p.relative_to(a) for p in sorted((a / "data" / "iter1").rglob("*")) if p.is_file()]
    for wanted in ("sample/manifest.jsonl", "noised/index.jsonl", "qa/records.jsonl", "pairs/pairs.jsonl"):
        assert any(str(f).endswith(wanted) for f in files), wanted
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
