"""params.yaml -> typed, validated settings. The one place that knows parameter names.

Every key is declared once, as a field below: `param(default, help=..., lo=..., hi=...,
choices=...)`. From that one declaration come the validator (types, ranges, choices, one-line
refusals), `sena params` (the effective settings of an iteration, with help and ranges) and
docs/params.md's reference table (`sena params --markdown`). Checks across keys are a
section's `check` method. Defaults are the paper's (AAAI 2025, "Beyond Human Data", see
docs/method.md) wherever the paper or its reference code fixes a value; the shipped params.yaml
is the *embedded-default profile* (a tiny model on a synthetic world that runs on a laptop CPU).

`eval` holds the generic keys; each benchmark's own section (eval.coco_pope, eval.amber, …)
is declared in the benchmark's module (sena_cli/bench/) and checked there, with this module's
field validator, when `sena eval`, `sena params` or `sena profile` runs: this module, and
every stage but eval, imports no benchmark code.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sena_cli import bounded
from sena_cli.errors import SenaError, has_credentials, redact
from sena_cli.yamlfile import read_yaml

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
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit
BIG = 10**7  # the upper bound of counts (images, steps): far above any run, below what hangs or overflows


def param(default: Any, help: str, lo=None, hi=None, *, lo_open=False, hi_open=False, choices=None):
    """A params key: its default, help, and allowed range (both ends, for every number) or values."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str):
    """A nested group of keys (its own dataclass)."""
    return field(default_factory=cls, metadata={"help": help})


def seed(help: str = "random seed of this step"):
    return param(0, help, 0, SEED_MAX)


class Invalid(Exception):
    """A cross-key check's refusal, without the file name (the validator adds it)."""


# ---------------------------------------------------------------- sections


@dataclass
class LoopParams:
    iterations: int = param(3, "K, the number of self-evolution iterations (paper: 3)", 1, 100)
    seed: int = seed("seed of eval and of the stages' torch state")


@dataclass
class ModelParams:
    base: str = param("embedded", "θ0: 'embedded' (the tiny LLaVA `sena base` trains on the world), or a "
                      "local checkpoint folder or hub id of an image-text-to-text model")
    trust_remote_code: bool = param(False, "run Python code shipped with the checkpoint (never on unless set)")
    dtype: str = param("auto", "weights' dtype at load", choices=["auto", "float32", "bfloat16", "float16"])
    processor: dict = param({}, "settings laid over the checkpoint's saved processor at every load, e.g. "
                            "{size: {shortest_edge: 3136, longest_edge: 1003520}} for Qwen2-VL or "
                            "{do_image_splitting: false} for SmolVLM; {} = the checkpoint's own")
    pad_to_square: str = param("auto", "pad each image to a square of the processor's mean colour before the "
                               "processor (LLaVA-1.5's `image_aspect_ratio pad`, the SENA reference) instead of "
                               "its centre crop; auto = on for a LLaVA-1.5 checkpoint, off for any other",
                               choices=["auto", "on", "off"])
    conversation: str = param("auto", "the prompt format: vicuna_v1 = LLaVA-1.5's training conversation (its "
                              "system prompt, 'USER: <image> … ASSISTANT:', answers ending with </s>; the "
                              "SENA reference), checkpoint = the checkpoint's chat template; auto = vicuna_v1 "
                              "for a LLaVA-1.5 checkpoint, checkpoint for any other",
                              choices=["auto", "vicuna_v1", "checkpoint"])

    def check(self, p: Params, at: str) -> None:
        if "://" in self.base:  # a Path() of it would be a folder named 'https:' holding the token
            raise Invalid(f"'model.base' is a URL ({redact(self.base)}); give a hub id (owner/name) or a local "
                          "folder, with a hub token in HF_TOKEN or `hf auth login`, never in params")


@dataclass
class WorldEvalParams:
    pope_images: int = param(150, "images of the POPE-style questions", 1, BIG)
    pope_questions_per_label: int = param(3, "yes and no questions per image", 1, 4)
    chair_images: int = param(200, "images captioned for CHAIR", 1, BIG)
    vqa_images: int = param(150, "images of the short-answer questions", 1, BIG)
    question_images: int = param(100, "images θK asks its own questions about", 1, BIG)


def _given_right(question: str) -> str:
    return f"share of θ0's enhancement examples of {question} whose given answer is right"


@dataclass
class EnhanceGivenRight:
    """Per question form: the share of θ0's answer-enhancement examples whose given answer is right."""
    colour: float = param(0.88, _given_right("\"What color is the <shape>?\""), 0.0, 1.0)
    shape: float = param(0.86, _given_right("\"What shape is the <colour> object?\""), 0.0, 1.0)
    count: float = param(0.86, _given_right("\"How many objects are there?\""), 0.0, 1.0)
    colour_count: float = param(0.86, _given_right("\"How many <colour> objects are there?\""), 0.0, 1.0)
    position: float = param(0.44, _given_right("\"Where is the <object>?\""), 0.0, 1.0)
    quadrant_colour: float = param(0.94, _given_right("\"What color is the object in the <quadrant>?\""), 0.0, 1.0)
    quadrant_shape: float = param(0.94, _given_right("\"What shape is in the <quadrant>?\""), 0.0, 1.0)
    exists: float = param(0.86, _given_right("\"Is there a <object> in the image?\""), 0.0, 1.0)


