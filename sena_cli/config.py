"""params.yaml -> typed, validated settings. The one place that knows parameter names.

Defaults in the dataclasses below are the paper's (AAAI 2025, "Beyond Human Data",
see docs/method.md) wherever the paper or its reference code fixes a value; the
shipped params.yaml overrides some of them with the *embedded-default profile* (a
tiny model on a synthetic world that runs on a laptop CPU). Every deviation from the
method is a named parameter here, documented in docs/params.md.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sena_cli.bench.registry import NAMES as BENCHMARK_REGISTRY_NAMES
from sena_cli.errors import SenaError

DEFAULT_PARAMS_FILE = "params.yaml"

# The world's palette: the names a world may use (colours are drawn with these RGB values).
PALETTE = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 25),
    "purple": (140, 50, 170),
    "orange": (240, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")


def _rng(lo=None, hi=None, *, lo_open=False, hi_open=False, choices=None):
    """Field metadata: the allowed range (both ends, for every number) or set of values."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices}


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit
BIG = 10**7  # the upper bound of counts (images, steps): far above any run, below what hangs or overflows


# ---------------------------------------------------------------- sections


@dataclass
class LoopParams:
    iterations: int = field(default=3, metadata=_rng(1, 100))  # paper: K = 3
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))


@dataclass
class ModelParams:
    # "embedded": θ0 is the tiny LLaVA that `sena base` trains on the world.
    # Anything else: a local checkpoint directory or hub id of an image-text-to-text model.
    base: str = "embedded"
    trust_remote_code: bool = False  # never on unless the user sets it
    dtype: str = field(default="auto", metadata=_rng(choices=["auto", "float32", "bfloat16", "float16"]))
    # Settings laid over the checkpoint's saved processor at every load (noise, qa, pair, train,
    # eval), e.g. {size: {shortest_edge: 3136, longest_edge: 1003520}} for Qwen2-VL (min/max pixels) or
    # {do_image_splitting: false} for SmolVLM:
    # how a user bounds the image tokens of a real model. {} = the checkpoint's own settings.
    processor: dict = field(default_factory=dict)


@dataclass
class WorldEvalParams:
    pope_images: int = field(default=150, metadata=_rng(1, BIG))
    pope_questions_per_label: int = field(default=3, metadata=_rng(1, 4))
    chair_images: int = field(default=200, metadata=_rng(1, BIG))
    vqa_images: int = field(default=150, metadata=_rng(1, BIG))
    question_images: int = field(default=100, metadata=_rng(1, BIG))


@dataclass
class WorldParams:
    seed: int = field(default=1234, metadata=_rng(0, SEED_MAX))
    image_size: int = field(default=48, metadata=_rng(16, 1024))
    colours: list[str] = field(default_factory=lambda: ["red", "green", "blue", "yellow"],
                               metadata=_rng(choices=list(PALETTE)))
    shapes: list[str] = field(default_factory=lambda: list(SHAPES), metadata=_rng(choices=list(SHAPES)))
    max_objects: int = field(default=4, metadata=_rng(1, 4))  # one object per quadrant
    min_object_size: int = field(default=12, metadata=_rng(4, 512))
    max_object_size: int = field(default=20, metadata=_rng(4, 512))
    # Fixed object pairs that co-occur in images (the bias θ0 learns) ...
    cooccurrence_pairs: list[list[str]] = field(default_factory=lambda: [
        ["red circle", "blue square"],
        ["green triangle", "yellow cross"],
        ["blue circle", "red triangle"],
        ["yellow square", "green circle"],
    ])
    cooccurrence_prob: float = field(default=0.8, metadata=_rng(0.0, 1.0))
    # ... and the share of training captions that name an absent partner.
    caption_noise: float = field(default=0.5, metadata=_rng(0.0, 1.0))
    pool_images: int = field(default=1200, metadata=_rng(1, BIG))
    instruct_images: int = field(default=12000, metadata=_rng(1, BIG))
    instruct_examples_per_image: int = field(default=6, metadata=_rng(1, 50))
    # Two held-out sets of the same distribution, on disjoint images: `eval` (test) is what the
    # world benchmarks report; `eval_dev` (dev, benchmark `world_dev`) is where settings are chosen.
    eval: WorldEvalParams = field(default_factory=WorldEvalParams)
    eval_dev: WorldEvalParams = field(default_factory=WorldEvalParams)


