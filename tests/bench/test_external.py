"""Published benchmarks (COCO POPE, AMBER, MMBench) on fixture files written in their real formats."""

import base64
import io
import json

import pytest
from PIL import Image

from sena_cli.bench import amber as amber_lib
from sena_cli.bench import coco_pope as coco_pope_bench
from sena_cli.bench import mmbench as mmb
from sena_cli.bench.coco_pope import read_pope_file
from sena_cli.bench.registry import Context
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_fixtures.scripted import ScriptedVLM
from tests.helpers import project_from


def _draw(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


# ---------------------------------------------------------------- COCO POPE

def _pope_fixture(tmp_path):
    """10 questions: the scripted model gets TP=3, FP=2, TN=4, FN=1."""
    labels = ["yes"] * 4 + ["no"] * 6
    said = ["yes", "yes", "yes", "no", "yes", "yes", "no", "no", "no", "no"]
    lines, script = [], {}
    for i, (label, answer) in enumerate(zip(labels, said), 1):
        image = f"COCO_val2014_{i:012d}.jpg"
        _draw(tmp_path / "val2014" / image, "red")
        text = f"Is there a thing{i} in the image?"
        lines.append(json.dumps({"question_id": i, "image": image, "text": text, "label": label}))
        script[text] = "Yes, there is." if answer == "yes" else "No, there is not."
    (tmp_path / "coco_pope_random.json").write_text("\n".join(lines) + "\n")
    return script


def test_coco_pope_on_a_10_question_file_with_known_counts(tmp_path):
    script = _pope_fixture(tmp_path)
    params = params_from_dict({"eval": {"coco_pope": {"files": [str(tmp_path / "coco_pope_random.json")],
                                                      "image_root": str(tmp_path / "val2014")}}})
    vlm = ScriptedVLM(lambda t: script[t.split(" Answer")[0]])
    metrics, records = coco_pope_bench.run(Context(params), vlm, lambda n: None)
    tp, fp, tn, fn = 3, 2, 4, 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert metrics["random"] == pytest.approx({
        "accuracy": (tp + tn) / 10, "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall), "yes_ratio": (tp + fp) / 10})
    assert len(records) == 10 and records[0]["question_id"] == 1
    assert coco_pope_bench.count(Context(params)) == 10


@pytest.mark.parametrize("content, message", [
    ('{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?"}\n', "line 1 has no 'label'"),
    ('{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"}\n',
     "line 1: 'label' must be one of \"yes\", \"no\", got \"maybe\""),
    ("not json\n", "malformed JSON at line 1; is this a POPE question file"),
    ("", "no questions"),
])
def test_malformed_pope_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "coco_pope_random.json"
    path.write_text(content)
    with pytest.raises(SenaError, match=message) as err:
        read_pope_file(path)
    assert str(path) in str(err.value)
    with pytest.raises(SenaError, match="not found"):
        read_pope_file(tmp_path / "missing.json")


def test_a_pope_image_outside_the_root_is_refused(tmp_path):
    _pope_fixture(tmp_path)
    path = tmp_path / "coco_pope_random.json"
    path.write_text(json.dumps({"question_id": 1, "image": "../escape.jpg", "text": "Is?", "label": "no"}) + "\n")
    params = params_from_dict({"eval": {"coco_pope": {"files": [str(path)], "image_root": str(tmp_path / "val2014")}}})
    with pytest.raises(SenaError, match="leaves eval.coco_pope.image_root"):
        coco_pope_bench.run(Context(params), ScriptedVLM(lambda t: "no"), lambda n: None)


# ---------------------------------------------------------------- MMBench

def _b64_png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _mmbench_fixture(tmp_path):
    """Two questions in MMBench's layout: question 0 with its four circular passes, question 1
    (two options) with its two; VLMEvalKit's copy style: pass rows name the main row's image."""
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\tsource\tl2-category\tsplit"
    colours = ["red", "green", "blue", "yellow"]
    rows = []
    for k in range(4):
        order = colours[k:] + colours[:k]
        rows.append((str(k * 1_000_000), "What colour is the square?", "Look closely.", *order,
                     "ABCD"[(0 - k) % 4], "color_recognition", _b64_png("red") if k == 0 else "0"))
    for k in range(2):
        order = ["circle", "square"][k:] + ["circle", "square"][:k]
        rows.append((str(1 + k * 1_000_000), "What shape?", "", *order, "", "", "BA"[k], "shape_recognition",
                     _b64_png("green") if k == 0 else "1"))
    lines = [header] + ["\t".join([*r, "src", "coarse_perception", "dev"]) for r in rows]
    (tmp_path / "mmbench_dev_en.tsv").write_text("\n".join(lines) + "\n")


def test_mmbench_circular_counts_a_question_right_only_if_every_pass_is(tmp_path):
    _mmbench_fixture(tmp_path)
    params = params_from_dict({"eval": {"mmbench": {"tsv": str(tmp_path / "mmbench_dev_en.tsv")}}})

    def answer(prompt):
        options = {line[0]: line[3:] for line in prompt.splitlines() if line[:2] in ("A.", "B.", "C.", "D.")}
        if prompt.startswith("Look closely."):  # always right: names the letter of 'red'
            return next(letter for letter, text in options.items() if text == "red")
        return "B"  # right in the first pass only

    vlm = ScriptedVLM(answer)
    metrics, records = mmb.run(Context(params), vlm, lambda n: None)
    assert len(vlm.asked) == 4 + 2  # the passes the file holds, each once
    assert metrics == {"overall": 0.5, "CP": 0.5, "color_recognition": 1.0, "shape_recognition": 0.0}
    assert vlm.asked[0].endswith(mmb.INSTRUCTION)
    params = params_from_dict({"eval": {"mmbench": {"tsv": str(tmp_path / "mmbench_dev_en.tsv"), "circular": False}}})
    vlm = ScriptedVLM(answer)
    assert mmb.run(Context(params), vlm, lambda n: None)[0]["overall"] == 1.0 and len(vlm.asked) == 2


def test_malformed_mmbench_tsv_is_refused(tmp_path):
    path = tmp_path / "mm.tsv"
    path.write_text("index\tquestion\tA\tB\tanswer\n0\tq\ta\tb\tA\n")
    with pytest.raises(SenaError, match="missing column.*image"):
        mmb.read_mmbench_tsv(path)
    path.write_text("index\tquestion\tA\tB\tanswer\timage\n0\tq\ta\tb\tC\t" + _b64_png("red") + "\n")
    with pytest.raises(SenaError, match="line 2 has answer 'C' outside its options"):
        mmb.read_mmbench_tsv(path)
    path.write_text("index\tquestion\tA\tB\tanswer\timage\n1000000\tq\ta\tb\tA\t7\n")
    with pytest.raises(SenaError, match="refers to index 7, which has no image"):
        mmb.read_mmbench_tsv(path)
    path.write_text("index\tquestion\tA\tB\tanswer\timage\n0\tq\ta\tb\tA\t" + "!" * 80 + "\n")
    with pytest.raises(SenaError, match="not base64"):
        mmb.read_mmbench_tsv(path)


# ---------------------------------------------------------------- AMBER

def _amber_fixture(tmp_path, **amber):
    for i in (1, 2, 3, 4):
        _draw(tmp_path / "image" / f"AMBER_{i}.jpg", "white")
    queries = [{"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
               {"id": 2, "image": "AMBER_2.jpg", "query": "Describe this image."},
               {"id": 3, "image": "AMBER_3.jpg", "query": "Is there a dog in this image?"},
               {"id": 4, "image": "AMBER_4.jpg", "query": "Is there a cat in this image?"}]
    annotations = [{"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat", "frisbee"]},
                   {"id": 2, "type": "generative", "truth": ["car"], "hallu": ["person"]},
                   {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
                   {"id": 4, "type": "discriminative-hallucination", "truth": "yes"}]
    relation = {"dog": ["puppy"], "grass": ["lawn"], "cat": ["kitten"], "frisbee": [], "car": ["vehicle"],
                "person": ["man", "woman"], "tree": ["turf"]}
    (tmp_path / "query_all.json").write_text(json.dumps(queries))
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    (tmp_path / "relation.json").write_text(json.dumps(relation))
    (tmp_path / "safe_words.txt").write_text("picture\n")
    return params_from_dict({"eval": {"amber": {
        "queries": str(tmp_path / "query_all.json"), "annotations": str(tmp_path / "annotations.json"),
        "relation": str(tmp_path / "relation.json"), "safe_words": str(tmp_path / "safe_words.txt"),
        "image_root": str(tmp_path / "image"), **amber}}})


def test_amber_scores_by_hand(tmp_path):
    params = _amber_fixture(tmp_path)
    answers = {
        # 'puppy' is an associated word of dog; 'kitten' -> hallucination that is in the hallu list (cat);
        # 'tree' -> a hallucination outside it; 'sky' is not in AMBER's vocabulary, so not counted.
        1: "puppy kitten tree sky",
        2: "vehicle",  # car covered, no hallucination
        3: "Yes, there is a dog.",  # truth no -> wrong, and not an exact "No"
        4: "Yes",  # truth yes -> right
    }
    images = iter([1, 2, 3, 4])
    vlm = ScriptedVLM(lambda t: answers[next(images)])
    metrics, records = amber_lib.run(Context(params), vlm, lambda n: None, nouns=str.split, similar=lambda a, b: False)
    g = metrics["generative"]
    # AMBER's arithmetic: percentages rounded to 0.1, denominators starting at 0.001
    assert g["chair"] == round(2 / 4.001 * 100, 1)  # hallucinated kitten, tree of puppy, kitten, tree, vehicle
    assert g["cover"] == round(2 / 3.001 * 100, 1)  # dog and car of dog, grass, car
    assert g["hal"] == round(100 - 1 / 2.001 * 100, 1)
    assert g["cog"] == round(1 / 3.001 * 100, 1)  # cat of cat, frisbee, person
    d = metrics["discriminative"]
    assert d["accuracy"] == round(1 / 2.001 * 100, 1) and d["precision"] == 0.0 and d["f1"] == 0.0
    assert set(metrics) == {"generative", "discriminative", "existence"}
    assert len(records) == 4


def test_amber_similarity_counts_near_synonyms_as_truth(tmp_path):
    params = _amber_fixture(tmp_path)
    data = amber_lib.data_of(Context(params))
    near = {("turf", "grass")}  # spaCy would say so; the test says it by hand

    def generative(nouns, similar):
        return amber_lib.score(["x"] * len(nouns), nouns, [1] * len(nouns), data, similar)["generative"]

    exact = generative([["turf"]], lambda a, b: False)
    assert exact["chair"] == round(1 / 1.001 * 100, 1) and exact["cover"] == 0.0
    similar = generative([["turf"], ["tree"]], lambda a, b: (a, b) in near)
    assert similar["chair"] == round(1 / 2.001 * 100, 1)  # turf ~ grass is truth; tree is still a hallucination
    assert similar["cover"] == round(1 / 4.001 * 100, 1)  # grass, in the first response of two


def test_amber_without_language_data_is_refused_before_the_model_unless_stand_ins_are_asked_for(tmp_path):
    try:
        import nltk  # noqa: F401
        pytest.skip("nltk is installed here")
    except ImportError:
        pass
    params = _amber_fixture(tmp_path)
    with pytest.raises(SenaError) as err:
        amber_lib.count(Context(params))  # eval counts every benchmark's questions before loading the model
    message = str(err.value)
    assert message.startswith("eval.amber: AMBER's generative scores need NLTK and its data (pip install "
                              '"sena-cli[bench]" && python -m nltk.downloader punkt ')
    assert "wordnet" in message and "python -m spacy download en_core_web_lg" in message
    assert message.endswith("or set eval.amber.language_standins: true to score with sena's stand-ins "
                            "(not AMBER's numbers)") and "\n" not in message
    with pytest.raises(SenaError, match="language_standins"):
        amber_lib.run(Context(params), ScriptedVLM(lambda t: "A dog."), lambda n: None)
    # by hand, it still scores (the scoring takes the extractor and the similarity as arguments)
    assert amber_lib.run(Context(params), ScriptedVLM(lambda t: "A dog."), lambda n: None, nouns=str.split,
                         similar=lambda a, b: False)[0]["generative"]

    params = _amber_fixture(tmp_path, language_standins=True)
    assert amber_lib.count(Context(params)) == 4
    vlm = ScriptedVLM(lambda t: "A puppy on the grass.")
    metrics, _ = amber_lib.run(Context(params), vlm, lambda n: None)
    assert 'pip install "sena-cli[bench]"' in metrics["fallback"]["generative_nouns"]
    assert "en_core_web_lg" in metrics["fallback"]["generative_similarity"]
    assert "exact matching" in metrics["fallback"]["generative_similarity"]
    assert metrics["generative"]["cover"] > 0  # puppy (dog) and grass found by the stand-in


def test_malformed_amber_files_are_refused(tmp_path):
    params = _amber_fixture(tmp_path)
    (tmp_path / "annotations.json").write_text("[")
    with pytest.raises(SenaError, match="annotations.json: malformed JSON at line 1; is this an AMBER annotation file"):
        amber_lib.data_of(Context(params))
    (tmp_path / "annotations.json").write_text(json.dumps([{"id": 1, "type": "generative", "truth": []}]))
    with pytest.raises(SenaError, match="query id 2 has no annotation"):
        amber_lib.data_of(Context(params))


def test_an_empty_benchmark_path_is_refused_naming_the_key():
    params = params_from_dict({"eval": {"benchmarks": ["mmbench"]}})
    with pytest.raises(SenaError, match="'eval.mmbench.tsv' is empty"):
        mmb.count(Context(params))


def test_sena_eval_writes_published_benchmarks_under_their_own_keys(micro_project, micro_dict, tmp_path):
    from sena_cli.stages.eval import run_eval

    _pope_fixture(tmp_path)
    _mmbench_fixture(tmp_path)
    params = params_from_dict({**micro_dict, "eval": {
        **micro_dict["eval"], "benchmarks": ["world_pope", "coco_pope", "mmbench"],
        "coco_pope": {"files": [str(tmp_path / "coco_pope_random.json")], "image_root": str(tmp_path / "val2014")},
        "mmbench": {"tsv": str(tmp_path / "mmbench_dev_en.tsv")}}})
    root = project_from(micro_project, tmp_path / "project")
    result = run_eval(params, 0, root=root)
    metrics = json.loads((root / "metrics" / "iter0.json").read_text())
    assert metrics == json.loads(json.dumps(result["metrics"]))
    assert set(metrics) == {"pope", "coco_pope", "mmbench"}
    assert set(metrics["coco_pope"]["random"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert 0.0 <= metrics["mmbench"]["overall"] <= 1.0
    answers = (root / "data/iter0/eval/answers.jsonl").read_text().splitlines()
    assert sum('"benchmark": "mmbench"' in line for line in answers) == 6


def test_coco_chair_without_nltk_or_pattern_falls_back_and_says_so_in_the_metrics():
    from sena_cli.bench import chair as chair_lib

    tokenize, singularize, notes = chair_lib.language_tools()
    try:
        import nltk  # noqa: F401
    except ImportError:
        assert 'pip install "sena-cli[bench]"' in notes["tokenize"]
        assert tokenize("two dogs, a cat.") == ["two", "dogs", ",", "a", "cat", "."]
    try:
        import pattern.en  # noqa: F401
    except ImportError:
        assert "pip install Pattern" in notes["singularize"]
        assert [singularize(w) for w in ("dogs", "buses", "people", "glass", "benches")] == [
            "dog", "bus", "person", "glass", "bench"]


def test_coco_chair_without_nltk_is_refused_before_the_model_unless_stand_ins_are_asked_for(tmp_path):
    from sena_cli.bench import coco_chair

    try:
        import nltk  # noqa: F401
        pytest.skip("nltk is installed here")
    except ImportError:
        pass
    files = {"synonyms": str(tmp_path / "synonyms.txt"), "instances": [str(tmp_path / "instances.json")],
             "captions": [str(tmp_path / "captions.json")]}
    (tmp_path / "synonyms.txt").write_text("dog, puppy\n")
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 18}],
        "categories": [{"id": 18, "name": "dog"}]}))
    (tmp_path / "captions.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "A dog."}]}))
    params = params_from_dict({"eval": {"coco_chair": files}})
    with pytest.raises(SenaError) as err:
        coco_chair.count(Context(params))
    assert str(err.value) == (
        "eval.coco_chair: CHAIR's tokenizer needs NLTK and its punkt data, missing here; install them (pip install "
        '"sena-cli[bench]" && python -m nltk.downloader punkt punkt_tab), or set '
        "eval.coco_chair.language_standins: true to score with sena's stand-in (not CHAIR's numbers)")
    params = params_from_dict({"eval": {"coco_chair": {**files, "language_standins": True}}})
    assert coco_chair.count(Context(params)) == 1
