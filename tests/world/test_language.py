import collections
import random
import re

from sena_cli.config import QAPrompts, WorldParams
from sena_cli.world.instruct import TASK_WEIGHTS, instruction_examples
from sena_cli.world.language import (
    QUESTION_FORMS,
    answerable_questions,
    ask,
    caption,
    mentioned_objects,
    own_question,
    parse_question,
    unanswerable_questions,
)
from sena_cli.world.scenes import Scene, SceneObject, partners, sample_scene

WORLD = WorldParams()
SCENE = Scene((SceneObject("red", "circle", "top left", (2, 2, 12, 12)),
               SceneObject("green", "cross", "bottom right", (30, 30, 40, 40))), (240, 240, 240))


def test_clean_caption_names_exactly_the_objects():
    text = caption(SCENE, WORLD, random.Random(0), noise=0.0)
    assert text == "A red circle and a green cross."
    assert mentioned_objects(text, WORLD) == ["red circle", "green cross"]


def test_noisy_caption_names_one_absent_partner_after_each_object_by_partner_weight():
    mates = partners(WORLD)
    for seed in range(20):
        said = mentioned_objects(caption(SCENE, WORLD, random.Random(seed), noise=1.0), WORLD)
        # each object, then one of its partners that the scene lacks (and the caption has not named yet)
        assert said[0] == "red circle" and said[1] in mates["red circle"] and said[1] not in SCENE.names
        cross = said.index("green cross")
        assert cross == 2 and set(said[3:]) <= set(mates["green cross"]) and len(said) == 4
    rng = random.Random(3)
    named = collections.Counter(mentioned_objects(caption(SCENE, WORLD, rng, 1.0), WORLD)[1] for _ in range(3000))
    share = [named[p] / 3000 for p in mates["red circle"]]
    expected = [w / sum(WORLD.partner_weights) for w in WORLD.partner_weights]
    assert all(abs(a - b) < 0.03 for a, b in zip(share, expected)), (share, expected)


def test_caption_noise_rate_is_about_the_parameter():
    rng = random.Random(3)
    noisy = sum(len(mentioned_objects(caption(SCENE, WORLD, rng, 0.5), WORLD)) > 2 for _ in range(2000)) / 2000
    # two objects, each naming a partner with probability 0.5: at least one named 1 - 0.25 of the time
    assert 0.71 < noisy < 0.79


def test_questions_answer_from_the_scene_and_parse_back():
    answers = {q.text: q.answer for q in answerable_questions(SCENE, WORLD)}
    assert answers["What color is the circle?"] == "red"
    assert answers["What shape is the green object?"] == "cross"
    assert answers["How many objects are there?"] == "two"
    assert answers["Where is the green cross?"] == "bottom right"
    assert answers["What color is the object in the top left?"] == "red"
    assert answers["Is there a red circle in the image?"] == "Yes"
    assert ask("exists", SCENE, WORLD, name="blue square").answer == "No"
    for q in answerable_questions(SCENE, WORLD) + unanswerable_questions(SCENE, WORLD):
        kind, slots = parse_question(q.text, WORLD)
        assert kind == q.kind and ask(kind, SCENE, WORLD, **slots) == q
    assert all(q.answer is None for q in unanswerable_questions(SCENE, WORLD))
    assert parse_question("What is the name of the circle?", WORLD) is None


def test_instruction_set_covers_every_request_of_the_method():
    rng = random.Random(0)
    prompts = QAPrompts()
    examples = [e for _ in range(50) for e in instruction_examples(SCENE, WORLD, prompts, rng, 10)]
    assert {e["task"] for e in examples} == set(TASK_WEIGHTS)
    for e in examples:
        if e["task"] == "generate_question":
            assert e["prompt"] == prompts.question_generate and e["answer"].endswith("?")
        if e["task"] == "check_question":
            assert e["answer"].startswith("QUESTION: ") and parse_question(e["answer"][10:], WORLD)
        if e["task"].startswith("enhance"):
            assert e["answer"].startswith("Improved Answer: ")
        if e["task"] == "yes_no":
            assert e["answer"] in ("Yes", "No") and e["prompt"].endswith(prompts.short_answer_suffix)
    # the question θ0 is taught to ask follows the image (one per scene), and over scenes takes every form
    asked = {e["answer"] for e in examples if e["task"] == "generate_question"}
    assert asked == {own_question(SCENE, WORLD).text}
    rng = random.Random(1)
    kinds = collections.Counter(own_question(sample_scene(rng, WORLD), WORLD).kind for _ in range(2000))
    assert set(kinds) == set(QUESTION_FORMS) and min(kinds.values()) > 100, kinds


