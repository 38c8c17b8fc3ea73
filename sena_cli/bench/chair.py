"""CHAIR (Rohrbach et al., 2018): hallucinated objects in captions, against ground truth."""

from __future__ import annotations

from collections.abc import Sequence


def chair_metrics(mentioned: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> dict[str, float]:
    """chair_s: share of captions naming any absent object; chair_i: share of named objects
    that are absent; recall: share of present objects that are named; caption_f1: harmonic
    mean of 1 - chair_i and recall (saying less lowers CHAIR; only recall exposes that)."""
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
    chair_i = hallucinated / named if named else 0.0
    recall = covered / present if present else 0.0
    precision = 1.0 - chair_i if named else 0.0
    return {
        "chair_s": bad_captions / len(truth),
        "chair_i": chair_i,
        "recall": recall,
        "caption_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