@dataclass
class WorldParams:
    seed: int = param(1234, "seed of the world's scenes", 0, SEED_MAX)
    image_size: int = param(48, "image side in pixels", 16, 1024)
    colours: list[str] = param(["red", "green", "blue", "yellow"], "object colours", choices=list(PALETTE))
    shapes: list[str] = param(list(SHAPES), "object shapes", choices=list(SHAPES))
    max_objects: int = param(4, "objects per image (one per quadrant)", 1, 4)
    min_object_size: int = param(15, "smallest object side in pixels (a plainly visible object)", 4, 512)
    max_object_size: int = param(22, "largest object side in pixels (fits a quadrant)", 4, 512)
    partner_weights: list[float] = param(
        [0.55, 0.3, 0.15], "each object's co-occurrence partners, strongest first (drawn from world.seed): "
        "the relative chance each is the partner placed beside it; the list's length is the number of "
        "partners per object ([] = no co-occurrence)")
    cooccurrence_prob: float = param(0.7, "chance that each further object of a scene is a partner of one "
                                     "already placed (else it is drawn by popularity)", 0.0, 1.0)
    popularity_exponent: float = param(0.8, "object frequency falls as rank^-exponent (a long tail like "
                                       "COCO's; 0 = every object equally common)", 0.0, 4.0)
    hard_share: float = param(0.12, "chance that an object drawn by popularity is hard to see (small and "
                              "faded)", 0.0, 1.0)
    hard_share_partners: float = param(0.45, "chance that an object placed as a partner is hard to see "
                                       "(context objects are the small ones)", 0.0, 1.0)
    hard_min_size: int = param(9, "smallest hard-to-see object side in pixels", 2, 512)
    hard_max_size: int = param(12, "largest hard-to-see object side in pixels", 2, 512)
    hard_fade: float = param(0.6, "how far a hard object's colour is blended toward the background "
                             "(0 = full colour, 1 = invisible)", 0.0, 0.95)
    hard_unnoticed: float = param(0.8, "chance that a training caption or \"Yes\" example leaves out a hard-"
                                  "to-see object (annotators name the salient objects)", 0.0, 1.0)
    binding_negatives: float = param(0.5, "share of θ0's \"No\" examples that ask about an absent object "
                                     "sharing a colour or shape with a present one (never a partner)", 0.0, 1.0)
    balanced_negatives: float = param(0.0, "share of θ0's other \"No\" examples (not binding ones) that ask "
                                      "about an absent non-partner drawn by popularity rather than uniformly, so "
                                      "that frequent objects are asked about when absent as when present", 0.0, 1.0)
    caption_noise: float = param(0.07, "chance, per object of a training caption, that one of its absent "
                                 "partners (by partner weight) is named after it", 0.0, 1.0)
    caption_positions: bool = param(False, "training captions say where each object is ('a red circle in the "
                                    "top left'); a partner named by caption noise is put in an empty quadrant")
    caption_positions_adjacent: bool = param(False, "with world.caption_positions, each quadrant right after "
                                             "the object's name ('a red circle top left'), as grounded captions put "
                                             "an object's box right after its phrase (docs/world.md, v22)")
    reading_share: float = param(0.0, "share of the instruction images drawn again blank (background only) "
                                 "with enhancement examples that only the whole, true description answers, so "
                                 "that θ0 learns to read the text it enhances with (docs/world.md, v15)", 0.0, 1.0)
    reading_subsets: bool = param(False, "each reading example describes, and asks about, a random part of its "
                                  "scene (1 to all objects, each size as often), so that matching a name in the "
                                  "question to the same name in the text is learned from one object up "
                                  "(docs/world.md, v24)")
    reading_given_at_enhance_rates: bool = param(False, "a reading example's given answer is right at "
                                                 "world.enhance_given_right's rate for its form, as in every other "
                                                 "enhancement example, instead of half the time (docs/world.md, "
                                                 "v25)")
    reading_placed_share: float = param(0.0, "with world.caption_positions, the share of reading examples that "
                                        "ask where something is (position, quadrant colour, quadrant shape); 0 = "
                                        "every form equally often (docs/world.md, v18)", 0.0, 1.0)
    enhance_given_right: EnhanceGivenRight = section(
        EnhanceGivenRight, "per question form, the share of θ0's answer-enhancement examples whose given answer "
        "is right: θ0's own accuracy on that form (docs/world.md), so that it learns to keep right answers and "
        "fix wrong ones")
    pool_images: int = param(1200, "unlabeled pool images", 1, BIG)
    instruct_images: int = param(12000, "images of θ0's instruction set", 1, BIG)
    instruct_examples_per_image: int = param(6, "instruction examples per image", 1, 50)
    eval: WorldEvalParams = section(WorldEvalParams, "the test set the world benchmarks report")
    eval_dev: WorldEvalParams = section(WorldEvalParams, "the dev set (benchmark world_dev), where settings "
                                        "are chosen; disjoint images of the same distribution")
    eval_cal: WorldEvalParams = section(WorldEvalParams, "the calibration set (benchmark world_cal), where θ0 "
                                        "is checked against docs/world.md's targets; neither dev nor test")

    def check(self, p: Params, at: str) -> None:
        if not self.colours or not self.shapes:
            raise Invalid(f"'world.{'colours' if not self.colours else 'shapes'}' is empty; give at least one")
        if self.min_object_size > self.max_object_size:
            raise Invalid("'world.min_object_size' exceeds 'world.max_object_size'; swap them")
        if self.max_object_size * 2 > self.image_size:
            raise Invalid("'world.max_object_size' must fit a quadrant (<= image_size / 2)")
        if self.hard_min_size > self.hard_max_size:
            raise Invalid("'world.hard_min_size' exceeds 'world.hard_max_size'; swap them")
        if self.hard_max_size * 2 > self.image_size:
            raise Invalid("'world.hard_max_size' must fit a quadrant (<= image_size / 2)")
        if self.caption_positions_adjacent and not self.caption_positions:
            raise Invalid("'world.caption_positions_adjacent' places the quadrants that captions only state with "
                          "'world.caption_positions: true'; set that or put it back to false")
        if self.reading_placed_share and not self.caption_positions:
            raise Invalid("'world.reading_placed_share' asks about places that captions only state with "
                          "'world.caption_positions: true'; set that or put the share back to 0")
        objects = len(self.colours) * len(self.shapes)
        if len(self.partner_weights) > objects - 1:
            raise Invalid(f"'world.partner_weights' names {len(self.partner_weights)} partners per object; "
                          f"the world has {objects} objects, so at most {objects - 1}")
        if any(w <= 0 or not math.isfinite(w) for w in self.partner_weights):
            raise Invalid("'world.partner_weights' must be positive numbers (strongest partner first)")


