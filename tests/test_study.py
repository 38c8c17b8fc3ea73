"""research/study.py: a study runs on one θ0 recipe, recorded on its first action and laid over every run."""

import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_a_recipe_is_recorded_once_and_another_is_refused(tmp_path, research):
    study = research("study")
    assert study.study_recipe(tmp_path) == {}  # no recipe: the shipped params, nothing recorded
    assert not (tmp_path / "recipe.json").exists()
    assert study.study_recipe(tmp_path, "v17") == study.RECIPES["v17"]
    assert study.study_recipe(tmp_path) == study.RECIPES["v17"]  # later actions need not repeat it
    with pytest.raises(SystemExit, match="recipe 'v17'"):
        study.study_recipe(tmp_path, "v7")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SystemExit, match="not one of"):
        study.study_recipe(other, "nonesuch")
    assert not (other / "recipe.json").exists()
    (other / "runs" / "theta0").mkdir(parents=True)  # a study begun on the shipped θ0 keeps it
    with pytest.raises(SystemExit, match="already holds runs"):
        study.study_recipe(other, "v17")
    assert study.study_recipe(other) == {}


def test_every_recipe_is_valid_params_that_change_theta0(tmp_path, research):
    """Each recipe lays over the shipped params.yaml with `sena profile`'s own validation, and changes keys
    of the sections θ0 is built from (else the study's θ0 would be the shipped one under another name)."""
    study = research("study")
    for name, recipe in study.RECIPES.items():
        params = tmp_path / name / "params.yaml"
        params.parent.mkdir()
        shutil.copy(REPO / "params.yaml", params)
        (params.parent / "profiles").mkdir()
        changed = study.set_params(params, (recipe,))
        assert changed and all(k.split(".")[0] in study.THETA0_SECTIONS for k in changed), (name, changed)
        laid = yaml.safe_load(params.read_text())
        for key, value in changed.items():
            section, *rest = key.split(".")
            node = laid[section]
            for part in rest:
                node = node[part]
            assert node == value
