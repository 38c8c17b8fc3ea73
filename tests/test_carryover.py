"""research/carryover.py: the ideal description pairs its diagnostic trains on."""

import random
from pathlib import Path

from sena_cli.config import load_params
from sena_cli.world.language import mentioned_objects
from sena_cli.world.scenes import absent_partners, object_names, partner_graph

REPO = Path(__file__).resolve().parents[1]



def test_the_rejected_caption_differs_from_the_chosen_by_one_absent_partner_only(research):
    carryover, world = research("carryover"), load_params(REPO / "params.yaml").world
    graph, rng = partner_graph(world), random.Random(0)
    present = ["red cross", "blue circle"]
    stranger = next(n for n in object_names(world)
                    if n not in present + absent_partners(present, world))
    for _ in range(50):
        chosen, rejected = carryover.ideal_pair(["red cross", stranger, "blue circle"], present, graph, rng)
        assert mentioned_objects(chosen, world) == present  # the caption's hallucination removed, order kept
        named = mentioned_objects(rejected, world)
        extra = [n for n in named if n not in present]
        assert len(extra) == 1 and extra[0] in absent_partners(present, world)
        # inserted right after the object it partners, the others in order
        at = named.index(extra[0])
        assert extra[0] in dict(graph[named[at - 1]]) and [n for n in named if n != extra[0]] == present
        swapped = mentioned_objects(carryover.ideal_pair(["red cross", "blue circle"], present, graph, rng,
                                                         replace=True)[1], world)
        assert len(swapped) == 2 and len([n for n in swapped if n not in present]) == 1


def test_no_pair_without_a_present_named_object_or_an_absent_partner(research):
    carryover, world = research("carryover"), load_params(REPO / "params.yaml").world
    graph, rng = partner_graph(world), random.Random(0)
    assert carryover.ideal_pair(["red cross"], ["blue circle"], graph, rng) is None
    everything = object_names(world)
    assert carryover.ideal_pair(["red cross"], everything, graph, rng) is None


def test_recall_split_separates_objects_that_partner_another_present_one(research, tmp_path):
    import json

    carryover, world = research("carryover"), load_params(REPO / "params.yaml").world
    mate = absent_partners(["red cross"], world)[0]  # a partner of the red cross, present here
    assert "red cross" in absent_partners([mate], world)  # and the red cross one of its partners
    pair = ["red cross", mate]
    loner = next(n for n in object_names(world) if n not in pair + absent_partners(pair, world)
                 and not set(pair) & set(absent_partners([n], world)))
    row = {"benchmark": "chair", "image": "a.png", "mentioned": ["red cross", loner], "truth": [*pair, loner]}
    other = {**row, "benchmark": "dev_chair", "mentioned": []}
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")
    # the two partners: one of two named; the loner, partner of neither: named
    assert carryover.recall_split(answers, world) == (0.5, 1.0)
