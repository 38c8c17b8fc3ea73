"""Pair filters, step 4 of the method. Each returns True when the pair must be dropped.

The order is fixed so every dropped pair is counted once, under the first filter it fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sena_cli.method.questions import has_dropped_word, split_sentences


def is_degenerate(answer: str, max_token_repeats: int = 30) -> bool:
    """A sentence said twice, or one token repeated more than `max_token_repeats` times."""
    sentences = [s.lower() for s in split_sentences(answer)]
    if len(sentences) != len(set(sentences)):
        return True
    tokens = answer.lower().split()
    return bool(tokens) and Counter(tokens).most_common(1)[0][1] > max_token_repeats


def non_alnum_ratio(answer: str) -> float:
    if not answer:
        return 1.0
    return sum(not c.isalnum() for c in answer) / len(answer)


def is_bare_yes_no(answer: str) -> bool:
    return answer.strip() in ("Yes", "No")


def filter_reasons(max_token_repeats: int, max_non_alnum_ratio: float, drop_words: list[str]
                   ) -> list[tuple[str, Callable[[str, str, str], bool]]]:
    """(name, test(question, chosen, rejected)) in the order they are applied."""
    return [
        ("question_has_dropped_word", lambda q, c, r: has_dropped_word(q, drop_words)),
        ("degenerate", lambda q, c, r: is_degenerate(c, max_token_repeats) or is_degenerate(r, max_token_repeats)),
        ("mostly_symbols", lambda q, c, r: non_alnum_ratio(c) > max_non_alnum_ratio
            or non_alnum_ratio(r) > max_non_alnum_ratio),
        ("identical", lambda q, c, r: c.strip() == r.strip()),
        ("bare_yes_no", lambda q, c, r: is_bare_yes_no(c) or is_bare_yes_no(r)),
        ("rejected_in_chosen", lambda q, c, r: r.strip().lower() in c.strip().lower()),
    ]


def first_failed_filter(question: str, chosen: str, rejected: str, filters) -> str | None:
    for name, test in filters:
        if test(question, chosen, rejected):
            return name
    return None

