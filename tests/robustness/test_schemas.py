"""Valid JSON with the wrong fields, in every artifact and benchmark file a stage reads, through the
real CLI: one line naming the file, the line (or item) and the field, before any work, and nothing
changed. The lines asserted are the ones docs/robustness.md lists."""

import base64
import io
import json
import shutil
from contextlib import contextmanager

import pytest
from PIL import Image

from tests.robustness.helpers import fails, params_with, theta1


@contextmanager
def _edited(path, edit):
    """`path` rewritten by edit(text) -> text for the test, then put back byte for byte."""
    saved = path.read_bytes() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(edit(saved.decode() if saved is not None else ""))
    try:
        yield
    finally:
        if saved is None:
            path.unlink()
        else:
            path.write_bytes(saved)


def _first_line(change):
    """An edit of a JSON-lines file: `change(record)` applied to its first record."""
    def edit(text):
        lines = text.splitlines()
        record = json.loads(lines[0])
        change(record)
        return "\n".join([json.dumps(record), *lines[1:]]) + "\n"
    return edit


def _no_model(monkeypatch):
    """Fail loudly if a command gets as far as loading a model: the refusal must come first."""
    import sena_cli.vlm

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(sena_cli.vlm.VLM, "load", load)


# ---------------------------------------------------------------- sena's own artifacts


@pytest.mark.parametrize("artifact, change, command, expected", [
    ("data/iter1/qa/records.jsonl", lambda r: r.update(enhanced_answer=None), "pair",
     "data/iter1/qa/records.jsonl: line 1: 'enhanced_answer' must be text, got null; rerun `sena qa --iter 1`"),
    ("data/iter1/qa/records.jsonl", lambda r: r.update(type="caption"), "pair",
     "data/iter1/qa/records.jsonl: line 1: 'type' must be one of \"des\", \"gen\", got \"caption\"; rerun "
     "`sena qa --iter 1`"),
    ("data/iter1/qa/records.jsonl", lambda r: r.update(image="data/world/pool/elsewhere.png"), "pair",
     "data/iter1/qa/records.jsonl: record 1: image 'data/world/pool/elsewhere.png' is not in "
     "data/iter1/sample/manifest.jsonl; rerun `sena qa --iter 1`"),
    ("data/iter1/sample/manifest.jsonl", lambda r: r.pop("sha256"), "noise",
     "data/iter1/sample/manifest.jsonl: line 1 has no 'sha256'; rerun `sena sample --iter 1`"),
    ("data/iter1/noised/index.jsonl", lambda r: r.update(seed="7"), "qa",
     "data/iter1/noised/index.jsonl: line 1: 'seed' must be a whole number, got \"7\"; rerun `sena noise --iter 1`"),
    ("data/iter1/pairs/pairs.jsonl", lambda r: r.update(chosen=None), "train",
     "data/iter1/pairs/pairs.jsonl: line 1: 'chosen' must be text, got null; rerun `sena pair --iter 1`"),
    ("data/iter1/pairs/pairs.jsonl", lambda r: r.update(ref_chosen_logp=float("nan")), "train",
     "data/iter1/pairs/pairs.jsonl: line 1: 'ref_chosen_logp' must be a finite number, got NaN; rerun "
     "`sena pair --iter 1`"),
])
def test_records_with_wrong_fields(project, monkeypatch, artifact, change, command, expected):
    _no_model(monkeypatch)
    with _edited(project / artifact, _first_line(change)):
        fails(project, monkeypatch, [command, "--iter", "1"], expected)


def test_a_reference_file_that_is_not_an_object(project, monkeypatch):
    with _edited(project / "data/iter1/pairs/reference.json", lambda text: "[]\n"):
        fails(project, monkeypatch, ["train", "--iter", "1"],
              "data/iter1/pairs/reference.json: the file must be a JSON object, got []; rerun `sena pair --iter 1`")


def test_a_pointer_with_the_wrong_fields(tmp_path, project, monkeypatch):
    pointer = project / "models/iter0/pointer.json"
    with _edited(pointer, lambda text: json.dumps({"base": 7}) + "\n"):
        fails(project, monkeypatch, ["noise", "--iter", "1"],
              "models/iter0/pointer.json: 'base' must be text, got 7; rerun `sena base`")


@pytest.mark.parametrize("text, expected", [
    ('{"pope": {"random": {"f1": 0.5', "metrics/iter0.json: malformed JSON at line 1; rerun `sena eval --iter 0`"),
    ('{"pope": {"random": {"f1": NaN}}}',
     "metrics/iter0.json: 'pope.random.f1' must be a finite number or text, got NaN; rerun `sena eval --iter 0`"),
    ('{"pope": [0.5]}',
     "metrics/iter0.json: 'pope' must be a finite number or text, got [0.5]; rerun `sena eval --iter 0`"),
])
def test_theta0_metrics_are_checked_before_eval_does_any_work(project, monkeypatch, text, expected):
    """`sena eval --iter 1` prints the change against θ0: θ0's metrics are read first, not after the work."""
    _no_model(monkeypatch)
    with theta1(project), _edited(project / "metrics/iter0.json", lambda _: text):
        fails(project, monkeypatch, ["eval", "--iter", "1"], expected)
        fails(project, monkeypatch, ["history"], expected)
        fails(project, monkeypatch, ["report"], expected)
    shutil.rmtree(project / "metrics")


