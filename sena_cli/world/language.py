"""What the world says about its scenes: captions, questions and their answers.

Pure functions of a Scene and a seeded generator. The same templates are parsed back
by the world benchmarks (`mentioned_objects`, `parse_question`), so the metric and the
data can never drift apart.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from sena_cli.config import WorldParams
from sena_cli.world.scenes import QUADRANTS, Scene, object_names, partner_graph, partners

NUMBER_WORDS = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class Question:
    kind: str  # colour | shape | count | colour_count | position | quadrant_colour | quadrant_shape | exists
    text: str
    answer: str | None  # None when the scene cannot answer it


# ---------------------------------------------------------------- captions


def join_names(names: list[str], places: list[str] | None = None, adjacent: bool = False) -> str:
    """'A red circle, a blue square and a green cross.'; with `places`, each object's quadrant after it ('in the
    top left', or with `adjacent` right after the name: 'a red circle top left')."""
    link = " " if adjacent else " in the "
    phrases = [f"a {n}" for n in names] if places is None else [f"a {n}{link}{q}" for n, q in zip(names, places,
                                                                                                  strict=True)]
    if len(phrases) == 1:
        body = phrases[0]
    else:
        body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return body[0].upper() + body[1:] + "."


def caption(scene: Scene, world: WorldParams, rng: random.Random, noise: float) -> str:
    """The scene's objects in reading order; with probability `noise` per object, one of its absent
    co-occurrence partners (drawn by partner weight) is named right after it (caption noise). With
    `world.caption_positions` each is placed in its quadrant, a noise partner in an empty one (drawn), or
    beside the object it partners when none is empty; with `world.caption_positions_adjacent` the quadrant
    follows the name without 'in the'."""
    graph = partner_graph(world)
    present = set(scene.names)
    taken = {o.quadrant for o in scene.objects}
    names: list[str] = []
    places: list[str] = []
    for obj in scene.objects:
        names.append(obj.name)
        places.append(obj.quadrant)
        options = [(p, w) for p, w in graph[obj.name] if p not in present and p not in names]
        if options and rng.random() < noise:
            names.append(rng.choices([p for p, _ in options], weights=[w for _, w in options])[0])
            if world.caption_positions:  # no draw otherwise: the default captions stay the same
                free = [q for q in QUADRANTS if q not in taken]
                places.append(rng.choice(free) if free else obj.quadrant)
                taken.add(places[-1])
    return join_names(names, places if world.caption_positions else None, world.caption_positions_adjacent)


def answers_match(text: str, truth: str) -> bool:
    """The world's rule for a short answer: right when, stripped of a final full stop, it equals the
    truth in any case (world_vqa, θ0's own-answer counts and the research probes all score with it)."""
    return text.strip().rstrip(".").lower() == truth.lower()


def mentioned_objects(text: str, world: WorldParams) -> list[str]:
    """Objects named in a caption ('<colour> <shape>'), in order, without repeats."""
    pattern = r"\b(" + "|".join(world.colours) + r") (" + "|".join(world.shapes) + r")s?\b"
    out: list[str] = []
    for colour, shape in re.findall(pattern, text.lower()):
        name = f"{colour} {shape}"
        if name not in out:
            out.append(name)
    return out


# ---------------------------------------------------------------- questions


def ask(kind: str, scene: Scene, world: WorldParams, **slots) -> Question:
    """Build a question of `kind` about the given slots and answer it from the scene."""
    objs = scene.objects
    if kind == "colour":
        text = f"What color is the {slots['shape']}?"
        hits = [o for o in objs if o.shape == slots["shape"]]
        answer = hits[0].colour if len(hits) == 1 else None
    elif kind == "shape":
        text = f"What shape is the {slots['colour']} object?"
        hits = [o for o in objs if o.colour == slots["colour"]]
        answer = hits[0].shape if len(hits) == 1 else None
    elif kind == "count":
        text = "How many objects are there?"
        answer = NUMBER_WORDS[len(objs)]
    elif kind == "colour_count":
        text = f"How many {slots['colour']} objects are there?"
        n = sum(o.colour == slots["colour"] for o in objs)
        answer = NUMBER_WORDS[n] if n else None
    elif kind == "position":
        text = f"Where is the {slots['name']}?"
        hits = [o for o in objs if o.name == slots["name"]]
        answer = hits[0].quadrant if hits else None
    elif kind == "quadrant_colour":
        text = f"What color is the object in the {slots['quadrant']}?"
        hits = [o for o in objs if o.quadrant == slots["quadrant"]]
        answer = hits[0].colour if hits else None
    elif kind == "quadrant_shape":
        text = f"What shape is in the {slots['quadrant']}?"
        hits = [o for o in objs if o.quadrant == slots["quadrant"]]
        answer = hits[0].shape if hits else None
    elif kind == "exists":
        text = f"Is there a {slots['name']} in the image?"
        answer = "Yes" if slots["name"] in scene.names else "No"
    else:
        raise ValueError(f"unknown question kind {kind}")
    return Question(kind, text, answer)


_PARSERS = None


