"""POPE metrics: yes/no answers against labels (Li et al., 2023), parsed as POPE's evaluate.py does.

POPE's rule (AoiDragon/POPE, evaluate.py), reproduced exactly by `parse_yes_no`: keep the text
before the first '.', delete commas, split on single spaces, and answer 'no' when a word is
exactly 'No', 'no' or 'not'; anything else is 'yes'. It is case-sensitive and blind to other
punctuation: "NO", "No!", "Not really." and "No" followed by a newline all count as 'yes'.
The checks against POPE's own script are tests/bench/test_differential.py.

`eval.yes_no_parsing: lenient` is sena's more forgiving rule (any case, any punctuation or
whitespace around the words), off by default because its numbers are not POPE's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sena_cli.bench.record import Chart

PARSINGS = ("pope", "lenient")
METRICS = ("<split>.accuracy", "<split>.precision", "<split>.recall", "<split>.f1", "<split>.yes_ratio")


def charts(what: str) -> tuple[Chart, ...]:
    """POPE's headline charts (world_pope and coco_pope)."""
    return (Chart(f"{what} accuracy", (("random", "random.accuracy"), ("popular", "popular.accuracy"),
                                         ("adversarial", "adversarial.accuracy"))),
            Chart(f"{what} F1 and yes-ratio (adversarial)", (("F1", "adversarial.f1"),
                                                             ("yes-ratio", "adversarial.yes_ratio"))))


def parse_yes_no(answer: str, parsing: str = "pope") -> str:
    """'yes' or 'no' for one answer; `parsing` is 'pope' (POPE's own rule) or 'lenient'."""
    first = answer.split(".")[0]
    if parsing == "lenient":
        words = set(re.findall(r"[a-z']+", first.replace(",", " ").lower()))
        return "no" if {"no", "not"} & words else "yes"
    words = set(first.replace(",", "").split(" "))
    return "no" if {"No", "no", "not"} & words else "yes"


def _confusion(predictions: Sequence[str], labels: Sequence[str]) -> tuple[int, int, int, int]:
    """tp, fp, tn, fn with 'yes' as the positive answer."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("POPE needs one prediction per label and at least one label")
    tp = sum(p == "yes" and y == "yes" for p, y in zip(predictions, labels))
    fp = sum(p == "yes" and y != "yes" for p, y in zip(predictions, labels))
    tn = sum(p != "yes" and y != "yes" for p, y in zip(predictions, labels))
    fn = sum(p != "yes" and y == "yes" for p, y in zip(predictions, labels))
    return tp, fp, tn, fn


def pope_counts(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    """How many answers each proportion of pope_metrics is over (its n, for a standard error):
    the metrics file keeps them under the benchmark's "n" key (F1 is no proportion)."""
    return _counts(*_confusion(predictions, labels))


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """accuracy, precision, recall, f1 (positive = 'yes') and yes_ratio, with POPE's arithmetic.

    Where POPE's script divides by zero (no 'yes' predicted, or no 'yes' label) the value is 0.
    """
    return _metrics(*_confusion(predictions, labels))


class Confusion:
    """pope_metrics and pope_counts of answers given a window at a time: running counts, so a split of
    any length costs four integers (the same numbers as the functions on all the answers at once)."""

    def __init__(self):
        self.tp = self.fp = self.tn = self.fn = 0

    def add(self, predictions: Sequence[str], labels: Sequence[str]) -> None:
        tp, fp, tn, fn = _confusion(predictions, labels)
        self.tp, self.fp, self.tn, self.fn = self.tp + tp, self.fp + fp, self.tn + tn, self.fn + fn

    def _all(self) -> tuple[int, int, int, int]:
        if not self.tp + self.fp + self.tn + self.fn:
            raise ValueError("POPE needs one prediction per label and at least one label")
        return self.tp, self.fp, self.tn, self.fn

    def metrics(self) -> dict[str, float]:
        return _metrics(*self._all())

    def counts(self) -> dict[str, int]:
        return _counts(*self._all())


def _counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, int]:
    n = tp + fp + tn + fn
    return {"accuracy": n, "precision": tp + fp, "recall": tp + fn, "yes_ratio": n}


def _metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    precision = float(tp) / float(tp + fp) if tp + fp else 0.0
    recall = float(tp) / float(tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / (tp + fp + tn + fn),
    }
