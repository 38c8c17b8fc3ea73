import pytest

from sena_cli.method.questions import extract_questions, has_dropped_word, kept_questions, split_sentences


def test_split_sentences():
    assert split_sentences("A red circle. Where is it? Top left!") == ["A red circle.", "Where is it?", "Top left!"]


@pytest.mark.parametrize("output, questions", [
    ("QUESTION: What color is the circle?", ["What color is the circle?"]),
    ("question: Where is the red square?", ["Where is the red square?"]),
    ("What is this? It is red. How many objects are there?", ["What is this?", "How many objects are there?"]),
    ("A red circle.", []),
    ("", []),
    ("QUESTION: ?", []),
])
def test_extract_questions(output, questions):
    assert extract_questions(output) == questions


def test_dropped_words_match_words_not_substrings():
    assert has_dropped_word("What is the name of the dog?", ["name"])
    assert has_dropped_word("Who is Named here?", ["name"])
    assert not has_dropped_word("Is this a renamed file?", ["name"])


def test_kept_questions_skips_dropped_and_missing():
    assert kept_questions("What is the name of it? Where is the cross?", ["name"]) == ["Where is the cross?"]
    assert kept_questions("QUESTION: Where is it? How many are there?", []) == ["Where is it?", "How many are there?"]
    assert kept_questions("No question here.", ["name"]) == []