@dataclass
class BaseParams:
    """θ0 for the embedded default: a tiny LLaVA trained on the world's instruction set."""

    seed: int = seed()
    steps: int = param(3800, "optimizer steps", 1, BIG)
    batch_size: int = param(16, "rows (images) per step", 1, 65536)
    examples_per_sequence: int = param(6, "examples of one image packed into a row, each masked off from "
                                       "the others", 1, 1024)
    lr: float = param(7e-4, "learning rate", 0.0, 1.0, lo_open=True)
    warmup_steps: int = param(100, "linear warm-up steps", 0, BIG)
    own_answers_step: int = param(0, "after this many steps θ0 answers the questions of its answer-enhancement "
                                  "examples itself and trains on with its own answers as the given ones "
                                  "(on-policy self-correction data, docs/world.md); 0 = never: the given "
                                  "answers stay world.enhance_given_right's draws", 0, BIG)
    threads: int = param(2, "torch threads", 1, 256)
    patch_size: int = param(8, "vision patch side in pixels (divides world.image_size)", 1, 1024)
    vision_hidden: int = param(64, "vision tower width", 8, 65536)
    vision_layers: int = param(2, "vision tower layers", 1, 256)
    vision_heads: int = param(4, "vision attention heads", 1, 256)
    text_hidden: int = param(128, "language model width", 8, 65536)
    text_layers: int = param(2, "language model layers", 1, 256)
    text_heads: int = param(4, "language model attention heads", 1, 256)
    text_intermediate: int = param(256, "language model MLP width", 8, 262144)

    def check(self, p: Params, at: str) -> None:
        if self.warmup_steps > self.steps:
            raise Invalid(f"'base.warmup_steps' ({self.warmup_steps}) exceeds 'base.steps' ({self.steps}); lower it")
        if self.own_answers_step >= self.steps:
            raise Invalid(f"'base.own_answers_step' ({self.own_answers_step}) must be below 'base.steps' "
                          f"({self.steps}), or 0 for never")
        if p.world.image_size % self.patch_size:
            raise Invalid("'base.patch_size' must divide 'world.image_size'")
        for name in ("vision", "text"):
            if getattr(self, f"{name}_hidden") % getattr(self, f"{name}_heads"):
                raise Invalid(f"'base.{name}_hidden' must be a multiple of 'base.{name}_heads'")


@dataclass
class SampleParams:
    pool: str = param("data/world/pool", "the unlabeled pool, inside the project (`sena pool --add DIR` puts "
                      "your photos there): a folder tree, a JSON/JSONL list, or a datasets-loadable path")
    image_root: str = param("", "root of relative `image` paths in a JSON/JSONL pool (inside the project)")
    images_per_iteration: int = param(6000, "M, images drawn per iteration (paper: 6000)", 1, BIG)
    stratify_by: str = param("", "'' = no strata; 'path' = first path component; else a record field")
    seed: int = seed()
    # Limits read from the header, never decoded: no paper counterpart; they keep a
    # decompression bomb or a 200000x1 strip out of every later stage.
    max_pixels: int = param(64_000_000, "width x height above this is skipped (Pillow refuses more)",
                            1, 178_000_000)
    max_side: int = param(16_384, "a longer side is skipped", 1, 1_000_000)
    max_aspect_ratio: float = param(20.0, "long side / short side above this is skipped", 1.0, 1e6)

    def check(self, p: Params, at: str) -> None:
        for key in ("pool", "image_root"):
            if "://" in getattr(self, key):
                raise Invalid(f"'sample.{key}' is a URL ({redact(getattr(self, key))}); sena reads a local pool: "
                              "copy it here first (e.g. `aws s3 sync`, credentials from the environment)")
    dedup: str = param("pixels", "copies drawn once: 'files' (one file by several paths, or the same bytes), "
                       "'pixels' (also the same decoded pixels), 'perceptual' (also lossy and resized copies)",
                       choices=["files", "pixels", "perceptual"])


