"""CHAIR (Rohrbach et al., 2018): hallucinated objects in captions, against ground truth."""

from __future__ import annotations

from collections.abc import Sequence


def chair_metrics(mentioned: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> dict[str, float]:
    """chair_s: share of captions naming any absent object; chair_i: share of named objects
    that are absent; recall: share of present objects that are named."""
    if len(mentioned) != len(truth) or not truth:
        raise ValueError("CHAIR needs one object list per caption and at least one caption")
    named = hallucinated = bad_captions = covered = present = 0
    for said, real in zip(mentioned, truth):
        said, real = set(said), set(real)
        wrong = said - real
        named += len(said)
        hallucinated += len(wrong)
        bad_captions += bool(wrong)
        covered += len(said & real)
        present += len(real)
    return {
        "chair_s": bad_captions / len(truth),
        "chair_i": hallucinated / named if named else 0.0,
        "recall": covered / present if present else 0.0,
    }
