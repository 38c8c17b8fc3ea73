import pytest

from sena_cli.method.filters import filter_reasons, first_failed_filter, is_degenerate, non_alnum_ratio

FILTERS = filter_reasons(max_token_repeats=30, max_non_alnum_ratio=0.5, drop_words=["name"])


@pytest.mark.parametrize("question, chosen, rejected, reason", [
    ("What is the name of the shape?", "circle", "square", "question_has_dropped_word"),
    ("Describe.", "A red circle. A red circle.", "A blue square.", "degenerate"),
    ("Describe.", "red " * 31, "A blue square.", "degenerate"),
    ("Describe.", "A red circle.", "?? !! ..", "mostly_symbols"),
    ("What color?", "red", "red", "identical"),
    ("Is there a circle?", "Yes", "a circle", "bare_yes_no"),
    ("Is there a circle?", "a circle", "No", "bare_yes_no"),
    ("Describe.", "A red circle and a blue square.", "a Blue Square", "rejected_in_chosen"),
    ("What color is the circle?", "red", "blue", None),
    ("Describe.", "A red circle and a blue square.", "A green cross.", None),
])
def test_each_filter_on_crafted_strings(question, chosen, rejected, reason):
    assert first_failed_filter(question, chosen, rejected, FILTERS) == reason


def test_thresholds_are_parameters():
    assert not is_degenerate("red " * 30, 30) and is_degenerate("red " * 31, 30)
    assert non_alnum_ratio("a!") == 0.5
    loose = filter_reasons(30, 0.9, [])
    assert first_failed_filter("q", "A red circle.", "red?!?!", FILTERS) == "mostly_symbols"
    assert first_failed_filter("q", "A red circle.", "red?!?!", loose) is None
