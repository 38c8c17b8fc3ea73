"""Image tokens per image from the processor, and the length refused at `noise`, before qa.

On the real-shaped processors of sena_fixtures/families.py (their published settings): LLaVA-1.5
576 tokens whatever the size, Qwen2-VL 2691 for 1920x1080 and 16224 for 6000x4000, SmolVLM 1084
for 1920x1080. The count must be what the processor really expands a prompt's image placeholder
to, and a pool image whose tokens leave no room for a pair under train.max_length stops `sena noise`.
"""

from __future__ import annotations

import pytest
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_fixtures.families import FAMILIES, TEST_PROCESSOR_SETTINGS
from sena_fixtures.micro import write_manifest

KNOWN = {  # (width, height) -> tokens, with each family's published processor settings
    "llava-1.5": {(1920, 1080): 576, (6000, 4000): 576, (8, 8): 576},
    "qwen2-vl": {(1920, 1080): 2691, (6000, 4000): 16224},
    "smolvlm": {(1920, 1080): 1084},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build(root / name) for name, build in FAMILIES.items()}


def _pre(checkpoints, name, settings=None):
    from sena_cli.vlm.model import load_preprocessor

    return load_preprocessor(checkpoints[name], settings=settings)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_image_tokens_are_the_processors_count(checkpoints, name):
    pre = _pre(checkpoints, name)
    sizes = list(KNOWN[name])
    assert pre.image_tokens(sizes) == [KNOWN[name][s] for s in sizes]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_prompt_is_its_tokens_less_the_placeholder_plus_the_image_tokens(checkpoints, name):
    """What the processor really builds: a prompt with an image of each size, and its attention mask."""
    pre = _pre(checkpoints, name, TEST_PROCESSOR_SETTINGS[name])
    for size in ((640, 480), (300, 900), (33, 47)):
        prompt = pre.chat.prompt("What is in the picture?")
        built = pre.inputs([Image.new("RGB", size, (90, 120, 30))], [prompt])
        (n,) = pre.image_tokens([size])
        assert int(built["attention_mask"].sum()) == pre.prompt_tokens("What is in the picture?") - 1 + n, size


def test_a_processor_without_its_own_count_is_measured(checkpoints):
    pre = _pre(checkpoints, "qwen2-vl", TEST_PROCESSOR_SETTINGS["qwen2-vl"])
    counted = pre.image_tokens([(640, 480), (120, 90), (640, 480)])

    def unknown(*args, **kwargs):
        raise NotImplementedError

    pre.processor._get_num_multimodal_tokens = unknown
    assert pre.image_tokens([(640, 480), (120, 90), (640, 480)]) == counted


def _project(tmp_path, checkpoint, size):
    import shutil

    shutil.copytree(checkpoint, tmp_path / "models" / "iter0")
    (tmp_path / "pool").mkdir()
    Image.new("RGB", size, (200, 30, 30)).save(tmp_path / "pool" / "photo.png")
    write_manifest(tmp_path, 1, ["pool/photo.png"])
    return tmp_path


def test_noise_refuses_an_image_too_long_for_any_pair_in_one_line_naming_both_keys(checkpoints, tmp_path):
    """Qwen2-VL's published settings give a 1920x1080 photo 2691 tokens: over the paper's 2048 before qa."""
    from sena_cli import layout
    from sena_cli.stages.noise import run_noise

    root = _project(tmp_path, checkpoints["qwen2-vl"], (1920, 1080))
    params = params_from_dict({"train": {"max_length": 2048}, "noise": {"previews": 0}})
    with pytest.raises(SenaError) as caught:
        run_noise(params, 1, root=root)
    message = str(caught.value)
    assert "\n" not in message
    assert "train.max_length = 2048" in message and "model.processor" in message
    assert "pool/photo.png at 1920x1080, is 2691 image tokens" in message, message
    assert not layout.noised_dir(1, root).exists()  # nothing published
    image_space = params_from_dict({"train": {"max_length": 2048}, "noise": {"space": "image", "previews": 0}})
    with pytest.raises(SenaError, match="is 2691 image tokens"):  # corrupting the 0-255 image changes nothing here
        run_noise(image_space, 1, root=root)

    # the fix it names: fewer image tokens (Qwen2-VL's max pixels) or a longer train.max_length
    fewer = params_from_dict({"model": {"processor": TEST_PROCESSOR_SETTINGS["qwen2-vl"]}, "noise": {"previews": 0}})
    assert run_noise(fewer, 1, root=root)["images"] == 1
    longer = params_from_dict({"train": {"max_length": 4096}, "noise": {"previews": 0}})
    assert run_noise(longer, 1, root=root)["images"] == 1
