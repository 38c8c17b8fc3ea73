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
    assert set(metrics["chair"]) == {"chair_s", "chair_i", "recall", "caption_f1", "partner", "n"}
    assert set(metrics["chair"]["n"]) == {"chair_s", "chair_i", "recall", "partner"}
    assert set(metrics["pope"]["partner"]) == set(metrics["pope"]["n"]["partner"]) == {"yes_rate", "other_yes_rate"}
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

    test, dev, cal = digests("eval"), digests("eval_dev"), digests("eval_cal")
    # disjoint images (MICRO's sizes): the calibration set is seen by neither the study's choices nor its results
    assert len(test) == 8 and len(dev) == 4 and len(cal) == 4 and not test & dev and not cal & (test | dev)
    for split in ("eval", "eval_dev", "eval_cal"):
        assert {"pope_random.jsonl", "pope_adversarial.jsonl", "vqa.jsonl", "truth.jsonl"} <= \
            {p.name for p in (world / split).iterdir()}
    assert {r["image"] for r in read_jsonl(world / "eval_dev" / "pope_random.jsonl")} <= \
        {p.name for p in (world / "eval_dev" / "images").iterdir()}
    params = dataclasses.replace(micro_params, eval=dataclasses.replace(micro_params.eval, benchmarks=["world_dev"]))
    run_eval(params, 0, root=micro_project)
    metrics = json.loads((micro_project / "metrics" / "iter0.json").read_text())
    assert set(metrics) == {"world_dev"} and set(metrics["world_dev"]) == {"pope", "chair"}
    assert set(metrics["world_dev"]["pope"]) == {"random", "popular", "adversarial", "partner", "n"}
    assert 0.0 <= metrics["world_dev"]["chair"]["chair_i"] <= 1.0
    params = dataclasses.replace(micro_params, eval=dataclasses.replace(micro_params.eval, benchmarks=["world_cal"]))
    run_eval(params, 0, root=micro_project)
    metrics = json.loads((micro_project / "metrics" / "iter0.json").read_text())
    assert set(metrics) == {"world_cal"} and set(metrics["world_cal"]) == {"pope", "chair", "vqa"}
    assert metrics["world_cal"]["vqa"]["n"]["accuracy"] == len(read_jsonl(world / "eval_cal" / "vqa.jsonl"))


def _scene(*names, hard=()):
    quadrants = ("top left", "top right", "bottom left", "bottom right")
    return Scene(tuple(SceneObject(*n.split(" "), q, (2, 2, 12, 12), n in hard) for n, q in zip(names, quadrants)),
                 (240, 240, 240))


def test_partner_rates_count_each_absent_partner_negative_once_against_other_absent_objects(micro_params):
    from sena_cli.bench.world import caption_partner_rates, pope_partner_rates
    from sena_cli.world.scenes import object_names, partners

    w = micro_params.world
    mates = partners(w)
    scene = _scene("red circle")
    partner = mates["red circle"][0]
    other = next(n for n in object_names(w) if n != "red circle" and n not in mates["red circle"])

    def row(split, name, label, said):
        return {"benchmark": f"pope_{split}", "image": "a.png", "text": f"Is there a {name} in the image?",
                "label": label, "parsed": said}
    records = [row("random", partner, "no", "yes"), row("adversarial", partner, "no", "yes"),  # one question, twice
               row("adversarial", mates["red circle"][1], "no", "no"), row("random", other, "no", "yes"),
               row("popular", "red circle", "yes", "yes")]
    rates, n = pope_partner_rates(records, {"a.png": scene}, micro_params)
    assert n == {"yes_rate": 2, "other_yes_rate": 1}
    assert rates == {"yes_rate": 0.5, "other_yes_rate": 1.0}
    # captions: a chance per absent partner; the share of hallucinated mentions that are partners
    rates, n = caption_partner_rates([["red circle", partner, other]], [["red circle"]], micro_params)
    assert n == {"rate": len(mates["red circle"]), "share": 2}
    assert rates == {"rate": 1 / len(mates["red circle"]), "share": 0.5}
