"""Builders for test-only models: a second VLM architecture (Idefics3, SmolVLM's), tiny and random."""

from __future__ import annotations

from pathlib import Path

from sena_cli.config import QAPrompts
from sena_cli.world import tiny

IDEFICS3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {% else %}Assistant: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image> {% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}<end_of_utterance> "
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_idefics3(out: Path, texts: list[str] | None = None) -> Path:
    """A random-weight Idefics3 (32x32 images, 4 image tokens) saved like a hub checkpoint."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    p = QAPrompts()
    texts = list(texts or []) + [p.question_generate, p.question_check, p.enhance, p.enhance_yes_no,
                                 p.short_answer_suffix, p.short_description_suffix, "User: Assistant:",
                                 *p.describe_instructions, "What color is the circle? red blue Yes No"]
    extra = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
             *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)])
    tok = tiny.build_tokenizer(texts, extra_special_tokens=extra)
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                             max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_TEMPLATE)
    config = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def project_from(micro_project: Path, root: Path) -> Path:
    """A fresh project folder sharing the micro world (symlinked, read-only use) with its own copy of θ0."""
    import shutil

    (root / "data").mkdir(parents=True)
    (root / "data" / "world").symlink_to(micro_project / "data" / "world")
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    return root
