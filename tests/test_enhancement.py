"""research/enhancement.py: the per-form tally of θ0's enhancement under the true description."""


def test_the_tally_counts_each_condition_per_form_and_how_often_a_wrong_answer_is_kept(research):
    enhancement = research("enhancement")
    rows = [{"kind": "position", "answer": "top left"}, {"kind": "position", "answer": "bottom right"},
            {"kind": "colour", "answer": "red"}]
    answers = {enhancement.STATED: ["top left", "", "red"],
               "direct": ["top left", "top left", "Red."],
               "own description": ["top left", "bottom right", "blue"],
               "true description": ["top right", "bottom right", "red"],
               "true description, wrong answer": ["top right", "top left", "red"],
               "empty description": ["top left", "top left", "red"],
               "another image's description": ["bottom left", "top left", "green"],
               "blank image, true description, wrong answer": ["top left", "top right", "red"]}
    wrong = ["top right", "top left", "green"]
    forms = enhancement.tally(rows, answers, wrong)
    assert forms["position"]["questions"] == 2 and forms["all"]["questions"] == 3
    assert forms["position"]["direct"] == 0.5 and forms["colour"]["direct"] == 1.0  # "Red." is right
    assert forms["position"]["own description"] == 1.0 and forms["colour"]["own description"] == 0.0
    assert forms["position"]["true description"] == 0.5
    assert forms["position"]["true description, wrong answer"] == 0.0
    assert forms["position"]["empty description"] == 0.5 and forms["colour"]["another image's description"] == 0.0
    assert forms["position"]["blank image, true description, wrong answer"] == 0.5
    assert forms["position"]["kept wrong"] == 1.0 and forms["colour"]["kept wrong"] == 0.0
    assert abs(forms["all"]["kept wrong"] - 2 / 3) < 1e-12
    assert forms["position"][enhancement.STATED] == 0.5 and forms["colour"][enhancement.STATED] == 1.0
    # position: the first both get right; the second the direct answer gets wrong and the description is
    # silent on. Colour: both right. So no gain and no contradiction, until the description says "blue".
    assert forms["position"]["stated only"] == 0 and forms["all"]["contradicted"] == 0
    answers[enhancement.STATED][2] = "blue"
    again = enhancement.tally(rows, answers, wrong)
    assert again["colour"]["contradicted"] == 1 and again["all"]["stated only"] == 0
    answers[enhancement.STATED][1] = "bottom right"
    assert enhancement.tally(rows, answers, wrong)["position"]["stated only"] == 1
    assert "| position | 2 |" in enhancement.table({"forms": forms})
    lookup = {"1 of 1": {"questions": 4, "right": 4}, "2 of 3": {"questions": 5, "right": 1}}
    assert "| 2 of 3 | 5 | 0.20 |" in enhancement.table({"forms": forms, "place lookup": lookup})


def test_a_description_states_the_answers_the_world_gives_and_no_place_it_does_not_say(research):
    """described_answer of the world's own noise-free caption is the truth for every question the scene
    answers; without world.caption_positions it states no place, and it never answers about an object the
    caption does not name."""
    import random
    from dataclasses import replace

    from sena_cli.config import WorldParams
    from sena_cli.world.instruct import PLACED_FORMS
    from sena_cli.world.language import answerable_questions, caption, parse_question
    from sena_cli.world.scenes import sample_scene

    enhancement = research("enhancement")
    rng = random.Random(0)
    for placed, adjacent in ((False, False), (True, False), (True, True)):
        world = replace(WorldParams(), caption_positions=placed, caption_positions_adjacent=adjacent)
        stated = 0
        for _ in range(150):
            scene = sample_scene(rng, world)
            text = caption(scene, world, rng, 0.0)
            for q in answerable_questions(scene, world):
                kind, slots = parse_question(q.text, world)
                answer = enhancement.described_answer(text, kind, slots, world)
                if kind in PLACED_FORMS and not placed:
                    assert answer is None
                else:
                    assert answer == q.answer, (text, q)
                    stated += 1
            absent = next(n for n in (f"{c} {s}" for c in world.colours for s in world.shapes)
                          if n not in scene.names)
            assert enhancement.described_answer(text, "position", {"name": absent}, world) is None
        assert stated > 1000
