"""Each image's vision features, and the key/value cache of its prompt prefix, computed once and reused by
all of its prompts: the same greedy answers (and next-token logits) as encoding and prefilling the image for
every prompt, on the embedded θ0 and on every real-shaped family."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from sena_cli import layout
from sena_cli.vlm import VLM, ImageFeatures, PrefixCache
from sena_fixtures.families import FAMILIES, TEST_PROCESSOR_SETTINGS

TEXTS = ["Describe the image concisely.", "What color is the shape?", "How many shapes are there?"]


@pytest.fixture(scope="module", params=["embedded", *FAMILIES])
def vlm(request, micro_project, micro_params, tmp_path_factory):
    if request.param == "embedded":
        return VLM.from_params(micro_params.model, layout.model_dir(0, micro_project), dtype="float32",
                               device=torch.device("cpu"))
    folder = FAMILIES[request.param](tmp_path_factory.mktemp(request.param) / "model")
    return VLM.load(folder, dtype="float32", device=torch.device("cpu"),
                    processor_settings=TEST_PROCESSOR_SETTINGS[request.param])


def _images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for w, h in ((240, 320), (400, 400), (300, 90))]


def _counting_encoder(vlm, monkeypatch) -> list[int]:
    """Images through the family's image encoder, per call."""
    calls: list[int] = []
    base = vlm.model.base_model
    original = base.get_image_features

    @functools.wraps(original)  # generate reads the encoder's signature
    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(len(out.pooler_output))
        return out

    monkeypatch.setattr(base, "get_image_features", counted)
    return calls