def test_own_questions_are_answerable_and_existence_asks_about_the_strongest_partner():
    rng = random.Random(2)
    for _ in range(500):
        scene = sample_scene(rng, WORLD)
        q = own_question(scene, WORLD)
        assert q.answer is not None and parse_question(q.text, WORLD)[0] == q.kind
        if q.kind == "exists":
            first = next(o for o in scene.objects if not o.hard) if any(not o.hard for o in scene.objects) \
                else scene.objects[0]
            assert q.text == f"Is there a {partners(WORLD)[first.name][0]} in the image?"


def test_enhancement_examples_give_a_right_answer_at_the_forms_rate():
    from dataclasses import replace

    from sena_cli.config import EnhanceGivenRight

    # position questions right 90% of the time, every other form 30%: the rate follows the form
    world = replace(WORLD, enhance_given_right=replace(
        EnhanceGivenRight(**{k: 0.3 for k in EnhanceGivenRight.__dataclass_fields__}), position=0.9))
    rng = random.Random(4)
    given_right: dict[bool, list[bool]] = {True: [], False: []}
    for _ in range(6000):
        e = instruction_examples(SCENE, world, QAPrompts(), rng, 1)[0]
        if e["task"] == "enhance" and "Question:" in e["prompt"] and "Description:" in e["prompt"]:
            given = e["prompt"].split(" Answer: ", 1)[1].split(" Use the description", 1)[0]
            if given and "Improved Answer: " in e["answer"] and not given.startswith("A "):
                is_position = "Where is the " in e["prompt"]
                given_right[is_position].append(given == e["answer"].removeprefix("Improved Answer: "))
    for is_position, expected in ((True, 0.9), (False, 0.3)):
        rate = sum(given_right[is_position]) / len(given_right[is_position])
        assert abs(rate - expected) < 0.08, (is_position, rate, len(given_right[is_position]))


def test_every_question_form_has_an_enhancement_rate():
    from dataclasses import fields

    from sena_cli.config import EnhanceGivenRight

    # instruct.py reads the rate by the question's kind: a form without one would crash `sena world`
    assert {f.name for f in fields(EnhanceGivenRight)} == set(QUESTION_FORMS)


def test_annotations_leave_out_hard_objects_at_the_parameters_rate_and_never_a_plain_one():
    from sena_cli.world.instruct import noticed

    scene = Scene((SceneObject("red", "circle", "top left", (2, 2, 17, 17)),
                   SceneObject("blue", "square", "top right", (26, 2, 32, 8), hard=True)), (240, 240, 240))
    rng = random.Random(5)
    kept = [noticed(scene, WORLD, rng).names for _ in range(4000)]
    assert all("red circle" in k for k in kept)
    assert abs(sum("blue square" in k for k in kept) / 4000 - (1 - WORLD.hard_unnoticed)) < 0.03
    only_hard = Scene(scene.objects[1:], scene.background)  # an annotator always names something
    assert all(noticed(only_hard, WORLD, rng).names == ["blue square"] for _ in range(50))


def _asked_when_absent(world, rng, draws):
    """How often each object is the subject of a "No" example among `draws` examples about SCENE."""
    asked = collections.Counter()
    for _ in range(draws):
        e = instruction_examples(SCENE, world, QAPrompts(), rng, 1)[0]
        if e["task"] == "yes_no" and e["answer"] == "No":
            asked[parse_question(e["prompt"].split("?")[0] + "?", world)[1]["name"]] += 1
    return asked


