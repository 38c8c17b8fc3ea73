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


def test_every_benchmark_says_where_its_files_come_from_and_which_keys_name_them():
    for b in registry.BENCHMARKS:
        assert b.source, b.name
        if b.section is not None:  # a published benchmark: its files are named by its keys
            assert registry.file_keys(b), b.name
    assert registry.file_keys(registry.get("amber")) == ["queries", "annotations", "relation", "safe_words",
                                                          "image_root"]  # not similarity, yes_no_parsing
    assert registry.file_keys(registry.get("llava_bench")) == ["questions", "answers", "context", "image_root"]
    assert registry.file_keys(registry.get("coco_chair")) == ["captions", "instances", "synonyms", "image_root"]
    assert registry.file_keys(registry.get("world_pope")) == []


def test_a_missing_benchmark_file_is_one_line_naming_the_key_and_where_to_get_it(tmp_path):
    from sena_cli.bench.amber import AmberFiles

    amber = registry.get("amber")
    with pytest.raises(SenaError) as err:
        registry.check_files(amber, AmberFiles())
    assert str(err.value) == ("'eval.amber.queries' is empty; amber reads files you download: " + amber.source
                              + "; set eval.amber.queries to where you put them")
    assert "github.com/junyangwang0410/AMBER" in amber.source
    present = {name: str(tmp_path) for name in ("queries", "annotations", "relation", "safe_words", "image_root")}
    registry.check_files(amber, AmberFiles(**present))  # all there: nothing said
    with pytest.raises(SenaError) as err:
        registry.check_files(amber, AmberFiles(**{**present, "relation": str(tmp_path / "relation.json")}))
    assert str(err.value) == (f"{tmp_path / 'relation.json'}: not found (eval.amber.relation); amber's files come "
                              f"from {amber.source}") and "\n" not in str(err.value)
    from sena_cli.bench.coco_pope import CocoPopeFiles

    with pytest.raises(SenaError, match=r"^'eval.coco_pope.files' is empty; coco_pope reads files .*AoiDragon/POPE"):
        registry.check_files(registry.get("coco_pope"), CocoPopeFiles(image_root=str(tmp_path)))


def test_empty_benchmarks_are_the_worlds_for_the_embedded_base_and_refused_for_a_real_one():
    assert EvalParams().benchmarks == []
    embedded = params_from_dict({})
    assert registry.selected(embedded) == ["world_pope", "world_chair", "world_vqa", "world_questions"]
    real = params_from_dict({"model": {"base": "llava-hf/llava-1.5-7b-hf"}})
    with pytest.raises(SenaError) as err:
        registry.selected(real, "params.yaml")
    message = str(err.value)
    assert message.startswith("params.yaml: 'eval.benchmarks' is [], which scores the synthetic world (embedded θ0 "
                              "only), and model.base is a real model (llava-hf/llava-1.5-7b-hf); name the "
                              "benchmarks to score it on, e.g. `eval.benchmarks: [coco_pope, amber, mmbench]`")
    assert "world_pope" not in message.split("one of:")[1] and "\n" not in message
    named = params_from_dict({"model": {"base": "/ckpt/llava"}, "eval": {"benchmarks": ["amber", "world_pope"]}})
    assert registry.selected(named) == ["amber", "world_pope"]  # named by the user: run as asked


def test_eval_of_a_real_model_refuses_the_default_and_missing_files_before_the_model_loads(
        micro_project, micro_dict, tmp_path, monkeypatch):
    from sena_cli.stages import eval as eval_stage
    from sena_cli.vlm import VLM
    from tests.helpers import project_from

    monkeypatch.setattr(VLM, "from_params", lambda *a, **kw: pytest.fail("the model loaded"))
    root = project_from(micro_project, tmp_path)
    real = params_from_dict({**micro_dict, "model": {"base": "llava-hf/llava-1.5-7b-hf"}})
    with pytest.raises(SenaError, match=r"'eval.benchmarks' is \[\], which scores the synthetic world"):
        eval_stage.run_eval(real, 0, root=root)
    named = params_from_dict({**micro_dict, "model": {"base": "llava-hf/llava-1.5-7b-hf"},
                              "eval": {**micro_dict["eval"], "benchmarks": ["mmbench"],
                                       "mmbench": {"tsv": str(tmp_path / "MMBench_DEV_EN.tsv")}}})
    with pytest.raises(SenaError, match=r"MMBench_DEV_EN.tsv: not found \(eval.mmbench.tsv\); mmbench's files come "
                                        r"from VLMEvalKit's MMBench_DEV_EN.tsv"):
        eval_stage.run_eval(named, 0, root=root)
