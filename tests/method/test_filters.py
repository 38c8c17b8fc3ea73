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


# ---------------------------------------------------------------- the reference's rules, and sena's former ones

FORMER = filter_reasons(30, 0.5, ["name"], degenerate_tokens="words", rejected_in_chosen_case="both",
                        strip_answers=True, alnum="unicode")


@pytest.mark.parametrize("question, chosen, rejected, reference, former", [
    # the rejected answer lower-cased, the chosen one not: "red" is not inside "The Red circle"
    ("What color?", "The Red circle", "red", None, "rejected_in_chosen"),
    ("What color?", "The red circle", "Red", "rejected_in_chosen", "rejected_in_chosen"),
    # repeats counted on case-sensitive word tokens: 16 "Red" + 16 "red" is no token 31 times
    ("Describe.", "Red red " * 16, "A blue square.", None, "degenerate"),
    # ... on NLTK-style tokens: "red," 31 times without spaces is 31 "red" tokens, one whitespace word
    ("Describe.", "red," * 31, "A blue square.", "degenerate", None),
    # answers as generated: "Yes\n" is not a bare "Yes", two answers differing by a newline differ
    ("Is there a circle?", "Yes\n", "There is a circle.", None, "bare_yes_no"),
    ("Describe.", "A red circle.\n", "A red circle.", None, "identical"),
    # ASCII letters and digits: an answer in another script is all symbols to the reference
    ("Describe.", "一个红色的圆", "A blue square.", "mostly_symbols", None),
])
def test_the_reference_rules_are_the_default_and_each_former_rule_an_option(question, chosen, rejected,
                                                                            reference, former):
    assert first_failed_filter(question, chosen, rejected, FILTERS) == reference
    assert first_failed_filter(question, chosen, rejected, FORMER) == former


def test_word_tokens_are_nltk_like_without_nltk_data():
    from sena_cli.method.filters import word_tokens

    assert word_tokens("The red circle, isn't it? It's 3.5 cm... well-known -- yes.") == [
        "The", "red", "circle", ",", "is", "n't", "it", "?", "It", "'s", "3.5", "cm", "...", "well-known",
        "--", "yes", "."]
    assert word_tokens("At 12:30: 1,000 (red) $5!") == ["At", "12:30", ":", "1,000", "(", "red", ")", "$", "5", "!"]


def test_each_rule_is_a_pair_key_with_the_reference_default():
    from sena_cli.config import PairParams, params_from_dict
    from sena_cli.errors import SenaError

    p = PairParams()
    assert (p.degenerate_tokens, p.rejected_in_chosen_case, p.strip_answers, p.alnum) == \
        ("nltk", "rejected", False, "ascii")
    with pytest.raises(SenaError, match="'pair.alnum' has 'latin1'; allowed: ascii, unicode"):
        params_from_dict({"pair": {"alnum": "latin1"}})