@dataclass
class NoiseParams:
    timestep: int = param(600, "T, the forward-diffusion step the image is corrupted to (paper: 600)", 0, 99_999)
    num_train_timesteps: int = param(1000, "steps of the diffusion schedule", 2, 100_000)
    beta_start: float = param(1e-5, "first beta of the schedule", 0.0, 1.0, lo_open=True, hi_open=True)
    beta_end: float = param(5e-3, "last beta of the schedule", 0.0, 1.0, lo_open=True, hi_open=True)
    beta_schedule: str = param("sigmoid", "the beta schedule",
                               choices=["sigmoid", "linear", "scaled_linear", "squaredcos_cap_v2"])
    space: str = param("pixel_values", "what is corrupted: the processor's normalised tensor (the reference) "
                       "or the 0-255 RGB image", choices=["pixel_values", "image"])
    seed: int = seed()
    previews: int = param(8, "corrupted images saved as PNG for a look", 0, 10_000)

    def check(self, p: Params, at: str) -> None:
        n, t = self.num_train_timesteps, self.timestep
        if t >= n:
            raise Invalid(f"'{at}noise.timestep' is {t}; it must be <= {n - 1} (below noise.num_train_timesteps {n})")
        if self.beta_start >= self.beta_end:
            raise Invalid(f"'{at}noise.beta_start' ({self.beta_start}) must be below '{at}noise.beta_end' "
                          f"({self.beta_end}); swap or fix them")


@dataclass
class QAPrompts:
    question_generate: str = param("Ask one question about the content of this image.",
                                   "asks θ(K-1) for a question about the image")
    question_check: str = param(
        "Here is a question about this image: {question} If the image can answer it, repeat it "
        "unchanged. If not, write a new question that depends on what the image shows. "
        "Reply in the form QUESTION: your question", "the question check; needs {question}")
    short_answer_suffix: str = param("Answer with a single word or phrase.", "added to short-answer questions")
    short_description_suffix: str = param("Answer in one short sentence.", "added to description questions")
    enhance: str = param(
        "Description: {description} Question: {question} Answer: {answer} Use the description "
        "to give a more precise and concise answer. Reply in the form Improved Answer: your answer",
        "self-enhancement; needs {description}, {question}, {answer}")
    enhance_yes_no: str = param(
        "Question: {question} Answer: {answer} Give a more precise and concise answer. "
        "Reply in the form Improved Answer: your answer", "self-enhancement of yes/no answers; needs "
        "{question}, {answer}")
    describe_instructions: list[str] = param([
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
    ], "instructions for the description the enhancement uses (one drawn per image)")

    def check(self, p: Params, at: str) -> None:
        for key, needed in (("question_check", ["{question}"]),
                            ("enhance", ["{description}", "{question}", "{answer}"]),
                            ("enhance_yes_no", ["{question}", "{answer}"])):
            missing = [n for n in needed if n not in getattr(self, key)]
            if missing:
                raise Invalid(f"'{at}qa.prompts.{key}' lacks the placeholder {missing[0]}; add it")
        if not self.describe_instructions:
            raise Invalid(f"'{at}qa.prompts.describe_instructions' is empty; give at least one")


@dataclass
class QAParams:
    batch_size: int = param(8, "images per generation batch", 1, 65536)
    max_new_tokens: int = param(512, "longest answer (reference: 512)", 1, 131_072)
    length_batches: bool = param(True, "a generation batch holds only long (descriptions and their "
                                 "enhancements) or only short requests, so short answers do not wait for long "
                                 "ones; greedy outputs are the same either way (false = the reference's order)")
    reuse_image_features: bool = param(True, "each image's vision features computed once per chunk and reused "
                                       "by all of its prompts (same greedy answers); false = encoded per prompt")
    reuse_prefix_cache: bool = param(True, "the key/value cache of each image's prompt prefix (system prompt and "
                                     "image tokens) computed once per chunk and reused by all of its prompts, "
                                     "which then prefill their own text only (same greedy answers); holds 2 x "
                                     "qa.batch_size images (LLaVA-1.5-7B: ~0.3 GB each in bf16); false = each "
                                     "prompt prefills its image")
    decode: str = param("auto", "how decode steps run (same greedy answers): dynamic = a growing KV cache, eager "
                        "(transformers' default); static = a preallocated KV cache, eager; compiled = the static "
                        "cache and a torch.compile'd decode step (CUDA graphs); auto = compiled on a GPU, dynamic "
                        "on a CPU (compiling there costs more than it saves)",
                        choices=["auto", "dynamic", "static", "compiled"])
    check_with_image: bool = param(True, "check the question with the image (paper); false = text only "
                                   "(the reference code)")
    drop_question_words: list[str] = param(["name"], "questions containing these words are dropped (reference)")
    seed: int = seed()
    prompts: QAPrompts = section(QAPrompts, "the method's prompts")
    self_questioning: bool = param(True, "false = ablation: each image gets one of qa.fixed_questions "
                                   "(seeded by image) instead of its own, checked question")
    fixed_questions: list[str] = param([
        "What is the main object in the image?", "What color is the main object?",
        "How many objects are there?", "Where is the main object?"], "questions of the self_questioning ablation")
    self_enhancement: bool = param(True, "false = ablation: the clean answer is the chosen one, not enhanced")

    def check(self, p: Params, at: str) -> None:
        if not self.self_questioning and not self.fixed_questions:
            raise Invalid(f"'{at}qa.fixed_questions' is empty but qa.self_questioning is false; "
                          "give at least one question")
        self.prompts.check(p, at)


