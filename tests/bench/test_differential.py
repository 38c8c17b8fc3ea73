"""sena's scorers against each benchmark's OFFICIAL scoring code, on hard-case answer sets.

The expected values in tests/bench/fixtures/*.json were produced once by the official code
itself (POPE's evaluate.py, AMBER's inference.py, CHAIR's chair.py, VLMEvalKit's circular
evaluation) by scripts/official_bench_fixtures.py; each fixture names the repository and
commit, and the language-data substitutions the run needed. sena must match them exactly.
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from sena_cli.bench import amber as amber_lib
from sena_cli.bench import chair as chair_lib
from sena_cli.bench import coco_chair as coco_chair_bench
from sena_cli.bench import coco_pope as coco_pope_bench
from sena_cli.bench import mmbench as mmb
from sena_cli.bench.pope import parse_yes_no, pope_metrics
from sena_cli.bench.registry import Context
from sena_cli.config import params_from_dict
from sena_fixtures.scripted import ScriptedVLM

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _images(root: Path, names) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in set(names):
        Image.new("RGB", (8, 8), "gray").save(root / name)


def test_fixtures_name_the_official_code_and_its_commit():
    for name, repo in (("pope", "AoiDragon/POPE"), ("amber", "junyangwang0410/AMBER"),
                       ("chair", "LisaAnne/Hallucination"), ("mmbench", "open-compass/VLMEvalKit")):
        official = load(name)["official"]
        assert official.startswith(repo + "@") and len(official.split("@")[1]) == 40


# ---------------------------------------------------------------- POPE

def test_pope_equals_evaluate_py_on_every_split():
    fixture = load("pope")
    for split, case in fixture["splits"].items():
        parsed = [parse_yes_no(a) for a in case["answers"]]
        assert pope_metrics(parsed, [q["label"] for q in case["questions"]]) == case["expected"], split


def test_coco_pope_runner_equals_evaluate_py(tmp_path):
    fixture = load("pope")
    files, script = [], {}
    for split, case in fixture["splits"].items():
        path = tmp_path / f"coco_pope_{split}.json"
        path.write_text("".join(json.dumps(q) + "\n" for q in case["questions"]))
        files.append(str(path))
        _images(tmp_path / "val2014", [q["image"] for q in case["questions"]])
        script[split] = iter(case["answers"])
    params = params_from_dict({"eval": {"coco_pope": {"files": files, "image_root": str(tmp_path / "val2014")}}})
    order = iter(s for s, case in fixture["splits"].items() for _ in case["questions"])
    metrics, records = coco_pope_bench.run(Context(params), ScriptedVLM(lambda t: next(script[next(order)])),
                                          lambda n: None)
    counts = metrics.pop("n")
    assert metrics == {split: case["expected"] for split, case in fixture["splits"].items()}
    assert {split: n["accuracy"] for split, n in counts.items()} == {
        split: len(case["questions"]) for split, case in fixture["splits"].items()}
    assert len(records) == sum(len(c["questions"]) for c in fixture["splits"].values())


@pytest.mark.parametrize("answer, official", [
    ("NO", "yes"), ("No!", "yes"), ("Not really.", "yes"), ("No\nThere is none.", "yes"),
    ("There is\nno dog.", "yes"), ("Yes,no doubt", "yes"), ("No.", "no"), ("no,", "no"), ("", "yes"),
])
def test_pope_parsing_keeps_pope_quirks_and_lenient_is_an_option(answer, official):
    assert parse_yes_no(answer) == official
    lenient = parse_yes_no(answer, "lenient")
    assert lenient in ("yes", "no")
    if answer in ("NO", "No!", "Not really.", "No\nThere is none."):
        assert lenient == "no"  # what the lenient option is for


# ---------------------------------------------------------------- AMBER

def _amber_data(fixture: dict) -> amber_lib.AmberData:
    top = max(int(i) for i in fixture["annotations"])
    annotations = [None] * top
    for i, a in fixture["annotations"].items():
        annotations[int(i) - 1] = a
    words = [line.split("\n")[0] for line in fixture["safe_words"].splitlines(keepends=True)]
    return amber_lib.AmberData(fixture["queries"], annotations, fixture["relation"], words)


def _amber_similar(fixture: dict):
    table = {frozenset((a, b)): s for a, b, s in fixture["similarity"]}

    def similar(a, b):
        return (1.0 if a == b else table.get(frozenset((a, b)), 0.0)) > fixture["threshold"]

    return similar


def test_amber_equals_inference_py_on_every_block():
    fixture = load("amber")
    got = amber_lib.score(fixture["responses"], fixture["nouns"], [q["id"] for q in fixture["queries"]],
                          _amber_data(fixture), _amber_similar(fixture))
    assert got == fixture["expected"]
    assert set(got) == {"generative", "discriminative", "existence", "attribute", "state", "number", "action",
                        "relation"}


def test_amber_runner_equals_inference_py_on_the_generative_queries(tmp_path):
    fixture = load("amber")
    generative = [(q, r, n) for q, r, n in zip(fixture["queries"], fixture["responses"], fixture["nouns"])
                  if n is not None]
    ids = [q["id"] for q, _, _ in generative]
    assert ids == list(range(1, len(ids) + 1))  # AMBER's first queries are its generative ones
    (tmp_path / "query_generative.json").write_text(json.dumps([q for q, _, _ in generative]))
    (tmp_path / "annotations.json").write_text(json.dumps([fixture["annotations"][str(i)] for i in ids]))
    (tmp_path / "relation.json").write_text(json.dumps(fixture["relation"]))
    (tmp_path / "safe_words.txt").write_text(fixture["safe_words"])
    _images(tmp_path / "image", [q["image"] for q, _, _ in generative])
    params = params_from_dict({"eval": {"amber": {
        "queries": str(tmp_path / "query_generative.json"), "annotations": str(tmp_path / "annotations.json"),
        "relation": str(tmp_path / "relation.json"), "safe_words": str(tmp_path / "safe_words.txt"),
        "image_root": str(tmp_path / "image")}}})
    answers = iter(r for _, r, _ in generative)
    nouns = {r: n for _, r, n in generative}
    metrics, _ = amber_lib.run(Context(params), ScriptedVLM(lambda t: next(answers)), lambda n: None,
                                nouns=nouns.__getitem__, similar=_amber_similar(fixture))
    # The same counts as the full run's generative block: the discriminative queries do not touch them.
    assert metrics == {"generative": fixture["expected"]["generative"]}


def test_amber_discriminative_takes_only_exact_yes_and_no():
    fixture = load("amber")
    data = _amber_data(fixture)
    state = next(q["id"] for q in fixture["queries"] if data.annotation(q["id"])["type"].endswith("state")
                 and data.annotation(q["id"])["truth"] == "no")
    # 1 of 1 right is 99.9: AMBER's denominators start at 0.001
    for answer, right in (("No", 99.9), ("no", 0.0), ("No.", 0.0), ("", 0.0), (" No", 0.0)):
        got = amber_lib.score([answer], [None], [state], data, _amber_similar(fixture))
        assert got["state"]["accuracy"] == right, answer
    lenient = amber_lib.score(["no."], [None], [state], data, _amber_similar(fixture), yes_no="pope")
    assert lenient["state"]["accuracy"] == 99.9


# ---------------------------------------------------------------- MMBench

def _mmbench_params(path: Path, circular: bool = True):
    return params_from_dict({"eval": {"mmbench": {"tsv": str(path), "circular": circular}}})


def _mmbench_vlm(fixture: dict, rows):
    """Answers each pass with the fixture's prediction for that row (found by its prompt)."""
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(fixture["tsv_full"]), sep="\t")
    by_index = dict(zip(df["index"], fixture["predictions"]))
    prompts = {mmb.prompt(r): by_index[r.index] for r in rows}
    return ScriptedVLM(prompts.__getitem__)


def test_mmbench_reads_both_published_layouts_alike(tmp_path):
    fixture = load("mmbench")
    (tmp_path / "full.tsv").write_text(fixture["tsv_full"])
    (tmp_path / "indexed.tsv").write_text(fixture["tsv_indexed"])
    full, indexed = mmb.read_mmbench_tsv(tmp_path / "full.tsv"), mmb.read_mmbench_tsv(tmp_path / "indexed.tsv")
    assert full == indexed  # pass rows' images resolved to their main row's
    assert len(full) == len(fixture["predictions"]) and sum(r.is_main for r in full) == 6
    assert "1000000" in fixture["tsv_indexed"] and len(fixture["tsv_indexed"]) < len(fixture["tsv_full"])
    # pandas reads the option "None" as missing, as VLMEvalKit does: that question has 3 options
    assert [len(r.options) for r in full if r.is_main] == [4, 4, 2, 3, 3, 4]


@pytest.mark.parametrize("layout", ["tsv_full", "tsv_indexed"])
def test_mmbench_equals_vlmevalkit_circular_evaluation(tmp_path, layout):
    fixture = load("mmbench")
    path = tmp_path / "mmbench.tsv"
    path.write_text(fixture[layout])
    rows = mmb.read_mmbench_tsv(path)
    vlm = _mmbench_vlm(fixture, rows)
    metrics, records = mmb.run(Context(_mmbench_params(path)), vlm, lambda n: None)
    expected = {("overall" if k == "Overall" else k): v for k, v in fixture["expected"].items()}
    assert metrics == expected
    assert {str(r["question_index"]): int(r["question_right"]) for r in records} == fixture["hits"]
    assert len(vlm.asked) == len(rows)  # each pass asked once, as the file holds it: no re-rotation


