import json

from sena_cli.bench.world import question_quality
from sena_cli.stages.eval import run_eval
from sena_cli.world.scenes import Scene, SceneObject


def test_eval_writes_stable_keys_and_answers(micro_project, micro_params):
    result = run_eval(micro_params, 0, root=micro_project)
    metrics = json.loads((micro_project / "metrics" / "iter0.json").read_text())
    assert metrics == json.loads(json.dumps(result["metrics"]))
    for split in ("random", "popular", "adversarial"):
        assert set(metrics["pope"][split]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
        assert all(0.0 <= v <= 1.0 for v in metrics["pope"][split].values())
        # what each proportion is over, for the report's standard errors
        n = metrics["pope"]["n"][split]
        assert n["accuracy"] == n["yes_ratio"] == len((micro_project / f"data/world/eval/pope_{split}.jsonl")
                                                      .read_text().splitlines())
        assert n["precision"] == round(n["yes_ratio"] * metrics["pope"][split]["yes_ratio"])
    assert set(metrics["chair"]) == {"chair_s", "chair_i", "recall", "caption_f1", "n"}
    assert set(metrics["chair"]["n"]) == {"chair_s", "chair_i", "recall"}
    assert 0.0 <= metrics["world_vqa"]["accuracy"] <= 1.0
    assert 0.0 <= metrics["world_questions"]["well_formed"] <= 1.0
    answers = (micro_project / "data" / "iter0" / "eval" / "answers.jsonl").read_text().splitlines()
    assert {json.loads(a)["benchmark"] for a in answers} >= {"pope_random", "chair", "vqa", "questions"}


def test_question_quality(micro_params):
    scene = Scene((SceneObject("red", "circle", "top left", (2, 2, 12, 12)),), (240, 240, 240))
    assert question_quality("What color is the circle?", scene, micro_params) == (True, True)
    assert question_quality("What color is the square?", scene, micro_params) == (True, False)
    assert question_quality("Is there a blue cross in the image?", scene, micro_params) == (True, True)
    assert question_quality("red circle circle", scene, micro_params) == (False, False)


def test_the_dev_set_is_other_images_of_the_same_world_and_world_dev_scores_it(micro_project, micro_params):
    import dataclasses
    import hashlib

    from sena_cli.frame import read_jsonl

    world = micro_project / "data" / "world"

    def digests(split):
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (world / split / "images").iterdir()}

    test, dev = digests("eval"), digests("eval_dev")
    assert len(test) == 8 and len(dev) == 4 and not test & dev  # disjoint images (MICRO's sizes)
    for split in ("eval", "eval_dev"):
        assert {"pope_random.jsonl", "pope_adversarial.jsonl", "vqa.jsonl", "truth.jsonl"} <= \
            {p.name for p in (world / split).iterdir()}
    assert {r["image"] for r in read_jsonl(world / "eval_dev" / "pope_random.jsonl")} <= \
        {p.name for p in (world / "eval_dev" / "images").iterdir()}
    params = dataclasses.replace(micro_params, eval=dataclasses.replace(micro_params.eval, benchmarks=["world_dev"]))
    run_eval(params, 0, root=micro_project)
    metrics = json.loads((micro_project / "metrics" / "iter0.json").read_text())
    assert set(metrics) == {"world_dev"} and set(metrics["world_dev"]) == {"pope", "chair"}
    assert set(metrics["world_dev"]["pope"]) == {"random", "popular", "adversarial", "n"}
    assert 0.0 <= metrics["world_dev"]["chair"]["chair_i"] <= 1.0
