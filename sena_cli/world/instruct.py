"""The instruction-tuning set of θ0: every request the method makes of the model.

One example is (prompt, answer, task). Prompts are the method's own prompts from
params.yaml (qa.prompts), so the embedded θ0 is taught exactly what the loop asks.
Two biases are deliberate and documented in docs/world.md: images follow graded
co-occurrence (scenes.py), and captions name an absent partner with probability
`world.caption_noise`. Yes/no questions about absent objects ask about one sharing a colour or
shape with a present object (`world.binding_negatives`), one drawn by popularity
(`world.balanced_negatives`, never a partner) or any absent one, never preferring a partner, so
co-occurrence partners are rarely seen as negatives; captions and "Yes" examples
leave out a hard-to-see object with probability `world.hard_unnoticed` (under-annotation). Enhancement examples
give a right answer at θ0's own accuracy on the question's form (`world.enhance_given_right`), so that
enhancing keeps right answers and fixes wrong ones instead of ignoring the given answer. With
`world.reading_share`, blank twins of some scenes carry enhancement examples that only the description
answers (`reading_examples`), so that θ0 learns to read the text it enhances with.
"""

from __future__ import annotations

import random

from sena_cli.config import QAPrompts, WorldParams
from sena_cli.method import prompts as P
from sena_cli.world.language import (
    Question,
    answerable_questions,
    ask,
    caption,
    own_question,
    pick_question,
    unanswerable_questions,
    wrong_answer,
)
from sena_cli.world.scenes import Scene, absent_partners, object_names, popularity

# Relative frequency of each request. Captions and short answers carry most of the image
# signal per token, so they dominate; the long check/enhance prompts are rarer but present.
# Tuned on θ0's held-out scores (docs/world.md, θ0 tuning log).
# The method asks for an enhancement of every answer it collects (two per question), so θ0 sees that
# request about as often as a caption (issue 25: at 0.6, enhancement turned 69 right answers wrong for
# 15 wrong ones right on the dev probe).
TASK_WEIGHTS = {
    "describe": 1.5,
    "describe_short": 1.5,
    "short_answer": 4.0,
    "yes_no": 4.0,
    "generate_question": 0.7,
    "check_question": 0.6,
    "enhance": 2.0,
    "enhance_yes_no": 0.15,
}


def instruction_examples(
    scene: Scene, world: WorldParams, prompts: QAPrompts, rng: random.Random, count: int
) -> list[dict]:
    tasks = rng.choices(list(TASK_WEIGHTS), weights=list(TASK_WEIGHTS.values()), k=count)
    return [_example(task, scene, world, prompts, rng) for task in tasks]


def _example(task: str, scene: Scene, world: WorldParams, p: QAPrompts, rng: random.Random) -> dict:
    noisy_caption = lambda: caption(noticed(scene, world, rng), world, rng, world.caption_noise)  # noqa: E731
    if task == "describe":
        prompt, answer = rng.choice(p.describe_instructions), noisy_caption()
    elif task == "describe_short":
        prompt = P.description_prompt(p, rng.choice(p.describe_instructions))
        answer = noisy_caption()
    elif task == "short_answer":
        q = _non_yes_no_question(scene, world, rng)
        prompt, answer = P.short_answer_prompt(p, q.text), q.answer
    elif task == "yes_no":
        q = _existence_question(scene, world, rng)
        prompt, answer = P.short_answer_prompt(p, q.text), q.answer
    elif task == "generate_question":
        prompt, answer = p.question_generate, own_question(scene, world).text
    elif task == "check_question":
        bad = unanswerable_questions(scene, world)
        if bad and rng.random() < 0.5:
            given, fixed = rng.choice(bad).text, own_question(scene, world).text
        else:
            given = fixed = pick_question(scene, world, rng).text
        prompt, answer = P.check_prompt(p, given), f"QUESTION: {fixed}"
    elif task == "enhance":
        if rng.random() < DESCRIPTION_ENHANCE_SHARE:  # a `des` record: the description enhances itself
            d = noisy_caption()
            instruction = P.description_prompt(p, rng.choice(p.describe_instructions))
            prompt = P.enhance_prompt(p, d, instruction, d)
            answer = f"Improved Answer: {noisy_caption()}"
        else:  # a `gen` record: a short answer, right or wrong, checked against the description
            q = pick_question(scene, world, rng)
            given = _given_answer(q, world, rng)
            own = {"question": P.short_answer_prompt(p, q.text), "description": noisy_caption()}
            return {"task": task, "prompt": enhancement_prompt(p, own, given),
                    "answer": f"Improved Answer: {q.answer}", **own, "given": given}
    elif task == "enhance_yes_no":
        q = _existence_question(scene, world, rng)
        given = _given_answer(q, world, rng)
        own = {"question": P.short_answer_prompt(p, q.text), "description": None}
        return {"task": task, "prompt": enhancement_prompt(p, own, given), "answer": f"Improved Answer: {q.answer}",
                **own, "given": given}
    else:
        raise ValueError(task)
    return {"task": task, "prompt": prompt, "answer": answer}


