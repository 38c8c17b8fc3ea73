import random

from sena_cli.config import QAPrompts, WorldParams
from sena_cli.world.instruct import TASK_WEIGHTS, instruction_examples
from sena_cli.world.language import (
    answerable_questions,
    ask,
    caption,
    mentioned_objects,
    parse_question,
    unanswerable_questions,
)
from sena_cli.world.scenes import Scene, SceneObject

WORLD = WorldParams()
SCENE = Scene((SceneObject("red", "circle", "top left", (2, 2, 12, 12)),
               SceneObject("green", "cross", "bottom right", (30, 30, 40, 40))), (240, 240, 240))


def test_clean_caption_names_exactly_the_objects():
    text = caption(SCENE, WORLD, random.Random(0), noise=0.0)
    assert text == "A red circle and a green cross."
    assert mentioned_objects(text, WORLD) == ["red circle", "green cross"]


def test_noisy_caption_names_the_absent_partner():
    text = caption(SCENE, WORLD, random.Random(0), noise=1.0)
    assert mentioned_objects(text, WORLD) == ["red circle", "blue square", "green cross"]  # green cross has no partner


def test_caption_noise_rate_is_about_the_parameter():
    rng = random.Random(3)
    noisy = sum("blue square" in caption(SCENE, WORLD, rng, 0.5) for _ in range(2000)) / 2000
    assert 0.45 < noisy < 0.55


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
    kinds = {parse_question(e["answer"], WORLD)[0] for e in examples if e["task"] == "generate_question"}
    assert {"colour", "shape", "count", "position", "exists"} <= kinds