@dataclass
class PairParams:
    max_token_repeats: int = param(30, "a pair whose answer repeats a token more often is dropped", 1, BIG)
    max_non_alnum_ratio: float = param(0.5, "a pair whose answer has a larger share of non-alphanumeric "
                                       "characters is dropped", 0.0, 1.0)
    degenerate_tokens: str = param("nltk", "tokens max_token_repeats counts: nltk = NLTK-style word tokens, "
                                   "case-sensitive (the reference); words = lower-cased whitespace words",
                                   choices=["nltk", "words"])
    rejected_in_chosen_case: str = param("rejected", "a pair whose rejected answer is inside the chosen one is "
                                         "dropped; rejected = only the rejected lower-cased (the reference: "
                                         "'red' is kept against 'The Red circle'), both = both lower-cased",
                                         choices=["rejected", "both"])
    strip_answers: bool = param(False, "strip surrounding whitespace and newlines from answers before the "
                                "filters compare them; false = as generated (the reference)")
    alnum: str = param("ascii", "what max_non_alnum_ratio counts as alphanumeric: ascii = a-z, A-Z, 0-9 (the "
                       "reference); unicode = str.isalnum", choices=["ascii", "unicode"])
    batch_size: int = param(8, "pairs per reference log-prob batch", 1, 65536)


@dataclass
class TrainParams:
    beta: float = param(0.1, "β of the DPO loss", 0.0, 100.0, lo_open=True)
    alignment_weight: float = param(1.0, "weight of the image-content alignment loss", 0.0, 100.0)
    lr: float = param(2e-6, "learning rate (paper: 2e-6)", 0.0, 1.0, lo_open=True)
    epochs: float = param(1.0, "passes over the pairs", 0.0, 1000.0, lo_open=True)
    global_batch_size: int = param(128, "pairs per optimizer step, over all processes (paper: 128)", 1, BIG)
    per_device_batch_size: int = param(4, "pairs per forward pass; the rest by accumulation", 1, 65536)
    lr_scheduler: str = param("cosine", "learning-rate schedule",
                              choices=["cosine", "linear", "constant", "constant_with_warmup"])
    warmup_ratio: float = param(0.03, "share of the steps spent warming up", 0.0, 1.0)
    weight_decay: float = param(0.0, "AdamW weight decay", 0.0, 10.0)
    max_grad_norm: float = param(1.0, "gradient clipping norm", 0.0, 1e4, lo_open=True)
    max_length: int = param(2048, "longest prompt + answer in tokens", 1, 1_048_576)
    freeze_vision_tower: bool = param(True, "keep the vision tower's weights fixed")
    precision: str = param("auto", "auto = bf16 where the hardware has it", choices=["auto", "bf16", "fp16", "fp32"])
    gradient_checkpointing: str = param("auto", "auto = on for GPUs, off on CPU", choices=["auto", "on", "off"])
    lora: bool = param(False, "train LoRA adapters instead of all weights")
    lora_r: int = param(16, "LoRA rank", 1, 65536)
    lora_alpha: int = param(32, "LoRA alpha", 1, 1_048_576)
    lora_dropout: float = param(0.05, "LoRA dropout", 0.0, 1.0, hi_open=True)
    checkpoint_steps: int = param(50, "optimizer steps between resumable checkpoints (0 = none)", 0, BIG)
    keep_checkpoints: bool = param(False, "keep the last resumable checkpoint (weights and optimizer states, "
                                   "12-16 bytes per trained parameter) after θK is saved, in "
                                   "data/iterK/train.checkpoints/ (not a DVC output); false = removed")
    save_dtype: str = param("base", "dtype θK's weights are saved in: base = each weight in θ(K-1)'s dtype (bf16 "
                            "for a bf16 checkpoint, so θK is the base's size); training itself "
                            "stays fp32 master weights under autocast (train.precision)",
                            choices=["base", "float32", "bfloat16", "float16"])
    evaluate_pairs: bool = param(True, "after training, score θK on its own pairs (a measurement only)")
    seed: int = seed()

    def check(self, p: Params, at: str) -> None:
        if self.global_batch_size % self.per_device_batch_size:
            raise Invalid(f"{at}train.global_batch_size {self.global_batch_size} cannot be reached with "
                          f"{at}train.per_device_batch_size {self.per_device_batch_size}; make it a multiple "
                          f"of {self.per_device_batch_size}")


