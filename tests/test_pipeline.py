"""The DVC pipeline end to end on the reduced profile (profiles/ci.yaml) at a smaller size (SMALLER),
in a temporary copy of the repo: three iterations, incremental rebuilds, sharing through a local-folder
remote (through S3: tests/test_travel.py, the same push and pull against moto's server on loopback).

The tests share one run and go in file order: each later test starts from the state the
earlier ones left.
"""

import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, env=None):
    env = {**(env or os.environ), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}  # no usage-report process after every dvc command
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def _dvc(args, cwd, env=None):
    return _run([sys.executable, "-m", "dvc", *args], cwd, env)


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def _copy_code(dst: Path) -> None:
    shutil.copytree(REPO / "sena_cli", dst / "sena_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "profiles", dst / "profiles")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):  # .dvcignore: bytecode is not code (`dvc init` keeps it)
        shutil.copy(REPO / name, dst / name)


def _clone(root: Path, clone: Path) -> Path:
    """What another machine has after checking out root's commit: code, params, dvc.lock, DVC config."""
    clone.mkdir()
    _copy_code(clone)
    shutil.copy(root / "params.yaml", clone / "params.yaml")
    shutil.copy(root / "dvc.lock", clone / "dvc.lock")
    _dvc(["init", "--no-scm", "-q"], clone)
    shutil.copy(root / ".dvc" / "config", clone / ".dvc" / "config")
    return clone


def _edit_params(root: Path, edit) -> None:
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


ITERS = (1, 2, 3)
LOOP = {f"{s}@{k}" for s in ("sample", "noise", "qa", "pair", "train") for k in ITERS}
EVALS = {f"eval@{k}" for k in (0, *ITERS)}
SUMMARIES = {"history", "report"}  # rerun whenever any metric moves
ALWAYS = {"pool"}  # lists the pool's files on every repro; sample reruns only if they changed
EVERY_STAGE = {"code", "world", "base"} | ALWAYS | SUMMARIES | LOOP | EVALS


# Laid over the ci profile: what these tests check (every stage runs and chains, reruns, sharing) holds at any
# size, and the run is built once. θ0 is the ci profile's (150 steps): with fewer (60 at lr 2e-3, warm-up 10,
# 2026-12-03) iteration 2 has no pair left after the filters and train@2 refuses. 8 images per iteration;
# 2 pairs per optimizer step, so each iteration takes several steps past the warm-up (one step at warm-up's
# lr 0 leaves θK byte-identical to θK-1, and DVC stores it once).
SMALLER = {
    "world": {"pool_images": 40,
              "eval": {"pope_images": 8, "chair_images": 8, "vqa_images": 8, "question_images": 8},
              "eval_dev": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4},
              "eval_cal": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4}},
    "base": {"threads": 1},  # one per xdist worker
    "sample": {"images_per_iteration": 8},
    "train": {"global_batch_size": 2, "per_device_batch_size": 2},
    "eval": {"max_new_tokens": 16},
}


def _merge(data: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict):
            _merge(data[key], value)
        else:
            assert key in data, key  # a renamed key must not be added silently
            data[key] = value


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    _copy_code(root)
    _run([sys.executable, "-m", "sena_cli", "profile", "ci"], root)
    _edit_params(root, lambda d: _merge(d, SMALLER))
    _dvc(["init", "--no-scm", "-q"], root)
    return root, _dvc(["repro"], root)


def test_repro_runs_three_iterations_and_writes_well_formed_artifacts(project):
    root, out = project
    assert _ran(out) == EVERY_STAGE
    for k in (0, *ITERS):
        metrics = json.loads((root / f"metrics/iter{k}.json").read_text())
        for split in ("random", "popular", "adversarial"):
            values = metrics["pope"][split]
            assert set(values) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
            assert all(0.0 <= v <= 1.0 for v in values.values())
        # n: the counts; partner: absent co-occurrence partners named (issue 25)
        assert set(metrics["chair"]) == {"chair_s", "chair_i", "recall", "caption_f1", "partner", "n"}
        assert set(metrics["pope"]["partner"]) == {"yes_rate", "other_yes_rate"}
        assert (root / f"data/iter{k}/eval/answers.jsonl").stat().st_size > 0
    for k in ITERS:
        pairs = (root / f"data/iter{k}/pairs/pairs.jsonl").read_text().splitlines()
        assert pairs and all("ref_chosen_logp" in json.loads(line) for line in pairs)
        assert (root / f"models/iter{k}/model.safetensors").is_file()
        summary = json.loads((root / f"data/iter{k}/train/summary.json").read_text())
        assert summary["steps"] >= 1 and summary["pairs"] == len(pairs)
        assert (root / f"data/iter{k}/train/live/plots/metrics/dpo_loss.tsv").is_file()
    assert (root / "report/index.html").stat().st_size > 10_000
    history = list(csv.DictReader((root / "metrics/history.csv").open()))
    assert [row["iteration"] for row in history] == ["0", "1", "2", "3"]
    shown = json.loads(_dvc(["metrics", "show", "--json"], root))
    assert "metrics/iter3.json" in json.dumps(shown)
    html = _dvc(["plots", "show", "--out", str(root / "plots")], root)
    assert (root / "plots" / "index.html").is_file(), html


