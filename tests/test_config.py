import re

import pytest

from sena_cli.config import Params, load_params, params_from_dict
from sena_cli.errors import SenaError


def test_shipped_params_load_and_differ_from_paper_only_where_documented():
    params = load_params("params.yaml")
    paper = Params()
    assert paper.sample.images_per_iteration == 6000
    assert paper.noise.timestep == 600 and paper.train.beta == 0.1 and paper.train.lr == 2e-6
    assert paper.train.global_batch_size == 128 and paper.train.epochs == 1 and paper.train.max_length == 2048
    assert paper.loop.iterations == 3 and paper.qa.max_new_tokens == 512
    assert params.model.base == "embedded"
    assert params.sample.images_per_iteration * params.loop.iterations <= params.world.pool_images


@pytest.mark.parametrize(
    "data, words",
    [
        ({"trian": {}}, ["unknown key 'trian'"]),
        ({"train": {"betta": 0.1}}, ["unknown key 'train.betta'", "beta"]),
        ({"train": {"lr": "fast"}}, ["'train.lr'", "must be a number", "'fast'"]),
        ({"loop": {"iterations": 0}}, ["'loop.iterations'", ">= 1"]),
        ({"sample": {"images_per_iteration": 0}}, ["'sample.images_per_iteration'"]),
        ({"noise": {"timestep": 1000}}, ["'noise.timestep'", "<= 999"]),
        ({"noise": {"timestep": -1}}, ["'noise.timestep'", ">= 0"]),
        ({"qa": {"check_with_image": "yes"}}, ["'qa.check_with_image'", "true or false"]),
        ({"world": {"colours": ["red", "teal"]}}, ["'world.colours'", "'teal'"]),
        ({"world": {"cooccurrence_pairs": [["red circle", "red circle"]]}}, ["cooccurrence_pairs[0]"]),
        ({"qa": {"prompts": {"enhance": "Improve it."}}}, ["'qa.prompts.enhance'", "{description}"]),
        ({"train": 3}, ["train must be a mapping"]),
        ({"loop": {"iterations": True}}, ["'loop.iterations'", "whole number"]),
    ],
)
def test_bad_params_are_refused_with_one_line_naming_the_key(data, words):
    with pytest.raises(SenaError) as err:
        params_from_dict(data, source="params.yaml")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SenaError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [1,\n")
    with pytest.raises(SenaError, match="not valid YAML"):
        load_params(bad)


def test_ints_are_accepted_where_floats_are_expected():
    assert params_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_shipped_params_list_every_key_so_dvc_can_track_it():
    import yaml

    from sena_cli.config import to_dict

    def keys(d, prefix=""):
        return {k2 for k, v in d.items() for k2 in (keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])}

    shipped = yaml.safe_load(open("params.yaml"))
    assert keys(shipped) == keys(to_dict(Params()))


def test_per_iteration_overrides_change_only_their_iteration():
    from sena_cli.config import for_iteration

    p = params_from_dict({"train": {"lr": 3e-5}, "iterations": {"3": {"train": {"lr": 1e-5}, "qa": {"batch_size": 4}}}})
    assert sorted(p.iterations) == ["1", "2", "3"]  # every iteration has an entry, for dvc.yaml
    assert for_iteration(p, 3).train.lr == 1e-5 and for_iteration(p, 3).qa.batch_size == 4
    assert for_iteration(p, 2).train.lr == 3e-5 and for_iteration(p, 2).qa.batch_size == p.qa.batch_size


@pytest.mark.parametrize("overrides, message", [
    ({"4": {}}, "'iterations.4' is not an iteration 1..loop.iterations (3)"),
    ({"2": {"sample": {"seed": 1}}}, "'iterations.2.sample' cannot change per iteration"),
    ({"2": {"train": {"lr": "fast"}}}, "'iterations.2.train.lr' must be a number"),
    ({"2": {"train": {"speed": 1}}}, "unknown key 'iterations.2.train.speed'"),
])
def test_bad_per_iteration_overrides_are_refused(overrides, message):
    with pytest.raises(SenaError, match=re.escape(message)):
        params_from_dict({"iterations": overrides})
