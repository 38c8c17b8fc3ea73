import pytest

from sena_cli.bench.chair import chair_counts, chair_metrics


def test_hand_made_captions():
    mentioned = [["red circle", "blue square", "blue square"], ["green cross"], []]
    truth = [["red circle"], ["green cross", "yellow square"], ["blue circle"]]
    m = chair_metrics(mentioned, truth)
    assert m["chair_s"] == pytest.approx(1 / 3)  # only caption 0 names an absent object
    assert m["chair_i"] == pytest.approx(2 / 4)  # every mention counts, as in CHAIR: 2 of 4 are absent
    assert m["recall"] == pytest.approx(2 / 4)  # red circle and green cross of four present
    assert m["caption_f1"] == pytest.approx(2 * (1 / 2) * (1 / 2) / (1 / 2 + 1 / 2))
    assert chair_counts(mentioned, truth) == {"chair_s": 3, "chair_i": 4, "recall": 4}  # the denominators above


def test_silent_captions_score_zero_chair_and_zero_recall():
    m = chair_metrics([[], []], [["red circle"], ["blue square"]])
    assert m == {"chair_s": 0.0, "chair_i": 0.0, "recall": 0.0, "caption_f1": 0.0}  # silence is not precision