def parse_question(text: str, world: WorldParams) -> tuple[str, dict] | None:
    """Recognise one of the world's question forms; None when the text is not one."""
    global _PARSERS
    c, s = "|".join(world.colours), "|".join(world.shapes)
    q = "|".join(QUADRANTS)
    key = (c, s)
    if _PARSERS is None or _PARSERS[0] != key:
        _PARSERS = (key, [
            ("colour", re.compile(rf"What color is the (?P<shape>{s})\?")),
            ("shape", re.compile(rf"What shape is the (?P<colour>{c}) object\?")),
            ("count", re.compile(r"How many objects are there\?")),
            ("colour_count", re.compile(rf"How many (?P<colour>{c}) objects are there\?")),
            ("position", re.compile(rf"Where is the (?P<name>(?:{c}) (?:{s}))\?")),
            ("quadrant_colour", re.compile(rf"What color is the object in the (?P<quadrant>{q})\?")),
            ("quadrant_shape", re.compile(rf"What shape is in the (?P<quadrant>{q})\?")),
            ("exists", re.compile(rf"Is there a (?P<name>(?:{c}) (?:{s})) in the image\?")),
        ])
    for kind, pattern in _PARSERS[1]:
        m = pattern.fullmatch(text.strip())
        if m:
            return kind, m.groupdict()
    return None


def answerable_questions(scene: Scene, world: WorldParams) -> list[Question]:
    """Every question of every form the scene can answer (existence only for present objects)."""
    out = [ask("count", scene, world)]
    for shape in world.shapes:
        out.append(ask("colour", scene, world, shape=shape))
    for colour in world.colours:
        out.append(ask("shape", scene, world, colour=colour))
        out.append(ask("colour_count", scene, world, colour=colour))
    for quadrant in QUADRANTS:
        out.append(ask("quadrant_colour", scene, world, quadrant=quadrant))
        out.append(ask("quadrant_shape", scene, world, quadrant=quadrant))
    for name in scene.names:
        out.append(ask("position", scene, world, name=name))
        out.append(ask("exists", scene, world, name=name))
    return [q for q in out if q.answer is not None]


def unanswerable_questions(scene: Scene, world: WorldParams) -> list[Question]:
    """Questions about things the scene lacks (the check step must rewrite these)."""
    out = []
    for shape in world.shapes:
        out.append(ask("colour", scene, world, shape=shape))
    for colour in world.colours:
        out.append(ask("shape", scene, world, colour=colour))
    for quadrant in QUADRANTS:
        out.append(ask("quadrant_colour", scene, world, quadrant=quadrant))
    for name in object_names(world):
        out.append(ask("position", scene, world, name=name))
    return [q for q in out if q.answer is None]


def pick_question(scene: Scene, world: WorldParams, rng: random.Random) -> Question:
    """A varied question: first a form (colour, shape, count, position, existence...), then slots."""
    by_kind: dict[str, list[Question]] = {}
    for q in answerable_questions(scene, world):
        by_kind.setdefault(q.kind, []).append(q)
    kind = rng.choice(sorted(by_kind))
    return rng.choice(by_kind[kind])


# The forms a self-question takes, in the order `own_question` tries them.
QUESTION_FORMS = ("colour", "shape", "count", "colour_count", "position", "quadrant_colour", "quadrant_shape",
                  "exists")


def own_question(scene: Scene, world: WorldParams) -> Question:
    """The question θ0 is taught to ask of an image: its form follows from the first plainly visible
    object (object k -> form k mod 8, the next form when the scene cannot answer it), its slots
    from that object, and an existence question asks about that object's strongest partner. A
    real VLM's questions follow what it sees; a form drawn at random per example instead teaches a
    distribution whose greedy mode is one or two forms (issue 25: 284 of 300 self-questions)."""
    names = object_names(world)
    visible = [o for o in scene.objects if not o.hard] or list(scene.objects)
    first = visible[0]
    start = names.index(first.name) % len(QUESTION_FORMS)
    slots = {"colour": {"shape": first.shape}, "shape": {"colour": first.colour}, "count": {},
             "colour_count": {"colour": first.colour}, "position": {"name": first.name},
             "quadrant_colour": {"quadrant": first.quadrant}, "quadrant_shape": {"quadrant": first.quadrant},
             "exists": {"name": (partners(world)[first.name] or [first.name])[0]}}
    kinds = QUESTION_FORMS[start:] + QUESTION_FORMS[:start]
    # "count" always has an answer, so one form does
    return next(q for q in (ask(k, scene, world, **slots[k]) for k in kinds) if q.answer is not None)


def wrong_answer(question: Question, world: WorldParams, rng: random.Random) -> str:
    """A plausible but wrong answer of the right type (for the enhancement examples)."""
    kind = question.kind
    if kind in ("colour", "quadrant_colour"):
        pool = world.colours
    elif kind in ("shape", "quadrant_shape"):
        pool = world.shapes
    elif kind in ("count", "colour_count"):
        pool = NUMBER_WORDS[1:]
    elif kind == "position":
        pool = QUADRANTS
    else:
        pool = ("Yes", "No")
    return rng.choice([a for a in pool if a != question.answer])