@dataclass
class BaseParams:
    """θ0 for the embedded default: a tiny LLaVA trained on the world's instruction set."""

    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))
    steps: int = field(default=3800, metadata=_rng(1, BIG))
    batch_size: int = field(default=16, metadata=_rng(1, 65536))  # rows (images) per step
    # Examples of one image packed into a row, each masked off from the others (tiny.train_tiny).
    examples_per_sequence: int = field(default=6, metadata=_rng(1, 1024))
    lr: float = field(default=7e-4, metadata=_rng(0.0, 1.0, lo_open=True))
    warmup_steps: int = field(default=100, metadata=_rng(0, BIG))
    threads: int = field(default=2, metadata=_rng(1, 256))
    patch_size: int = field(default=8, metadata=_rng(1, 1024))
    vision_hidden: int = field(default=64, metadata=_rng(8, 65536))
    vision_layers: int = field(default=2, metadata=_rng(1, 256))
    vision_heads: int = field(default=4, metadata=_rng(1, 256))
    text_hidden: int = field(default=128, metadata=_rng(8, 65536))
    text_layers: int = field(default=2, metadata=_rng(1, 256))
    text_heads: int = field(default=4, metadata=_rng(1, 256))
    text_intermediate: int = field(default=256, metadata=_rng(8, 262144))


@dataclass
class SampleParams:
    pool: str = "data/world/pool"  # folder tree, JSON/JSONL list, or a datasets-loadable path
    image_root: str = ""  # root for relative `image` paths in a JSON/JSONL pool
    images_per_iteration: int = field(default=6000, metadata=_rng(1, BIG))  # paper: M = 6K
    stratify_by: str = ""  # "" = none; "path" = first path component; else a record field
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))
    # Images past these limits are skipped (read from the header, never decoded): no paper
    # counterpart; they keep a decompression bomb or a 200000x1 strip out of every later stage.
    max_pixels: int = field(default=64_000_000, metadata=_rng(1, 178_000_000))  # Pillow refuses more
    max_side: int = field(default=16_384, metadata=_rng(1, 1_000_000))
    max_aspect_ratio: float = field(default=20.0, metadata=_rng(1.0, 1e6))  # long side / short side
    # Which copies of one picture are drawn once: "files" (one file by several paths, or the same
    # bytes), "pixels" (also the same decoded pixels: PNG vs lossless WebP, EXIF-rotated copies),
    # "perceptual" (also lossy re-encodings and resized copies: JPEG of a PNG).
    dedup: str = field(default="pixels", metadata=_rng(choices=["files", "pixels", "perceptual"]))


@dataclass
class NoiseParams:
    timestep: int = field(default=600, metadata=_rng(0, 99_999))  # paper: T = 600
    num_train_timesteps: int = field(default=1000, metadata=_rng(2, 100_000))
    beta_start: float = field(default=1e-5, metadata=_rng(0.0, 1.0, lo_open=True, hi_open=True))
    beta_end: float = field(default=5e-3, metadata=_rng(0.0, 1.0, lo_open=True, hi_open=True))
    beta_schedule: str = field(default="sigmoid", metadata=_rng(
        choices=["sigmoid", "linear", "scaled_linear", "squaredcos_cap_v2"]))
    # The reference corrupts the processor's normalised pixel tensor; "image" corrupts 0-255 RGB.
    space: str = field(default="pixel_values", metadata=_rng(choices=["pixel_values", "image"]))
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))
    previews: int = field(default=8, metadata=_rng(0, 10_000))