# ---------------------------------------------------------------- benchmark files


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _judged(monkeypatch, **files):
    """Params with a judge configured (never called: the files are refused first)."""
    monkeypatch.setenv("SENA_JUDGE_API_KEY", "not-a-real-key")
    return {"eval__judge": {"base_url": "http://127.0.0.1:9/v1", "model": "judge"}, **files}


def _amber(tmp_path, queries=None, annotations=None):
    (tmp_path / "q.json").write_text(json.dumps(queries or [{"id": 1, "image": "a.jpg", "query": "Describe."}]))
    (tmp_path / "a.json").write_text(json.dumps(annotations or [{"type": "generative", "truth": ["dog"]}]))
    (tmp_path / "r.json").write_text(json.dumps({"dog": ["puppy"]}))
    (tmp_path / "safe.txt").write_text("picture\n")
    return {"queries": str(tmp_path / "q.json"), "annotations": str(tmp_path / "a.json"),
            "relation": str(tmp_path / "r.json"), "safe_words": str(tmp_path / "safe.txt"),
            "image_root": str(tmp_path)}


CASES = {
    "pope": lambda t, mp: ({"eval__benchmarks": ["coco_pope"], "eval__coco_pope": {
        "files": [_write(t / "pope.json", '{"question_id": 1, "image": 5, "text": "Is it?", "label": "no"}\n')],
        "image_root": str(t)}},
        "pope.json: line 1: 'image' must be text, got 5; is this a POPE question file? check eval.coco_pope.files"),
    "mm_vet": lambda t, mp: ({"eval__benchmarks": ["mm_vet"], **_judged(mp, eval__mm_vet={
        "file": _write(t / "mm-vet.json", json.dumps({"v1": {"imagename": "v1.jpg", "question": "q", "answer": "a",
                                                              "capability": "rec"}})),
        "image_root": str(t)})},
        "mm-vet.json: 'v1.capability' must be a list of text, got \"rec\"; is this a MM-Vet file? check "
        "eval.mm_vet.file"),
    "mmhal": lambda t, mp: ({"eval__benchmarks": ["mmhal"], **_judged(mp, eval__mmhal={
        "file": _write(t / "mmhal.json", json.dumps([{"image_src": "a.jpg", "image_content": "a cat", "question": "q",
                                                      "gt_answer": "a"}])), "image_root": str(t)})},
        "mmhal.json: item 1: 'image_content' must be a list of text, got \"a cat\"; is this a MMHal-Bench file? "
        "check eval.mmhal.file"),
    "llava_bench": lambda t, mp: ({"eval__benchmarks": ["llava_bench"], **_judged(mp, eval__llava_bench={
        "questions": _write(t / "questions.jsonl", '{"question_id": 1, "image": "a.jpg", "text": ["q"]}\n'),
        "answers": _write(t / "answers.jsonl", '{"question_id": 1, "text": "a"}\n'),
        "context": _write(t / "context.jsonl", '{"image": "a.jpg", "caption": "c"}\n'), "image_root": str(t)})},
        "questions.jsonl: line 1: 'text' must be text, got [\"q\"]; is this a LLaVA-Bench question file? check "
        "eval.llava_bench.questions"),
    "mmbench_g_index": lambda t, mp: ({"eval__benchmarks": ["mmbench"], "eval__mmbench": {"tsv": _write(
        t / "mmbench.tsv",
        "index\tquestion\tA\tB\tanswer\tg_index\timage\n0\tq\ta\tb\tA\tfirst\t" + _png_b64() + "\n")}},
        "mmbench.tsv: line 2 has g_index 'first'; indices are whole numbers"),
    "mmbench_image": lambda t, mp: ({"eval__benchmarks": ["mmbench"], "eval__mmbench": {"tsv": _write(
        t / "mmbench.tsv", "index\tquestion\tA\tB\tanswer\timage\n0\tq\ta\tb\tA\t\n")}},
        "mmbench.tsv: index 0: the image column is empty"),
    "amber_query": lambda t, mp: ({"eval__benchmarks": ["amber"], "eval__amber": _amber(
        t, queries=[{"id": 1, "image": None, "query": "Describe."}])},
        "q.json: item 1: 'image' must be text, got null; is this an AMBER query file? check eval.amber.queries"),
    "amber_truth": lambda t, mp: ({"eval__benchmarks": ["amber"], "eval__amber": _amber(
        t, annotations=[{"type": "generative", "truth": "dog"}])},
        "a.json: item 1: 'truth' must be a list of text, got \"dog\"; is this an AMBER annotation file? check "
        "eval.amber.annotations"),
    "coco_chair": lambda t, mp: ({"eval__benchmarks": ["coco_chair"], "eval__coco_chair": {
        "instances": [_write(t / "instances.json", json.dumps({
            "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}],
            "categories": [{"id": 18, "name": "dog"}]}))],
        "captions": [_write(t / "captions.json", json.dumps({"annotations": [{"image_id": 1, "caption": "A dog."}]}))],
        "synonyms": _write(t / "synonyms.txt", "dog, puppy\n"), "image_root": str(t)}},
        "instances.json: 'annotations[0]' has no 'category_id'; is this a COCO instances file? check "
        "eval.coco_chair.instances"),
}


def _write(path, text) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_benchmark_files_with_wrong_fields(project, monkeypatch, tmp_path, case):
    _no_model(monkeypatch)
    edits, expected = CASES[case](tmp_path, monkeypatch)
    fails(project, monkeypatch, ["eval", "--iter", "0"], expected, params_with(project, **edits))