def test_a_second_repro_runs_nothing(project):
    root, _ = project
    assert _ran(_dvc(["repro"], root)) == ALWAYS


def _named(root: Path) -> set[str]:
    """The stages `dvc status` names (whose deps or outs changed since they ran), but the always-run pool."""
    return set(json.loads(_dvc(["status", "--json"], root))) - ALWAYS


@contextlib.contextmanager
def _params_edited(root: Path, edit):
    """params.yaml with `edit` applied inside the block, put back byte for byte afterwards."""
    params = root / "params.yaml"
    original = params.read_text()
    _edit_params(root, edit)
    try:
        yield
    finally:
        params.write_text(original)


def _params_edit(root: Path, edit) -> set[str]:
    """The stages `dvc status` names after `edit` of params.yaml; the file is put back afterwards."""
    with _params_edited(root, edit):
        return _named(root)


def _code_edit(root: Path, path: str, old: str, new: str):
    """Edit a file under root/sena_cli, rerun stage `code`, and give the stages `dvc status` then names;
    the file is put back (and `code` rerun) afterwards, so the run is as the earlier tests left it."""
    file = root / path
    original = file.read_text()
    assert original.count(old) == 1, f"{path}: {old!r}"
    file.write_text(original.replace(old, new))
    try:
        assert _named(root) == {"code"}  # DVC hashes sena_cli byte by byte; only `code` depends on it
        _dvc(["repro", "code"], root)
        return _named(root)
    finally:
        file.write_text(original)
        _dvc(["repro", "code"], root)
        assert _named(root) == set()


def test_a_comment_or_help_text_in_the_config_reruns_nothing_but_the_code_stage(project):
    root, _ = project
    config = root / "sena_cli/config.py"
    original = config.read_text()
    docstring = original.split('"""')[1]
    config.write_text(original.replace("from __future__ import annotations\n",
                                       "from __future__ import annotations  # a comment\n", 1)
                      .replace(docstring, docstring + " (Reworded.)", 1))
    cli = root / "sena_cli/cli.py"
    cli_original = cli.read_text()
    cli.write_text(cli_original.replace('help="Parameters file."', 'help="The parameters file."', 1))
    try:
        assert config.read_text() != original and cli.read_text() != cli_original
        assert _named(root) == {"code"}
        assert _ran(_dvc(["repro"], root)) == {"code"} | ALWAYS
        assert _named(root) == set()
    finally:
        config.write_text(original)
        cli.write_text(cli_original)
        _dvc(["repro", "code"], root)


def test_a_stage_s_own_code_names_that_stage_and_nothing_before_it(project):
    root, _ = project
    named = _code_edit(root, "sena_cli/stages/noise.py", "def run_noise(", "NOTE = 1\n\n\ndef run_noise(")
    assert named == {f"noise@{k}" for k in ITERS}  # qa, pair, … rerun only if noise's outputs change


def test_a_benchmark_s_code_names_only_the_evaluations(project):
    root, _ = project
    named = _code_edit(root, "sena_cli/bench/amber.py", "return round(score / num * 100, 1)",
                       "return round(100 * score / num, 1)")
    assert named == EVALS


DUMMY = '''"""A benchmark added by a test: its own module, found by the registry."""

from sena_cli.bench.record import Benchmark, Chart


def run(ctx, vlm, tick):
    return {"score": 1.0}, []


def count(ctx):
    return 0


BENCHMARK = Benchmark("dummy", "dummy", (), "sena_cli.bench.dummy:run", "sena_cli.bench.dummy:count",
                      ("score",), (Chart("Dummy", (("score", "score"),)),))
'''


def test_adding_a_benchmark_names_only_eval_history_and_report(project):
    """A benchmark is one new module under sena_cli/bench/ (the registry discovers it): nothing before
    eval depends on benchmark code, so only the evaluations and the summaries that read them are named."""
    root, _ = project
    module = root / "sena_cli/bench/dummy.py"
    module.write_text(DUMMY)
    try:
        assert _named(root) == {"code"}
        _dvc(["repro", "code"], root)
        named = _named(root)
    finally:
        module.unlink()
        _dvc(["repro", "code"], root)
    assert _named(root) == set()
    assert named and named <= EVALS | SUMMARIES and EVALS <= named, sorted(named)


def test_an_eval_parameter_names_only_the_evaluations_and_the_summaries(project):
    """The evaluations' outputs feed nothing but history and report, so the stages `dvc status` names are
    all that would rerun (a real repro of this took 46 s and ran exactly these)."""
    root, _ = project
    named = _params_edit(root, lambda d: d["eval"].update(max_new_tokens=d["eval"]["max_new_tokens"] + 4))
    assert EVALS <= named <= EVALS | SUMMARIES, sorted(named)


