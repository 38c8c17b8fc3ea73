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


def test_a_recipe_laid_on_another_changes_only_what_it_names(research):
    """v26 is v25 at 4200 steps: every other key is v25's, and laying it left v25 as declared."""
    study = research("study")
    v25, v26 = study.RECIPES["v25"], study.RECIPES["v26"]
    assert v26["base"] == {"steps": 4200} and v25["base"] == {"steps": 4560}
    assert v26["world"] == v25["world"] and v26["world"] is not v25["world"]
    assert v25["world"]["reading_given_at_enhance_rates"] is True
    assert v25["world"]["enhance_given_right"] == study.RECIPES["v20"]["world"]["enhance_given_right"]
    assert "reading_given_at_enhance_rates" not in study.RECIPES["v20"]["world"]


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
