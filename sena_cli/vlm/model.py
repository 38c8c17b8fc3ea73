"""Load any Hugging Face image-text-to-text model and processor; batched generation; log-probs.

Nothing here assumes a family: prompts and answers go through ChatFormat (vlm/chat.py), images
through the processor and PixelLayout (vlm/pixels.py), so LLaVA's 4-D pixels, Idefics3's tiles
and Qwen2-VL's patches are all handled the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from sena_cli import bounded
from sena_cli.artifacts import atomic_write_text, to_rgb
from sena_cli.errors import SenaError
from sena_cli.frame import POINTER, made_by, read_json
from sena_cli.vlm.chat import CONVERSATIONS, ChatFormat
from sena_cli.vlm.pixels import PixelLayout, square_padded

if TYPE_CHECKING:
    from sena_cli.config import ModelParams

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
POINTER_FILE = "pointer.json"
HUB_ID = r"[\w.-]+/[\w.-]+"

# (pictures of each image of a batch, the images' keys) -> the pictures to feed instead
PixelTransform = Callable[[list[list[torch.Tensor]], list[str]], list[list[torch.Tensor]]]


@contextlib.contextmanager
def _quiet_transformers():
    """Loading prints warnings for things sena handles (fallback backends, unused weights)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def default_device() -> torch.device:
    """This process's accelerator: its LOCAL_RANK's GPU under torchrun/accelerate, else GPU 0, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ---------------------------------------------------------------- numeric regime


def training_precision(setting: str, device: torch.device | None = None) -> str:
    """train.precision resolved for a device: 'auto' is bf16 on a GPU that has it, else fp32."""
    device = device or default_device()
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    """The one numeric regime of reference log-probs and training: fp32 weights, autocast to `precision`.

    `sena train` runs its forward under exactly this (Trainer/accelerate mixed precision keeps fp32
    master weights and autocasts; the shipped DeepSpeed configs use DeepSpeed's torch_autocast),
    and `sena pair` computes the stored reference log-probs under it, so step 0's log-ratios are 0.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# ---------------------------------------------------------------- where a model is


def resolve_model(path: str | Path) -> Path | str:
    """A model folder, or what its pointer.json names: θ0 of a real checkpoint is a pointer
    (`sena base` writes it) to a hub id or to a folder given relative to the project."""
    path = Path(path)
    pointer = path / POINTER_FILE
    if not pointer.is_file():
        return path
    entry = read_json(pointer, made_by("base"), POINTER)
    target, kind = entry["base"], entry.get("kind", "folder" if looks_local(entry["base"]) else "hub")
    if not target:
        raise SenaError(f"{pointer}: 'base' is empty; rerun `sena base`")
    project = path.parent.parent  # models/iter0 -> the project root
    local = Path(target).expanduser()
    local = local if local.is_absolute() else project / local
    if local.is_dir():
        return local
    if kind == "folder":
        raise SenaError(f"{pointer}: names the checkpoint folder '{target}', which is not there "
                        f"(looked for {local}); put it back or set model.base and rerun `sena base`")
    return target  # a hub id


def looks_local(base: str) -> bool:
    """A path rather than a hub id: absolute, ./ or ../, ~, or more than one slash."""
    import re

    return base.startswith((".", "/", "~")) or not re.fullmatch(HUB_ID, base)


def check_model_dir(path: Path) -> None:
    """Refuse, in one line, a folder that is not a save_pretrained model with safetensors weights."""
    if not path.is_dir():
        raise SenaError(f"{path}: model directory not found; build it first (e.g. `sena base`) or fix the path")
    if not (path / "config.json").exists():
        raise SenaError(f"{path}: no config.json, so this is not a saved model; point to a save_pretrained folder")
    bounded.check_checkpoint_files(path)  # regular files within limits.max_checkpoint_file_bytes
    if not any(path.glob("*.safetensors")):
        raise SenaError(f"{path}: no .safetensors weights; sena loads safetensors only (no pickle)")
    for file in sorted(path.glob("*.safetensors")):
        if why := safetensors_fault(file):
            raise SenaError(f"{file}: {why}, so the weights cannot be read; rebuild this checkpoint (the "
                            "stage that wrote it: `sena base`, `sena train --iter K`) or copy it again")


def safetensors_fault(file: Path) -> str | None:
    """Why a .safetensors file is not whole (0 bytes, cut short, a header claiming more than the
    file holds or than limits.max_safetensors_header_bytes), from its 8-byte length and JSON header
    alone, or None. Loading such a file gives `SafetensorError: header too small` naming no file."""
    import json

    if kind := bounded.irregular(os.stat(file)):
        return f"{kind}, not a regular file"
    size = file.stat().st_size
    if size == 0:
        return "0 bytes"
    with open(file, "rb") as f:
        n = bounded.safetensors_header_length(file, f, size)
        if isinstance(n, str):
            return n
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "damaged (its header is not a safetensors header)"
    if 8 + n + end > size:
        return f"cut short ({size} bytes; its header places tensors up to byte {8 + n + end})"
    return None


def non_finite_weight(path: Path) -> str | None:
    """The name of the first floating tensor of a saved model (its safetensors files) holding a NaN or
    an infinity, or None. Tensors are read one at a time, so memory stays at the largest one."""
    from safetensors import safe_open

    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return name
    return None


# safetensors' dtype names of floating tensors, and torch's
_HEADER_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def saved_dtypes(path: str | Path) -> tuple[dict[str, str], str | None]:
    """The dtype of each floating tensor of a saved model, read from its safetensors headers only
    (no weights), and the dtype holding most of its bytes: ({name: "bfloat16", ...}, "bfloat16").

    `path` may be a pointer (θ0 of a real checkpoint): a hub id gives ({}, the config's dtype), read
    from the local hub cache; ({}, None) when nothing says."""
    target = resolve_model(path)
    if isinstance(target, str):  # a hub id
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(target, "config.json")
        if not isinstance(config, str):
            return {}, None
        data = json.loads(Path(config).read_text())
        named = data.get("dtype") or data.get("torch_dtype")
        return {}, named if named in _DTYPES else None
    names: dict[str, str] = {}
    size: dict[str, int] = {}
    for file in sorted(Path(target).glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, entry in header.items():
            if name != "__metadata__" and entry["dtype"] in _HEADER_DTYPES:
                names[name] = dtype = _HEADER_DTYPES[entry["dtype"]]
                size[dtype] = size.get(dtype, 0) + entry["data_offsets"][1] - entry["data_offsets"][0]
    return names, max(size, key=size.get) if size else None


def cast_saved_weights(folder: Path, dtypes: dict[str, str], default: str) -> str | None:
    """Rewrite a save_pretrained folder's floating tensors in place: each named in `dtypes` to that
    dtype, any other to `default`; config.json's dtype becomes `default`. One safetensors file at a
    time, each written under a temporary name and renamed. Returns the name of a tensor the cast made
    non-finite (a float16 overflow), leaving that file as it was, or None."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            metadata = f.metadata()
            tensors, changed = {}, False
            for name in f.keys():
                tensor = f.get_tensor(name)
                wanted = getattr(torch, dtypes.get(name, default))
                if tensor.is_floating_point() and tensor.dtype != wanted:
                    cast = tensor.to(wanted)
                    if torch.isfinite(tensor).all() and not torch.isfinite(cast).all():
                        return name
                    tensor, changed = cast, True
                tensors[name] = tensor
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        if not changed:
            continue
        tmp = file.with_name(f".{file.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, file)
    index = Path(folder) / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        atomic_write_text(index, json.dumps(data, indent=2, sort_keys=True) + "\n")
    config = Path(folder) / "config.json"
    if config.is_file():
        atomic_write_text(config, json.dumps(_with_dtype(json.loads(config.read_text()), default), indent=2,
                                             sort_keys=True) + "\n")
    return None


def _with_dtype(config, dtype: str):
    """A model config with every dtype entry (top level and sub-configs) set to dtype."""
    if isinstance(config, dict):
        return {key: dtype if key in ("dtype", "torch_dtype") and isinstance(value, str) else _with_dtype(value, dtype)
                for key, value in config.items()}
    return config


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub_model(repo_id: str) -> None:
    """A hub id must be in the local cache or the hub reachable: fail fast in one line, no retries."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    if not hub_reachable():
        raise SenaError(f"model.base '{repo_id}': not in the local Hugging Face cache and the hub cannot be "
                        f"reached; download it where there is network (`hf download {repo_id}`) or point "
                        "model.base to a local checkpoint folder")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")


def check_vlm_config(target: Path | str, trust_remote_code: bool = False) -> str:
    """The checkpoint's model type, refused in one line unless AutoModelForImageTextToText can build it."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "auto_map" in str(exc):
            raise SenaError(f"{target}: the checkpoint's code is not part of transformers (auto_map); sena runs it "
                            "only with model.trust_remote_code: true, for checkpoints you trust") from None
        raise SenaError(f"{target}: unknown model type in its config.json ({exc.__class__.__name__}); "
                        "point model.base to an image-text-to-text checkpoint") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SenaError(f"{target}: config.json unreadable ({exc.__class__.__name__}); fix the checkpoint") from None
    kind = getattr(config, "model_type", "?")
    remote = bool(getattr(config, "auto_map", None)) and trust_remote_code
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not remote:
        raise SenaError(f"{target}: model type '{kind}' is not an image-text-to-text model (a VLM); point "
                        "model.base to one, e.g. llava-hf/llava-1.5-7b-hf")
    return kind


def _where(path: str | Path) -> Path | str:
    path = resolve_model(path)
    if isinstance(path, Path):
        check_model_dir(path)
    else:
        check_hub_model(path)
    return path


# ---------------------------------------------------------------- preprocessing


class Preprocessor:
    """A model's processor with sena's chat format and pixel layout: all that text and images need."""

    def __init__(self, processor, generation_config=None):
        if not hasattr(processor, "image_processor"):
            raise SenaError(f"{type(processor).__name__} has no image processor; this is not a VLM processor")
        self.processor = processor
        self.chat = ChatFormat.of(processor, generation_config)
        self.layout = PixelLayout(processor)

    def inputs(self, images: Sequence[Image.Image] | None, prompts: Sequence[str]):
        """Tokens and pixels of rendered prompts (left-padded), one image per prompt."""
        kwargs = {"text": list(prompts), "padding": True, "padding_side": "left", "return_tensors": "pt",
                  **self.chat.encode_kwargs(prompts[0])}
        if images is not None:
            kwargs["images"] = [[to_rgb(im)] for im in images]
        return self.processor(**kwargs)

    def pictures(self, image: Image.Image, prompt: str = "Describe the image.") -> list[torch.Tensor]:
        """The normalised pictures the model sees for one image (as inside a batch)."""
        return self.layout.pictures(self.inputs([image], [self.chat.prompt(prompt)]))[0]

    def image_tokens(self, sizes: Sequence[tuple[int, int]]) -> list[int]:
        """The tokens the processor puts into a prompt for an image of each (width, height) (PIL's order):
        LLaVA-1.5 576 whatever the size; Qwen2-VL 2691 for 1920x1080 with its published settings;
        SmolVLM's tiles with their row and column markers. The processor's own count
        (`_get_num_multimodal_tokens`, LLaVA, Qwen2-VL, Idefics3) where it has one, else a blank image
        of the size processed. Counts the tokens of the expanded image placeholder: a rendered prompt's
        `prompt_tokens` less the one placeholder token, plus this, is its length."""
        fed = [self._fed_size(w, h) for w, h in sizes]
        count = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if count is not None and fed:
            try:
                return [int(n) for n in count(image_sizes=[(h, w) for w, h in fed])["num_image_tokens"]]
            except (NotImplementedError, KeyError, TypeError, AttributeError):
                pass  # a processor whose count does not follow transformers' interface: measure instead
        measured: dict[tuple[int, int], int] = {}
        for size in fed:
            if size not in measured:
                measured[size] = self._measured_image_tokens(*size)
        return [measured[size] for size in fed]

    def prompt_tokens(self, text: str = "", with_image: bool = True) -> int:
        """Tokens of `text`'s rendered prompt with its image placeholder unexpanded (one token, or Qwen2-VL's
        vision start, pad and end), the tokenizer's prefix (BOS) included."""
        return len(self.chat.prompt_ids(self.chat.prompt(text, with_image)))

    def _fed_size(self, width: int, height: int) -> tuple[int, int]:
        """The size reaching the processor: a square of the long side when it pads (model.pad_to_square)."""
        ip = self.processor.image_processor
        if type(ip).__name__.startswith("LlavaImageProcessor") and getattr(ip, "do_pad", False):
            side = max(width, height)
            return side, side
        return int(width), int(height)

    def _measured_image_tokens(self, width: int, height: int) -> int:
        prompt = self.chat.prompt("")
        processed = self.processor(text=[prompt], images=[[Image.new("RGB", (width, height))]], return_tensors="pt",
                                   **self.chat.encode_kwargs(prompt))
        return int(processed["attention_mask"].sum()) - self.prompt_tokens("") + 1

    @classmethod
    def from_params(cls, model: ModelParams, path: str | Path) -> Preprocessor:
        """The preprocessor of the model at `path` as the `model.*` params load it, without the weights."""
        return load_preprocessor(path, trust_remote_code=model.trust_remote_code, settings=model.processor,
                                 pad_to_square=model.pad_to_square, conversation=model.conversation)


def load_processor(path: str | Path, *, trust_remote_code: bool = False, settings: dict | None = None,
                   pad_to_square: str = "auto", conversation: str = "auto"):
    """The checkpoint's processor with model.processor's settings laid over it, fed as its model was
    trained (model.pad_to_square, model.conversation; 'auto' = the family's own, see as_trained)."""
    from transformers import AutoProcessor

    target = _where(path)
    settings = dict(settings or {})
    with _quiet_transformers():
        try:
            processor = AutoProcessor.from_pretrained(target, trust_remote_code=trust_remote_code, **settings)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise SenaError(f"{target}: no usable processor saved with the model ({exc.__class__.__name__}); "
                            "save it with processor.save_pretrained") from None
    _check_settings(processor, settings)
    return as_trained(processor, target, pad_to_square, conversation, trust_remote_code)


def is_llava15(target: Path | str, processor, trust_remote_code: bool = False) -> bool:
    """LLaVA-1.5 (llava-hf/llava-1.5-*-hf): a LlavaProcessor, a Llama language model and the 336-px
    CLIP ViT-L/14 tower. The embedded θ0 (48-px images, sena's own template) is not one."""
    from transformers import AutoConfig

    if type(processor).__name__ != "LlavaProcessor":
        return False
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code)
    vision, text = getattr(config, "vision_config", None), getattr(config, "text_config", None)
    return (config.model_type == "llava" and getattr(text, "model_type", None) == "llama"
            and getattr(vision, "image_size", None) == 336 and getattr(vision, "patch_size", None) == 14)


def as_trained(processor, target: Path | str, pad_to_square: str, conversation: str, trust_remote_code: bool = False):
    """The processor fed as the model was trained: 'auto' is LLaVA-1.5's training setup for a LLaVA-1.5
    checkpoint (images padded to a square, the vicuna_v1 conversation; the SENA reference's run.sh
    `image_aspect_ratio pad`), the checkpoint's own processor and template for any other."""
    family = None
    if "auto" in (pad_to_square, conversation):
        family = is_llava15(target, processor, trust_remote_code)
    pad = family if pad_to_square == "auto" else pad_to_square == "on"
    if pad or type(getattr(processor, "image_processor", None)).__name__.startswith("LlavaImageProcessor"):
        processor.image_processor = square_padded(processor.image_processor, pad)
    name = ("vicuna_v1" if family else "checkpoint") if conversation == "auto" else conversation
    if name != "checkpoint":
        if type(processor).__name__ != "LlavaProcessor":
            raise SenaError(f"model.conversation: {name} is LLaVA's conversation; {type(processor).__name__} writes "
                            "its image tokens otherwise, so set model.conversation: checkpoint")
        processor.chat_template = CONVERSATIONS[name]
    return processor


def _check_settings(processor, settings: dict) -> None:
    """Every model.processor key must be a setting this processor knows (a typo would be ignored)."""
    ip = getattr(processor, "image_processor", None)
    known = set(dir(processor)) | set(dir(ip))
    valid = getattr(ip, "valid_kwargs", None)
    known |= set(getattr(valid, "__annotations__", {}))
    for key in settings:
        if key not in known:
            raise SenaError(f"model.processor.{key}: {type(processor).__name__} has no such setting; remove it "
                            "(see the checkpoint's preprocessor_config.json for what it has)")


def load_preprocessor(path: str | Path, *, trust_remote_code: bool = False, settings: dict | None = None,
                      pad_to_square: str = "auto", conversation: str = "auto") -> Preprocessor:
    """The processor of a model with its chat format, without loading the weights (for `sena noise`)."""
    from transformers import GenerationConfig

    processor = load_processor(path, trust_remote_code=trust_remote_code, settings=settings,
                               pad_to_square=pad_to_square, conversation=conversation)
    target = resolve_model(path)
    generation_config = None
    # As from_pretrained gives a model its generation config: generation_config.json, else config.json.
    for kwargs in ({}, {"config_file_name": "config.json", "_from_model_config": True}):
        try:
            with _quiet_transformers():
                generation_config = GenerationConfig.from_pretrained(target, **kwargs)
            break
        except OSError:
            continue
    return Preprocessor(processor, generation_config)


# ---------------------------------------------------------------- the model


DECODES = ("auto", "dynamic", "static", "compiled")
STATIC_CACHE_STEP = 256  # a static cache's length is rounded up to a multiple of this


def decode_mode(setting: str, device: torch.device) -> str:
    """qa.decode resolved for a device: 'auto' is compiled on a GPU, dynamic elsewhere (compiling the decode
    step on a CPU takes minutes of a run of seconds)."""
    if setting not in DECODES:
        raise SenaError(f"qa.decode: '{setting}' is not one of {', '.join(DECODES)}; pick one")
    if setting == "auto":
        return "compiled" if device.type == "cuda" else "dynamic"
    return setting


def decode_kwargs(setting: str, device: torch.device) -> dict:
    """generate()'s arguments for a decode mode: dynamic = transformers' growing DynamicCache, eager;
    static = a preallocated StaticCache (sized for the longest call so far), eager; compiled = the static
    cache with the decode step under torch.compile (CUDA graphs on a GPU: mode reduce-overhead)."""
    mode = decode_mode(setting, device)
    if mode == "dynamic":
        return {}
    if mode == "static":
        return {"cache_implementation": "static", "disable_compile": True}
    from transformers import CompileConfig

    config = CompileConfig()
    config._compile_all_devices = device.type != "cuda"  # transformers compiles on GPUs only unless told
    return {"cache_implementation": "static", "compile_config": config}


def length_batches(lengths: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of texts in batches of at most `batch_size`, each of one length class, classes in
    the order they first appear and texts in their order within a class."""
    groups: dict[str, list[int]] = {}
    for i, length in enumerate(lengths):
        groups.setdefault(length, []).append(i)
    return [rows[s : s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]


class _PerImage:
    """Something computed once per image (as the model sees it) and reused by all of its prompts: at
    most `limit` images, the least recently used going first; hits and misses counted by the caller."""

    def __init__(self, limit: int):
        from collections import OrderedDict

        self.limit = max(1, limit)
        self._store: OrderedDict[str, object] = OrderedDict()
        self.hits = self.misses = 0

    def __contains__(self, key: str) -> bool:
        return key in self._store

    def get(self, key: str):
        found = self._store.get(key)
        if found is not None:
            self._store.move_to_end(key)
        return found

    def put(self, key: str, value) -> None:
        self._store[key] = value
        self._store.move_to_end(key)
        while len(self._store) > self.limit:
            self._store.popitem(last=False)


class ImageFeatures(_PerImage):
    """The vision features of images, each computed once and reused by all of that image's prompts.

    Keyed by the pixels the model sees (the processor's output for one image, after any
    pixel_transform), so a clean image and its corrupted copy are two entries, and the same image
    asked again hits. Holds at most `limit` images, the least recently used going first.
    """


class PrefixCache(_PerImage):
    """The key/value cache of each image's prompt prefix (everything up to its last image token: the
    system prompt and the image), computed once and reused by all of that image's prompts: per image,
    ((key, value) per layer), each [1, heads, tokens, dim].

    Keyed by the image's pixels as the model sees them and the prefix's tokens, so a clean image and
    its corrupted copy are two entries. Holds at most `limit` images, the least recently used going
    first: one image's entry is layers x 2 x prefix tokens x KV width values (LLaVA-1.5-7B: ~0.3 GB
    in bf16), so the limit is what bounds its memory.
    """


# What the processors give besides tokens: the pixel inputs of the families' image encoders.
_PIXEL_KEYS = ("pixel_values", "pixel_attention_mask", "image_sizes")


def _per_image_pixels(inputs) -> list[dict[str, torch.Tensor]]:
    """Each image's own slice of a batch's pixel inputs (one image per prompt): LLaVA's and Idefics3's
    rows of pixel_values (and pixel_attention_mask), Qwen2-VL's patch rows split by image_grid_thw."""
    n = inputs["input_ids"].shape[0]
    grids = inputs.get("image_grid_thw")
    rows = None
    if grids is not None:
        sizes = grids.prod(-1).tolist()
        rows = torch.split(inputs["pixel_values"], sizes)
    out = []
    for i in range(n):
        one = {}
        for key in (*_PIXEL_KEYS, "image_grid_thw"):
            if key not in inputs:
                continue
            one[key] = rows[i] if key == "pixel_values" and rows is not None else inputs[key][i : i + 1]
        if one["pixel_values"].dim() == 5:  # Idefics3's tiles, padded to the batch's most with all-zero tiles
            real = ~(one["pixel_values"][0] == 0).flatten(1).all(1)  # the model drops those the same way
            one = {key: v[:, real] if key in ("pixel_values", "pixel_attention_mask") else v for key, v in one.items()}
        out.append(one)
    return out


def _pixel_key(one: dict[str, torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha1()
    for key in sorted(one):
        t = one[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()


def _joined(pieces: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Images' pixel inputs as one batch; Idefics3's tiles padded again with all-zero tiles."""
    out, tiled = {}, pieces[0]["pixel_values"].dim() == 5
    for key in pieces[0]:
        parts = [p[key] for p in pieces]
        if tiled and key in ("pixel_values", "pixel_attention_mask"):
            most = max(t.shape[1] for t in parts)
            parts = [torch.cat([t, t.new_zeros((1, most - t.shape[1], *t.shape[2:]))], 1) for t in parts]
        out[key] = torch.cat(parts)
    return out


class _PerSequenceCap:
    """A stopping criterion: sequence i is done once it has caps[i] new tokens."""

    def __init__(self, caps: list[int], start: int):
        self.caps = torch.tensor(caps)
        self.start = start

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return (input_ids.shape[1] - self.start) >= self.caps.to(input_ids.device)


class VLM:
    """A loaded model with its Preprocessor, in eval mode, on one device."""

    def __init__(self, model, processor, device: torch.device | None = None):
        self.model = model
        self.pre = Preprocessor(processor, model.generation_config)
        self.processor = processor
        self.device = device or next(model.parameters()).device
        self.model.eval()

    @property
    def chat(self) -> ChatFormat:
        return self.pre.chat

    @classmethod
    def from_params(cls, model: ModelParams, path: str | Path, *, dtype: str,
                    device: torch.device | None = None) -> VLM:
        """The model at `path` as the `model.*` params load it (remote code, processor settings, how it
        is fed: pad_to_square, conversation): how
        every stage loads one. `dtype` is the stage's: model.dtype for qa and eval, "float32" for pair
        and train (fp32 weights under autocast); a stage that does not pass model.dtype does not read
        it, so a change of it reruns neither (dvc.yaml tracks it for qa and eval only)."""
        return cls.load(path, trust_remote_code=model.trust_remote_code, dtype=dtype, device=device,
                        processor_settings=model.processor, pad_to_square=model.pad_to_square,
                        conversation=model.conversation)

    @classmethod
    def load(
        cls, path: str | Path, *, trust_remote_code: bool = False, dtype: str = "auto",
        device: torch.device | None = None, processor_settings: dict | None = None,
        pad_to_square: str = "auto", conversation: str = "auto",
    ) -> VLM:
        from transformers import AutoModelForImageTextToText
        from transformers.integrations import is_deepspeed_zero3_enabled

        target = _where(path)
        device = device or default_device()
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        else:
            torch_dtype = _DTYPES[dtype]
        with _quiet_transformers():
            try:
                model = AutoModelForImageTextToText.from_pretrained(
                    target, trust_remote_code=trust_remote_code, dtype=torch_dtype, use_safetensors=True
                )
            except ValueError as exc:
                config_file = Path(target) / "config.json"
                kind = (json.loads(bounded.read_text(config_file, "max_checkpoint_file_bytes")).get("model_type", "?")
                        if config_file.is_file() else "?")
                raise SenaError(
                    f"{target}: model type '{kind}' is not an image-text-to-text model; point to a VLM checkpoint"
                ) from exc
        processor = load_processor(path, trust_remote_code=trust_remote_code, settings=processor_settings,
                                   pad_to_square=pad_to_square, conversation=conversation)
        if is_deepspeed_zero3_enabled():  # loaded sharded by deepspeed.zero.Init, which placed the shards
            return cls(model, processor, device)
        return cls(model.to(device), processor, device)

    # ------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        images: Sequence[Image.Image] | None,
        texts: Sequence[str],
        *,
        max_new_tokens: int | Sequence[int],
        batch_size: int = 8,
        pixel_transform: PixelTransform | None = None,
        keys: Sequence[str] | None = None,
        on_batch: Callable[[int], None] = lambda n: None,
        lengths: Sequence[str] | None = None,
        features: ImageFeatures | None = None,
        decode: str = "dynamic",
        prefixes: PrefixCache | None = None,
    ) -> list[str]:
        """Greedy answers to `texts`, each about the matching image (text-only when images is None).

        `max_new_tokens` is one cap for all or one per text; each sequence stops at its own cap or
        end token. `lengths`, when given, is a length class per text ("long", "short"): a batch
        then holds texts of one class only, so short answers do not wait for long descriptions
        (greedy outputs are the same; the answers come back in the order of `texts`).
        `features`, when given, holds each image's vision features: computed once per image (as
        the model sees it) and reused by all of its prompts, here and in later calls.
        `decode` is how the decode steps run (see `decode_kwargs`): dynamic, static, compiled or auto.
        `prefixes`, when given, holds the key/value cache of each image's prompt prefix (system prompt
        and image tokens): computed once per image and reused by all of its prompts, whose prefill then
        runs over their own text only (families with 1-D positions; see `reuses_prefix`).
        `pixel_transform(pictures, keys)`, when given, replaces each image's pictures (as the model
        sees them, vlm/pixels.py) before the model runs: how `qa` feeds the corrupted copies.
        """
        for n, text in enumerate(texts, 1):  # sized before the tokenizer sees it (a 100 MB one aborted it)
            bounded.check_text(text, f"prompt {n} of {len(texts)}")
        n = len(texts)
        caps = [max_new_tokens] * n if isinstance(max_new_tokens, int) else [int(c) for c in max_new_tokens]
        if len(caps) != n:
            raise ValueError(f"max_new_tokens: {len(caps)} caps for {n} texts")
        batches = length_batches(lengths, batch_size) if lengths is not None else \
            [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
        outputs: list[str] = [""] * n
        compiled = decode_mode(decode, self.device) == "compiled"
        for rows in batches:
            real = len(rows)
            if compiled and real < batch_size:  # one batch shape for the compiled step: fill with the last request
                rows = rows + [rows[-1]] * (batch_size - real)
            chunk = [texts[i] for i in rows]
            prompts = [self.chat.prompt(t, with_image=images is not None) for t in chunk]
            inputs = self.pre.inputs([images[i] for i in rows] if images is not None else None, prompts)
            if pixel_transform is not None:
                pictures = self.pre.layout.pictures(inputs)
                new = pixel_transform(pictures, [keys[i] for i in rows])
                inputs["pixel_values"] = self.pre.layout.with_pictures(inputs, new)
            encoded = pieces = None
            with_prefix = prefixes is not None and images is not None and self.reuses_prefix
            if with_prefix or (features is not None and images is not None and self.reuses_features):
                pieces = _per_image_pixels(inputs) if "pixel_values" in inputs else None
                pixel_keys = [_pixel_key(one) for one in pieces] if pieces is not None else None
            if features is not None and pieces is not None and self.reuses_features:
                encoded = self._image_features(pieces, pixel_keys, features)
            if encoded is not None or (with_prefix and pieces is not None):
                for key in _PIXEL_KEYS:
                    inputs.pop(key, None)
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            row_caps = [caps[i] for i in rows]
            if with_prefix and pieces is not None:
                answers = self._generate_after_prefixes(inputs, row_caps, pieces, pixel_keys, encoded, prefixes,
                                                        decode)
            else:
                answers = self._generate(inputs, row_caps, encoded, decode)
            for i, out in zip(rows[:real], answers[:real], strict=True):
                outputs[i] = out
            on_batch(real)
        return outputs

    @property
    def reuses_features(self) -> bool:
        """Whether precomputed vision features can be fed to this model: transformers' VLMs take them as
        `mm_encoder_outputs` (LLaVA, Qwen2-VL, Idefics3, ...); a remote-code model that does not is
        encoded per prompt, as before."""
        import inspect

        return ("mm_encoder_outputs" in inspect.signature(self.model.forward).parameters
                and hasattr(self.model.base_model, "get_image_features"))

    @property
    def reuses_prefix(self) -> bool:
        """Whether an image's prefix cache can be reused: transformers' VLMs whose image tokens are marked
        (LLaVA, Idefics3/SmolVLM, Qwen2-VL; a remote-code model without precomputed features is not)."""
        return self.reuses_features and getattr(self.model.config, "image_token_id", None) is not None

    @property
    def _mrope(self):
        """Qwen2-VL's model when it positions tokens with M-RoPE (positions from the image grid), else None."""
        base = self.model.base_model
        return base if hasattr(base, "get_rope_index") else None

    def _image_features(self, pieces: list[dict], keys: list[str], features: ImageFeatures) -> dict:
        """The batch's vision features as generate's `mm_encoder_outputs`, encoding only the images
        `features` does not hold yet (in one call of the family's own image encoder)."""
        import inspect

        from transformers.modeling_outputs import BaseModelOutputWithPooling

        missing = list(dict.fromkeys(k for k in keys if features.get(k) is None))
        found = {k: features.get(k) for k in keys if k not in missing}
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            batch = _joined([pieces[first[k]] for k in missing])
            encode = self.model.base_model.get_image_features
            wanted = set(inspect.signature(encode).parameters)
            args = {key: v.to(self.device) for key, v in batch.items() if key in wanted}
            args["pixel_values"] = args["pixel_values"].to(self.model.dtype)
            per_image = encode(**args, return_dict=True).pooler_output
            for k, f in zip(missing, per_image, strict=True):
                features.put(k, f)
                found[k] = f
            features.misses += len(missing)
        features.hits += len(keys) - len(missing)
        return {"image": BaseModelOutputWithPooling(pooler_output=[found[k] for k in keys])}

    def _prefix_layers(self, prefix_ids: list[torch.Tensor], pieces: list[dict], encoded: dict | None,
                       keys: list[str], prefixes: PrefixCache, token_types: list[torch.Tensor] | None) -> list[tuple]:
        """Each row's prefix key/values ((key, value) per layer, [1, heads, tokens, dim]), computing those
        `prefixes` does not hold: one forward per group of missing prefixes of one length (no padding)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The batch's prefixes are gathered here, not read back from `prefixes`: a limit smaller than the
        # batch's images would evict some before they are used.
        found = {key: prefixes.get(key) for key in dict.fromkeys(keys)}
        missing: dict[str, int] = {}  # each missing prefix once, computed from its first row
        for r, key in enumerate(keys):
            if found[key] is None:
                missing.setdefault(key, r)
        by_length: dict[int, list[int]] = {}
        for r in missing.values():
            by_length.setdefault(len(prefix_ids[r]), []).append(r)
        for group in by_length.values():
            ids = torch.stack([prefix_ids[r] for r in group]).to(self.device)
            args: dict = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": True}
            if token_types is not None:  # Qwen2-VL: M-RoPE positions from the image grid, as in the full prompt
                args["mm_token_type_ids"] = torch.stack([token_types[r] for r in group]).to(self.device)
                args["image_grid_thw"] = torch.cat([pieces[r]["image_grid_thw"] for r in group]).to(self.device)
            if encoded is not None:
                pooled = encoded["image"].pooler_output
                args["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                    pooler_output=[pooled[r] for r in group])}
            else:
                batch = _joined([pieces[r] for r in group])
                args.update({key: v.to(self.device) for key, v in batch.items()})
                args["pixel_values"] = args["pixel_values"].to(self.model.dtype)
            cache = self.model(**args).cache
            for j, r in enumerate(group):
                found[keys[r]] = tuple((layer.keys[j : j + 1], layer.values[j : j + 1]) for layer in cache.layers)
                prefixes.put(keys[r], found[keys[r]])
        prefixes.misses += len(missing)
        prefixes.hits += len(keys) - len(missing)
        return [found[key] for key in keys]

    def _generate_after_prefixes(self, inputs, caps: list[int], pieces: list[dict], pixel_keys: list[str],
                                 encoded: dict | None, prefixes: PrefixCache, decode: str) -> list[str]:
        """generate() continuing from each row's cached image prefix: row r is laid out as
        [pad][prefix_r][pad][text_r], its positions following the attention mask (prefix 0.., text
        right after it, as in the left-padded prompt), and only the text is prefilled."""
        import hashlib

        from transformers import DynamicCache, StaticCache

        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        image_token = self.model.config.image_token_id
        types = inputs.get("mm_token_type_ids") if self._mrope is not None else None
        prefix_ids, texts, token_types = [], [], ([] if types is not None else None)
        for r in range(ids.shape[0]):
            real = ids[r][mask[r]].cpu()
            where = (real == image_token).nonzero()
            cut = int(where[-1]) + 1 if len(where) else 0
            if cut == 0 or cut == len(real):  # no image in this prompt or nothing after it: the full prefill
                if encoded is None:
                    inputs.update({key: v.to(self.device) for key, v in _joined(pieces).items()})
                    inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                return self._generate(inputs, caps, encoded, decode)
            prefix_ids.append(real[:cut])
            texts.append(real[cut:])
            if token_types is not None:
                token_types.append(types[r][mask[r]].cpu()[:cut])
        keys = [f"{pk}:{hashlib.sha1(pre.numpy().tobytes()).hexdigest()}"
                for pk, pre in zip(pixel_keys, prefix_ids, strict=True)]
        layers = self._prefix_layers(prefix_ids, pieces, encoded, keys, prefixes, token_types)
        if token_types is not None:
            # Qwen2-VL: a text token's M-RoPE position is its index among the real tokens plus the row's
            # rope delta (the image grid's offset); generate adds the deltas the model holds to the
            # mask's positions when it continues from a cache, so they are set from the full prompt.
            grids = torch.cat([one["image_grid_thw"] for one in pieces]).to(self.device)
            _, deltas = self._mrope.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=grids,
                                                   attention_mask=inputs["attention_mask"])
            self._mrope.rope_deltas = deltas
        n, width_p, width_t = len(texts), max(map(len, prefix_ids)), max(map(len, texts))
        pad = self._pad_id
        new_ids = torch.full((n, width_p + width_t), pad, dtype=ids.dtype)
        new_mask = torch.zeros((n, width_p + width_t), dtype=torch.long)
        for r, (pre, text) in enumerate(zip(prefix_ids, texts, strict=True)):
            new_ids[r, width_p - len(pre) : width_p], new_ids[r, width_p + width_t - len(text) :] = pre, text
            new_mask[r, width_p - len(pre) : width_p] = 1
            new_mask[r, width_p + width_t - len(text) :] = 1

        def joined(part: int, layer: int) -> torch.Tensor:  # the rows' prefixes, left-padded to one length
            rows = [per_row[layer][part] for per_row in layers]
            return torch.cat([torch.nn.functional.pad(t, (0, 0, width_p - t.shape[2], 0)) for t in rows])

        n_layers = len(layers[0])
        kv = [(joined(0, layer), joined(1, layer)) for layer in range(n_layers)]
        if decode_mode(decode, self.device) == "dynamic":
            cache = DynamicCache(ddp_cache_data=kv)
        else:
            cache = StaticCache(config=self.model.config, max_cache_len=self._cache_len(width_p + width_t, caps))
            for layer, (k, v) in enumerate(kv):
                cache.layers[layer].update(k, v)
        batch = {"input_ids": new_ids.to(self.device), "attention_mask": new_mask.to(self.device)}
        return self._generate(batch, caps, None, decode, cache=cache)

    @property
    def _pad_id(self) -> int:
        tok = self.processor.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self.chat.end_ids[0]

    @staticmethod
    def _cache_len(start: int, caps: list[int]) -> int:
        """A static cache's length: few values, so few compiled graphs."""
        return -(-(start + max(caps)) // STATIC_CACHE_STEP) * STATIC_CACHE_STEP

    def _generate(self, inputs, caps: list[int], encoded: dict | None = None, decode: str = "dynamic",
                  cache=None) -> list[str]:
        from transformers import StoppingCriteriaList

        start = inputs["input_ids"].shape[1]
        extra = decode_kwargs(decode, self.device)
        if cache is not None:  # continuing from cached prefixes: the cache is given, not made by generate
            extra.pop("cache_implementation", None)
            extra["cache"] = cache
        elif decode_mode(decode, self.device) != "dynamic":
            extra["max_cache_len"] = self._cache_len(start, caps)
        if len(set(caps)) > 1:  # each sequence stops at its own cap; the batch runs to the largest
            extra["stopping_criteria"] = StoppingCriteriaList([_PerSequenceCap(caps, start)])
        out = self.model.generate(
            **inputs, max_new_tokens=max(caps), do_sample=False,
            pad_token_id=self._pad_id, eos_token_id=list(self.chat.end_ids), **extra,
            **({"mm_encoder_outputs": encoded} if encoded is not None else {}),
        )
        new_tokens = [row[start : start + cap] for row, cap in zip(out, caps, strict=True)]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    # ------------------------------------------------------------ log-probs

    def preference_logps(
        self,
        rows: Sequence[dict],
        load_image: Callable[[str], Image.Image],
        *,
        max_length: int | None = None,
        precision: str = "fp32",
    ) -> list[tuple[float, float, float, float]]:
        """(chosen sum, chosen token-mean, rejected sum, rejected token-mean) of each pair's answer
        log-probs on its image: the tokens and numeric regime of `sena train`'s step 0."""
        from sena_cli.vlm.preference import PreferenceCollator, completion_logps

        batch = PreferenceCollator(self.processor, self.chat, load_image, max_length)(rows)
        with autocast(precision, self.device):
            sums, counts = completion_logps(self.model, batch)
        means = sums / counts.clamp(min=1)
        n = len(rows)
        return [(sums[i].item(), means[i].item(), sums[n + i].item(), means[n + i].item()) for i in range(n)]
