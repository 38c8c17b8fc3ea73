"""Score hard-case answer sets with each benchmark's OFFICIAL code and store the results as fixtures.

tests/bench/test_differential.py checks that sena's scorers give exactly these values. The
official code runs from checkouts of its public repositories; nothing of it is copied into
sena. Run with a Python that has the official code's own dependencies (not sena's venv):

    python -m venv /tmp/offvenv && /tmp/offvenv/bin/pip install nltk==3.10.4 pandas numpy openpyxl \\
        xlsxwriter rich requests python-dotenv portalocker tabulate validators huggingface_hub sty pillow
    git clone https://github.com/AoiDragon/POPE /tmp/off/POPE        # and AMBER, Hallucination,
    ...                                                               # VLMEvalKit, pattern3's sdist
    /tmp/offvenv/bin/python scripts/official_bench_fixtures.py --checkouts /tmp/off \\
        --pattern3 /tmp/dl/pattern3-3.0.0 --wordnet /usr/share/wordnet --out tests/bench/fixtures

(docs/benchmarks.md has the exact steps and commits.) Where the official code needs language
data that cannot be installed here, the smallest substitution is made and written into each
fixture's "substitutions":
- NLTK's punkt_tab (sentence splitting inside word_tokenize): nltk's untrained
  PunktSentenceTokenizer; the hard cases have no abbreviations, where a trained model differs.
- NLTK's averaged_perceptron_tagger_eng (AMBER's noun extraction): every word-initial token
  is tagged NN, so every vocabulary word counts as a noun (the tagger decides nothing else).
- NLTK's WordNet: WordNet 3.0 from Debian's wordnet-base/wordnet-sense-index (the same
  database), with its lexnames file written from the lexnames(5WN) manual page.
- spaCy's en_core_web_lg similarity (AMBER): a fixed table of word-pair similarities, stored
  in the fixture and used by sena's test as its similarity function.
- Pattern's singularize (CHAIR): pattern3 3.0.0's inflect.singularize (the Python 3 port of
  Pattern's rules), loaded on its own with the unrelated verb tables stubbed.
- CHAIR's chair.py is Python 2: its two print statements become print() calls and
  `from misc import *` (which pulls in unrelated analysis modules) becomes `import os`.
- VLMEvalKit: the package __init__ files (which import every model and dataset) are not
  run; multiple_choice.py, matching_util.py and vlmeval.smp run unchanged.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

SUBSTITUTIONS = {
    "punkt": "NLTK punkt_tab -> nltk.tokenize.punkt.PunktSentenceTokenizer() (untrained)",
    "tagger": "NLTK averaged_perceptron_tagger_eng -> every token starting with a letter tagged NN",
    "wordnet": "NLTK wordnet data -> WordNet 3.0 of Debian wordnet-base + wordnet-sense-index (lexnames from "
               "lexnames(5WN))",
    "spacy": "spaCy en_core_web_lg similarity -> the fixed table 'similarity' of this fixture",
    "pattern": "Pattern singularize -> pattern3 3.0.0 pattern3/text/en/inflect.py singularize",
    "py2": "chair.py: print statements -> print(); `from misc import *` -> `import os`",
    "vlmevalkit_init": "vlmeval package __init__ files not executed (they import every model)",
}


def git_head(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def write(out: Path, name: str, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def use_untrained_punkt() -> None:
    import nltk.tokenize
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    nltk.tokenize._get_punkt_tokenizer = lambda language="english": PunktSentenceTokenizer()


# ---------------------------------------------------------------- POPE

POPE_ANSWERS = [
    "Yes", "No", "NO", "no", "No.", "Not really.", "No!", "No\nThere is none.", "There is\nno dog.", "Yes,no doubt",
    "not at all", "I do not see one.", "There is no cat, but a dog.", "Yes. No cat though.", "", "yes",
    "No, there is not.", "Nope", "I don't think so.", "There isn't any.", " no", "no,", "NOT", "Yes, it is not clear.",
    "The answer is no", "no.", "N o", "no\n", "Yes\n", "No,", "There is a dog.", "Not", "There is not.",
    "Yes, there is.", "no!", "(No)", "It's not there", "no,there is none", "No dog. Yes.", "Yes, a dog; no cat.",
]


def pope(checkouts: Path, out: Path) -> None:
    repo = checkouts / "POPE"
    source = (repo / "evaluate.py").read_text()
    fixtures = {"official": f"AoiDragon/POPE@{git_head(repo)}", "file": "evaluate.py", "substitutions": [],
                "answers": POPE_ANSWERS, "splits": {}}
    rng = random.Random(0)
    for split in ("random", "popular", "adversarial"):
        rows = [json.loads(line) for line in (repo / "output" / "coco" / f"coco_pope_{split}.json").open()][:60]
        answers = [POPE_ANSWERS[(i * 7 + rng.randrange(len(POPE_ANSWERS))) % len(POPE_ANSWERS)]
                   for i in range(len(rows))]
        answers[: len(POPE_ANSWERS)] = POPE_ANSWERS  # every hard case at least once per split
        with tempfile.TemporaryDirectory() as tmp:
            ans, lab = Path(tmp) / "answers.jsonl", Path(tmp) / "labels.jsonl"
            ans.write_text("".join(json.dumps({"question": r["text"], "answer": a}) + "\n"
                                   for r, a in zip(rows, answers)))
            lab.write_text("".join(json.dumps(r) + "\n" for r in rows))
            # evaluate.py leaves both paths for the user to fill in: that is the only edit.
            code = source.replace("ans_file = ''", f"ans_file = {str(ans)!r}").replace(
                "label_file = ''", f"label_file = {str(lab)!r}")
            printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        values = dict(re.findall(r"^(Accuracy|Precision|Recall|F1 score|Yes ratio): (.*)$", printed, re.M))
        names = {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1 score": "f1",
                 "Yes ratio": "yes_ratio"}
        fixtures["splits"][split] = {"questions": rows, "answers": answers,
                                     "expected": {names[k]: float(v) for k, v in values.items()}}
    write(out, "pope.json", fixtures)


# ---------------------------------------------------------------- AMBER

AMBER_GENERATIVE = {
    1: "The image shows a person walking on a road near a lake, with mountains, a forest and grass under the sky. "
       "People are also visible, and an individual holds a dog.",
    2: "A man stands on a boat on the lake. Ships sail near a bridge; clouds float above the buildings. "
       "A plane flies over the hill, and birds rest on the rocks.",
    3: "Two kids play in the grass among flowers. A bench and a house are behind them, under a cloudy sky.",
    4: "",
    5: "A child plays with a toy on the beach by the sea. Seagulls fly over the water, and a ship is far away. "
       "The shore is sandy; a lounge chair stands on the sand.",
    6: "A PERSON rides a bike on the road near a sign. Cows and sheep graze on the ground; a car and a motorcycle "
       "pass by. Trees, a hat, a guardrail and mountains are in the picture, and the sky is clear.",
    7: "A dog. A dog. A dog and a cat.",
    8: "Vehicles, tires, and a street light.",
}
AMBER_DISCRIMINATIVE = ["Yes", "No", "yes", "no", "Yes.", "No.", "", " No", "NO", "No, it is not.", "Yes\n",
                        "Maybe", "No", "Yes", "No", "Yes"]
# spaCy en_core_web_lg stand-in: pairs of words and their similarity (symmetric; a word with itself is 1).
AMBER_SIMILARITY = [
    ["seagull", "bird", 0.83], ["seagull", "seegull", 0.9], ["kid", "child", 0.86], ["boat", "ship", 0.85],
    ["boat", "vessel", 0.81], ["hill", "mountain", 0.84], ["rock", "stone", 0.82], ["flower", "grass", 0.55],
    ["cloud", "sky", 0.81], ["bench", "chair", 0.82], ["house", "building", 0.83], ["chair", "lounge", 0.82],
    ["motorcycle", "bike", 0.88], ["motorcycle", "motorbike", 0.95], ["car", "vehicle", 0.86],
    ["cat", "dog", 0.88], ["puppy", "dog", 0.85], ["sand", "beach", 0.84], ["water", "sea", 0.81],
    ["shore", "beach", 0.82], ["tree", "forest", 0.83], ["cow", "sheep", 0.81], ["plane", "bird", 0.6],
    ["light", "sign", 0.81], ["street", "road", 0.85], ["tire", "wheel", 0.9],
]


def _similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    for x, y, s in AMBER_SIMILARITY:
        if {a, b} == {x, y}:
            return s
    return 0.0


def amber(checkouts: Path, out: Path, wordnet: Path) -> None:
    repo = checkouts / "AMBER"
    annotations = json.loads((repo / "data" / "annotations.json").read_text())
    queries = {q["id"]: q for q in json.loads((repo / "data" / "query" / "query_all.json").read_text())}
    by_type: dict[str, list[int]] = {}
    for a in annotations:
        by_type.setdefault(a["type"], []).append(a["id"])
    ids = list(AMBER_GENERATIVE)
    for t in ("discriminative-attribute-state", "discriminative-attribute-number", "discriminative-attribute-action",
              "discriminative-hallucination", "discriminative-relation", "relation"):
        ids += by_type[t][:8]
    responses = []
    d = 0
    for i in ids:
        if i in AMBER_GENERATIVE:
            responses.append(AMBER_GENERATIVE[i])
        else:
            responses.append(AMBER_DISCRIMINATIVE[d % len(AMBER_DISCRIMINATIVE)])
            d += 1
    data_dir = Path(tempfile.mkdtemp())
    (data_dir / "nltk_data" / "corpora").mkdir(parents=True)
    wn = data_dir / "nltk_data" / "corpora" / "wordnet"
    wn.mkdir()
    for f in wordnet.iterdir():
        if f.is_file():
            (wn / f.name).write_bytes(f.read_bytes())
    (wn / "lexnames").write_text(_lexnames())
    os.environ["NLTK_DATA"] = str(data_dir / "nltk_data")
    inference = data_dir / "inference.json"
    inference.write_text(json.dumps([{"id": i, "response": r} for i, r in zip(ids, responses)]))

    # The official script imports spaCy and loads en_core_web_lg at import time: a stand-in module.
    class Doc:
        def __init__(self, text):
            self.text = text

        def similarity(self, other):
            return _similarity(self.text, other.text)

    spacy = types.ModuleType("spacy")
    spacy.load = lambda name: Doc
    sys.modules["spacy"] = spacy
    import nltk

    use_untrained_punkt()
    nltk.pos_tag = lambda tokens: [(t, "NN" if t[:1].isalpha() else ".") for t in tokens]
    spec = importlib.util.spec_from_file_location("amber_inference", repo / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nouns = {}
    original = module.extract_nouns

    def recording(text):
        nouns[text] = original(text)
        return nouns[text]

    module.extract_nouns = recording
    module.args = argparse.Namespace(word_association=str(repo / "data" / "relation.json"),
                                     safe_words=str(repo / "data" / "safe_words.txt"), inference_data=str(inference),
                                     annotation=str(repo / "data" / "annotations.json"),
                                     metrics=str(repo / "data" / "metrics.txt"), similarity_score=0.8,
                                     evaluation_type="a")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        module.main(module.args)
    expected = _parse_amber(buf.getvalue())
    write(out, "amber.json", {
        "official": f"junyangwang0410/AMBER@{git_head(repo)}", "file": "inference.py --evaluation_type a",
        "substitutions": [SUBSTITUTIONS[k] for k in ("punkt", "tagger", "wordnet", "spacy")],
        "queries": [queries[i] for i in ids], "annotations": {str(i): annotations[i - 1] for i in ids},
        "relation": json.loads((repo / "data" / "relation.json").read_text()),
        "safe_words": (repo / "data" / "safe_words.txt").read_text(),
        "responses": responses, "nouns": [nouns.get(r) if i in AMBER_GENERATIVE else None
                                          for i, r in zip(ids, responses)],
        "similarity": AMBER_SIMILARITY, "threshold": 0.8, "printed": buf.getvalue(), "expected": expected})


def _lexnames() -> str:
    text = subprocess.run(["zcat", "/usr/share/man/man5/lexnames.5WN.gz"], capture_output=True, text=True,
                          check=True).stdout
    lines = []
    for number, name in re.findall(r"^(\d\d)\t(\S+)", text, re.M):
        kind = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]
        lines.append(f"{number}\t{name}\t{kind}\n")
    return "".join(lines)


def _parse_amber(printed: str) -> dict:
    blocks = {"Generative Task": "generative", "Descriminative Task": "discriminative", "Exsitence": "existence",
              "Attribute": "attribute", "State": "state", "Number": "number", "Action": "action",
              "Relation": "relation"}
    out: dict = {}
    current = None
    for line in printed.splitlines():
        head = line.strip().rstrip(":")
        if head in blocks:
            current = out.setdefault(blocks[head], {})
            continue
        m = re.match(r"^\s*([A-Za-z0-9]+):\s+(\S+)", line)
        if m and current is not None:
            current[m.group(1).lower()] = float(m.group(2))
    return out


# ---------------------------------------------------------------- MMBench (VLMEvalKit)

MMB_QUESTIONS = [  # (question, hint, options, answer letter, category, l2-category)
    ("What colour is the square?", "", ["red", "green", "blue", "yellow"], "A", "color_recognition",
     "finegrained_perception (instance-level)"),
    ("How many cats are there?", "Count carefully.", ["one", "two", "three", "four"], "B", "object_counting",
     "finegrained_perception (cross-instance)"),
    ("Which shape is shown?", "", ["circle", "square"], "B", "shape_recognition", "coarse_perception"),
    ("What is the mood of the scene?", "", ["happy", "sad", "angry"], "C", "image_emotion", "coarse_perception"),
    ("Which statement is true?", "", ["The cat is on the mat", "The cat is under the mat", "None",
                                      "The mat is on the cat"], "A", "physical_relation", "relation_reasoning"),
    ("What will happen next?", "A ball is rolling.", ["It stops", "It flies", "It rolls on", "It melts"], "C",
     "future_prediction", "logic_reasoning"),
]
# One list per question, one answer per circular pass (the pass's own option order).
MMB_ANSWERS = [
    ["A", "D.", "(C)", "The answer is B"],
    ["A", "", "None", "Between A and B, I pick B"],
    ["B", "square"],
    ["C", "angry", "I think it is angry."],
    ["The cat is on the mat", "**D**", "C", "My answer is: B"],
    ["C\n", "Z", "It rolls on, I think.", "D is the answer because it clearly would melt in the sun"],
]


def _png(colour) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def mmbench_tsvs() -> tuple[list[dict], list[dict], list[str]]:
    """(rows with every image repeated, VLMEvalKit's rows with pass images as the main index, predictions)."""
    full, indexed, predictions = [], [], []
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    for q, (question, hint, options, answer, cat, l2) in enumerate(MMB_QUESTIONS):
        n = len(options)
        right = "ABCD".index(answer)
        for k in range(n):
            order = options[k:] + options[:k]
            row = {"index": q + k * 1_000_000, "question": question, "hint": hint or None,
                   **{letter: (order[i] if i < n else None) for i, letter in enumerate("ABCD")},
                   "answer": "ABCD"[(right - k) % n], "category": cat, "l2-category": l2, "split": "dev",
                   "source": "sena-fixture"}
            image = _png(colours[q])
            full.append({**row, "image": image})
            indexed.append({**row, "image": image if k == 0 else str(q)})
            predictions.append(MMB_ANSWERS[q][k])
    return full, indexed, predictions


def mmbench(checkouts: Path, out: Path) -> None:
    repo = checkouts / "VLMEvalKit"
    root = repo / "vlmeval"
    for name, sub in (("vlmeval", ""), ("vlmeval.dataset", "/dataset"), ("vlmeval.dataset.utils", "/dataset/utils")):
        m = types.ModuleType(name)
        m.__path__ = [str(root) + sub]
        sys.modules[name] = m
    import pandas as pd
    from vlmeval.dataset.utils.multiple_choice import mcq_circular_eval, report_acc
    from vlmeval.smp import dump, load

    full, indexed, predictions = mmbench_tsvs()
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
               "l2-category", "split"]
    tmp = Path(tempfile.mkdtemp())
    texts = {}
    for name, rows in (("full", full), ("indexed", indexed)):
        path = tmp / f"{name}.tsv"
        pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False)
        texts[name] = path.read_text()
    meta = pd.read_csv(tmp / "full.tsv", sep="\t")  # how VLMEvalKit reads a dataset TSV
    data = meta.copy()
    data["prediction"] = predictions
    # What run.py writes and ImageMCQDataset.evaluate reads back (an xlsx prediction file), then its
    # preprocessing, then circular evaluation with the exact_matching policy (model None).
    eval_file = str(tmp / "pred.xlsx")
    dump(data.drop(columns=["image"]), eval_file)
    data = load(eval_file)
    data["index"] = [int(x) for x in data["index"]]
    data = data.sort_values(by="index")
    data["prediction"] = [str(x) for x in data["prediction"]]
    for k in list(data.keys()):
        data[k.lower() if k not in list("ABCDEFGHIJKLMNOPQRSTUVWXYZ") else k] = data.pop(k)
    scored = mcq_circular_eval(None, data, meta, 1, str(tmp / "result.pkl"), "MMBench_DEV_EN")
    acc = report_acc(scored)
    expected = {col: float(acc[col].iloc[0]) for col in acc.columns if col != "split"}
    hits = {str(int(i)): int(h) for i, h in zip(scored["index"], scored["hit"])}
    write(out, "mmbench.json", {
        "official": f"open-compass/VLMEvalKit@{git_head(repo)}",
        "file": "vlmeval/dataset/utils/multiple_choice.py (mcq_circular_eval, exact_matching; report_acc)",
        "substitutions": [SUBSTITUTIONS["vlmevalkit_init"]],
        "tsv_full": texts["full"], "tsv_indexed": texts["indexed"], "predictions": predictions,
        "hits": hits, "expected": expected})