@dataclass
class JudgeParams:
    base_url: str = param("", "an OpenAI-compatible chat endpoint, e.g. https://api.openai.com/v1; "
                          "empty = judged benchmarks skipped")
    model: str = param("", "the judge's model, stored with the scores (judge drift is these benchmarks' "
                       "known problem)")
    api_key_env: str = param("SENA_JUDGE_API_KEY", "environment variable holding the key (never a parameter, "
                             "never logged or written)")
    timeout_s: float = param(30.0, "longest wait for any one read or write", 0.0, 3600.0, lo_open=True)
    deadline_s: float = param(120.0, "longest one prompt may take in all, its retries and their waits "
                              "included: the worst case per prompt", 0.0, 86_400.0, lo_open=True)
    max_reply_bytes: int = param(1_048_576, "largest reply read from the judge (bytes, headers included), "
                                 "counted as it streams in", 1024, 2**31)
    retries: int = param(5, "retries after HTTP 429/408/409/5xx, a timeout or a dropped connection", 0, 20)
    backoff_s: float = param(1.0, "first wait between retries, doubled each time (or the server's "
                             "Retry-After)", 0.0, 3600.0)
    max_backoff_s: float = param(60.0, "longest wait between retries", 0.0, 3600.0)
    concurrency: int = param(4, "requests in flight at once", 1, 64)

    def check(self, p: Params, at: str) -> None:
        # httpx would send user:password as Basic auth in place of the configured Bearer key.
        if has_credentials(self.base_url):
            raise Invalid(f"'eval.judge.base_url' carries credentials ({redact(self.base_url)}); remove them: "
                          f"the judge key comes only from the environment variable {self.api_key_env}")


@dataclass
class EvalParams:
    benchmarks: list[str] = param([], "benchmarks θK is scored on (names: `sena params` lists them; checked by "
                                  "the benchmark registry); [] = the synthetic world's (world_pope, world_chair, "
                                  "world_vqa, world_questions) for the embedded θ0, refused for a real model.base: "
                                  "name real ones, e.g. [coco_pope, amber, mmbench]")
    batch_size: int = param(32, "images per generation batch", 1, 65536)
    max_new_tokens: int = param(512, "longest answer; CHAIR/AMBER captions are long (reference: 512)", 1, 131_072)
    image_feature_cache: int = param(512, "images whose vision features are kept and reused while a benchmark "
                                     "asks several questions of one image (same answers); 0 = encode every "
                                     "time", 0, 1_000_000)
    prefix_cache: int = param(64, "images whose prompt-prefix key/value cache (system prompt and image tokens) is "
                              "kept and reused while a benchmark asks several questions of one image (same "
                              "answers; LLaVA-1.5-7B: ~0.3 GB each in bf16); 0 = prefill the image every time",
                              0, 1_000_000)
    chair_prompt: str = param("", "CHAIR's caption prompt; empty = the first of qa.prompts.describe_instructions")
    yes_no_parsing: str = param("pope", "yes/no rule of world_pope and coco_pope: 'pope' = POPE's evaluate.py; "
                                "'lenient' = any case and punctuation (not POPE's numbers)",
                                choices=["pope", "lenient"])
    judge: JudgeParams = section(JudgeParams, "the LLM judge of the judged benchmarks")
    # eval.<benchmark>: each benchmark's own keys, declared in its module (sena_cli/bench/) and
    # validated there when eval, params or profile runs; kept here as read.
    sections: dict = field(default_factory=dict, metadata={"help": "benchmark sections"})
    OPEN: typing.ClassVar[str] = "sections"  # where _validated puts keys it does not know

    def check(self, p: Params, at: str) -> None:
        self.judge.check(p, at)


_L = bounded.Limits()


@dataclass
class LimitsParams:
    """What any file, line, image or text sena reads may weigh (sena_cli/bounded.py): each checked from
    the stat or the header before anything is read, so a FIFO, /dev/zero or a 3 GiB file fails in one line."""

    max_image_bytes: int = param(_L.max_image_bytes, "largest image file read (bytes, from its stat)", 1, 2**40)
    max_image_pixels: int = param(_L.max_image_pixels, "largest image decoded (width x height, from its "
                                  "header); the default is PIL's Image.MAX_IMAGE_PIXELS", 1, 2**40)
    max_file_bytes: int = param(_L.max_file_bytes, "largest JSON or text file read whole (bytes, from its "
                                "stat); JSON-lines files are streamed and capped per line instead", 1, 2**44)
    max_line_bytes: int = param(_L.max_line_bytes, "longest line of a JSON-lines file (bytes)", 1, 2**34)
    max_text_chars: int = param(_L.max_text_chars, "longest prompt, question or answer given to a tokenizer "
                                "(characters); longer than any answer within eval.max_new_tokens", 1, 2**34)
    max_checkpoint_file_bytes: int = param(_L.max_checkpoint_file_bytes, "largest config.json, tokenizer.json, "
                                           "chat template or other small file of a checkpoint (bytes)", 1, 2**40)
    max_safetensors_header_bytes: int = param(_L.max_safetensors_header_bytes, "largest JSON header a "
                                              ".safetensors file may claim (bytes; safetensors' own limit)",
                                              1, 10**9)
    max_template_seconds: float = param(_L.max_template_seconds, "longest a checkpoint's chat template may take "
                                        "to render a one-line probe when the model loads (a template that loops "
                                        "is refused)", 0.0, 3600.0, lo_open=True)