# Forms a description answers: it names each object's colour and shape, and with world.caption_positions
# its quadrant too.
READ_FORMS = ("colour", "shape", "count", "colour_count", "exists")
PLACED_FORMS = ("position", "quadrant_colour", "quadrant_shape")
READ_FORMS_PLACED = READ_FORMS + PLACED_FORMS

# The given answer of a reading example is right half the time: keeping it or not must come from the
# description, never from how often given answers are right. world.reading_given_at_enhance_rates gives it
# the other enhancement examples' rates instead (docs/world.md, v25).
READING_GIVEN_RIGHT = 0.5


def reading_examples(scene: Scene, world: WorldParams, p: QAPrompts, rng: random.Random, count: int) -> list[dict]:
    """Answer-enhancement examples that only the description answers: they are asked beside a blank image
    (the scene's background, world/build.py), with the scene's whole description (every object, no noise).
    θ0 learns to look a question up in the text it is given, as a real VLM's language model already does
    (docs/world.md, v15); the answer is the truth, the given answer right half the time (with
    `world.reading_given_at_enhance_rates`, at `world.enhance_given_right`'s rate for the form). With
    `world.reading_subsets` each example describes, and asks about, a random part of the scene instead: 1 to
    all of its objects, as many of each size (docs/world.md, v24)."""
    out = []
    pool = None if world.reading_subsets else _reading_pool(scene, world)
    for _ in range(count):
        described = scene
        if world.reading_subsets:  # no draw otherwise: v15-v23's examples stay the same
            keep = sorted(rng.sample(range(len(scene.objects)), rng.randint(1, len(scene.objects))))
            described = Scene(tuple(scene.objects[i] for i in keep), scene.background)
        by_kind, absent, placed, unplaced = pool if pool is not None else _reading_pool(described, world)
        if world.reading_placed_share:  # at 0 the draws are v15-v17's: every form equally often
            kind = rng.choice(placed if placed and rng.random() < world.reading_placed_share else unplaced)
        else:
            kind = rng.choice(sorted(by_kind))
        if kind == "exists" and absent and rng.random() < 0.5:  # a "No" the description also answers
            q = ask("exists", described, world, name=rng.choice(absent))
        else:
            q = rng.choice(by_kind[kind])
        if world.reading_given_at_enhance_rates:
            given = _given_answer(q, world, rng)
        else:
            given = q.answer if rng.random() < READING_GIVEN_RIGHT else wrong_answer(q, world, rng)
        example = {"question": P.short_answer_prompt(p, q.text), "description": caption(described, world, rng, 0.0)}
        out.append({"task": "enhance_reading", "prompt": enhancement_prompt(p, example, given),
                    "answer": f"Improved Answer: {q.answer}", "given": given})
    return out


