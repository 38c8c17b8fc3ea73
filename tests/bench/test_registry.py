"""The benchmark registry is the one list of benchmarks: eval, history, report and the eval.benchmarks check read it."""

import inspect

import pytest

from sena_cli.bench import registry
from sena_cli.config import EvalParams, params_from_dict
from sena_cli.errors import SenaError


def test_every_record_resolves_its_runner_and_counter_with_the_shared_signatures():
    for b in registry.BENCHMARKS:
        assert list(inspect.signature(b.runner()).parameters)[:3] == ["ctx", "vlm", "tick"], b.name
        assert list(inspect.signature(b.counter()).parameters) == ["ctx"], b.name
        assert b.headlines and len(set(b.headlines)) == len(b.headlines), b.name
        assert all(h.startswith(b.key + ".") for h in b.headlines)


def test_names_and_keys_are_unique_and_eval_benchmarks_is_checked_against_the_registry():
    assert len(set(registry.NAMES)) == len(registry.BENCHMARKS)
    assert len({b.key for b in registry.BENCHMARKS}) == len(registry.BENCHMARKS)
    params = params_from_dict({"eval": {"benchmarks": ["world_pope", "pope2"]}}, "params.yaml")  # config knows no names
    with pytest.raises(SenaError) as err:
        registry.check_params(params, "params.yaml")
    assert str(err.value).startswith("params.yaml: 'eval.benchmarks' has 'pope2'; allowed: world_pope, ")
    assert set(EvalParams().benchmarks) <= set(registry.NAMES)
    judged = {b.name for b in registry.BENCHMARKS if b.judged}
    assert judged == {"llava_bench", "mm_vet", "mmhal"}


def test_headline_keys_follow_the_metrics_that_exist():
    metrics = [{"mmbench": {"overall": 0.5}, "coco_pope": {"random": {"accuracy": 0.9}}},
               {"mmbench": {"overall": 0.6}, "unknown": {"x": 1.0}}]
    assert registry.headline_keys(metrics) == ["coco_pope.random.accuracy", "mmbench.overall"]
    assert registry.metric(metrics[0], "coco_pope.random.accuracy") == 0.9
    assert registry.metric(metrics[0], "coco_pope.random") is None  # not a number


@pytest.mark.parametrize("section, message", [
    ({"amber": {"similarity": 2.0}}, "params.yaml: 'eval.amber.similarity' is 2.0; it must be <= 1.0"),
    ({"coco_chair": {"images": "all"}}, "params.yaml: 'eval.coco_chair.images' must be a whole number, got 'all'"),
    ({"mmbench": {"tsvv": "x.tsv"}}, "params.yaml: unknown key 'eval.mmbench.tsvv'; remove it or use one of: tsv, "),
    ({"cocopope": {"files": []}}, "params.yaml: unknown key 'eval.cocopope'; remove it or use one of the generic "),
])
def test_a_benchmarks_section_is_checked_by_the_bench_layer_with_configs_validator(section, message):
    params = params_from_dict({"eval": section}, "params.yaml")  # the configuration keeps it as read
    with pytest.raises(SenaError) as err:
        registry.check_params(params, "params.yaml")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_benchmark_module_declares_its_record_and_the_registry_finds_it():
    import pkgutil

    import sena_cli.bench as package

    declaring = {info.name for info in pkgutil.iter_modules(package.__path__)
                 if hasattr(__import__(f"sena_cli.bench.{info.name}", fromlist=["_"]), "BENCHMARK")}
    assert {"coco_pope", "coco_chair", "amber", "mmbench", "llava_bench", "mm_vet", "mmhal"} <= declaring
    assert {b.name for b in registry.BENCHMARKS} == declaring | {n for n in registry.NAMES if n.startswith("world_")}
    for b in registry.BENCHMARKS:
        assert b.runner().__module__ == b.counter().__module__, b.name
        assert (b.section is not None) == (b.name in registry.SECTIONS)
        assert b.judged == bool(b.judge_prompt) == bool(b.prompt_version), b.name