def test_no_examples_test_binding_and_rarely_ask_about_a_plausible_partner():
    from sena_cli.world.scenes import absent_partners, object_names

    asked = _asked_when_absent(WORLD, random.Random(6), 4000)
    absent = [n for n in object_names(WORLD) if n not in SCENE.names]
    mates = set(absent_partners(SCENE.names, WORLD))
    binding = {n for n in absent if n not in mates and (n.split()[0] in ("red", "green") or
                                                         n.split()[1] in ("circle", "cross"))}
    total = sum(asked.values())
    share = lambda names: sum(asked[n] for n in names) / total  # noqa: E731
    # half binding by design, plus their share of the uniform half
    expected_binding = WORLD.binding_negatives + (1 - WORLD.binding_negatives) * len(binding) / len(absent)
    assert abs(share(binding) - expected_binding) < 0.05
    assert abs(share(mates) - (1 - WORLD.binding_negatives) * len(mates) / len(absent)) < 0.04


def test_balanced_no_examples_fall_back_to_any_absent_object_when_every_one_is_a_partner(monkeypatch):
    import dataclasses

    from sena_cli.world import instruct
    from sena_cli.world.scenes import object_names

    absent = [n for n in object_names(WORLD) if n not in SCENE.names]
    monkeypatch.setattr(instruct, "absent_partners", lambda names, world: list(absent))  # a crowded graph
    world = dataclasses.replace(WORLD, binding_negatives=0.0, balanced_negatives=1.0)
    asked = _asked_when_absent(world, random.Random(8), 1000)  # no absent non-partner to draw by popularity
    assert sum(asked.values()) > 50 and set(asked) <= set(absent)


def test_balanced_no_examples_follow_popularity_and_never_ask_about_a_partner():
    import dataclasses

    from sena_cli.world.scenes import absent_partners, object_names, popularity

    world = dataclasses.replace(WORLD, binding_negatives=0.0, balanced_negatives=1.0)
    asked = _asked_when_absent(world, random.Random(7), 6000)
    mates = set(absent_partners(SCENE.names, world))
    plain = [n for n in object_names(world) if n not in SCENE.names and n not in mates]
    assert mates and not mates & set(asked)
    freq = popularity(world)
    total, weight = sum(asked.values()), sum(freq[n] for n in plain)
    assert total > 500
    # each name's share follows its popularity among the absent non-partners (uniform would give
    # every name 1/len(plain); the most and least popular differ several-fold)
    top, bottom = max(plain, key=freq.get), min(plain, key=freq.get)
    assert freq[top] / freq[bottom] > 3
    for name in (top, bottom):
        expected = freq[name] / weight
        assert abs(asked[name] / total - expected) < 3 * (expected * (1 - expected) / total) ** 0.5 + 0.005


def test_enhancement_examples_keep_what_asks_them_again_with_another_answer():
    """`sena base` with base.own_answers_step rewrites these requests with θ0's own answer: the fields kept
    must rebuild the very prompt the world drew, and put another answer exactly where the given one was."""
    from sena_cli.world.instruct import enhancement_prompt

    rng, prompts = random.Random(5), QAPrompts()
    examples = [e for _ in range(300) for e in instruction_examples(SCENE, WORLD, prompts, rng, 6)]
    kept = [e for e in examples if "question" in e]
    assert {e["task"] for e in kept} == {"enhance", "enhance_yes_no"}
    assert any(e["description"] is None for e in kept) and any(e["description"] for e in kept)
    for e in kept:
        assert enhancement_prompt(prompts, e, e["given"]) == e["prompt"]
        other = enhancement_prompt(prompts, e, "zebra")
        assert other.replace("zebra", e["given"], 1) == e["prompt"] and e["question"] in other


