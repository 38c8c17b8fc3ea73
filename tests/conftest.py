"""Shared fixtures: a micro world and a micro θ0 (seconds, not the 10-minute default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sena_cli.config import Params, params_from_dict, to_dict

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MICRO = {
    "world": {
        "pool_images": 24,
        "instruct_images": 120,
        "instruct_examples_per_image": 4,
        "eval": {"pope_images": 8, "chair_images": 8, "vqa_images": 8, "question_images": 8},
        "eval_dev": {"pope_images": 4, "chair_images": 4, "vqa_images": 4, "question_images": 4},
    },
    "base": {"steps": 20, "batch_size": 8, "lr": 0.003, "warmup_steps": 2, "threads": 1,
             "vision_hidden": 32, "text_hidden": 32, "text_intermediate": 64},
    "sample": {"images_per_iteration": 6},
    "qa": {"batch_size": 8, "max_new_tokens": 16},
    "eval": {"batch_size": 16, "max_new_tokens": 12},
}


def full_params_yaml(overrides: dict) -> str:
    """A params file with every key, as DVC needs for the keys its stages track."""
    return yaml.safe_dump(to_dict(params_from_dict(overrides)), sort_keys=False)


@pytest.fixture(scope="session")
def micro_dict() -> dict:
    return yaml.safe_load(yaml.safe_dump(MICRO))


@pytest.fixture(scope="session")
def micro_params(micro_dict) -> Params:
    return params_from_dict(micro_dict)


@pytest.fixture(scope="session")
def micro_project(tmp_path_factory, micro_dict, micro_params) -> Path:
    """A project folder with params.yaml, the micro world and a trained micro θ0 (models/iter0)."""
    from sena_cli.stages.base import run_base
    from sena_cli.world.build import build_world

    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(full_params_yaml(micro_dict))
    build_world(micro_params, root / "data" / "world")
    run_base(micro_params, root=root)
    return root