# ---------------------------------------------------------------- CHAIR (COCO)

COCO_CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"}, {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
    {"supercategory": "vehicle", "id": 4, "name": "motorcycle"}, {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "animal", "id": 17, "name": "cat"}, {"supercategory": "animal", "id": 22, "name": "elephant"},
    {"supercategory": "kitchen", "id": 46, "name": "wine glass"}, {"supercategory": "furniture", "id": 62,
                                                                    "name": "chair"},
    {"supercategory": "furniture", "id": 70, "name": "toilet"}, {"supercategory": "food", "id": 58,
                                                                 "name": "hot dog"},
    {"supercategory": "indoor", "id": 88, "name": "teddy bear"}, {"supercategory": "outdoor", "id": 10,
                                                                  "name": "traffic light"},
    {"supercategory": "furniture", "id": 67, "name": "dining table"}, {"supercategory": "kitchen", "id": 44,
                                                                       "name": "bottle"},
]
COCO_IMAGES = [  # (image id, instance category ids, reference captions, generated caption)
    (139, [1, 1, 18], ["A man walks his dog in the park.", "Two people with a puppy on a leash."],
     "Two dogs and a puppy are playing with a man, a woman and a cat."),
    (285, [4, 1], ["A person riding a motor bike down the street.", "A biker on a motorcycle."],
     "A man on a motor bike stops at a traffic light. The motorcycle is red, and so is the bike."),
    (632, [70], ["A white toilet in a small bathroom.", "The toilet seat is up."],
     "A toilet seat is up in a bathroom next to a chair, and the seat of the toilet is white."),
    (724, [46, 44, 67], ["Wine glasses and a bottle on a dining table.", "Two wine glasses on a table."],
     "Wine glasses, a glass and bottles sit on the dining table; a cup is nearby."),
    (776, [22, 1], ["A baby elephant walking with its mother.", "An adult elephant and a baby elephant."],
     "A baby elephant and an adult elephant walk past people. Elephants! Elephant, elephant."),
    (802, [58, 88], ["Hot dogs on a plate next to a teddy bear.", "A teddy bear and a hot dog."],
     "hot dogs, a teddy bear, and a passenger train in the background"),
    (872, [2], ["A bicycle parked by the wall.", "A bike leans against a wall."], ""),
    (885, [1, 17], ["A child holding a kitten.", "A kid with a cat."],
     "A CHILD holds a kitten; the kids' cats are sleeping.\nA dog barks."),
]


