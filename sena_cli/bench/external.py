"""What the benchmarks on published data share (COCO POPE, COCO CHAIR, AMBER, MMBench, the judged
ones): a file key that must be set, images under a benchmark's image root, generation with
eval's batch settings, and a judged result stamped with the judge's model and prompt version.
Each benchmark's own runner, section and record live in its module (coco_pope.py, amber.py, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from sena_cli import bounded
from sena_cli.artifacts import decode
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.progress import Tick

if TYPE_CHECKING:  # an annotation only: importing the registry (history, report, params checks) loads no model code
    from sena_cli.vlm import VLM


def need(value: str, key: str) -> Path:
    if not value:
        raise SenaError(f"'{key}' is empty; set it to the benchmark's file or folder in params.yaml")
    return Path(value)


def open_benchmark_image(root: Path, name: str, key: str) -> Image.Image:
    """An image under the benchmark's image root (a name that leaves the root is refused)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SenaError(f"{name}: leaves {key} ({root}); benchmark image names must stay under it")
    if not path.exists():
        raise SenaError(f"{path}: image named by the benchmark is missing; check {key}")
    # regular, within limits.max_image_bytes and limits.max_image_pixels before it is decoded
    return decode(bounded.image_bytes(path, f"check {key}"), path, f"not a readable image; check {key}")


def generate(vlm: VLM, images, prompts, params: Params, tick: Tick) -> list[str]:
    return vlm.generate(images, prompts, max_new_tokens=params.eval.max_new_tokens,
                        batch_size=params.eval.batch_size, on_batch=tick)


WINDOW = 64  # batches of eval.batch_size whose images are open at once


def generate_windows(vlm: VLM, root: Path, names: Sequence[str], prompts: Sequence[str], key: str, params: Params,
                     tick: Tick) -> list[str]:
    """Answers to `prompts`, each about the image `names[i]` under `root`, the images opened a window
    (eval.batch_size × WINDOW) at a time and let go after it: memory does not grow with a benchmark's
    length by its images. The batches are the same as one call's, so are the answers."""
    size = params.eval.batch_size * WINDOW
    answers: list[str] = []
    for start in range(0, len(prompts), size):
        images = [open_benchmark_image(root, name, key) for name in names[start : start + size]]
        answers += generate(vlm, images, list(prompts[start : start + size]), params, tick)
    return answers


def judged_result(metrics: dict, judge, version: str) -> dict:
    """A judged benchmark's metrics with the judge's model and the prompt version: judge drift shows."""
    return {**metrics, "judge_model": judge.model, "prompt_version": version}
