"""The model boundary: the only package that touches transformers model classes."""

from sena_cli.vlm.versions import check_versions

check_versions()

from sena_cli.vlm.model import (  # noqa: E402 - the version check comes first
    POINTER_FILE,
    VLM,
    ImageFeatures,
    PrefixCache,
    Preprocessor,
    autocast,
    cast_saved_weights,
    check_model_dir,
    load_preprocessor,
    load_processor,
    looks_local,
    non_finite_weight,
    resolve_model,
    saved_dtypes,
    training_precision,
)

__all__ = ["POINTER_FILE", "VLM", "ImageFeatures", "PrefixCache", "Preprocessor", "autocast", "cast_saved_weights",
           "check_model_dir", "load_preprocessor", "load_processor", "looks_local", "non_finite_weight",
           "resolve_model", "saved_dtypes", "training_precision"]