def chair(checkouts: Path, out: Path, pattern3: Path) -> None:
    repo = checkouts / "Hallucination"
    tmp = Path(tempfile.mkdtemp())
    ann = tmp / "annotations"
    ann.mkdir()
    info, licenses = {"description": "sena fixture"}, [{"id": 1, "name": "fixture", "url": ""}]
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "height": 8, "width": 8, "license": 1}
              for i, *_ in COCO_IMAGES]
    instances = {"info": info, "licenses": licenses, "images": images, "categories": COCO_CATEGORIES,
                 "annotations": [{"id": n, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "area": 1.0,
                                  "iscrowd": 0, "segmentation": []}
                                 for n, (i, c) in enumerate(((i, c) for i, cats, *_ in COCO_IMAGES for c in cats), 1)]}
    captions = {"info": info, "licenses": licenses, "images": images,
                "annotations": [{"id": n, "image_id": i, "caption": cap} for n, (i, cap)
                                in enumerate(((i, c) for i, _, caps, _ in COCO_IMAGES for c in caps), 1)]}
    empty = {"info": info, "licenses": licenses, "images": [], "categories": COCO_CATEGORIES, "annotations": []}
    (ann / "instances_val2014.json").write_text(json.dumps(instances))
    (ann / "captions_val2014.json").write_text(json.dumps(captions))
    (ann / "instances_train2014.json").write_text(json.dumps(empty))
    (ann / "captions_train2014.json").write_text(json.dumps({**empty, "categories": None}))
    scores = {k: 0.0 for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr", "SPICE", "ROUGE_L")}
    cap_file = tmp / "generated.json"
    cap_file.write_text(json.dumps({"overall": scores, "imgToEval": {
        str(i): {"image_id": i, "caption": cap, **scores} for i, _, _, cap in COCO_IMAGES}}))

    # Pattern's singularize from pattern3's inflect.py, its package's unrelated imports stubbed.
    for name in ("pattern3", "pattern3.text"):
        m = types.ModuleType(name)
        m.__path__ = []
        sys.modules[name] = m
    text = sys.modules["pattern3.text"]
    text.Verbs = type("Verbs", (), {"__init__": lambda self, *a, **k: None, "conjugate": None, "lemma": None,
                                    "lexeme": None, "tenses": None})
    for const in ("INFINITIVE", "PRESENT", "PAST", "FUTURE", "FIRST", "SECOND", "THIRD", "SINGULAR", "PLURAL", "SG",
                  "PL", "PROGRESSIVE", "PARTICIPLE"):
        setattr(text, const, const.lower())
    spec = importlib.util.spec_from_file_location("pattern3_inflect", pattern3 / "pattern3/text/en/inflect.py")
    inflect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inflect)
    pattern_en = types.ModuleType("pattern.en")
    singulars: dict[str, str] = {}

    def singularize(word):
        singulars[word] = inflect.singularize(word)
        return singulars[word]

    pattern_en.singularize = singularize
    sys.modules["pattern"] = types.ModuleType("pattern")
    sys.modules["pattern.en"] = pattern_en
    import nltk

    use_untrained_punkt()
    tokens: dict[str, list[str]] = {}
    word_tokenize = nltk.word_tokenize

    def recording_tokenize(text, *args, **kwargs):
        tokens[text] = word_tokenize(text, *args, **kwargs)
        return tokens[text]

    nltk.word_tokenize = recording_tokenize
    source = (repo / "utils" / "chair.py").read_text()
    source = source.replace('print "\\n"', 'print("\\n")').replace("from misc import *", "import os")
    source = source.replace('print "SPICE\\tMETEOR\\tCIDEr\\tCHAIRs\\tCHAIRi"',
                            'print("SPICE\\tMETEOR\\tCIDEr\\tCHAIRs\\tCHAIRi")').replace(
        "print metric_string", "print(metric_string)")
    module = types.ModuleType("chair")
    cwd = os.getcwd()
    os.chdir(repo)  # CHAIR reads data/synonyms.txt relative to its repository
    try:
        exec(compile(source.replace("if __name__ == '__main__':", "if False:"), "chair.py", "exec"), module.__dict__)
        _, imids, _ = module.load_generated_captions(str(cap_file))
        evaluator = module.CHAIR(imids, str(ann))
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.get_annotations()
        result = evaluator.compute_chair(str(cap_file))
    finally:
        os.chdir(cwd)
    write(out, "chair.json", {
        "official": f"LisaAnne/Hallucination@{git_head(repo)}", "file": "utils/chair.py (CHAIR.compute_chair)",
        "substitutions": [SUBSTITUTIONS[k] for k in ("punkt", "pattern", "py2")],
        "synonyms": (repo / "data" / "synonyms.txt").read_text(), "instances": instances, "captions": captions,
        "generated": {str(i): cap for i, _, _, cap in COCO_IMAGES},
        "tokens": tokens, "singular": singulars,
        "per_caption": {str(s["image_id"]): {"hallucinated": [list(x) for x in s["mscoco_hallucinated_words"]],
                                             "generated": s["mscoco_generated_words"],
                                             "truth": sorted(s["mscoco_gt_words"])}
                        for s in result["sentences"]},
        "expected": {"chair_s": result["overall_metrics"]["CHAIRs"],
                     "chair_i": result["overall_metrics"]["CHAIRi"]}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", type=Path, required=True,
                        help="folder with POPE, AMBER, Hallucination, VLMEvalKit")
    parser.add_argument("--pattern3", type=Path, required=True, help="unpacked pattern3-3.0.0 sdist")
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=Path("tests/bench/fixtures"))
    parser.add_argument("--only", choices=["pope", "amber", "mmbench", "chair"])
    args = parser.parse_args()
    jobs = {"pope": lambda: pope(args.checkouts, args.out),
            "amber": lambda: amber(args.checkouts, args.out, args.wordnet),
            "mmbench": lambda: mmbench(args.checkouts, args.out),
            "chair": lambda: chair(args.checkouts, args.out, args.pattern3)}
    for name, job in jobs.items():
        if args.only in (None, name):
            # Each in its own process: the stand-ins above patch modules globally.
            if args.only is None:
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], check=True)
            else:
                job()
                print(f"{name}: written to {args.out}")


if __name__ == "__main__":
    main()
