"""The model boundary: the only package that touches transformers model classes."""

from sena_cli.vlm.model import POINTER_FILE, VLM, check_model_dir, load_processor, resolve_model

__all__ = ["POINTER_FILE", "VLM", "check_model_dir", "load_processor", "resolve_model"]
