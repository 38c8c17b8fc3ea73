"""Bad input to each stage, through the real CLI: one error line naming the file or parameter
(no traceback without --debug), a non-zero exit, and no earlier artifact touched."""

import errno
import json
import shutil

import pytest

from sena_cli.frame import read_jsonl
from tests.robustness.helpers import fails as _fails
from tests.robustness.helpers import params_with as _params_with


@pytest.mark.parametrize("edit, expected", [
    ({"sample__colour": 1}, "unknown key 'sample.colour'"),
    ({"train__lr": "fast"}, "'train.lr' must be a number"),
    ({"loop__iterations": 0}, "'loop.iterations'"),
    ({"sample__images_per_iteration": 0}, "'sample.images_per_iteration'"),
    ({"noise__timestep": 1000}, "'noise.timestep'"),
    ({"noise__timestep": -1}, "'noise.timestep'"),
])
def test_bad_params_are_refused_naming_the_key(project, monkeypatch, edit, expected):
    _fails(project, monkeypatch, ["noise", "--iter", "1"], expected, _params_with(project, **edit))


@pytest.mark.parametrize("edit, expected", [
    ({"noise__beta_end": float("nan")},
     "params.yaml: 'noise.beta_end' is nan; it must be a finite number in (0.0, 1.0)"),
    ({"train__beta": float("inf")}, "params.yaml: 'train.beta' is inf; it must be a finite number in (0.0, 100.0]"),
    ({"train__lr": float("nan")}, "params.yaml: 'train.lr' is nan; it must be a finite number in (0.0, 1.0]"),
    ({"loop__seed": 2**32}, "params.yaml: 'loop.seed' is 4294967296; it must be <= 4294967295"),
    ({"noise__num_train_timesteps": 100},
     "params.yaml: 'noise.timestep' is 600; it must be <= 99 (below noise.num_train_timesteps 100)"),
    ({"noise__beta_start": 0.01},
     "params.yaml: 'noise.beta_start' (0.01) must be below 'noise.beta_end' (0.005); swap or fix them"),
    ({"sample__max_aspect_ratio": 0.5}, "params.yaml: 'sample.max_aspect_ratio' is 0.5; it must be >= 1.0"),
])
def test_non_finite_absurd_and_inconsistent_values_are_refused(project, monkeypatch, edit, expected):
    _fails(project, monkeypatch, ["noise", "--iter", "1"], expected, _params_with(project, **edit))


def test_malformed_params_file(project, monkeypatch):
    _fails(project, monkeypatch, ["qa", "--iter", "1"], "not valid YAML", "train: [unclosed\n")


