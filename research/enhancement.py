"""Does θ0's answer enhancement read the description it is given? The method's request, with the truth laid in.

    python research/enhancement.py --run /work/calib/v13/theta0-0      # any project with models/iter0

A diagnostic for docs/results.md (readings 10–12). The method asks θ0 to improve its own answer "using the
description", and issue 25's deliverable 3 asks that this keep right answers and mend wrong ones. On the dev
set's short-answer questions (data/world/eval_dev/vqa.jsonl), per question form, θ0:
- answers directly (the method's `gen` answer);
- enhances its own answer with its own description (the method's request, what research/calibrate.py counts);
- enhances its own answer with the *true* description: the world's caption of the image, without noise,
  in the project's own caption format (with `world.caption_positions`, each object's quadrant);
- enhances a *wrong* answer (language.wrong_answer, seeded) with the true description;
- two controls, its own answer given: an *empty* description (what enhancement does with the image alone,
  a second look) and *another image's* true description (how far it follows a description that is wrong);
- enhances a wrong answer with the true description beside a *blank* image (the scene's background): the
  condition of θ0's own reading examples (`world.reading_share`), where only the text can answer; chance is
  about 1/3 on a form with four answers.
An enhancer that reads the description answers the true description's conditions and the blank image's from
it wherever the caption states the answer (the colour of a shape, the shape of a colour; with positions, where
an object is), whatever answer it is given. One that ignores it keeps the given answer or re-answers from the image.

What a perfect reader could gain (reading 11): the answer θ0's own description states (`described_answer`:
the world's own rules applied to the objects, and places, the description names; no answer where it names
none), against the direct answer. An enhancer that takes what the description states, and keeps the given
answer where it states nothing, gains the questions its description answers right and its direct answer
wrong, and loses those whose right direct answer the description contradicts. Nothing here is
chosen or shipped.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

CONDITIONS = ("direct", "own description", "true description", "true description, wrong answer",
              "empty description", "another image's description", "blank image, true description, wrong answer")
# Not an enhancement: the answer θ0's own description states, read by the world's rules.
STATED = "stated by own description"


def described_answer(text: str, kind: str, slots: dict, world) -> str | None:
    """The answer a description states to a question of `kind`: the world's own `ask` on the scene made of
    the objects it names ('a red circle', with world.caption_positions 'a red circle in the top left' or, adjacent,
    'a red circle top left'). None where it states none: an object it does not name, a place when it names no
    places, or two candidates."""
    from sena_cli.world.instruct import PLACED_FORMS
    from sena_cli.world.language import NUMBER_WORDS, ask
    from sena_cli.world.scenes import QUADRANTS, Scene, SceneObject

    pattern = (r"\b(" + "|".join(world.colours) + r") (" + "|".join(world.shapes) + r")\b(?: (?:in the )?("
               + "|".join(QUADRANTS) + r"))?")
    objects: list = []
    for colour, shape, place in re.findall(pattern, text.lower()):
        if all(o.name != f"{colour} {shape}" for o in objects):
            objects.append(SceneObject(colour, shape, place, (0, 0, 0, 0)))
    if kind in PLACED_FORMS and not all(o.quadrant for o in objects):
        return None
    if kind == "count" and len(objects) >= len(NUMBER_WORDS):
        return None
    return ask(kind, Scene(tuple(objects), (0, 0, 0)), world, **slots).answer


def tally(rows: list[dict], answers: dict[str, list[str]], wrong: list[str]) -> dict[str, dict]:
    """Per question form (and `all`): questions, the accuracy of each condition and of the answer the own
    description states (`answers[STATED]`, "" where none), how often the enhanced answer under the wrong given
    answer is that wrong answer (`kept wrong`), and, as counts, the questions the stated answer gets right where
    the direct one is wrong (`stated only`) and those where the direct answer is right and the description
    states another (`contradicted`; where it states nothing, a reader keeps the answer it is given)."""
    from sena_cli.world.language import answers_match

    out: dict[str, dict] = {}
    for i, row in enumerate(rows):
        right = {c: answers_match(answers[c][i], row["answer"]) for c in (*CONDITIONS, STATED)}
        for form in (row["kind"], "all"):
            cell = out.setdefault(form, {"questions": 0, **dict.fromkeys((*CONDITIONS, STATED), 0), "kept wrong": 0,
                                         "stated only": 0, "contradicted": 0})
            cell["questions"] += 1
            for condition, ok in right.items():
                cell[condition] += ok
            cell["kept wrong"] += answers_match(answers["true description, wrong answer"][i], wrong[i])
            cell["stated only"] += right[STATED] and not right["direct"]
            cell["contradicted"] += right["direct"] and bool(answers[STATED][i]) and not right[STATED]
    counts = ("questions", "stated only", "contradicted")
    return {form: {k: (v / c["questions"] if k not in counts else v) for k, v in c.items()}
            for form, c in out.items()}


def measure(run: Path, seed: int = 0) -> dict:
    import torch

    from sena_cli.bench.world import WorldEvalSet
    from sena_cli.config import load_params
    from sena_cli.method import prompts as P
    from sena_cli.vlm import VLM
    from sena_cli.world.language import ask, caption, parse_question, wrong_answer
    from sena_cli.world.scenes import Scene, draw_scene

    torch.set_num_threads(2)
    params = load_params(run / "params.yaml")
    vlm = VLM.from_params(params.model, run / "models" / "iter0", dtype=params.model.dtype)
    dev = WorldEvalSet(run / "data" / "world", "eval_dev", params.world.eval_dev)
    rows, qp, world = dev.rows("vqa.jsonl"), params.qa.prompts, params.world
    bs, new = params.eval.batch_size, params.eval.max_new_tokens
    images = [dev.image(r["image"]) for r in rows]
    asks = [P.short_answer_prompt(qp, r["text"]) for r in rows]
    rng = random.Random(seed)
    wrong = []
    for r in rows:
        kind, slots = parse_question(r["text"], world)
        wrong.append(wrong_answer(ask(kind, dev.truth[r["image"]], world, **slots), world, rng))
    true = [caption(dev.truth[r["image"]], world, random.Random(0), 0.0) for r in rows]
    blank = [draw_scene(Scene((), dev.truth[r["image"]].background), world.image_size) for r in rows]
    direct = vlm.generate(images, asks, max_new_tokens=new, batch_size=bs)
    own = vlm.generate(images, [P.description_prompt(qp, qp.describe_instructions[0])] * len(rows),
                       max_new_tokens=new, batch_size=bs)

    def enhanced(descriptions: list[str], given: list[str], pictures: list | None = None) -> list[str]:
        texts = vlm.generate(pictures or images,
                             [P.enhance_prompt(qp, d, a, g) for d, a, g in zip(descriptions, asks, given)],
                             max_new_tokens=new, batch_size=bs)
        return [P.parse_improved(t, g)[0] for t, g in zip(texts, given, strict=True)]

    stated = []
    for r, description in zip(rows, own, strict=True):
        kind, slots = parse_question(r["text"], world)
        stated.append(described_answer(description, kind, slots, world) or "")
    # another image's description: the next row about a different image (rows come a few per image)
    other = [next(true[(i + k) % len(rows)] for k in range(1, len(rows) + 1)
                  if rows[(i + k) % len(rows)]["image"] != r["image"]) for i, r in enumerate(rows)]
    answers = {STATED: stated, "direct": direct, "own description": enhanced(own, direct),
               "true description": enhanced(true, direct), "true description, wrong answer": enhanced(true, wrong),
               "empty description": enhanced([""] * len(rows), direct),
               "another image's description": enhanced(other, direct),
               "blank image, true description, wrong answer": enhanced(true, wrong, blank)}
    result = {"run": str(run), "caption_positions": world.caption_positions, "forms": tally(rows, answers, wrong)}
    if world.caption_positions:
        result["place lookup"] = place_lookup(vlm, dev, params, random.Random(seed))
    return result


def place_lookup(vlm, dev, params, rng: random.Random) -> dict[str, dict]:
    """Does θ0 find *the* named object's place in a description, or copy *a* place? Beside a blank image, for
    every object of every dev short-answer image: "Where is the <object>?" with the scene's true description
    and a wrong given answer (the reading examples' condition), scored by the object's rank in the
    description, "k of n". A lookup scores alike at every rank; a copy of one place, or of the order places
    usually come in, falls as n grows."""
    from sena_cli.method import prompts as P
    from sena_cli.world.language import answers_match, ask, caption, wrong_answer
    from sena_cli.world.scenes import Scene, draw_scene

    world, qp = params.world, params.qa.prompts
    items = []
    for name in sorted({r["image"] for r in dev.rows("vqa.jsonl")}):
        scene = dev.truth[name]
        for k, obj in enumerate(scene.objects, 1):  # captions name the objects in this order
            q = ask("position", scene, world, name=obj.name)
            items.append((scene, q, wrong_answer(q, world, rng), f"{k} of {len(scene.objects)}"))
    texts = vlm.generate([draw_scene(Scene((), s.background), world.image_size) for s, *_ in items],
                         [P.enhance_prompt(qp, caption(s, world, random.Random(0), 0.0),
                                           P.short_answer_prompt(qp, q.text), w) for s, q, w, _ in items],
                         max_new_tokens=params.eval.max_new_tokens, batch_size=params.eval.batch_size)
    out: dict[str, dict] = {}
    for (_, q, w, rank), text in zip(items, texts, strict=True):
        cell = out.setdefault(rank, {"questions": 0, "right": 0})
        cell["questions"] += 1
        cell["right"] += answers_match(P.parse_improved(text, w)[0], q.answer)
    return dict(sorted(out.items(), key=lambda kv: (kv[0].split()[-1], kv[0])))


def table(result: dict) -> str:
    lines = ["| form | questions | " + " | ".join(CONDITIONS) + f" | kept the wrong answer | {STATED} "
             "| stated right, direct wrong / direct right, stated another |",
             "|---|---|" + "---|" * (len(CONDITIONS) + 3)]
    for form, cell in sorted(result["forms"].items(), key=lambda kv: kv[0] == "all"):
        lines.append(f"| {form} | {cell['questions']} | " + " | ".join(f"{cell[c]:.3f}" for c in CONDITIONS)
                     + f" | {cell['kept wrong']:.3f} | {cell[STATED]:.3f} | {cell['stated only']} / "
                     f"{cell['contradicted']} |")
    if "place lookup" in result:
        lines += ["", "| positions beside a blank image, true description, wrong answer: object's rank in it | "
                  "questions | right |", "|---|---|---|"]
        lines += [f"| {rank} | {c['questions']} | {c['right'] / c['questions']:.2f} |"
                  for rank, c in result["place lookup"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a project with models/iter0 and its world")
    args = parser.parse_args()
    result = measure(args.run)
    (args.run / "enhancement.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.run} (world.caption_positions {result['caption_positions']})")
    print(table(result))


if __name__ == "__main__":
    main()
