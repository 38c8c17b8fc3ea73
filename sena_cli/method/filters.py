"""Pair filters, step 4 of the method. Each returns True when the pair must be dropped.

The order is fixed so every dropped pair is counted once, under the first filter it fails.
The defaults are the SENA reference's filters; sena's earlier variants stay as named options
(the `pair` section), each differing from the reference in one way:
- `pair.rejected_in_chosen_case`: the reference lower-cases the rejected answer only, so the
  rejected "red" is kept against the chosen "The Red circle" ('both' lower-cases both: dropped);
- `pair.degenerate_tokens`: the reference counts repeats over NLTK word tokens, case-sensitive
  ('words': lower-cased whitespace words);
- `pair.strip_answers`: the reference compares answers as generated, newlines included
  (true: surrounding whitespace stripped before the identical, yes/no and inside checks);
- `pair.alnum`: the reference counts ASCII letters and digits as alphanumeric ('unicode':
  str.isalnum, so "é" or "中" count too).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

from sena_cli.method.questions import has_dropped_word, split_sentences

ASCII_ALNUM = frozenset(string.ascii_letters + string.digits)
# NLTK's word_tokenize without its data: Treebank-style word tokens by one regular expression, so no
# punkt download is needed. Like NLTK: punctuation split off words, "..." and "--" one token, the
# clitics n't 's 'm 'd 'll 're 've split off ("don't" -> do n't), numbers "3.5", "1,000", "12:30"
# and hyphenated words kept whole. Unlike NLTK: quotes stay " (NLTK writes `` and ''); a period
# inside a word is split off ("U.S." -> U . S ., NLTK keeps "U.S." and splits only a sentence's
# last period); "cannot", "gonna", "wanna" and "o'clock"-like words are not split as NLTK's
# contraction lists split them (can not, gon na). Word tokens themselves are the same, so a
# repeated word is counted the same; only punctuation and those rare words can count differently.
_NLTK_LIKE = re.compile(r"""
    \d+(?:[.,:]\d+)+                  # 3.5, 1,000, 12:30
  | \w+(?=n't\b)                      # do|n't
  | n't\b
  | '(?:s|m|d|ll|re|ve)\b             # 's 'm 'd 'll 're 've
  | \w+(?:-\w+)*                      # words, hyphenated words
  | \.\.\.|--                         # ellipsis, dash
  | [^\w\s]                           # any other symbol, one by one
""", re.VERBOSE | re.IGNORECASE)


def word_tokens(text: str) -> list[str]:
    """NLTK-style word tokens, case kept (see _NLTK_LIKE for how they differ from word_tokenize's)."""
    return _NLTK_LIKE.findall(text)


def is_degenerate(answer: str, max_token_repeats: int = 30, tokens: str = "nltk") -> bool:
    """A sentence said twice, or one token repeated more than `max_token_repeats` times
    (tokens: 'nltk' = NLTK-style word tokens, case-sensitive; 'words' = lower-cased whitespace words)."""
    sentences = [s.lower() for s in split_sentences(answer)]
    if len(sentences) != len(set(sentences)):
        return True
    words = word_tokens(answer) if tokens == "nltk" else answer.lower().split()
    return bool(words) and Counter(words).most_common(1)[0][1] > max_token_repeats


def non_alnum_ratio(answer: str, alnum: str = "ascii") -> float:
    """Share of characters that are not letters or digits (alnum: 'ascii' or 'unicode')."""
    if not answer:
        return 1.0
    if alnum == "ascii":
        return sum(c not in ASCII_ALNUM for c in answer) / len(answer)
    return sum(not c.isalnum() for c in answer) / len(answer)


def is_bare_yes_no(answer: str) -> bool:
    return answer in ("Yes", "No")


def rejected_in_chosen(chosen: str, rejected: str, case: str = "rejected") -> bool:
    """The rejected answer inside the chosen one: case 'rejected' lower-cases the rejected only
    (the reference), 'both' lower-cases both."""
    return rejected.lower() in (chosen.lower() if case == "both" else chosen)


def filter_reasons(max_token_repeats: int, max_non_alnum_ratio: float, drop_words: list[str], *,
                   degenerate_tokens: str = "nltk", rejected_in_chosen_case: str = "rejected",
                   strip_answers: bool = False, alnum: str = "ascii",
                   ) -> list[tuple[str, Callable[[str, str, str], bool]]]:
    """(name, test(question, chosen, rejected)) in the order they are applied."""

    def answers(test):
        def run(q, c, r):
            return test(q, c.strip(), r.strip()) if strip_answers else test(q, c, r)
        return run

    return [
        ("question_has_dropped_word", lambda q, c, r: has_dropped_word(q, drop_words)),
        ("degenerate", lambda q, c, r: is_degenerate(c, max_token_repeats, degenerate_tokens)
            or is_degenerate(r, max_token_repeats, degenerate_tokens)),
        ("mostly_symbols", lambda q, c, r: non_alnum_ratio(c, alnum) > max_non_alnum_ratio
            or non_alnum_ratio(r, alnum) > max_non_alnum_ratio),
        ("identical", answers(lambda q, c, r: c == r)),
        ("bare_yes_no", answers(lambda q, c, r: is_bare_yes_no(c) or is_bare_yes_no(r))),
        ("rejected_in_chosen", answers(lambda q, c, r: rejected_in_chosen(c, r, rejected_in_chosen_case))),
    ]


def first_failed_filter(question: str, chosen: str, rejected: str, filters) -> str | None:
    for name, test in filters:
        if test(question, chosen, rejected):
            return name
    return None
