"""Real-shaped tiny checkpoints of the model families users bring, built offline.

Each builder saves, like a hub checkpoint (safetensors + processor), a random-weight model
of the family's architecture with:
- the family's real processor class with its published settings (preprocessor_config.json
  of llava-hf/llava-1.5-7b-hf, Qwen/Qwen2-VL-7B-Instruct, HuggingFaceTB/SmolVLM-Instruct);
- a real subword tokenizer of the family's tokenizer class (Llama's byte-fallback BPE with
  BOS added; Qwen2's byte-level BPE without BOS; SmolLM2's GPT-2 byte-level BPE), trained
  here on a small corpus, with the family's special tokens;
- the family's published chat template (from the same repositories);
- the vision geometry of the real model (LLaVA-1.5: 336-px CLIP, patch 14, 576 image tokens;
  Qwen2-VL: patch 14, 2x2 merge, dynamic resolution; SmolVLM: 384-px SigLIP tiles, patch 14,
  scale factor 3, 81 tokens per tile, image splitting on), with tiny widths and depths.
Test and benchmark fixture: nothing here is imported by sena_cli. LLaVA-1.5's model comes from
sena_cli/world/tiny.py's `random_llava`, the one builder of random LLaVAs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from sena_cli.config import QAParams, WorldParams

# llava-hf/llava-1.5-7b-hf, chat_template.json
LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen/Qwen2-VL-7B-Instruct, chat_template.json
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
# HuggingFaceTB/SmolVLM-Instruct, chat_template.json
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def corpus() -> list[str]:
    """What the tiny tokenizers are trained on: sena's prompts, the world's words, some English."""
    qa = QAParams()
    p = qa.prompts
    world = WorldParams()
    texts = [p.question_generate, p.question_check, p.short_answer_suffix, p.short_description_suffix,
             p.enhance, p.enhance_yes_no, *p.describe_instructions, *qa.fixed_questions]
    texts += [f"A {c} {s} in the top left and a {c} {s}." for c in world.colours for s in world.shapes]
    texts += ["Is there a red circle in the image? Yes No", "What color is the square? Improved Answer: blue",
              "The picture shows a cat on a sofa next to a window, with two people and a dog.",
              "How many objects are there? There are three objects: a tree, a car and a house."]
    return texts * 4


def _trained_bpe(byte_level: bool, specials: list[str], vocab_size: int = 700) -> tuple[dict, list]:
    """(vocab, merges) of a BPE trained on corpus(), pre-tokenized the way the family's class does."""
    if byte_level:
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # Llama: sentencepiece-style '▁' word prefixes, byte fallback
        core = Tokenizer(models.BPE(byte_fallback=True))
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    core.train_from_iterator(corpus(), trainer)
    model = json.loads(core.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


def _save(model, processor, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ---------------------------------------------------------------- LLaVA-1.5


def llava15_tokenizer():
    """LlamaTokenizer as llava-1.5-7b-hf's: <unk> <s> </s>, byte tokens, BOS added, <image> and <pad> appended."""
    from transformers import LlamaTokenizer

    trained, merges = _trained_bpe(False, ["<unk>", "<s>", "</s>"])
    base = ["<unk>", "<s>", "</s>", *[f"<0x{i:02X}>" for i in range(256)]]
    rest = sorted((t for t in trained if t not in base), key=trained.get)
    vocab = {t: i for i, t in enumerate(base + rest)}
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, legacy=False)
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def build_llava15(out: Path) -> Path:
    from sena_cli.world.tiny import llava_processor, random_llava

    tok = llava15_tokenizer()
    processor = llava_processor(tok, 336, 14, "default", LLAVA15_TEMPLATE, do_center_crop=True, do_resize=True,
                                do_rescale=True, do_normalize=True, do_convert_rgb=True, resample=3,
                                image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    model = random_llava(tok, image_size=336, patch_size=14, vision_hidden=32, vision_layers=2, vision_heads=2,
                         text_hidden=64, text_intermediate=128, text_layers=2, text_heads=4, max_positions=4096,
                         feature_strategy="default", feature_layer=-2, image_seq_length=576,
                         pad_token_id=tok.pad_token_id)
    return _save(model, processor, out)


# ---------------------------------------------------------------- Qwen2-VL

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def qwen2vl_tokenizer():
    """Qwen2Tokenizer as Qwen2-VL-7B-Instruct's: byte-level BPE, no BOS, <|im_end|> ends a turn."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _trained_bpe(True, [])
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": [t for t in QWEN_SPECIALS if t != "<|im_end|>"]})
    return tok


def build_qwen2vl(out: Path) -> Path:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen2vl_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 12845056}, patch_size=14,
                                            temporal_patch_size=2, merge_size=2, image_mean=OPENAI_CLIP_MEAN,
                                            image_std=OPENAI_CLIP_STD)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2VL_TEMPLATE)
    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2VLForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id = ids["<|endoftext|>"]
    gen.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]  # as the published generation_config.json
    gen.pad_token_id = ids["<|endoftext|>"]
    return _save(model, processor, out)


# ---------------------------------------------------------------- SmolVLM (Idefics3)

SMOL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                 "<global-img>", "<end_of_utterance>",
                 *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]]


def smolvlm_tokenizer():
    """GPT2Tokenizer as SmolVLM-Instruct's (SmolLM2): byte-level BPE, <end_of_utterance> ends a turn."""
    from transformers import GPT2Tokenizer

    vocab, merges = _trained_bpe(True, [])
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                        eos_token="<end_of_utterance>", pad_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": [t for t in SMOL_SPECIALS
                                                          if t not in ("<|im_start|>", "<end_of_utterance>",
                                                                       "<|im_end|>")]})
    return tok


def build_smolvlm(out: Path) -> Path:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = smolvlm_tokenizer()
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True, size={"longest_edge": 1536}, max_image_size={"longest_edge": 384},
        do_resize=True, do_rescale=True, do_normalize=True, do_pad=True, do_convert_rgb=True, resample=1,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=81,
                                  chat_template=SMOLVLM_TEMPLATE)
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    config = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=16384, bos_token_id=tok.bos_token_id, eos_token_id=eou,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=384, patch_size=14),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=3, pad_token_id=tok.pad_token_id)
    model = Idefics3ForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, eou, tok.pad_token_id
    return _save(model, processor, out)


FAMILIES = {"llava-1.5": build_llava15, "qwen2-vl": build_qwen2vl, "smolvlm": build_smolvlm}
# The dtype each family's published checkpoint is saved in (llava-hf/llava-1.5-7b-hf: float16;
# Qwen/Qwen2-VL-7B-Instruct, HuggingFaceTB/SmolVLM-Instruct: bfloat16); the builders above save float32.
PUBLISHED_DTYPES = {"llava-1.5": "float16", "qwen2-vl": "bfloat16", "smolvlm": "bfloat16"}
# What the tests lay over the published processor settings to keep CPU time small (a user sets the
# same keys with `model.processor`); LLaVA-1.5 has a fixed geometry and needs none.
TEST_PROCESSOR_SETTINGS = {"llava-1.5": {},
                           "qwen2-vl": {"size": {"shortest_edge": 3136, "longest_edge": 28 * 28 * 64}},
                           "smolvlm": {"size": {"longest_edge": 768}}}
