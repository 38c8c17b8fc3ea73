"""`sena profile NAME` edits params.yaml in place: comments, key order and other keys stay."""

import difflib
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sena_cli.cli import app
from sena_cli.config import apply_profile, load_params, to_dict
from sena_cli.errors import SenaError
from sena_cli.yamlfile import leaves as _leaves

REPO = Path(__file__).resolve().parents[1]


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_the_ci_profile_changes_its_keys_and_nothing_else_of_the_shipped_file(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()
    profile = yaml.safe_load((REPO / "profiles" / "ci.yaml").read_text())
    wanted = {key: value for key, value in _leaves(profile).items()
              if _leaves(to_dict(load_params(params)))[key] != value}

    changed = apply_profile(params, REPO / "profiles" / "ci.yaml")

    after = params.read_text()
    assert changed == wanted and len(wanted) == 18
    removed, added = _changed_lines(before, after)
    # One line per changed key, in place: `  pool_images: 1200` -> `  pool_images: 90`.
    assert len(removed) == len(added) == len(wanted)
    assert sorted(line.split(":")[0].strip() for line in added) == sorted(k.rpartition(".")[2] for k in wanted)
    comments = [line for line in before.splitlines() if "#" in line]
    assert len(comments) >= 8 and all(line in after.splitlines() for line in comments)
    assert _leaves(to_dict(load_params(params))) == {**_leaves(to_dict(load_params(REPO / "params.yaml"))), **wanted}


def test_a_profile_adds_missing_keys_and_keeps_order_quotes_and_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# my run\nqa:\n  seed: 4  # fixed\nloop:\n  iterations: 2\niterations:\n"
                      "  \"2\": {train: {lr: 1.0e-05}}\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("loop:\n  seed: 3\niterations:\n  '1': {qa: {seed: 9}}\n")

    changed = apply_profile(params, profile)

    assert changed == {"loop.seed": 3, "iterations.1.qa.seed": 9}
    assert params.read_text() == ("# my run\nqa:\n  seed: 4  # fixed\nloop:\n  iterations: 2\n  seed: 3\niterations:\n"
                                  "  \"2\": {train: {lr: 1.0e-05}}\n  '1':\n    qa:\n      seed: 9\n")


@pytest.mark.parametrize(("text", "error"), [
    ("world:\n  max_object_size: 100\n", "must fit a quadrant"),
    ("train:\n  speed: 2\n", "unknown key 'train.speed'"),
    ("- a list\n", "must be a mapping"),
])
def test_a_bad_profile_leaves_the_file_as_it_was(tmp_path, text, error):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    profile = tmp_path / "bad.yaml"
    profile.write_text(text)
    with pytest.raises(SenaError, match=error):
        apply_profile(params, profile)
    assert params.read_bytes() == (REPO / "params.yaml").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name not in ("params.yaml", "bad.yaml")]  # no temporary left


def test_sena_profile_reports_the_changed_keys(tmp_path, monkeypatch):
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["profile", "seva"])
    assert first.exit_code == 0, first.output
    assert "qa.self_questioning" in first.output and "train.alignment_weight" in first.output
    again = runner.invoke(app, ["profile", "seva"])
    assert again.exit_code == 0 and "nothing changed" in again.output
    missing = runner.invoke(app, ["profile", "nope"])
    assert missing.exit_code == 1 and "profiles/nope.yaml: profile not found" in missing.output


# ---------------------------------------------------------------- the paper's settings in one command

PAPERS = sorted(p.stem for p in (REPO / "profiles").glob("paper*.yaml"))
# What a paper profile leaves to the user (the pool, the benchmark files) or does not concern (the
# embedded world and θ0), and the model section each family profile sets itself.
NOT_THE_PAPERS = ("model.", "world.", "base.", "sample.pool", "sample.image_root", "eval.")
PAPER_EVAL = ("eval.batch_size", "eval.max_new_tokens", "eval.chair_prompt", "eval.yes_no_parsing")


def test_sena_profile_paper_trains_every_iteration_at_the_papers_lr(tmp_path, monkeypatch):
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    from sena_cli import cli

    # rich reads COLUMNS when the console is made (at import, maybe by an earlier test): set the width itself
    monkeypatch.setattr(cli.out, "width", 200)
    runner = CliRunner()
    before = runner.invoke(app, ["params", "--iter", "3"], env={"COLUMNS": "200"})
    assert re.search(r"train\.lr\s*│\s*7\.5e-06", before.output), before.output  # the trap: the embedded lr
    applied = runner.invoke(app, ["profile", "paper"], env={"COLUMNS": "200"})
    assert applied.exit_code == 0, applied.output
    assert re.search(r"iterations\.3\.train\.lr\s*│\s*removed", applied.output)
    for k in (1, 2, 3):
        shown = runner.invoke(app, ["params", "--iter", str(k)], env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and re.search(r"train\.lr\s*│\s*2e-06", shown.output), shown.output
    assert "lr" not in yaml.safe_load((tmp_path / "params.yaml").read_text())["iterations"]["3"]["train"]


@pytest.mark.parametrize("name", PAPERS)
def test_each_paper_profile_sets_every_method_key_to_the_papers_value(name, tmp_path):
    """The code's defaults are the paper's (config.py): after the profile, every key but the model,
    the user's pool and benchmark files, and the embedded world's, is its default, every iteration."""
    from sena_cli.config import Params, for_iteration

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_profile(params, REPO / "profiles" / f"{name}.yaml")
    loaded = load_params(params)
    defaults = _leaves(to_dict(Params()))
    for k in range(1, loaded.loop.iterations + 1):
        effective = _leaves(to_dict(for_iteration(loaded, k)))
        method = [key for key in defaults if key != "iterations"
                  and (not key.startswith(NOT_THE_PAPERS) or key in PAPER_EVAL)]
        differ = {key for key in method if effective[key] != defaults[key]}
        assert not differ, f"{name}, iteration {k}"
    assert loaded.model.base != "embedded"
    # the family profiles are paper.yaml with their own model section
    paper = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    this = yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())
    assert {k: v for k, v in this.items() if k != "model"} == {k: v for k, v in paper.items() if k != "model"}


def test_a_profile_key_set_to_null_is_removed_and_reported(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("loop:\n  iterations: 3\ntrain:\n  lr: 1.0e-05  # mine\niterations:\n"
                      "  '3':\n    train:\n      lr: 7.5e-06\n      beta: 0.2\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("train:\n  lr: 2.0e-06\niterations:\n  '3':\n    train:\n      lr: null\n")

    changed = apply_profile(params, profile)

    assert changed == {"train.lr": 2e-06, "iterations.3.train.lr": None}
    assert params.read_text() == ("loop:\n  iterations: 3\ntrain:\n  lr: 2.0e-06  # mine\niterations:\n"
                                  "  '3':\n    train:\n      beta: 0.2\n")


def test_set_keys_edits_one_key_in_place_and_refuses_a_bad_value(tmp_path):
    """`sena pool --add` sets sample.pool with the profile editor: one line changes, comments stay."""
    from sena_cli.config import set_keys

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()
    assert set_keys(params, {"sample.pool": "pool"}) == {"sample.pool": "pool"}
    assert _changed_lines(before, params.read_text()) == (["  pool: data/world/pool"], ["  pool: pool"])
    assert set_keys(params, {"sample.pool": "pool"}) == {}
    edited = params.read_text()
    with pytest.raises(SenaError, match="images_per_iteration"):
        set_keys(params, {"sample.images_per_iteration": 0})
    assert params.read_text() == edited  # refused before anything was written
