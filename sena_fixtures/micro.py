"""The micro world and θ0 (seconds, not the 10-minute default), and projects built on them.

tests/conftest.py makes its session fixtures from these; benchmarks/ build the same project at their
tiny size.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sena_cli.config import params_from_dict, to_dict

MICRO = {
    "world": {
        "pool_images": 24,
        "instruct_images": 120,
        "instruct_examples_per_image": 4,
        "eval": {"pope_images": 8, "chair_images": 8, "vqa_images": 8, "question_images": 8},
        "eval_dev": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4},
        "eval_cal": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4},
    },
    "base": {"steps": 20, "batch_size": 8, "lr": 0.003, "warmup_steps": 2, "threads": 1,
             "vision_hidden": 32, "text_hidden": 32, "text_intermediate": 64},
    "sample": {"images_per_iteration": 6},
    "qa": {"batch_size": 8, "max_new_tokens": 16},
    "eval": {"batch_size": 16, "max_new_tokens": 12},
}


def micro_dict() -> dict:
    """A fresh deep copy of MICRO (callers may change it)."""
    return yaml.safe_load(yaml.safe_dump(MICRO))


def full_params_yaml(overrides: dict) -> str:
    """A params file with every key, as DVC needs for the keys its stages track."""
    return yaml.safe_dump(to_dict(params_from_dict(overrides)), sort_keys=False)


def build_micro_project(root: Path, overrides: dict | None = None) -> Path:
    """A project folder with params.yaml, the micro world and a trained micro θ0 (models/iter0)."""
    from sena_cli.stages.base import run_base
    from sena_cli.world.build import build_world

    d = overrides if overrides is not None else micro_dict()
    params = params_from_dict(d)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(full_params_yaml(d))
    build_world(params, root / "data" / "world")
    run_base(params, root=root)
    return root


def write_manifest(root: Path, k: int, paths: list[str]) -> None:
    """data/iterK/sample/manifest.jsonl for images given by path (as `sena sample` records them),
    for tests that script the qa records of images they did not sample."""
    import hashlib

    from sena_cli.artifacts import write_jsonl

    write_jsonl(root / "data" / f"iter{k}" / "sample" / "manifest.jsonl",
                [{"id": p, "path": p, "sha256": hashlib.sha256((root / p).read_bytes()).hexdigest()} for p in paths])


def photo(width: int, height: int, seed: int = 0):
    """A photo-like RGB image: smooth colour gradients and soft shapes with sensor-like noise, so a
    JPEG of it is as large as a camera's (it does not compress to nothing, as a flat colour would)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    out = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        a, b, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        channel = 128 + 60 * np.sin(6.283 * a * x + phase) * np.cos(6.283 * b * y) + 50 * (x - y)
        channel += rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
        out[..., c] = np.clip(channel, 0, 255)
    return Image.fromarray(out)


def paired_iteration(params, root: Path, type_: str, prompt: str, chosen: str, rejected: str) -> None:
    """Iteration 1 sampled, corrupted, asked (one scripted qa record per image: `prompt`, with `chosen`
    as the enhanced answer and `rejected` as the corrupted one) and paired with θ0."""
    from sena_cli.artifacts import write_jsonl
    from sena_cli.frame import read_jsonl
    from sena_cli.stages.noise import run_noise
    from sena_cli.stages.pair import run_pair
    from sena_cli.stages.sample import run_sample

    run_sample(params, 1, root=root)
    run_noise(params, 1, root=root)
    write_jsonl(root / "data/iter1/qa/records.jsonl", [{
        "id": m["id"], "image": m["path"], "type": type_, "prompt": prompt, "enhanced_answer": chosen,
        "corrupted_answer": rejected} for m in read_jsonl(root / "data/iter1/sample/manifest.jsonl")])
    run_pair(params, 1, root=root)
