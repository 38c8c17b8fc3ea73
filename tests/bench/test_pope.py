import pytest

from sena_cli.bench.pope import parse_yes_no, pope_counts, pope_metrics


@pytest.mark.parametrize("answer, parsed", [
    ("Yes", "yes"), ("No", "no"), ("No.", "no"), ("Yes, there is a red circle.", "yes"),
    ("There is not a red circle.", "no"), ("Yes. No red circle though.", "yes"), ("no, none", "no"),
    ("I see a red circle", "yes"),
])
def test_parse_like_pope(answer, parsed):
    assert parse_yes_no(answer) == parsed


def test_ten_questions_with_known_confusion():
    labels = ["yes"] * 5 + ["no"] * 5
    preds = ["yes", "yes", "yes", "no", "no",  # TP=3 FN=2
             "yes", "no", "no", "no", "no"]    # FP=1 TN=4
    m = pope_metrics(preds, labels)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["yes_ratio"] == pytest.approx(4 / 10)
    # what each proportion is over: 10 answers, 4 said yes, 5 labelled yes
    assert pope_counts(preds, labels) == {"accuracy": 10, "precision": 4, "recall": 5, "yes_ratio": 10}


def test_all_no_has_zero_precision_not_a_crash():
    m = pope_metrics(["no", "no"], ["yes", "no"])
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 0.5
