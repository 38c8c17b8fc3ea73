"""Load any Hugging Face image-text-to-text model and processor; chat prompts; batched generation.

Works for LLaVA-style processors (4-D pixel_values) and others (Idefics3's 5-D
pixel_values with a pixel_attention_mask): nothing here assumes a tensor shape.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from sena_cli.artifacts import to_rgb
from sena_cli.errors import SenaError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def _quiet_transformers():
    """The PIL fallback of image processors (no torchvision) warns on every load; it works."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


POINTER_FILE = "pointer.json"


def resolve_model(path: str | Path) -> Path | str:
    """A model folder, or what its pointer.json names: θ0 of a real checkpoint is a pointer
    (`sena base` writes it), so DVC tracks a few bytes instead of a copy of the weights."""
    path = Path(path)
    pointer = path / POINTER_FILE
    if not pointer.is_file():
        return path
    try:
        target = json.loads(pointer.read_text())["base"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise SenaError(f"{pointer}: malformed; rerun `sena base`") from None
    return Path(target) if Path(target).is_dir() else target  # else a hub id


def load_processor(path: str | Path, *, trust_remote_code: bool = False):
    """The processor saved with a model (for stages that only preprocess, like `noise`)."""
    from transformers import AutoProcessor

    path = resolve_model(path)
    if isinstance(path, Path) and not path.is_dir():
        raise SenaError(f"{path}: model directory not found; build or train that model first")
    with _quiet_transformers():
        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError) as exc:
            raise SenaError(f"{path}: no usable processor saved with the model") from exc
    if not hasattr(processor, "image_processor"):
        raise SenaError(f"{path}: the saved processor has no image processor; this is not a VLM processor")
    return processor


def check_model_dir(path: Path) -> None:
    """Refuse, in one line, a folder that is not a save_pretrained model with safetensors weights."""
    if not path.is_dir():
        raise SenaError(f"{path}: model directory not found; build it first (e.g. `sena base`) or fix the path")
    if not (path / "config.json").is_file():
        raise SenaError(f"{path}: no config.json, so this is not a saved model; point to a save_pretrained folder")
    if not any(path.glob("*.safetensors")):
        raise SenaError(f"{path}: no .safetensors weights; sena loads safetensors only (no pickle)")


class VLM:
    """A loaded model and processor, in eval mode, on one device."""

    def __init__(self, model, processor, device: torch.device | None = None):
        self.model = model
        self.processor = processor
        self.device = device or next(model.parameters()).device
        self.model.eval()

    @classmethod
    def load(
        cls, path: str | Path, *, trust_remote_code: bool = False, dtype: str = "auto",
        device: torch.device | None = None,
    ) -> VLM:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_model(path)
        if isinstance(path, Path):
            check_model_dir(path)
        device = device or _device()
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        else:
            torch_dtype = _DTYPES[dtype]
        with _quiet_transformers():
            try:
                model = AutoModelForImageTextToText.from_pretrained(
                    path, trust_remote_code=trust_remote_code, dtype=torch_dtype, use_safetensors=True
                )
            except ValueError as exc:
                config_file = Path(path) / "config.json"
                kind = json.loads(config_file.read_text()).get("model_type", "?") if config_file.is_file() else "?"
                raise SenaError(
                    f"{path}: model type '{kind}' is not an image-text-to-text model; point to a VLM checkpoint"
                ) from exc
            try:
                processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, TypeError) as exc:
                raise SenaError(
                    f"{path}: no usable processor saved with the model; save it with processor.save_pretrained"
                ) from exc
        if not hasattr(processor, "image_processor") or getattr(processor, "chat_template", None) is None:
            raise SenaError(
                f"{path}: the processor has no image processor or no chat template; save a VLM processor with one"
            )
        return cls(model.to(device), processor, device)

    # ------------------------------------------------------------ prompts

    def chat_prompt(self, text: str, with_image: bool = True) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    # ------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Image.Image] | None,
        texts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int = 8,
        pixel_values: Sequence[torch.Tensor] | None = None,
        on_batch: Callable[[int], None] = lambda n: None,
    ) -> list[str]:
        """Greedy answers to `texts`, each about the matching image (text-only when images is None).

        `pixel_values`, when given, replaces the processor's tensor of each image (one entry per
        image, the shape the image processor gives for it): how corrupted copies are fed.
        """
        outputs: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            prompts = [self.chat_prompt(t, with_image=images is not None) for t in chunk]
            kwargs = {"text": prompts, "padding": True, "return_tensors": "pt"}
            if images is not None:
                kwargs["images"] = [to_rgb(im) for im in images[start : start + batch_size]]
            inputs = self.processor(**kwargs, padding_side="left")
            if pixel_values is not None:
                chunk_pixels = pixel_values[start : start + batch_size]
                inputs["pixel_values"] = _replace_pixels(inputs["pixel_values"], chunk_pixels)
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            outputs.extend(self._generate(inputs, max_new_tokens))
            on_batch(len(chunk))
        return outputs

    def chat_text(self, text: str, answer: str) -> str:
        """Prompt and answer as one conversation, rendered the way training sees it."""
        return self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
             {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            add_generation_prompt=False, tokenize=False,
        )

    def preference_logps(
        self,
        rows: Sequence[dict],
        load_image: Callable[[str], Image.Image],
        *,
        max_length: int | None = None,
    ) -> list[tuple[float, float, float, float]]:
        """(chosen sum, chosen token-mean, rejected sum, rejected token-mean) of each pair's answer
        log-probs on its image, tokenized exactly as trl's DPO training tokenizes them."""
        from sena_cli.vlm.preference import PreferenceCollator, completion_logps

        batch = PreferenceCollator(self.processor, load_image, max_length)(rows)
        sums, counts = completion_logps(self.model, batch)
        means = sums / counts.clamp(min=1)
        n = len(rows)
        return [(sums[i].item(), means[i].item(), sums[n + i].item(), means[n + i].item()) for i in range(n)]

    def _generate(self, inputs, max_new_tokens: int) -> list[str]:
        tok = self.processor.tokenizer
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _replace_pixels(processed: torch.Tensor, replacements: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-image tensors in the processor's batch layout, refusing a shape mismatch."""
    stacked = torch.stack([r.to(processed.dtype) for r in replacements])
    if stacked.shape != processed.shape:
        raise SenaError(
            f"stored pixel tensors have shape {tuple(stacked.shape)} but the processor gives "
            f"{tuple(processed.shape)}; rerun `sena noise` with this model's processor"
        )
    return stacked
