"""The one tokenization of sena: how a model family turns (image, prompt[, answer]) into tokens.

Generation (`qa`, `eval`), the reference log-probs (`pair`) and training (`train`) all go
through ChatFormat, so they see the same prompt tokens and every answer ends the way the
model ends its own answers:

- prompt: the family's chat template with the generation prompt, tokenized the way the
  tokenizer encodes a text (special tokens on: a Llama tokenizer adds BOS, as LLaVA-1.5 does
  when it generates) unless the template already writes that prefix itself;
- completion: what the template writes for the assistant's turn after the generation prompt,
  cut right after the end-of-turn token the model emits (Qwen2-VL's `<|im_end|>`, SmolVLM's
  `<end_of_utterance>`); a template that closes the turn without one (llava-1.5's) gets the
  model's EOS appended (`</s>`), as the reference trains on it;
- completion tokens are the tail of the tokens of prompt + completion, so an answer is split
  into tokens the way the model itself writes it after the prompt.

A checkpoint's chat template is not always the conversation its model was trained on: the
llava-hf LLaVA-1.5 template has no system prompt, while LLaVA-1.5 (and the SENA reference,
run.sh) trained and generated with the vicuna_v1 conversation. `CONVERSATIONS` holds such
conversations as chat templates, which `model.conversation` puts in place of the checkpoint's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sena_cli import bounded
from sena_cli.errors import SenaError

# LLaVA's conv_vicuna_v1 (llava/conversation.py, SeparatorStyle.TWO, seps " " and "</s>"): the system
# prompt, then "USER: <image>\n{prompt} ASSISTANT:" and answers ending with "</s>", the image first
# as LLaVA's eval scripts put it (DEFAULT_IMAGE_TOKEN + "\n" + question).
VICUNA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                    "The assistant gives helpful, detailed, and polite answers to the human's questions.")
VICUNA_V1 = (
    "{% set system = namespace(text='" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "') %}"
    "{% for message in messages if message['role'] == 'system' %}"
    "{% set system.text = message['content'] if message['content'] is string else "
    "(message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ')) %}"
    "{% endfor %}{{ system.text + ' ' }}"
    "{% for message in messages if message['role'] != 'system' %}"
    "{{ ('USER' if message['role'] == 'user' else 'ASSISTANT') + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %}{{ ' ' if message['role'] == 'user' else '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
CONVERSATIONS = {"vicuna_v1": VICUNA_V1}


def _sized(rendered: str, messages: list[dict]) -> str:
    """A rendered conversation no longer than limits.max_text_chars (before the tokenizer sees it): a
    template that repeats its input is refused here, naming the template."""
    limit = bounded.limits().max_text_chars
    if len(rendered) > limit:
        given = sum(len(c.get("text", "")) for m in messages for c in m["content"] if isinstance(c, dict))
        raise SenaError(f"the chat template rendered {len(rendered)} characters from {given} characters of "
                        f"messages, more than limits.max_text_chars ({limit}); fix the checkpoint's chat "
                        "template (does it loop?) or shorten the prompt")
    return rendered


def _probe(processor) -> None:
    """Render a one-line conversation within limits.max_template_seconds, or refuse the template: a
    template whose loops never end would hang every stage at its first prompt. (The render runs in a
    daemon thread, which is left behind when it does not end: the command then stops in one line.)"""
    seconds = bounded.limits().max_template_seconds
    done: list = []
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]

    def render():
        try:
            done.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        except Exception as exc:  # noqa: BLE001 - reported below, in the caller's thread
            done.append(exc)

    worker = threading.Thread(target=render, daemon=True, name="chat-template-probe")
    worker.start()
    worker.join(seconds)
    if not done:
        raise SenaError(f"the chat template did not render a one-line prompt within {seconds:g} s "
                        "(limits.max_template_seconds): it loops; fix the checkpoint's chat template")
    if isinstance(done[0], str):
        _sized(done[0], messages)


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list | tuple) else [value])]


@dataclass(frozen=True)
class ChatFormat:
    processor: object
    end_token: str  # the text of the token an answer ends with
    end_ids: tuple[int, ...]  # the ids generation stops at
    add_special_tokens: bool  # whether prompts are encoded with the tokenizer's own prefix (BOS)
    prefix_text: str  # that prefix as text ('' when the tokenizer adds none)

    @classmethod
    def of(cls, processor, generation_config=None) -> ChatFormat:
        if getattr(processor, "chat_template", None) is None:
            raise SenaError(f"{type(processor).__name__} has no chat template; save the processor with one")
        tok = processor.tokenizer
        end_ids = _ids(getattr(generation_config, "eos_token_id", None)) or _ids(tok.eos_token_id)
        if not end_ids:
            raise SenaError("the model has no end-of-sequence token (generation_config.eos_token_id, "
                            "tokenizer.eos_token); set one so answers can end")
        _probe(processor)
        prefix, suffix = _special_tokens_added(tok)
        # A tokenizer that appends tokens to every text would end each prompt with them: encode plainly then.
        add = bool(prefix) and not suffix
        return cls(processor=processor, end_token=tok.convert_ids_to_tokens(end_ids[0]), end_ids=tuple(end_ids),
                   add_special_tokens=add, prefix_text="".join(tok.convert_ids_to_tokens(prefix)) if add else "")

    # ------------------------------------------------------------ text

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        text = self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        return _sized(text, messages)

    @staticmethod
    def _user(text: str, with_image: bool) -> dict:
        image = [{"type": "image"}] if with_image else []
        return {"role": "user", "content": image + [{"type": "text", "text": text}]}

    def prompt(self, text: str, with_image: bool = True) -> str:
        """The rendered prompt up to and including the generation prompt (the tokenizer's prefix not included)."""
        return self._render([self._user(text, with_image)], True)

    def encode_kwargs(self, prompt: str) -> dict:
        """Tokenizer arguments for a rendered prompt: the prefix once, whether or not the template writes it."""
        writes_prefix = bool(self.prefix_text) and prompt.startswith(self.prefix_text)
        return {"add_special_tokens": self.add_special_tokens and not writes_prefix}

    def completion(self, text: str, answer: str, with_image: bool = True) -> str:
        """The assistant turn after the generation prompt, ending with (and cut after) the end token."""
        prompt = self.prompt(text, with_image)
        full = self._render([self._user(text, with_image),
                             {"role": "assistant", "content": [{"type": "text", "text": answer}]}], False)
        if not full.startswith(prompt):
            raise SenaError("the chat template renders an answered conversation that does not start with its "
                            "generation prompt, so sena cannot tell the answer's tokens; use a standard template")
        turn = full[len(prompt):]
        at = turn.find(answer) if answer else -1
        after = at + len(answer) if at >= 0 else 0
        ends = [(turn.find(end, after), end) for end in self.end_tokens]
        ends = [(i, end) for i, end in ends if i >= 0]
        if ends:  # the template closes the turn with an end token: keep up to it, drop what follows
            i, end = min(ends)
            return turn[: i + len(end)]
        return turn.rstrip() + self.end_token

    @property
    def end_tokens(self) -> list[str]:
        return self.processor.tokenizer.convert_ids_to_tokens(list(self.end_ids))

    # ------------------------------------------------------------ tokens

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt, image placeholders unexpanded."""
        return self.processor.tokenizer(prompt, **self.encode_kwargs(prompt)).input_ids

    def completion_ids(self, prompt: str, completion: str) -> list[int]:
        """The completion's tokens as they follow the prompt: the tail of tokens(prompt + completion)."""
        tok = self.processor.tokenizer
        head = self.prompt_ids(prompt)
        joint = tok(prompt + completion, **self.encode_kwargs(prompt)).input_ids
        if joint[: len(head)] == head:
            return joint[len(head):]
        return tok(completion, add_special_tokens=False).input_ids  # the boundary merged: encode apart


def _special_tokens_added(tok) -> tuple[list[int], list[int]]:
    """(prefix, suffix) ids the tokenizer adds around a text when special tokens are on."""
    plain = tok("a b", add_special_tokens=False).input_ids
    full = tok("a b").input_ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []
