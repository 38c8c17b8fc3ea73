"""The model boundary: the only package that touches transformers model classes."""

from sena_cli.vlm.model import VLM, load_processor

__all__ = ["VLM", "load_processor"]
