"""Generation at the model boundary: batches by length and per-sequence caps change no greedy output."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sena_cli import layout
from sena_cli.vlm import VLM
from sena_cli.vlm.model import length_batches


@pytest.fixture(scope="module")
def vlm(micro_project, micro_params):
    return VLM.from_params(micro_params.model, layout.model_dir(0, micro_project), dtype="float32",
                           device=torch.device("cpu"))


@pytest.fixture(scope="module")
def images(micro_project):
    pool = sorted((micro_project / "data" / "world" / "pool").glob("*.png"))[:3]
    return [Image.open(p).convert("RGB") for p in pool]


def test_length_batches_hold_one_class_each_in_order():
    lengths = ["long", "short", "long", "short", "short", "long"]
    assert length_batches(lengths, 2) == [[0, 2], [5], [1, 3], [4]]


def test_batches_by_length_give_the_outputs_of_mixed_batches(vlm, images):
    texts = ["Describe the image concisely.", "What color is the shape?", "How many shapes are there?",
             "Give a brief description of the image.", "Is there a circle?", "Summarize what the image shows."]
    imgs = [images[i % len(images)] for i in range(len(texts))]
    lengths = ["long" if "escri" in t or "Summar" in t else "short" for t in texts]
    mixed = vlm.generate(imgs, texts, max_new_tokens=12, batch_size=4)
    by_length = vlm.generate(imgs, texts, max_new_tokens=12, batch_size=4, lengths=lengths)
    alone = [vlm.generate([im], [t], max_new_tokens=12, batch_size=1)[0] for im, t in zip(imgs, texts)]
    assert by_length == mixed == alone
    assert any(by_length)  # the model says something: an all-empty comparison would prove nothing


def test_each_sequence_stops_at_its_own_cap(vlm, images):
    texts = ["Describe the image concisely.", "What color is the shape?"]
    imgs = images[:2]
    caps = [3, 12]
    together = vlm.generate(imgs, texts, max_new_tokens=caps, batch_size=2)
    alone = [vlm.generate([im], [t], max_new_tokens=c)[0] for im, t, c in zip(imgs, texts, caps)]
    assert together == alone
    long_alone = vlm.generate(imgs[:1], texts[:1], max_new_tokens=12)[0]
    assert len(vlm.processor.tokenizer(together[0], add_special_tokens=False).input_ids) <= 3 + 1
    assert together[0] != long_alone or len(long_alone.split()) <= 3


def _decode_case(vlm, images, decode):
    texts = ["Describe the image concisely.", "What color is the shape?", "How many shapes are there?"]
    first = vlm.generate(images, texts, max_new_tokens=[12, 5, 8], batch_size=2, decode=decode)
    # A second call with a longer cap: the static cache is sized anew (transformers keeps the longest).
    second = vlm.generate(images[:2], texts[:2], max_new_tokens=16, batch_size=2, decode=decode)
    return first, second


def test_a_static_cache_gives_the_dynamic_caches_answers(vlm, images):
    vlm.model.__dict__.pop("_previous_max_cache_length", None)
    static = _decode_case(vlm, images, "static")
    assert vlm.model._previous_max_cache_length > 16  # transformers did build a StaticCache
    assert static == _decode_case(vlm, images, "dynamic")
    assert any(_decode_case(vlm, images, "dynamic")[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling the decode step takes ~100 s on a CPU; "
                    "benchmarks/gpu_scale.py checks it on a GPU")
def test_a_compiled_decode_step_gives_the_eager_answers(vlm, images):
    assert _decode_case(vlm, images, "compiled") == _decode_case(vlm, images, "dynamic")


def test_auto_compiles_on_a_gpu_only():
    from sena_cli.errors import SenaError
    from sena_cli.vlm.model import decode_kwargs, decode_mode

    assert decode_mode("auto", torch.device("cpu")) == "dynamic"
    assert decode_mode("auto", torch.device("cuda", 0)) == "compiled"
    assert decode_kwargs("static", torch.device("cpu")) == {"cache_implementation": "static", "disable_compile": True}
    with pytest.raises(SenaError, match="qa.decode: 'fast' is not one of"):
        decode_mode("fast", torch.device("cpu"))


def test_the_compiled_path_fills_every_batch_and_drops_the_filling(vlm, images, monkeypatch):
    """Its batching, run eagerly (the static cache without torch.compile): one batch shape, same answers."""
    import sena_cli.vlm.model as m

    static = m.decode_kwargs("static", torch.device("cpu"))
    monkeypatch.setattr(m, "decode_kwargs", lambda setting, device: static)
    shapes = []
    generate = vlm.model.generate

    def recorded(*a, **k):
        shapes.append(tuple(k["input_ids"].shape[:1]))
        return generate(*a, **k)

    monkeypatch.setattr(vlm.model, "generate", recorded)
    texts = ["Describe the image concisely.", "What color is the shape?", "How many shapes are there?"]
    ticks = []
    compiled = vlm.generate(images, texts, max_new_tokens=6, batch_size=2, decode="compiled", on_batch=ticks.append)
    assert shapes == [(2,), (2,)] and ticks == [2, 1]
    assert compiled == vlm.generate(images, texts, max_new_tokens=6, batch_size=2)