def _downstream(root: Path, stages: set[str]) -> set[str]:
    """The stages that depend, directly or through others, on any of `stages` (from `dvc dag --dot`)."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', _dvc(["dag", "--dot"], root))
    found, todo = set(), list(stages)
    while todo:
        node = todo.pop()
        for a, b in edges:
            if a == node and b not in found:
                found.add(b)
                todo.append(b)
    return found


def test_an_iteration_3_parameter_reruns_only_iteration_3(project):
    """An iteration-3 noise parameter names only stages of iteration 3 and the summaries, and all that
    can follow from them is of iteration 3 too: what `dvc repro` would rerun. noise@3, rerun, writes other
    images, and DVC sees qa@3's input change (it follows the data, not only the parameters). (A full
    repro of this ran exactly those stages and took 28 s of the suite.) With the parameter put back,
    DVC's run cache restores noise@3's first output and nothing is left to rerun."""
    root, _ = project
    iteration_3 = {f"{s}@3" for s in ("noise", "qa", "pair", "train", "eval")} | SUMMARIES
    try:
        with _params_edited(root, lambda d: d["iterations"]["3"]["noise"].update(seed=7)):
            named = _named(root)
            assert {"noise@3", "qa@3"} <= named and named | _downstream(root, named) == iteration_3, sorted(named)
            assert _ran(_dvc(["repro", "noise@3"], root)) <= {"noise@3"} | ALWAYS  # nothing before it
            changed = json.loads(_dvc(["status", "--json", "qa@3"], root))["qa@3"]
            assert any("data/iter3/noised" in c.get("changed deps", {}) for c in changed), changed
    finally:
        _dvc(["repro", "noise@3"], root)  # the parameter is back: noise@3's first output, from the run cache
    assert _named(root) == set()


def test_artifacts_pushed_from_one_clone_pull_into_another_with_nothing_to_rerun(project, tmp_path):
    root, _ = project
    remote = tmp_path / "remote"
    _dvc(["remote", "add", "-d", "shared", str(remote)], root)
    _dvc(["push"], root)
    clone = _clone(root, tmp_path / "clone")
    _dvc(["pull"], clone)
    weights = "models/iter3/model.safetensors"
    assert (clone / weights).read_bytes() == (root / weights).read_bytes()
    assert "up to date" in _dvc(["push"], root).lower()  # a second push sends nothing
    assert _ran(_dvc(["repro"], clone)) == ALWAYS
    shown = json.loads(_dvc(["metrics", "show", "--json"], clone))
    files = next(iter(shown.values()))["data"]
    assert {f"metrics/iter{k}.json" for k in (0, *ITERS)} <= set(files)
    assert shown == json.loads(_dvc(["metrics", "show", "--json"], root))


def test_a_bigger_pool_does_not_train_theta0_again(project):
    """`base` tracks the world keys θ0's code reads, not the whole section, and the pool reaches θ0 through
    no file: with world.pool_images raised, the world is rebuilt and the draws see the new pool, but θ0
    stays (docs/results.md, M1200: before, its bigger pool trained three identical θ0 again)."""
    root, _ = project
    try:
        with _params_edited(root, lambda d: d["world"].update(pool_images=d["world"]["pool_images"] + 40)):
            named = _named(root)
            assert "world" in named and "base" not in named, sorted(named)
            assert _ran(_dvc(["repro", "world"], root)) <= {"world"} | ALWAYS
            named = _named(root)
            assert "sample@1" in named and "base" not in named, sorted(named)  # a new pool, θ0's files the same
    finally:
        _dvc(["repro", "world"], root)  # the parameter is back: the first world, from the run cache
    assert _named(root) == set()


# The stages whose params name qa.prompts: θ0's instruction set is written with the qa prompts (world, base);
# qa and eval prompt the model with them; history and report run the benchmark modules' record code.
READS_QA_PROMPTS = {"world", "base"} | {f"qa@{k}" for k in ITERS} | EVALS | SUMMARIES


def test_a_qa_prompt_names_exactly_the_stages_that_read_it(project):
    """`dvc status` after a qa prompt edit names the stages that read the prompts, in every iteration,
    and no draw. What runs after them (pair, train, the later iterations) reruns because its inputs
    changed, as DVC does for any data dependency (test_an_iteration_3_parameter_reruns_only_iteration_3
    shows it through noise@3's output); rebuilding the whole run to show it again took ~250 s of the suite."""
    root, _ = project
    named = _params_edit(root, lambda d: d["qa"]["prompts"].update(
        short_answer_suffix="Answer with one word or a short phrase."))
    assert named == READS_QA_PROMPTS, sorted(named ^ READS_QA_PROMPTS)
    assert _named(root) == set()