def test_captions_with_positions_place_each_object_and_a_noise_partner_in_an_empty_quadrant():
    from dataclasses import replace

    from sena_cli.world.language import mentioned_objects

    placed = replace(WORLD, caption_positions=True)
    quadrant = {o.name: o.quadrant for o in SCENE.objects}
    seen_noise = False
    for seed in range(200):
        text = caption(SCENE, placed, random.Random(seed), 0.5)
        named = mentioned_objects(text, placed)
        assert [n for n in named if n in quadrant] == SCENE.names  # every object, in reading order
        places = re.findall(r" in the (top left|top right|bottom left|bottom right)", text)
        assert len(places) == len(named)
        for name, place in zip(named, places):
            if name in quadrant:
                assert place == quadrant[name]
            else:  # a partner named by caption noise: a quadrant no present object holds
                seen_noise = True
                assert place not in quadrant.values()
        assert len(set(places)) == len(places)
    assert seen_noise
    assert caption(SCENE, placed, random.Random(0), 0.0) == \
        "A red circle in the top left and a green cross in the bottom right."
    adjacent = replace(placed, caption_positions_adjacent=True)
    for seed in range(50):  # the same draws, the quadrant right after the name
        assert caption(SCENE, adjacent, random.Random(seed), 0.5) == \
            caption(SCENE, placed, random.Random(seed), 0.5).replace(" in the ", " ")
    assert caption(SCENE, adjacent, random.Random(0), 0.0) == "A red circle top left and a green cross bottom right."


def test_a_short_answer_matches_its_truth_without_a_final_stop_in_any_case():
    from sena_cli.world.language import answers_match

    assert answers_match("Red.", "red") and answers_match(" top left ", "top left")
    assert not answers_match("top", "top left") and not answers_match("red circle", "red")


def test_reading_examples_are_answered_by_their_whole_description_and_keep_the_given_answer_half_the_time():
    """world.reading_share's examples (asked beside a blank image): the description is the scene's whole,
    noise-free caption, the answer is the truth and stands in it, and the given answer is right half the time,
    so only the description says whether to keep it."""
    from dataclasses import replace

    from sena_cli.world.instruct import READ_FORMS, READING_GIVEN_RIGHT, reading_examples

    prompts = QAPrompts()
    examples = reading_examples(SCENE, WORLD, prompts, random.Random(3), 3000)
    assert {e["task"] for e in examples} == {"enhance_reading"}
    assert not any("question" in e for e in examples)  # base.own_answers_step never rewrites them
    forms, answers, kept = collections.Counter(), collections.Counter(), []
    for e in examples:
        assert "A red circle and a green cross." in e["prompt"]
        truth = e["answer"].removeprefix("Improved Answer: ")
        kind, slots = parse_question(e["prompt"].split("Question: ", 1)[1].split("?", 1)[0] + "?", WORLD)
        forms[kind] += 1
        answers[truth] += 1
        assert truth == ask(kind, SCENE, WORLD, **slots).answer
        assert f" Answer: {e['given']} " in e["prompt"]
        kept.append(e["given"] == truth)
    assert set(forms) == set(READ_FORMS)  # nothing about places: the description does not say them
    assert answers["Yes"] and answers["No"]
    assert abs(sum(kept) / len(kept) - READING_GIVEN_RIGHT) < 0.03
    placed = replace(WORLD, caption_positions=True)
    placed_forms = {parse_question(e["prompt"].split("Question: ", 1)[1].split("?", 1)[0] + "?", placed)[0]
                    for e in reading_examples(SCENE, placed, prompts, random.Random(3), 600)}
    assert {"position", "quadrant_colour", "quadrant_shape"} <= placed_forms


