"""Headlines come from the benchmarks that ran: a run on published benchmarks only (COCO POPE,
AMBER, MMBench; no world benchmark) gets a full history table, per-metric plot files, report
charts and `dvc plots`."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sena_cli.bench import registry
from sena_cli.config import params_from_dict
from sena_cli.stages.eval import run_eval
from sena_cli.stages.history import run_history
from sena_cli.stages.report import render
from tests.helpers import project_from

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "bench" / "fixtures"


def _benchmark_files(tmp: Path) -> dict:
    """Small subsets of the differential fixtures, written as the published files are."""
    pope = json.loads((FIXTURES / "pope.json").read_text())["splits"]["adversarial"]["questions"][:16]
    (tmp / "coco_pope_adversarial.json").write_text("".join(json.dumps(q) + "\n" for q in pope))
    amber = json.loads((FIXTURES / "amber.json").read_text())
    queries = [q for q in amber["queries"] if q["id"] <= 4] + [q for q in amber["queries"] if q["id"] > 8][:4]
    top = max(q["id"] for q in queries)
    # AMBER's annotations are indexed by query id; the unused entries are copies of a real one.
    annotations = [amber["annotations"].get(str(i), amber["annotations"]["1"]) for i in range(1, top + 1)]
    (tmp / "query.json").write_text(json.dumps(queries))
    (tmp / "annotations.json").write_text(json.dumps(annotations))
    (tmp / "relation.json").write_text(json.dumps(amber["relation"]))
    (tmp / "safe_words.txt").write_text(amber["safe_words"])
    (tmp / "mmbench.tsv").write_text(json.loads((FIXTURES / "mmbench.json").read_text())["tsv_indexed"])
    images = tmp / "images"
    images.mkdir()
    for name in {q["image"] for q in pope} | {q["image"] for q in queries}:
        Image.new("RGB", (32, 32), "gray").save(images / name)
    return {"coco_pope": {"files": [str(tmp / "coco_pope_adversarial.json")], "image_root": str(images)},
            "amber": {"queries": str(tmp / "query.json"), "annotations": str(tmp / "annotations.json"),
                      "relation": str(tmp / "relation.json"), "safe_words": str(tmp / "safe_words.txt"),
                      "image_root": str(images), "language_standins": True},  # without nltk here: headlines only
            "mmbench": {"tsv": str(tmp / "mmbench.tsv")}}


@pytest.fixture(scope="module")
def published_run(micro_project, micro_dict, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("published")
    root = project_from(micro_project, tmp / "project")
    shutil.copytree(root / "models" / "iter0", root / "models" / "iter1")  # θ1 = θ0: eval needs a model
    params = params_from_dict({**micro_dict, "loop": {"iterations": 1}, "eval": {
        **micro_dict["eval"], "benchmarks": ["coco_pope", "amber", "mmbench"], **_benchmark_files(tmp)}})
    for k in (0, 1):
        run_eval(params, k, root=root)
    return root, params


def test_history_of_a_published_benchmark_run_is_full(published_run):
    root, params = published_run
    info = run_history(params, root=root)
    rows = list(csv.DictReader((root / "metrics" / "history.csv").open()))
    expected = [key for name in ("coco_pope", "amber", "mmbench") for key in registry.get(name).headlines
                if not key.startswith("coco_pope.") or ".adversarial." in key]  # one POPE split was given
    assert info["columns"] == expected and len(expected) >= 8
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert all(r[key] != "" for r in rows for key in expected)  # every cell filled
    for key in expected:
        lines = (root / "metrics" / "history" / f"{key}.csv").read_text().splitlines()
        assert lines[0] == f"iteration,{key}" and len(lines) == 3


def test_sena_history_prints_the_headlines_of_the_run(published_run, micro_dict, monkeypatch):
    from typer.testing import CliRunner

    from sena_cli.cli import app
    from tests.conftest import full_params_yaml

    root, params = published_run
    (root / "params.yaml").write_text(full_params_yaml({**micro_dict, "loop": {"iterations": 1}, "eval": {
        **micro_dict["eval"], "benchmarks": list(params.eval.benchmarks)}}))
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["history"])
    assert result.exit_code == 0, result.output
    for key in ("coco_pope.adversarial.accuracy", "amber.generative.chair", "mmbench.overall"):
        assert key in result.output


def test_report_draws_a_chart_per_headline_chart_of_the_benchmarks_that_ran(published_run):
    root, params = published_run
    page = render(params, root)
    headline = page.split("<h2>Headline metrics against iteration</h2>")[1].split("<h2>")[0]
    titles = ["COCO POPE accuracy", "COCO POPE F1 and yes-ratio (adversarial)", "AMBER generative (%)",
              "AMBER discriminative (%)", "MMBench (circular)"]
    for title in titles:
        assert f'aria-label="{title}"' in headline
    assert headline.count("<svg") == len(titles) and headline.count('-series-') >= 5 + 2 + 2 + 1
    assert 'aria-label="POPE accuracy"' not in headline  # no world chart when no world benchmark ran
    assert "<td class='l'>mmbench.overall</td>" in headline and "<th>θ1</th>" in headline


def test_dvc_plots_draw_every_headline_of_the_run(published_run, tmp_path):
    root, params = published_run
    run_history(params, root=root)
    spec = {"plots": [p for p in __import__("yaml").safe_load((REPO / "dvc.yaml").read_text())["plots"]
                      if "metrics/history" in p]}
    (root / "dvc.yaml").write_text(json.dumps(spec))
    env_bin = str(Path(sys.executable).parent)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=root, check=True,
                           capture_output=True, text=True, env={"PATH": env_bin}).stdout
    plots = json.loads(shown)["data"]
    for key in ("coco_pope.adversarial.accuracy", "amber.generative.chair", "mmbench.overall"):
        values = plots[f"metrics/history/{key}.csv"][0]["content"]["data"]["values"]
        assert [v["iteration"] for v in values] == ["0", "1"] and all(v[key] != "" for v in values)
