"""Self-questioning, step 3.1 of the method: turn the model's outputs into questions.

The output is split into sentences; each sentence ending with '?' (with the answer
prefix such as 'QUESTION:' stripped) is a question. Outputs without '?' give none, and
questions containing a dropped word ('name' in the reference: images rarely show names)
are dropped.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def strip_prefix(text: str, prefix: str) -> str:
    """Remove a leading answer prefix ('QUESTION:', 'Improved Answer:'), case-insensitively."""
    stripped = text.strip()
    if stripped.lower().startswith(prefix.lower()):
        return stripped[len(prefix) :].strip()
    return stripped


def extract_questions(output: str, prefix: str = "QUESTION:") -> list[str]:
    """Every sentence of `output` that ends with '?', prefix removed."""
    out = []
    for sentence in split_sentences(output):
        sentence = strip_prefix(sentence, prefix)
        if sentence.endswith("?") and len(sentence) > 1:
            out.append(sentence)
    return out


def has_dropped_word(question: str, words: list[str]) -> bool:
    """True when the question contains one of `words` as a word (any case, plural or -d form)."""
    return any(re.search(rf"\b{re.escape(w)}(s|d)?\b", question, re.IGNORECASE) for w in words)


def kept_questions(output: str, drop_words: list[str], prefix: str = "QUESTION:") -> list[str]:
    """Every question of one output that the method keeps (all '?' sentences without a dropped word)."""
    return [q for q in extract_questions(output, prefix) if not has_dropped_word(q, drop_words)]