@dataclass
class QAPrompts:
    question_generate: str = "Ask one question about the content of this image."
    question_check: str = (
        "Here is a question about this image: {question} If the image can answer it, repeat it "
        "unchanged. If not, write a new question that depends on what the image shows. "
        "Reply in the form QUESTION: your question"
    )
    short_answer_suffix: str = "Answer with a single word or phrase."
    short_description_suffix: str = "Answer in one short sentence."
    enhance: str = (
        "Description: {description} Question: {question} Answer: {answer} Use the description "
        "to give a more precise and concise answer. Reply in the form Improved Answer: your answer"
    )
    enhance_yes_no: str = (
        "Question: {question} Answer: {answer} Give a more precise and concise answer. "
        "Reply in the form Improved Answer: your answer"
    )
    describe_instructions: list[str] = field(default_factory=lambda: [
        "Describe the image concisely.",
        "Give a brief description of the image.",
        "Summarize what the image shows.",
        "Write a short caption for this image.",
        "Describe what you see in a few words.",
        "Provide a concise account of the image.",
        "What does this image show? Be brief.",
        "Give a short summary of the picture.",
        "Briefly describe the contents of the image.",
        "Tell me concisely what is in the picture.",
    ])


@dataclass
class QAParams:
    batch_size: int = field(default=8, metadata=_rng(1, 65536))
    max_new_tokens: int = field(default=512, metadata=_rng(1, 131_072))  # reference: 512
    # Paper: the question is checked with the image; the reference code checks text only.
    check_with_image: bool = True
    drop_question_words: list[str] = field(default_factory=lambda: ["name"])
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))
    prompts: QAPrompts = field(default_factory=QAPrompts)
    # Ablations (the paper's method has both on). self_questioning: false asks each image one
    # question drawn (seeded by image) from fixed_questions instead of the model's own, checked one.
    # self_enhancement: false makes the clean answer the chosen one, without the enhancement step.
    self_questioning: bool = True
    fixed_questions: list[str] = field(default_factory=lambda: [
        "What is the main object in the image?", "What color is the main object?",
        "How many objects are there?", "Where is the main object?"])
    self_enhancement: bool = True


@dataclass
class PairParams:
    max_token_repeats: int = field(default=30, metadata=_rng(1, BIG))
    max_non_alnum_ratio: float = field(default=0.5, metadata=_rng(0.0, 1.0))
    batch_size: int = field(default=8, metadata=_rng(1, 65536))