def test_reading_examples_ask_about_places_at_the_parameters_share():
    from dataclasses import replace

    import pytest

    from sena_cli.config import params_from_dict
    from sena_cli.errors import SenaError
    from sena_cli.world.instruct import READ_FORMS, reading_examples

    prompts = QAPrompts()

    def placed_share(world) -> float:
        examples = reading_examples(SCENE, world, prompts, random.Random(8), 4000)
        kinds = [parse_question(e["prompt"].split("Question: ", 1)[1].split("?", 1)[0] + "?", world)[0]
                 for e in examples]
        return sum(k not in READ_FORMS for k in kinds) / len(kinds)

    placed = replace(WORLD, caption_positions=True)
    assert abs(placed_share(placed) - 3 / 8) < 0.03  # every form equally often
    assert abs(placed_share(replace(placed, reading_placed_share=0.8)) - 0.8) < 0.03
    with pytest.raises(SenaError, match="'world.reading_placed_share' .* 'world.caption_positions: true'"):
        params_from_dict({"world": {"reading_placed_share": 0.5}})
    with pytest.raises(SenaError, match="'world.caption_positions_adjacent' .* 'world.caption_positions: true'"):
        params_from_dict({"world": {"caption_positions_adjacent": True}})


def test_reading_subsets_describe_and_ask_about_one_to_all_objects_each_size_as_often():
    """world.reading_subsets: each reading example's description names a random part of the scene, from one
    object to all, each size about equally often, and its answer is the truth about that part."""
    from dataclasses import replace

    from sena_cli.world.instruct import reading_examples
    from sena_cli.world.language import mentioned_objects
    from sena_cli.world.scenes import Scene, SceneObject

    objects = (SceneObject("red", "circle", "top left", (2, 2, 16, 16)),
               SceneObject("green", "cross", "top right", (30, 2, 44, 16)),
               SceneObject("blue", "square", "bottom left", (2, 30, 16, 44)))
    scene = Scene(objects, (200, 200, 200))
    world = replace(WORLD, caption_positions=True, reading_subsets=True)
    sizes = collections.Counter()
    for e in reading_examples(scene, world, QAPrompts(), random.Random(5), 3000):
        description = e["prompt"].split("Description: ", 1)[1].split(" Question: ", 1)[0]
        named = mentioned_objects(description, world)
        assert named == [o.name for o in objects if o.name in named]  # a part, in reading order
        sizes[len(named)] += 1
        part = Scene(tuple(o for o in objects if o.name in named), scene.background)
        kind, slots = parse_question(e["prompt"].split("Question: ", 1)[1].split("?", 1)[0] + "?", world)
        assert e["answer"] == f"Improved Answer: {ask(kind, part, world, **slots).answer}"
    assert set(sizes) == {1, 2, 3} and max(sizes.values()) - min(sizes.values()) < 150


def test_reading_given_answers_are_right_at_the_enhancement_rates_when_asked():
    """world.reading_given_at_enhance_rates: a reading example's given answer is right at
    world.enhance_given_right's rate for its form (as in the other enhancement examples); off, half the time."""
    from dataclasses import replace

    from sena_cli.config import EnhanceGivenRight
    from sena_cli.world.instruct import reading_examples
    from sena_cli.world.scenes import Scene, SceneObject

    objects = (SceneObject("red", "circle", "top left", (2, 2, 16, 16)),
               SceneObject("green", "cross", "top right", (30, 2, 44, 16)))
    scene = Scene(objects, (200, 200, 200))
    rates = EnhanceGivenRight(colour=0.9, shape=0.9, count=0.9, colour_count=0.9, position=0.2,
                              quadrant_colour=0.9, quadrant_shape=0.9, exists=0.9)
    world = replace(WORLD, caption_positions=True, enhance_given_right=rates)

    def right_share_by_form(world) -> dict[str, float]:
        right, total = collections.Counter(), collections.Counter()
        for e in reading_examples(scene, world, QAPrompts(), random.Random(3), 6000):
            kind = parse_question(e["prompt"].split("Question: ", 1)[1].split("?", 1)[0] + "?", world)[0]
            total[kind] += 1
            right[kind] += e["answer"] == f"Improved Answer: {e['given']}"
        return {k: right[k] / total[k] for k in total}

    for kind, share in right_share_by_form(replace(world, reading_given_at_enhance_rates=True)).items():
        assert abs(share - getattr(rates, kind)) < 0.05, kind
    for kind, share in right_share_by_form(world).items():
        assert abs(share - 0.5) < 0.07, kind