def _reading_pool(scene: Scene, world: WorldParams) -> tuple[dict[str, list[Question]], list[str], list[str],
                                                              list[str]]:
    """The questions a description of `scene` answers, by form; the objects it lacks; the placed and the
    other forms among them."""
    forms = READ_FORMS_PLACED if world.caption_positions else READ_FORMS
    by_kind: dict[str, list[Question]] = {}
    for q in answerable_questions(scene, world):
        if q.kind in forms:
            by_kind.setdefault(q.kind, []).append(q)
    absent = [n for n in object_names(world) if n not in scene.names]
    placed = sorted(k for k in by_kind if k in PLACED_FORMS)
    unplaced = sorted(k for k in by_kind if k not in PLACED_FORMS)
    return by_kind, absent, placed, unplaced


def enhancement_prompt(p: QAPrompts, example: dict, given: str) -> str:
    """The enhancement request of an example that keeps its `question` (the short-answer prompt) and its
    `description` (None: a yes/no, enhanced without one), for a given answer: the world's draw, or θ0's own
    answer when `base.own_answers_step` has θ0 answer the question itself (stages/base.py)."""
    if example["description"] is None:
        return P.fill(p.enhance_yes_no, question=example["question"], answer=given)
    return P.enhance_prompt(p, example["description"], example["question"], given)


# Share of enhancement examples that enhance a description (the rest a short answer, right or
# wrong): rewriting a caption is what θ0 does anyway; keeping or fixing a given answer is the skill.
DESCRIPTION_ENHANCE_SHARE = 0.2

# Share of short-answer examples that ask the colour of a shape or the shape of a colour:
# finding an object by its shape is what θ0 learns last, so it gets more of these.
GROUNDING_SHARE = 0.5


def _non_yes_no_question(scene: Scene, world: WorldParams, rng: random.Random) -> Question:
    if rng.random() < GROUNDING_SHARE:
        options = [q for q in answerable_questions(scene, world) if q.kind in ("colour", "shape")]
        if options:
            return rng.choice(options)
    while True:
        q = pick_question(scene, world, rng)
        if q.kind != "exists":
            return q


def _given_answer(q: Question, world: WorldParams, rng: random.Random) -> str:
    """The answer an enhancement example asks to improve: right at θ0's own accuracy on the form."""
    return q.answer if rng.random() < getattr(world.enhance_given_right, q.kind) else wrong_answer(q, world, rng)


def noticed(scene: Scene, world: WorldParams, rng: random.Random) -> Scene:
    """The scene as an annotator describes it: each hard-to-see object left out with probability
    `world.hard_unnoticed` (captions name the salient objects; small faint ones go unmentioned)."""
    seen = tuple(o for o in scene.objects if not o.hard or rng.random() >= world.hard_unnoticed)
    return Scene(seen, scene.background) if seen else scene


def _existence_question(scene: Scene, world: WorldParams, rng: random.Random) -> Question:
    if rng.random() < 0.5:  # a "Yes" about an object the annotator noticed
        name = rng.choice(noticed(scene, world, rng).names)
    else:
        absent = [n for n in object_names(world) if n not in scene.names]
        # attribute-binding negatives (GQA-style "Is there a red square?" beside a red circle), never
        # about a plausible partner: instruction data lacks exactly those (LRV-Instruction)
        mates = set(absent_partners(scene.names, world))
        binding = [n for n in absent if n not in mates and any(
            n.split(" ")[0] == o.colour or n.split(" ")[1] == o.shape for o in scene.objects)]
        plain = [n for n in absent if n not in mates]
        if binding and rng.random() < world.binding_negatives:
            name = rng.choice(binding)
        elif world.balanced_negatives and plain and rng.random() < world.balanced_negatives:
            # GQA/VQAv2-style balance: an object is asked about when absent about as often as when
            # present, so the "No"s follow the objects' popularity (still never a partner). At 0 no
            # draw is made, so the default world is drawn exactly as before the parameter existed.
            freq = popularity(world)
            name = rng.choices(plain, weights=[freq[n] for n in plain])[0]
        else:
            name = rng.choice(absent)
    return ask("exists", scene, world, name=name)