@dataclass
class TrainParams:
    beta: float = field(default=0.1, metadata=_rng(0.0, 100.0, lo_open=True))
    alignment_weight: float = field(default=1.0, metadata=_rng(0.0, 100.0))
    lr: float = field(default=2e-6, metadata=_rng(0.0, 1.0, lo_open=True))
    epochs: float = field(default=1.0, metadata=_rng(0.0, 1000.0, lo_open=True))
    global_batch_size: int = field(default=128, metadata=_rng(1, BIG))
    per_device_batch_size: int = field(default=4, metadata=_rng(1, 65536))
    lr_scheduler: str = field(default="cosine", metadata=_rng(
        choices=["cosine", "linear", "constant", "constant_with_warmup"]))
    warmup_ratio: float = field(default=0.03, metadata=_rng(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=_rng(0.0, 10.0))
    max_grad_norm: float = field(default=1.0, metadata=_rng(0.0, 1e4, lo_open=True))
    max_length: int = field(default=2048, metadata=_rng(1, 1_048_576))
    freeze_vision_tower: bool = True
    precision: str = field(default="auto", metadata=_rng(choices=["auto", "bf16", "fp16", "fp32"]))
    gradient_checkpointing: str = field(default="auto", metadata=_rng(choices=["auto", "on", "off"]))
    lora: bool = False
    lora_r: int = field(default=16, metadata=_rng(1, 65536))
    lora_alpha: int = field(default=32, metadata=_rng(1, 1_048_576))
    lora_dropout: float = field(default=0.05, metadata=_rng(0.0, 1.0, hi_open=True))
    # Optimizer steps between resumable checkpoints (0 = none); no paper counterpart.
    checkpoint_steps: int = field(default=50, metadata=_rng(0, BIG))
    # After training, score θK on its own pairs (DPO loss, reward accuracy): a measurement only.
    evaluate_pairs: bool = True
    seed: int = field(default=0, metadata=_rng(0, SEED_MAX))


@dataclass
class CocoPopeFiles:
    # POPE's question files, one per split (coco_pope_random.json, …), JSON lines.
    files: list[str] = field(default_factory=list)
    image_root: str = ""  # COCO val2014 images


@dataclass
class AmberFiles:
    queries: str = ""  # query_all.json (or query_generative.json, query_discriminative.json)
    annotations: str = ""  # annotations.json
    relation: str = ""  # relation.json
    safe_words: str = ""  # safe_words.txt
    image_root: str = ""
    # spaCy similarity above which two words are near-synonyms (AMBER: 0.8); 0 = exact matching only.
    similarity: float = field(default=0.8, metadata=_rng(0.0, 1.0))
    # Discriminative answers: "exact" = AMBER's rule (only "Yes" and "No" count); "pope" = POPE's yes/no
    # parsing first (sena's lenient option, not AMBER's numbers).
    yes_no_parsing: str = field(default="exact", metadata=_rng(choices=["exact", "pope"]))


@dataclass
class MMBenchFiles:
    tsv: str = ""  # MMBench's dev TSV or VLMEvalKit's MMBench_DEV_EN.tsv (images inside, base64)
    # true: VLMEvalKit's circular evaluation over the passes the file holds (all must be right);
    # false: only the main rows, each asked once (vanilla).
    circular: bool = True


@dataclass
class CocoChairFiles:
    # COCO-format annotations: the instance and reference-caption files of the images captioned
    # (CHAIR uses train2014 + val2014: list both of each).
    instances: list[str] = field(default_factory=list)  # instances_val2014.json, …
    captions: list[str] = field(default_factory=list)  # captions_val2014.json, …
    synonyms: str = ""  # data/synonyms.txt of CHAIR's repository (LisaAnne/Hallucination)
    image_root: str = ""  # COCO images, named by the instance files' file_name
    images: int = field(default=500, metadata=_rng(1, BIG))  # the first N images by id in the instance files


@dataclass
class JudgeParams:
    # An OpenAI-compatible chat endpoint, e.g. https://api.openai.com/v1; empty = judged benchmarks skipped.
    base_url: str = ""
    model: str = ""  # stored with the scores: judge drift is these benchmarks' known problem
    # The key is read from this environment variable, never from params, never logged or written.
    api_key_env: str = "SENA_JUDGE_API_KEY"
    # Longest wait for any one read or write on the connection.
    timeout_s: float = field(default=120.0, metadata=_rng(0.0, 3600.0, lo_open=True))
    # Longest a request may take in all, however slowly the server trickles its answer.
    deadline_s: float = field(default=300.0, metadata=_rng(0.0, 86_400.0, lo_open=True))
    # Retries after HTTP 429, 5xx, a timeout or a dropped connection, waiting backoff_s·2^n (at most
    # max_backoff_s, or the server's Retry-After when it sends one); other errors stop at once.
    retries: int = field(default=5, metadata=_rng(0, 20))
    backoff_s: float = field(default=1.0, metadata=_rng(0.0, 3600.0))
    max_backoff_s: float = field(default=60.0, metadata=_rng(0.0, 3600.0))
    concurrency: int = field(default=4, metadata=_rng(1, 64))  # requests in flight at once


@dataclass
class LlavaBenchFiles:
    questions: str = ""  # questions.jsonl {question_id, image, text, category}
    answers: str = ""  # answers_gpt4.jsonl {question_id, text}: the reference answers
    context: str = ""  # context.jsonl {id, image, caption}
    image_root: str = ""


@dataclass
class MMVetFiles:
    file: str = ""  # mm-vet.json {id: {imagename, question, answer, capability}}
    image_root: str = ""


@dataclass
class MMHalFiles:
    file: str = ""  # response_template.json [{question_type, image_src, image_content, question, gt_answer}]
    image_root: str = ""  # images named as the basename of image_src


BENCHMARK_NAMES = BENCHMARK_REGISTRY_NAMES  # one record each in sena_cli/bench/registry.py


@dataclass
class EvalParams:
    benchmarks: list[str] = field(default_factory=lambda: ["world_pope", "world_chair", "world_vqa", "world_questions"],
                                  metadata=_rng(choices=BENCHMARK_NAMES))
    batch_size: int = field(default=32, metadata=_rng(1, 65536))
    # CHAIR/AMBER captions are long descriptions: 512 new tokens, as the reference generates.
    max_new_tokens: int = field(default=512, metadata=_rng(1, 131_072))
    # The caption prompt of CHAIR; empty = the first describe instruction of qa.prompts.
    chair_prompt: str = ""
    # POPE's yes/no rule for world_pope and coco_pope: "pope" = its evaluate.py exactly;
    # "lenient" = any case and punctuation (sena's option, not POPE's numbers).
    yes_no_parsing: str = field(default="pope", metadata=_rng(choices=["pope", "lenient"]))
    coco_pope: CocoPopeFiles = field(default_factory=CocoPopeFiles)
    coco_chair: CocoChairFiles = field(default_factory=CocoChairFiles)
    amber: AmberFiles = field(default_factory=AmberFiles)
    mmbench: MMBenchFiles = field(default_factory=MMBenchFiles)
    judge: JudgeParams = field(default_factory=JudgeParams)
    llava_bench: LlavaBenchFiles = field(default_factory=LlavaBenchFiles)
    mm_vet: MMVetFiles = field(default_factory=MMVetFiles)
    mmhal: MMHalFiles = field(default_factory=MMHalFiles)


@dataclass
class Params:
    loop: LoopParams = field(default_factory=LoopParams)
    model: ModelParams = field(default_factory=ModelParams)
    world: WorldParams = field(default_factory=WorldParams)
    base: BaseParams = field(default_factory=BaseParams)
    sample: SampleParams = field(default_factory=SampleParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    qa: QAParams = field(default_factory=QAParams)
    pair: PairParams = field(default_factory=PairParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    # Per-iteration overrides of the loop stages: {"3": {"train": {"lr": 1e-6}}} changes
    # iteration 3 only. Stage@K tracks `iterations.K` in dvc.yaml, so editing one iteration's
    # entry reruns that iteration's stages and nothing else. Every iteration has an entry.
    iterations: dict = field(default_factory=dict)


# ---------------------------------------------------------------- loading


MAX_PARAMS_BYTES = 1 << 20  # the shipped file is ~8 KB; a bigger one is not a params file


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate a params file; refuse problems in one line naming the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SenaError(f"{path}: params file not found; run from the project root or pass --params FILE")
    return params_from_dict(read_yaml(path), source=str(path))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases as it meets them, before anything is expanded
    (an alias bomb is refused in microseconds, not expanded for minutes)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _Refused(f"YAML anchors and aliases are not allowed ({sign}{event.anchor} at line "
                           f"{event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


class _Refused(Exception):
    pass


def read_yaml(path: Path) -> Any:
    """A YAML mapping file as plain data; every problem is one SenaError line naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise SenaError(f"{path}: cannot be read ({exc.strerror}); check the file and its permissions") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise SenaError(f"{path}: larger than {MAX_PARAMS_BYTES >> 20} MiB, which no params file needs; "
                        "check it is the right file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SenaError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start}, line {line}); "
                        "save the file as UTF-8") from None
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return {}
        _refuse_duplicate_keys(node, "")
        data = loader.construct_document(node)
        return {} if data is None else data
    except _Refused as exc:
        raise SenaError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1})"
        elif isinstance(exc, yaml.reader.ReaderError):
            where = f" (character #x{exc.character:04x} at position {exc.position})"
        else:
            where = ""
        raise SenaError(f"{path}: not valid YAML{where}; fix the syntax") from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_duplicate_keys(node, prefix: str) -> None:
    """A key given twice would silently replace the first (a second `train:` resets the section)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in seen:
                raise _Refused(f"key '{prefix}{key}' is given twice (line {key_node.start_mark.line + 1}); "
                               "keep one of them")
            seen.add(key)
            _refuse_duplicate_keys(value_node, f"{prefix}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{prefix.rstrip('.')}[{i}].")


# Sections an iteration may override; sample's draw layout is shared so iterations stay disjoint,
# and eval stays the same for every θK so the metrics compare.
PER_ITERATION_SECTIONS = ("noise", "qa", "pair", "train")


def params_from_dict(data: Any, source: str = "params") -> Params:
    if isinstance(data, dict):
        data = dict(data)
        overrides = data.pop("iterations", None)
    else:
        overrides = None
    params = _flat_params(data, source)
    params.iterations = _check_iterations(params, overrides, source)
    return params


def _flat_params(data: Any, source: str) -> Params:
    """Every section but the per-iteration overrides."""
    params = _build(Params, data, "", source)
    _check_cross_field(params, source)
    return params


def _check_iterations(params: Params, overrides: Any, source: str) -> dict:
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise SenaError(f"{source}: 'iterations' must map iteration numbers to overrides, "
                        "e.g. '3': {train: {lr: 1.0e-06}}")
    n = params.loop.iterations
    out = {}
    for key, value in overrides.items():
        if str(key) not in {str(k) for k in range(1, n + 1)}:
            raise SenaError(f"{source}: 'iterations.{key}' is not an iteration 1..loop.iterations ({n}); remove it")
        if not isinstance(value or {}, dict):
            raise SenaError(f"{source}: 'iterations.{key}' must be a mapping of sections, got {_show(value)}")
        value = dict(value or {})
        for section in value:
            if section not in PER_ITERATION_SECTIONS:
                raise SenaError(f"{source}: 'iterations.{key}.{section}' cannot change per iteration; "
                                f"only {', '.join(PER_ITERATION_SECTIONS)} can")
        out[str(key)] = value
    for k in range(1, n + 1):  # every section present: dvc.yaml tracks iterations.K.<section>
        entry = out.setdefault(str(k), {})
        for section in PER_ITERATION_SECTIONS:
            entry[section] = entry.get(section) or {}
    flat = to_dict(params)
    flat.pop("iterations", None)
    for key, value in out.items():
        try:
            _flat_params(_merge(flat, value), source)
        except SenaError as exc:
            raise SenaError(str(exc).replace(" '", f" 'iterations.{key}.", 1)) from None
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def for_iteration(params: Params, k: int) -> Params:
    """The params iteration k runs with: the file's values with `iterations.k` laid over them."""
    override = params.iterations.get(str(k), {})
    if not override:
        return params
    flat = to_dict(params)
    flat.pop("iterations", None)
    out = _flat_params(_merge(flat, override), f"iterations.{k}")
    out.iterations = params.iterations
    return out


def _build(cls, data: Any, prefix: str, source: str):
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise SenaError(f"{source}: {where} must be a mapping of keys, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise SenaError(
                f"{source}: unknown key '{prefix}{key}'; remove it or use one of: {', '.join(known)}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        if name not in data:
            continue
        values[name] = _coerce(hints[name], data[name], f"{prefix}{name}", f.metadata, source)
    return cls(**values)


def _coerce(tp, value, key: str, meta, source: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(tp, value, key, meta, source)
    if tp is dict:  # free-form settings handed to a library (model.processor): plain YAML values only
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SenaError(f"{source}: '{key}' must be a mapping of setting names to values, got {_show(value)}")
        _refuse_non_finite(value, key, source)
        return dict(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SenaError(f"{source}: '{key}' must be a list, got {_show(value)}; write it as a YAML list")
        items = [_coerce(item_tp, v, f"{key}[{i}]", {}, source) for i, v in enumerate(value)]
        _check_range(items, key, meta, source)
        return items
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise SenaError(f"{source}: '{key}' must be {_type_word(tp)}, got {_show(value)}; fix its value")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise SenaError(f"{source}: '{key}' is {value}; it must be a finite number{_range_text(meta)}")
    _check_range(value, key, meta, source)
    return value


def _refuse_non_finite(value, key: str, source: str) -> None:
    """No .nan/.inf hidden in free-form settings either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SenaError(f"{source}: '{key}' is {value}; it must be a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _refuse_non_finite(v, f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]", source)


def _check_range(value, key, meta, source):
    if not meta:
        return
    choices = meta.get("choices")
    if choices is not None:
        for v in value if isinstance(value, list) else [value]:
            if v not in choices:
                raise SenaError(f"{source}: '{key}' has {v!r}; allowed: {', '.join(map(str, choices))}")
        return
    lo, hi, lo_open, hi_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open"), meta.get("hi_open")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise SenaError(f"{source}: '{key}' is {_show(value)}; it must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise SenaError(f"{source}: '{key}' is {_show(value)}; it must be {'<' if hi_open else '<='} {hi}")


def _range_text(meta) -> str:
    lo, hi = (meta or {}).get("lo"), (meta or {}).get("hi")
    if lo is None or hi is None:
        return ""
    return f" in {'(' if meta.get('lo_open') else '['}{lo}, {hi}{')' if meta.get('hi_open') else ']'}"


def _check_cross_field(p: Params, source: str) -> None:
    n, t = p.noise.num_train_timesteps, p.noise.timestep
    if t >= n:
        raise SenaError(f"{source}: 'noise.timestep' is {t}; it must be <= {n - 1} "
                        f"(below noise.num_train_timesteps {n})")
    if p.noise.beta_start >= p.noise.beta_end:
        raise SenaError(f"{source}: 'noise.beta_start' ({p.noise.beta_start}) must be below 'noise.beta_end' "
                        f"({p.noise.beta_end}); swap or fix them")
    tp = p.train
    if tp.global_batch_size % tp.per_device_batch_size:
        raise SenaError(f"{source}: train.global_batch_size {tp.global_batch_size} cannot be reached with "
                        f"train.per_device_batch_size {tp.per_device_batch_size}; make it a multiple of "
                        f"{tp.per_device_batch_size}")
    if p.base.warmup_steps > p.base.steps:
        raise SenaError(f"{source}: 'base.warmup_steps' ({p.base.warmup_steps}) exceeds 'base.steps' "
                        f"({p.base.steps}); lower it")
    if not p.qa.self_questioning and not p.qa.fixed_questions:
        raise SenaError(f"{source}: 'qa.fixed_questions' is empty but qa.self_questioning is false; "
                        "give at least one question")
    w = p.world
    if not w.colours or not w.shapes:
        raise SenaError(f"{source}: 'world.{'colours' if not w.colours else 'shapes'}' is empty; give at least one")
    if w.min_object_size > w.max_object_size:
        raise SenaError(f"{source}: 'world.min_object_size' exceeds 'world.max_object_size'; swap them")
    if w.max_object_size * 2 > w.image_size:
        raise SenaError(f"{source}: 'world.max_object_size' must fit a quadrant (<= image_size / 2)")
    names = {f"{c} {s}" for c in w.colours for s in w.shapes}
    seen: set[str] = set()
    for i, pair in enumerate(w.cooccurrence_pairs):
        if len(pair) != 2 or not set(pair) <= names or pair[0] == pair[1]:
            raise SenaError(
                f"{source}: 'world.cooccurrence_pairs[{i}]' must be two different objects "
                f"'<colour> <shape>' from world.colours x world.shapes"
            )
        if seen & set(pair):
            raise SenaError(f"{source}: 'world.cooccurrence_pairs[{i}]' reuses an object; each object has one partner")
        seen |= set(pair)
    if w.image_size % p.base.patch_size:
        raise SenaError(f"{source}: 'base.patch_size' must divide 'world.image_size'")
    for name in ("vision", "text"):
        hidden, heads = getattr(p.base, f"{name}_hidden"), getattr(p.base, f"{name}_heads")
        if hidden % heads:
            raise SenaError(f"{source}: 'base.{name}_hidden' must be a multiple of 'base.{name}_heads'")
    prompts = p.qa.prompts
    for key, needed in (("question_check", ["{question}"]),
                        ("enhance", ["{description}", "{question}", "{answer}"]),
                        ("enhance_yes_no", ["{question}", "{answer}"])):
        missing = [n for n in needed if n not in getattr(prompts, key)]
        if missing:
            raise SenaError(f"{source}: 'qa.prompts.{key}' lacks the placeholder {missing[0]}; add it")
    if not prompts.describe_instructions:
        raise SenaError(f"{source}: 'qa.prompts.describe_instructions' is empty; give at least one")


def _type_word(tp) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[tp]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_dict(params: Params) -> dict:
    return dataclasses.asdict(params)


def apply_profile(params_file: str | Path, profile_file: str | Path) -> dict:
    """Lay profile_file's keys over params_file, in place; returns the changed keys and their new values.

    The file is edited as a YAML document, not rewritten from the settings: its comments, key
    order and every key the profile does not name stay as they are. The result is validated
    (as a whole and as written) before it atomically replaces the file.
    """
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError as RoundTripError

    from sena_cli.artifacts import atomic_write_text

    params_file, profile_file = Path(params_file), Path(profile_file)
    if not profile_file.is_file():
        raise SenaError(f"{profile_file}: profile not found; see profiles/ for the shipped ones")
    overrides = read_yaml(profile_file)
    if not isinstance(overrides, dict):
        raise SenaError(f"{profile_file}: must be a mapping of sections to keys")
    base = load_params(params_file)
    merged = params_from_dict(_merge(to_dict(base), overrides), source=str(profile_file))
    document = YAML()  # round-trip mode: comments and key order survive
    document.preserve_quotes = True
    document.width = 100  # the width params.yaml is written at, so long strings keep their line breaks
    document.indent(mapping=2, sequence=2, offset=0)
    try:
        tree = document.load(params_file.read_text())
    except RoundTripError:
        raise SenaError(f"{params_file}: not valid YAML; fix the syntax") from None
    tree = _lay_over(tree if tree is not None else {}, overrides)
    out = io.StringIO()
    document.dump(tree, out)
    if to_dict(params_from_dict(yaml.safe_load(out.getvalue()) or {}, source=str(params_file))) != to_dict(merged):
        raise SenaError(f"{params_file}: the profile could not be written into this file as it is laid out; "
                        f"apply {profile_file} by hand")
    atomic_write_text(params_file, out.getvalue())
    before, after = _leaves(to_dict(base)), _leaves(to_dict(merged))
    return {key: after[key] for key in after if before.get(key) != after[key]}


def _lay_over(tree, overrides: dict):
    """Set overrides' leaves inside a round-trip YAML mapping, keeping everything else of it."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _lay_over(tree[key], value)
        else:
            tree[key] = value
    return tree


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