def test_identical_outputs(vlm, monkeypatch):
    images = _images()
    imgs = [images[i % 3] for i in range(9)]  # each image asked three questions, spread over batches
    texts = [TEXTS[(i // 3) % 3] for i in range(9)]
    calls = _counting_encoder(vlm, monkeypatch)
    plain = vlm.generate(imgs, texts, max_new_tokens=8, batch_size=4)
    encoded_plain = sum(calls)
    calls.clear()
    features = ImageFeatures(16)
    reused = vlm.generate(imgs, texts, max_new_tokens=8, batch_size=4, features=features)
    again = vlm.generate(imgs, texts, max_new_tokens=8, batch_size=4, features=features)
    assert reused == plain and again == plain
    assert any(plain)
    # Without reuse each prompt encodes its image (the encoder runs inside generate); with it, 3 images once.
    assert encoded_plain == 9 and sum(calls) == 3
    assert (features.misses, features.hits) == (3, 15)


def test_a_transformed_copy_is_its_own_entry(vlm):
    """The corrupted copy (a pixel_transform) is keyed by its pixels, so it never takes the clean features."""
    images = _images()[:2]
    texts = TEXTS[:2]

    def darker(pictures, keys):
        return [[p * 0.5 for p in pics] for pics in pictures]

    features = ImageFeatures(16)
    clean = vlm.generate(images, texts, max_new_tokens=8, batch_size=2, features=features)
    plain = vlm.generate(images, texts, max_new_tokens=8, batch_size=2, pixel_transform=darker, keys=["a", "b"])
    reused = vlm.generate(images, texts, max_new_tokens=8, batch_size=2, pixel_transform=darker, keys=["a", "b"],
                          features=features)
    assert reused == plain and features.misses == 4
    assert clean == vlm.generate(images, texts, max_new_tokens=8, batch_size=2)


def test_the_cache_keeps_at_most_its_limit():
    features = ImageFeatures(2)
    for key in "abc":
        features.put(key, torch.zeros(1))
    assert features.get("a") is None and features.get("b") is not None and features.get("c") is not None


def test_a_static_cache_gives_the_same_answers(vlm):
    """qa.decode static against dynamic on every family (mrope, tiles), with feature reuse on."""
    images = _images()
    texts = [TEXTS[i % 3] for i in range(3)]
    dynamic = vlm.generate(images, texts, max_new_tokens=[8, 4, 6], batch_size=2, features=ImageFeatures(8))
    static = vlm.generate(images, texts, max_new_tokens=[8, 4, 6], batch_size=2, features=ImageFeatures(8),
                          decode="static")
    assert static == dynamic and any(dynamic)


def test_batches_by_length_give_the_same_answers(vlm):
    """qa.length_batches on every family: batches of one length class, a cap per request, same answers."""
    images = _images()
    imgs = [images[i % 3] for i in range(6)]
    texts = [TEXTS[i % 3] for i in range(6)]
    lengths = ["long" if t.startswith("Describe") else "short" for t in texts]
    mixed = vlm.generate(imgs, texts, max_new_tokens=8, batch_size=4)
    by_length = vlm.generate(imgs, texts, max_new_tokens=8, batch_size=4, lengths=lengths, features=ImageFeatures(8))
    assert by_length == mixed and any(mixed)
    capped = vlm.generate(imgs, texts, max_new_tokens=[8 if x == "long" else 3 for x in lengths], batch_size=4,
                          lengths=lengths)
    alone = [vlm.generate([im], [t], max_new_tokens=8 if x == "long" else 3)[0]
             for im, t, x in zip(imgs, texts, lengths, strict=True)]
    assert capped == alone


def test_a_model_that_takes_no_precomputed_features_is_encoded_per_prompt(vlm, monkeypatch):
    """A remote-code VLM without `mm_encoder_outputs`: the cache is left unused, the answers unchanged."""
    images = _images()[:2]
    plain = vlm.generate(images, TEXTS[:2], max_new_tokens=6, batch_size=2)
    monkeypatch.setattr(type(vlm), "reuses_features", property(lambda self: False))
    features = ImageFeatures(8)
    assert vlm.generate(images, TEXTS[:2], max_new_tokens=6, batch_size=2, features=features) == plain
    assert features.misses == features.hits == 0


def _recorded_logits(vlm, monkeypatch) -> list[torch.Tensor]:
    """The next-token logits of every generate() step, per call ([steps, batch, vocabulary])."""
    seen: list[torch.Tensor] = []
    original = vlm.model.generate

    def recording(*args, **kwargs):
        out = original(*args, **kwargs, output_scores=True, return_dict_in_generate=True)
        seen.append(torch.stack(out.scores))
        return out.sequences

    monkeypatch.setattr(vlm.model, "generate", recording)
    return seen


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_a_cached_prefix_gives_the_full_prefills_logits(vlm, monkeypatch, decode):
    """Greedy answers of random fixtures hardly depend on the image, so the check is on the logits: every
    step's, cached prefix against the full prefill, to 1e-5 (they agree to ~1e-7), where another image moves
    them by more than ten times that (checked here, so the comparison can see a wrong prefix: ~0.1 on the
    random fixtures, ~5e-4 on the micro θ0; a wrong M-RoPE offset moves Qwen2-VL's by ~3e-3)."""
    images = _images()
    imgs = [images[i % 3] for i in range(9)]  # each image in several batches; rows of one text differ by image
    texts = [TEXTS[i // 3] for i in range(9)]
    caps = [6, 3, 5] * 3
    seen = _recorded_logits(vlm, monkeypatch)
    plain = vlm.generate(imgs, texts, max_new_tokens=caps, batch_size=4, decode=decode)
    full, _ = list(seen), seen.clear()
    prefixes = PrefixCache(8)
    cached = vlm.generate(imgs, texts, max_new_tokens=caps, batch_size=4, decode=decode, prefixes=prefixes,
                          features=ImageFeatures(8))
    assert cached == plain and any(plain)
    assert len(seen) == len(full) == 3
    for a, b in zip(full, seen, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert (full[0][0, 0] - full[0][0, 1]).abs().max() > 1e-4  # rows 0 and 1: one text, two images
    assert (prefixes.misses, prefixes.hits) == (3, 6)  # each image's prefix once, then reused


def test_a_prefix_is_keyed_by_the_pixels_the_model_sees(vlm):
    """The corrupted copy (a pixel_transform) never takes the clean image's prefix."""
    images = _images()[:2]

    def darker(pictures, keys):
        return [[p * 0.5 for p in pics] for pics in pictures]

    prefixes = PrefixCache(8)
    vlm.generate(images, TEXTS[:2], max_new_tokens=4, batch_size=2, prefixes=prefixes)
    plain = vlm.generate(images, TEXTS[:2], max_new_tokens=4, batch_size=2, pixel_transform=darker, keys=["a", "b"])
    cached = vlm.generate(images, TEXTS[:2], max_new_tokens=4, batch_size=2, pixel_transform=darker,
                          keys=["a", "b"], prefixes=prefixes)
    assert cached == plain and prefixes.misses == 4 and prefixes.hits == 0


def test_a_prefix_cache_smaller_than_a_batch_still_answers_every_row(vlm):
    """eval.prefix_cache 1 with three images in one batch: the batch keeps what it computed."""
    images = _images()
    plain = vlm.generate(images, TEXTS, max_new_tokens=4, batch_size=3)
    prefixes = PrefixCache(1)
    assert vlm.generate(images, TEXTS, max_new_tokens=4, batch_size=3, prefixes=prefixes) == plain
    assert prefixes.misses == 3 and len(prefixes._store) == 1


def test_the_prefix_cache_keeps_at_most_its_limit():
    prefixes = PrefixCache(2)
    for key in "abc":
        prefixes.put(key, ((torch.zeros(1), torch.zeros(1)),))
    assert prefixes.get("a") is None and prefixes.get("b") is not None and prefixes.get("c") is not None
