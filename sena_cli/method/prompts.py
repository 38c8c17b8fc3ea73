"""The method's prompts, built from params (qa.prompts). Pure string functions.

The wording is configuration; the structure is the method's: generate a question, check
it (rewrite if the image cannot answer it), describe in one short sentence, answer in a
word or phrase, improve an answer with the description (or without it when the
description is a bare yes/no).
"""

from __future__ import annotations

from sena_cli.config import QAPrompts
from sena_cli.method.questions import strip_prefix

IMPROVED_PREFIX = "Improved Answer:"


def fill(template: str, **slots: str) -> str:
    """Fill {placeholders} without str.format, so other braces in user prompts are safe."""
    for key, value in slots.items():
        template = template.replace("{" + key + "}", value)
    return template


def with_suffix(prompt: str, suffix: str) -> str:
    return f"{prompt} {suffix}".strip()


def check_prompt(p: QAPrompts, question: str) -> str:
    return fill(p.question_check, question=question)


def description_prompt(p: QAPrompts, instruction: str) -> str:
    return with_suffix(instruction, p.short_description_suffix)


def short_answer_prompt(p: QAPrompts, question: str) -> str:
    return with_suffix(question, p.short_answer_suffix)


def is_yes_no(text: str) -> bool:
    return text.strip().rstrip(".").lower() in ("yes", "no")


def enhance_prompt(p: QAPrompts, description: str, question: str, answer: str) -> str:
    """The self-enhancement request; the yes/no variant drops a description that says nothing."""
    if is_yes_no(description):
        return fill(p.enhance_yes_no, question=question, answer=answer)
    return fill(p.enhance, description=description, question=question, answer=answer)


def parse_improved(output: str, original: str) -> tuple[str, bool]:
    """(answer, improved): the text after 'Improved Answer:', or the original when the prefix is absent."""
    if output.strip().lower().startswith(IMPROVED_PREFIX.lower()):
        improved = strip_prefix(output, IMPROVED_PREFIX)
        if improved:
            return improved, True
    return original, False
