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
        ({"world": {"partner_weights": [0.5, -0.1]}}, ["'world.partner_weights' must be positive"]),
        ({"world": {"partner_weights": [1.0] * 16}}, ["'world.partner_weights' names 16 partners", "at most 15"]),
        ({"world": {"hard_min_size": 13}}, ["'world.hard_min_size' exceeds 'world.hard_max_size'"]),
        ({"qa": {"prompts": {"enhance": "Improve it."}}}, ["'qa.prompts.enhance'", "{description}"]),
        ({"train": 3}, ["train must be a mapping"]),
        ({"loop": {"iterations": True}}, ["'loop.iterations'", "whole number"]),
        # Non-finite and absurd values, both ends of every range.
        ({"noise": {"beta_end": float("nan")}}, ["'noise.beta_end' is nan", "finite number in (0.0, 1.0)"]),
        ({"train": {"beta": float("inf")}}, ["'train.beta' is inf", "finite"]),
        ({"train": {"lr": float("-inf")}}, ["'train.lr' is -inf", "finite"]),
        ({"train": {"beta": 1000.0}}, ["'train.beta' is 1000.0", "<= 100.0"]),
        ({"train": {"lr": 10**400}}, ["'train.lr'", "finite"]),
        ({"loop": {"seed": 2**32}}, ["'loop.seed' is 4294967296", "<= 4294967295"]),
        ({"noise": {"seed": -1}}, ["'noise.seed' is -1", ">= 0"]),
        ({"train": {"lora_dropout": 1.0}}, ["'train.lora_dropout'", "< 1.0"]),
        ({"noise": {"beta_end": 1.0}}, ["'noise.beta_end'", "< 1.0"]),
        ({"qa": {"batch_size": 10**9}}, ["'qa.batch_size'", "<= 65536"]),
        ({"sample": {"images_per_iteration": 10**12}}, ["'sample.images_per_iteration'", "<= 10000000"]),
        ({"sample": {"max_aspect_ratio": 0.5}}, ["'sample.max_aspect_ratio'", ">= 1.0"]),
        ({"sample": {"dedup": "fuzzy"}}, ["'sample.dedup'", "perceptual"]),
        # Keys that only make sense together.
        ({"noise": {"num_train_timesteps": 100}}, ["'noise.timestep' is 600", "<= 99", "num_train_timesteps 100"]),
        ({"noise": {"beta_start": 0.01}}, ["'noise.beta_start' (0.01) must be below 'noise.beta_end' (0.005)"]),
        ({"train": {"global_batch_size": 6, "per_device_batch_size": 4}},
         ["train.global_batch_size 6", "multiple of 4"]),
        ({"base": {"steps": 50}}, ["'base.warmup_steps' (100) exceeds 'base.steps' (50)"]),
        ({"qa": {"self_questioning": False, "fixed_questions": []}}, ["'qa.fixed_questions' is empty"]),
        ({"world": {"shapes": []}}, ["'world.shapes' is empty"]),
        ({"iterations": {"2": [1, 2]}}, ["'iterations.2' must be a mapping"]),
        ({"model": {"processor": {"size": {"height": float("nan")}}}}, ["'model.processor.size.height' is nan"]),
        ({"iterations": {"2": {"noise": {"beta_end": float("nan")}}}}, ["'iterations.2.noise.beta_end' is nan"]),
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
    import dataclasses

    import yaml

    from sena_cli.config import to_dict

    def keys(d, prefix=""):
        return {k2 for k, v in d.items() for k2 in (keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])}

    from sena_cli.bench.registry import SECTIONS

    shipped = keys(yaml.safe_load(open("params.yaml")))
    benchmark_sections = {"eval": {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}}
    defaults = keys(to_dict(Params())) | keys(benchmark_sections)
    assert defaults <= shipped, defaults - shipped
    # beyond the defaults, only per-iteration overrides (the embedded profile's lr per iteration)
    assert {k for k in shipped - defaults if not k.startswith("iterations.")} == set()
    load_params("params.yaml")


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


def _numeric_fields(cls, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, f"{prefix}{f.name}.")
        elif tp in (int, float):
            yield f"{prefix}{f.name}", f.metadata


def test_every_number_has_a_range_at_both_ends():
    from sena_cli.bench.registry import SECTIONS

    fields = dict(_numeric_fields(Params))
    for name, cls in SECTIONS.items():  # the benchmarks' sections, declared in their modules
        fields.update(_numeric_fields(cls, f"eval.{name}."))
    assert "eval.coco_chair.images" in fields and "eval.amber.similarity" in fields
    assert len(fields) > 60  # the walk reaches every section
    unbounded = [key for key, meta in fields.items() if meta.get("lo") is None or meta.get("hi") is None]
    assert unbounded == []
    seeds = [key for key in fields if key.endswith("seed")]
    assert len(seeds) >= 7 and all(fields[k]["lo"] == 0 and fields[k]["hi"] == 2**32 - 1 for k in seeds)


@pytest.mark.parametrize("text, words", [
    ("train:\n  lr: 0.1\ntrain:\n  beta: 0.2\n", ["key 'train' is given twice (line 3)"]),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", ["key 'train.lr' is given twice (line 3)"]),
    ("eval:\n  benchmarks: [world_pope]\n  coco_pope:\n    files: []\n    files: []\n",
     ["key 'eval.coco_pope.files' is given twice"]),
    ("loop: &l {iterations: 2}\n", ["anchors and aliases are not allowed (&l at line 1)"]),
    ("train:\n  beta: 0.2\nqa:\n  seed: *s\n", ["anchors and aliases are not allowed (*s at line 4)"]),
    ("a: \x01\n", ["not valid YAML (character #x0001 at position 3)"]),
    ("loop: [1,\n", ["not valid YAML (line 2)"]),
])
def test_params_files_with_duplicates_aliases_or_bad_characters(tmp_path, text, words):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(SenaError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    import time

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 12):  # 9**12 strings once expanded
        name, prev = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(SenaError, match="anchors and aliases are not allowed"):
        load_params(path)
    assert time.perf_counter() - started < 1.0


def test_non_utf8_and_oversized_files_name_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"loop:\n  seed: 1  # caf\xe9\n")
    with pytest.raises(SenaError, match=re.escape(f"{path}: not UTF-8 text (byte 0xe9 at byte 22, line 2)")):
        load_params(path)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(SenaError, match=re.escape(f"{big}: larger than 1 MiB")):
        load_params(big)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffloop:\n  seed: 7\n".encode())  # a BOM (Windows editors) is fine
    assert load_params(bom).loop.seed == 7


def test_profiles_load_over_the_shipped_params(tmp_path):
    import shutil
    from pathlib import Path

    from sena_cli.config import apply_profile

    for profile in sorted(Path("profiles").glob("*.yaml")):
        shutil.copy("params.yaml", tmp_path / "params.yaml")
        apply_profile(tmp_path / "params.yaml", profile)
        load_params(tmp_path / "params.yaml")
    (tmp_path / "dup.yaml").write_text("train:\n  beta: 0.2\ntrain:\n  lr: 0.1\n")
    with pytest.raises(SenaError, match="dup.yaml: key 'train' is given twice"):
        apply_profile(tmp_path / "params.yaml", tmp_path / "dup.yaml")


def test_a_per_iteration_override_is_checked_across_keys_naming_its_iteration():
    with pytest.raises(SenaError, match=re.escape("'iterations.2.noise.timestep' is 1000; it must be <= 999")):
        params_from_dict({"iterations": {"2": {"noise": {"timestep": 1000}}}}, source="params.yaml")


def test_each_key_is_validated_once_and_params_yaml_read_once_per_command(monkeypatch):
    """A loop command loads the params, takes its iteration's and builds its run id from the tracked keys:
    qa.batch_size was range-checked five times and params.yaml read twice; now once each."""
    import builtins
    import collections
    from pathlib import Path

    from sena_cli import config
    from sena_cli.config import for_iteration
    from sena_cli.tracked import tracked_params

    checks, reads = collections.Counter(), collections.Counter()
    check_range, real_open, read_text = config._check_range, builtins.open, Path.read_text

    def counting_check(value, key, meta, source):
        checks[key] += 1
        return check_range(value, key, meta, source)

    def counting_open(file, *args, **kwargs):
        reads[Path(str(file)).name] += 1
        return real_open(file, *args, **kwargs)

    def counting_read_text(self, *args, **kwargs):
        reads[self.name] += 1
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(config, "_check_range", counting_check)
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(Path, "read_text", counting_read_text)
    params = for_iteration(load_params("params.yaml"), 3)  # what cli's _run_stage does
    tracked_params("qa", 3, params)  # what run_qa does for its run id
    tracked_params("train", 3, params)
    assert params.train.lr == 7.5e-06  # iteration 3's override of the shipped file
    assert checks["qa.batch_size"] == 1 and checks["train.lr"] == 1 and checks["iterations.3.train.lr"] == 1
    assert reads["params.yaml"] == 1


def test_docs_params_md_is_generated_from_the_declarations():
    from pathlib import Path

    from sena_cli import paramdocs
    from sena_cli.bench.registry import NAMES, SECTIONS

    text = Path("docs/params.md").read_text()
    choices, sections = {"eval.benchmarks": NAMES}, {name: cls() for name, cls in SECTIONS.items()}
    assert paramdocs.markdown(choices, sections) in text, \
        "docs/params.md is not current: run `sena params --write-docs docs/params.md`"
    assert "| `eval.amber.similarity` | 0.8 | [0.0, 1.0] |" in text  # a benchmark's own key, from its module
    for row in paramdocs.rows(choices=choices, sections=sections):
        assert row.help, f"{row.key} has no help"


def test_sena_params_shows_an_iterations_effective_settings(monkeypatch):
    from typer.testing import CliRunner

    from sena_cli import cli
    from sena_cli.cli import app

    # rich reads COLUMNS when the console is made (at import, maybe by an earlier test): set the width itself
    monkeypatch.setattr(cli.out, "width", 200)
    result = CliRunner().invoke(app, ["params", "--iter", "3"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " train.lr " in line)
    assert "7.5e-06" in row and "2e-06" in row and "learning rate" in row  # value, paper default, help
    result = CliRunner().invoke(app, ["params", "--iter", "4"])
    assert result.exit_code == 1 and "1..loop.iterations (3)" in result.output
