"""POPE metrics: yes/no answers against labels (Li et al., 2023), parsed as POPE's own script does."""

from __future__ import annotations

import re
from collections.abc import Sequence


def parse_yes_no(answer: str) -> str:
    """POPE's rule: keep the first sentence; any 'no'/'not' word makes it 'no', else 'yes'."""
    first = answer.split(".")[0].replace(",", " ")
    words = re.findall(r"[a-z']+", first.lower())
    return "no" if ("no" in words or "not" in words) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """accuracy, precision, recall, f1 (positive = 'yes') and yes_ratio of parsed predictions."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("POPE needs one prediction per label and at least one label")
    tp = sum(p == "yes" and y == "yes" for p, y in zip(predictions, labels))
    fp = sum(p == "yes" and y == "no" for p, y in zip(predictions, labels))
    tn = sum(p == "no" and y == "no" for p, y in zip(predictions, labels))
    fn = sum(p == "no" and y == "yes" for p, y in zip(predictions, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / len(labels),
    }