@dataclass
class LaunchParams:
    """How a stage's processes are started: the same outputs whichever (dvc.yaml does not track it)."""

    qa: str = param("", "launcher of `sena qa` (one process when ''), e.g. 'torchrun --nproc_per_node 8' or "
                    "'accelerate launch --config_file configs/accelerate/ddp.yaml'; sena reruns itself under it")
    pair: str = param("", "launcher of `sena pair` (reference log-probs), as launch.qa")
    train: str = param("", "launcher of `sena train`, e.g. 'accelerate launch --config_file "
                       "configs/accelerate/zero3.yaml --num_processes 8'; as launch.qa")
    eval: str = param("", "launcher of `sena eval`, as launch.qa")


@dataclass
class Params:
    loop: LoopParams = section(LoopParams, "the self-evolution loop")
    model: ModelParams = section(ModelParams, "θ0 and how every stage loads a model")
    world: WorldParams = section(WorldParams, "the embedded synthetic world (embedded default only)")
    base: BaseParams = section(BaseParams, "θ0's size and training (embedded default only)")
    sample: SampleParams = section(SampleParams, "step 1: images drawn from the pool")
    noise: NoiseParams = section(NoiseParams, "step 2: forward-diffusion corruption")
    qa: QAParams = section(QAParams, "step 3: self-questioning, answers, self-enhancement")
    pair: PairParams = section(PairParams, "step 4: pair filters and reference log-probs")
    train: TrainParams = section(TrainParams, "step 5: DPO + image-content alignment")
    eval: EvalParams = section(EvalParams, "step 6: benchmarks")
    launch: LaunchParams = section(LaunchParams, "the launcher each stage reruns itself under (several "
                                   "processes or GPUs); '' = one process")
    limits: LimitsParams = section(LimitsParams, "how much any file, line, image or text read may weigh")
    # Per-iteration overrides of the loop stages: {"3": {"train": {"lr": 1e-6}}} changes
    # iteration 3 only. Stage@K tracks `iterations.K` in dvc.yaml, so editing one iteration's
    # entry reruns that iteration's stages and nothing else. Every iteration has an entry.
    iterations: dict = field(default_factory=dict)


# ---------------------------------------------------------------- loading and validation

# Sections an iteration may override; sample's draw layout is shared so iterations stay disjoint,
# and eval stays the same for every θK so the metrics compare.
PER_ITERATION_SECTIONS = ("noise", "qa", "pair", "train")
# Cross-key checks, in the order they run (each a section's `check` method).
CHECKED_SECTIONS = ("model", "sample", "noise", "train", "base", "qa", "world", "eval")


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate a params file; refuse problems in one line naming the key and the fix."""
    path = Path(path)
    if not path.exists():
        raise SenaError(f"{path}: params file not found; run from the project root or pass --params FILE")
    params = params_from_dict(read_yaml(path), source=str(path))
    bounded.configure(params.limits)  # every read of this run is bounded by its limits
    return params


def params_from_dict(data: Any, source: str = "params") -> Params:
    """Validate every key once: the flat sections, then each iteration's override (its own keys only,
    then the cross-key checks of the settings it makes)."""
    overrides = None
    if isinstance(data, dict) and "iterations" in data:
        data = dict(data)
        overrides = data.pop("iterations")
    params = _overlay(Params(), _validated(Params, data, "", source))
    _check_sections(params, "", CHECKED_SECTIONS, source)
    params.iterations = _validated_iterations(params, overrides, source)
    return params


def _validated_iterations(params: Params, overrides: Any, source: str) -> dict:
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise SenaError(f"{source}: 'iterations' must map iteration numbers to overrides, "
                        "e.g. '3': {train: {lr: 1.0e-06}}")
    n = params.loop.iterations
    out: dict[str, dict] = {str(k): {} for k in range(1, n + 1)}
    for key, value in overrides.items():
        if str(key) not in out:
            raise SenaError(f"{source}: 'iterations.{key}' is not an iteration 1..loop.iterations ({n}); remove it")
        if not isinstance(value or {}, dict):
            raise SenaError(f"{source}: 'iterations.{key}' must be a mapping of sections, got {_show(value)}")
        for name in value or {}:
            if name not in PER_ITERATION_SECTIONS:
                raise SenaError(f"{source}: 'iterations.{key}.{name}' cannot change per iteration; "
                                f"only {', '.join(PER_ITERATION_SECTIONS)} can")
        out[str(key)] = {name: _validated(type(getattr(params, name)), section_data or {},
                                          f"iterations.{key}.{name}.", source)
                         for name, section_data in (value or {}).items()}
    for key, entry in out.items():  # every section present: dvc.yaml tracks iterations.K.<section>
        for name in PER_ITERATION_SECTIONS:
            entry.setdefault(name, {})
        changed = [name for name in PER_ITERATION_SECTIONS if entry[name]]
        _check_sections(_overlay(params, entry), f"iterations.{key}.", changed, source)
    return out


def for_iteration(params: Params, k: int) -> Params:
    """The params iteration k runs with: the file's values with `iterations.k` laid over them.

    Both were validated when the params were read; this only merges."""
    return _overlay(params, params.iterations.get(str(k), {}))


def _check_sections(params: Params, at: str, names, source: str) -> None:
    for name in names:
        section = getattr(params, name)
        if hasattr(section, "check"):
            try:
                section.check(params, at)
            except Invalid as exc:
                raise SenaError(f"{source}: {exc}") from None


def _overlay(obj, values: dict):
    """A copy of dataclass obj with already-validated values laid over it, sections merged key by key."""
    if not values:
        return obj
    changes = {key: _overlay(getattr(obj, key), value) if dataclasses.is_dataclass(getattr(obj, key)) else value
               for key, value in values.items()}
    return dataclasses.replace(obj, **changes)


def build(cls, data: Any, prefix: str, source: str):
    """A cls (a section dataclass) from data, every key validated; the benchmark layer's sections too."""
    return _overlay(cls(), _validated(cls, data, prefix, source))


