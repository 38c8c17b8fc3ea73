import json

from sena_cli.config import params_from_dict
from sena_cli.stages.noise import run_noise
from sena_cli.stages.qa import run_qa
from sena_cli.stages.sample import run_sample


def qa_params(micro_dict, **qa):
    return params_from_dict({**micro_dict, "loop": {"iterations": 3},
                             "sample": {"pool": "data/world/pool", "images_per_iteration": 6},
                             "qa": {"batch_size": 4, "max_new_tokens": 16, **qa}})


def test_qa_writes_des_and_gen_records(micro_project, micro_dict):
    params = qa_params(micro_dict)
    run_sample(params, 1, root=micro_project)
    run_noise(params, 1, root=micro_project)
    info = run_qa(params, 1, root=micro_project)
    out = micro_project / "data" / "iter1" / "qa"
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == 6 and stats["records"] == len(records) == 2 * stats["questions_kept"]
    assert info["records"] == len(records)
    assert not (micro_project / "data" / "iter1" / "qa.partial").exists()
    for r in records:
        assert r["type"] in ("des", "gen") and r["question"].endswith("?")
        assert set(r) >= {"clean_answer", "corrupted_answer", "enhanced_answer", "prompt", "image"}


def _noised_project(micro_project, micro_dict, project, images, batch_size):
    """A copy of the micro project with iteration 1 sampled and corrupted, and its params file."""
    import shutil

    from tests.conftest import full_params_yaml

    shutil.copytree(micro_project, project, ignore=shutil.ignore_patterns("iter1", "iter2", "iter3"))
    shutil.copytree(micro_project / "models" / "iter0", project / "models" / "iter0", dirs_exist_ok=True)
    d = {**micro_dict, "loop": {"iterations": 1},
         "sample": {"pool": "data/world/pool", "images_per_iteration": images},
         "qa": {"batch_size": batch_size, "max_new_tokens": 16}}
    (project / "params.yaml").write_text(full_params_yaml(d))
    params = params_from_dict(d)
    run_sample(params, 1, root=project)
    run_noise(params, 1, root=project)
    return project, params


def test_killed_qa_resumes_without_redoing_finished_chunks(micro_project, micro_dict, tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    project, params = _noised_project(micro_project, micro_dict, tmp_path / "p", images=16, batch_size=1)
    reference = tmp_path / "ref"
    shutil.copytree(project, reference)
    run_qa(params, 1, root=reference)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sena_cli", "qa", "--iter", "1"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = project / "data" / "iter1" / "qa.partial"
    deadline = time.time() + 120
    while time.time() < deadline:
        files = list(partial.glob("*.jsonl")) if partial.exists() else []
        if files and len(files[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len([ln for ln in next(partial.glob("*.jsonl")).read_text().splitlines() if ln.endswith("}")])
    assert 3 <= finished < 16, "the kill came too late to test a resume"
    assert not (project / "data" / "iter1" / "qa" / "records.jsonl").exists()

    info = run_qa(params, 1, root=project)
    assert info["chunks run now"] == 16 - finished
    out = "data/iter1/qa/records.jsonl"
    assert (project / out).read_bytes() == (reference / out).read_bytes()


def test_ablations_fixed_questions_and_no_enhancement(micro_project, micro_dict, tmp_path):
    fixed = ["What color is the circle?", "How many objects are there?"]
    project, _ = _noised_project(micro_project, micro_dict, tmp_path / "p", images=6, batch_size=4)
    params = params_from_dict({**micro_dict, "loop": {"iterations": 1},
                               "sample": {"pool": "data/world/pool", "images_per_iteration": 6},
                               "qa": {"batch_size": 4, "max_new_tokens": 16, "self_questioning": False,
                                      "fixed_questions": fixed, "self_enhancement": False}})
    run_qa(params, 1, root=project)
    records = [json.loads(line) for line in (project / "data/iter1/qa/records.jsonl").open()]
    assert len(records) == 2 * 6  # one question per image, never dropped by a check
    assert {r["question"] for r in records} <= set(fixed)
    assert all(r["raw_question"] == r["question"] for r in records)
    assert all(r["enhanced_answer"] == r["clean_answer"] and not r["enhanced"] for r in records)


def test_speed_ups_leave_every_record_as_it_was(micro_project, micro_dict, tmp_path):
    """qa.length_batches, qa.reuse_image_features and qa.reuse_prefix_cache change the batches and what is
    encoded and prefilled, not the records
    (fixed questions: the micro θ0 asks too few of its own to fill batches of both lengths)."""
    import shutil

    project, _ = _noised_project(micro_project, micro_dict, tmp_path / "p", images=6, batch_size=4)
    before = tmp_path / "before"
    shutil.copytree(project, before)
    records = {}
    for root, on in ((project, True), (before, False)):
        params = params_from_dict({**micro_dict, "loop": {"iterations": 1},
                                   "sample": {"pool": "data/world/pool", "images_per_iteration": 6},
                                   "qa": {"batch_size": 4, "max_new_tokens": 16, "length_batches": on,
                                          "reuse_image_features": on, "reuse_prefix_cache": on,
                                          "self_questioning": False}})
        run_qa(params, 1, root=root)
        records[on] = [json.loads(line) for line in (root / "data/iter1/qa/records.jsonl").open()]
    assert records[True] == records[False] and len(records[True]) == 2 * 6
    assert any(r["clean_answer"] for r in records[True])  # answers to compare, not only empty strings