def test_mmbench_answer_matching_cases():
    options = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}
    assert mmb.match_option("A red cube is shown, nothing else here", options) is None  # 'A' too early
    assert mmb.match_option("Between A and B, I pick B", options) is None  # several letters
    assert mmb.match_option("green", options) == "B"  # option text without a letter
    assert mmb.match_option("the answer is c", options) == "C"
    assert mmb.match_option("Z", options) == "Z"
    assert mmb.match_option(mmb.as_read_back(""), options) is None


# ---------------------------------------------------------------- CHAIR

def _chair(fixture: dict) -> chair_lib.CocoChair:
    return chair_lib.CocoChair(fixture["synonyms"], fixture["tokens"].__getitem__, fixture["singular"].__getitem__)


def test_coco_chair_equals_chair_py_per_caption_and_overall():
    fixture = load("chair")
    chair = _chair(fixture)
    names = {c["id"]: c["name"] for c in fixture["instances"]["categories"]}
    said, truths = [], []
    for image, caption in fixture["generated"].items():
        classes = [names[a["category_id"]] for a in fixture["instances"]["annotations"] if str(a["image_id"]) == image]
        refs = [a["caption"] for a in fixture["captions"]["annotations"] if str(a["image_id"]) == image]
        mentions, truth = chair.mentions(caption), chair.truth(classes, refs)
        official = fixture["per_caption"][image]
        assert mentions == official["generated"] and sorted(truth) == official["truth"], image
        assert [m for m in mentions if m not in truth] == [node for _, node in official["hallucinated"]], image
        said.append(mentions)
        truths.append(truth)
    metrics = chair_lib.coco_chair_metrics(said, truths)
    assert {k: metrics[k] for k in ("chair_s", "chair_i")} == fixture["expected"]


def test_coco_chair_runner_equals_chair_py(tmp_path):
    fixture = load("chair")
    for name in ("instances", "captions"):
        (tmp_path / f"{name}_val2014.json").write_text(json.dumps(fixture[name]))
    (tmp_path / "synonyms.txt").write_text(fixture["synonyms"])
    _images(tmp_path / "val2014", [im["file_name"] for im in fixture["instances"]["images"]])
    params = params_from_dict({"eval": {"coco_chair": {
        "instances": [str(tmp_path / "instances_val2014.json")], "captions": [str(tmp_path / "captions_val2014.json")],
        "synonyms": str(tmp_path / "synonyms.txt"), "image_root": str(tmp_path / "val2014")}}})
    ids = sorted(int(i) for i in fixture["generated"])
    captions = iter(fixture["generated"][str(i)] for i in ids)
    tools = (fixture["tokens"].__getitem__, fixture["singular"].__getitem__, {})
    metrics, records = coco_chair_bench.run(Context(params), ScriptedVLM(lambda t: next(captions)), lambda n: None,
                                           tools=tools)
    assert {k: metrics[k] for k in ("chair_s", "chair_i")} == fixture["expected"]
    assert 0.0 < metrics["recall"] <= 1.0 and "fallback" not in metrics
    assert [r["image_id"] for r in records] == ids