def _validated(cls, data: Any, prefix: str, source: str) -> dict:
    """data's keys for dataclass cls, each checked (type, range, choices) and coerced; sections nested."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise SenaError(f"{source}: {where} must be a mapping of keys, got {type(data).__name__}")
    open_key = getattr(cls, "OPEN", None)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != open_key}
    values: dict = {}
    for key in data:
        if key in known:
            continue
        if open_key and isinstance(data[key], dict | None):
            values.setdefault(open_key, {})[key] = copy.deepcopy(data[key] or {})
        else:
            raise SenaError(f"{source}: unknown key '{prefix}{key}'; remove it or use one of: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    values.update({name: check_value(hints[name], data[name], f"{prefix}{name}", known[name].metadata, source)
                   for name in known if name in data})
    return values


def check_value(tp, value, key: str, meta, source: str):
    """One key's value checked against its declared type and metadata and coerced (ints to floats);
    a refusal is one SenaError line naming source and key. Also used by the benchmark layer."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _validated(tp, value, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return check_value(tp, value, key, meta, source)
    if tp is dict:  # free-form settings handed to a library (model.processor): plain YAML values only
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SenaError(f"{source}: '{key}' must be a mapping of setting names to values, got {_show(value)}")
        _refuse_non_finite(value, key, source)
        return dict(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SenaError(f"{source}: '{key}' must be a list, got {_show(value)}; write it as a YAML list")
        items = [check_value(item_tp, v, f"{key}[{i}]", {}, source) for i, v in enumerate(value)]
        _check_range(items, key, meta, source)
        return items
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise SenaError(f"{source}: '{key}' must be {_type_word(tp)}, got {_show(value)}; {_fix_for(tp, value)}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise SenaError(f"{source}: '{key}' is {value}; it must be a finite number{range_text(meta)}")
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


def range_text(meta) -> str:
    """' in [lo, hi]' (brackets open or closed as declared), or ''."""
    lo, hi = (meta or {}).get("lo"), (meta or {}).get("hi")
    if lo is None or hi is None:
        return ""
    return f" in {'(' if meta.get('lo_open') else '['}{lo}, {hi}{')' if meta.get('hi_open') else ']'}"


def _fix_for(tp, value) -> str:
    """The fix of a wrongly typed value: YAML (1.1, as PyYAML reads it) takes 1e-5 for text, since
    a float there needs a dot; say so, instead of leaving the user to stare at a number."""
    if tp in (int, float) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return "fix its value"
        if math.isfinite(number) and re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value.strip()):
            mantissa, exponent = re.split("[eE]", value.strip())
            return f"YAML reads {value} as text: write {mantissa}.0e{exponent} (a dot before the e)"
        return "write it without quotes"
    return "fix its value"


def _type_word(tp) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[tp]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_dict(params: Params) -> dict:
    """The settings as params.yaml spells them (benchmark sections back under eval)."""
    out = dataclasses.asdict(params)
    if isinstance(out.get("eval"), dict):
        out["eval"].update(out["eval"].pop(EvalParams.OPEN, {}))
    return out


def apply_profile(params_file: str | Path, profile_file: str | Path, check=None) -> dict:
    """Lay profile_file's keys over params_file in place (sena_cli/yamlfile.py); returns the changed keys.

    check(params, source), if given, runs on every validated result too (the benchmark layer's checks)."""
    from sena_cli import yamlfile

    def validate(data: Any, source: str) -> dict:
        params = params_from_dict(data, source)
        if check is not None:
            check(params, source)
        return to_dict(params)

    return yamlfile.apply_profile(params_file, profile_file, validate)


def set_keys(params_file: str | Path, values: dict[str, Any]) -> dict:
    """Set dotted keys (`{"sample.pool": "pool"}`) in params_file in place, validated, comments and other
    keys kept (sena_cli/yamlfile.py); returns the changed keys."""
    from sena_cli import yamlfile

    return yamlfile.set_keys(params_file, values, lambda data, source: to_dict(params_from_dict(data, source)))