def test_duplicate_keys_aliases_and_bytes_that_are_not_utf8(project, monkeypatch):
    import time

    text = (project / "params.yaml").read_text()
    _fails(project, monkeypatch, ["noise", "--iter", "1"], "params.yaml: key 'train' is given twice (line ",
           text + "train:\n  lr: 0.1\n")
    lines = ['  seed: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  s{i}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(10)]
    started = time.perf_counter()
    bomb = text.replace("loop:\n", "loop:\n" + "\n".join(lines) + "\n", 1)
    _fails(project, monkeypatch, ["noise", "--iter", "1"],
           "params.yaml: YAML anchors and aliases are not allowed (&a at line ", bomb)
    assert time.perf_counter() - started < 10  # refused before expanding (9**11 strings), not after minutes
    _fails(project, monkeypatch, ["noise", "--iter", "1"], "params.yaml: not UTF-8 text (byte 0xe9 at byte ",
           text.encode() + b"# caf\xe9\n")


@pytest.mark.parametrize("args, expected", [
    (["qa", "--iter", "0"], "--iter 0"),
    (["pair", "--iter", "0"], "--iter 0"),
    (["train", "--iter", "0"], "--iter 0"),
    (["qa", "--iter", "4"], "--iter 4"),
    (["sample", "--iter", "-1"], "--iter -1"),
    (["eval", "--iter", "2"], "models/iter2: model directory not found"),
    (["noise", "--iter", "2"], "data/iter2/sample"),
    (["train", "--iter", "2"], "data/iter2/pairs/pairs.jsonl: missing"),
])
def test_iterations_without_their_inputs(project, monkeypatch, args, expected):
    _fails(project, monkeypatch, args, expected)


def test_a_missing_predecessor_model(project, monkeypatch):
    shutil.copytree(project / "data/iter1/sample", project / "data/iter2/sample")
    try:
        _fails(project, monkeypatch, ["noise", "--iter", "2"], "models/iter1")
    finally:
        shutil.rmtree(project / "data/iter2")


def test_an_image_missing_from_the_manifest(project, monkeypatch):
    manifest = read_jsonl(project / "data/iter1/sample/manifest.jsonl")
    image = project / manifest[0]["path"]
    saved = image.read_bytes()
    image.unlink()
    try:
        _fails(project, monkeypatch, ["noise", "--iter", "1"], f"{manifest[0]['path']}: image listed in the sample")
    finally:
        image.write_bytes(saved)


def test_pools_too_small_or_empty(project, monkeypatch, tmp_path):
    (project / "tiny_pool").mkdir(exist_ok=True)
    try:
        _fails(project, monkeypatch, ["sample", "--iter", "1"], "found 0 images",
               _params_with(project, sample__pool="tiny_pool"))
        from PIL import Image

        Image.new("RGB", (8, 8)).save(project / "tiny_pool" / "a.png")
        _fails(project, monkeypatch, ["sample", "--iter", "1"], "found 1 images, need",
               _params_with(project, sample__pool="tiny_pool"))
    finally:
        shutil.rmtree(project / "tiny_pool")


@pytest.mark.parametrize("breakage, expected", [
    ("missing", "model directory not found"),
    ("not_a_model", "no config.json"),
    ("pickle_only", "no .safetensors weights"),
    ("no_processor", "no usable processor"),
    ("not_a_vlm", "not an image-text-to-text model"),
])
def test_bad_model_directories(project, monkeypatch, breakage, expected):
    model = project / "models" / "iter0"
    backup = project / "iter0.bak"
    shutil.copytree(model, backup)
    try:
        if breakage == "missing":
            shutil.rmtree(model)
        elif breakage == "not_a_model":
            (model / "config.json").unlink()
        elif breakage == "pickle_only":
            (model / "model.safetensors").rename(model / "pytorch_model.bin")
        elif breakage == "no_processor":
            for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                (model / name).unlink(missing_ok=True)
        else:
            config = json.loads((model / "config.json").read_text())
            text = config["text_config"]
            (model / "config.json").write_text(json.dumps({**text, "model_type": "llama",
                                                           "architectures": ["LlamaForCausalLM"]}))
        _fails(project, monkeypatch, ["eval", "--iter", "0"], expected)
    finally:
        shutil.rmtree(model, ignore_errors=True)
        backup.rename(model)


def test_malformed_pairs_and_qa_records(project, monkeypatch):
    pairs = project / "data/iter1/pairs/pairs.jsonl"
    saved = pairs.read_bytes()
    pairs.write_text('{"image": "x.png", "prompt": "q"\n')
    try:
        _fails(project, monkeypatch, ["train", "--iter", "1"], "pairs.jsonl: malformed JSON at line 1")
    finally:
        pairs.write_bytes(saved)
    records = project / "data/iter1/qa/records.jsonl"
    saved = records.read_bytes()
    records.write_text("{not json\n")
    try:
        _fails(project, monkeypatch, ["pair", "--iter", "1"], "records.jsonl: malformed JSON at line 1")
    finally:
        records.write_bytes(saved)


def test_a_missing_benchmark_file(project, monkeypatch):
    text = _params_with(project, eval__benchmarks=["coco_pope"], eval__coco_pope={"files": ["nowhere/pope.json"],
                                                                                 "image_root": "coco"})
    _fails(project, monkeypatch, ["eval", "--iter", "0"], "nowhere/pope.json: not found (eval.coco_pope.files); "
           "coco_pope's files come from the question files from github.com/AoiDragon/POPE", text)


def test_disk_full_during_qa_is_one_line_and_publishes_nothing(project, monkeypatch):
    from sena_cli import artifacts

    def full(self, chunk, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(artifacts.Journal, "add", full)
    out = _fails(project, monkeypatch, ["qa", "--iter", "1"], "no space left on the device")
    assert "qa.partial" in out
    assert not (project / "data/iter1/qa.partial").exists() or not any((project / "data/iter1/qa.partial").iterdir())
