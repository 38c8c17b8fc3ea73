"""research/enhancement.py: the per-form tally of θ0's enhancement under the true description."""


def test_the_tally_counts_each_condition_per_form_and_how_often_a_wrong_answer_is_kept(research):
    enhancement = research("enhancement")
    rows = [{"kind": "position", "answer": "top left"}, {"kind": "position", "answer": "bottom right"},
            {"kind": "colour", "answer": "red"}]
    answers = {"direct": ["top left", "top left", "Red."],
               "own description": ["top left", "bottom right", "blue"],
               "true description": ["top right", "bottom right", "red"],
               "true description, wrong answer": ["top right", "top left", "red"]}
    wrong = ["top right", "top left", "green"]
    forms = enhancement.tally(rows, answers, wrong)
    assert forms["position"]["questions"] == 2 and forms["all"]["questions"] == 3
    assert forms["position"]["direct"] == 0.5 and forms["colour"]["direct"] == 1.0  # "Red." is right
    assert forms["position"]["own description"] == 1.0 and forms["colour"]["own description"] == 0.0
    assert forms["position"]["true description"] == 0.5
    assert forms["position"]["true description, wrong answer"] == 0.0
    assert forms["position"]["kept wrong"] == 1.0 and forms["colour"]["kept wrong"] == 0.0
    assert abs(forms["all"]["kept wrong"] - 2 / 3) < 1e-12
    assert "| position | 2 |" in enhancement.table({"forms": forms})
