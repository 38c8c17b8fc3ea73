"""research/formats.py: a caption's belief against a POPE answer's, read from eval's answers.jsonl."""

import json
from pathlib import Path

from sena_cli.config import load_params
from sena_cli.world.scenes import absent_partners, object_names

REPO = Path(__file__).resolve().parents[1]



def _answers(path: Path, caption_names: list[str], said_yes: set[str], asked: list[str], truth: list[str]) -> Path:
    rows = [{"benchmark": "chair", "image": "a.png", "caption": "", "mentioned": caption_names, "truth": truth},
            {"benchmark": "dev_chair", "image": "a.png", "caption": "", "mentioned": [], "truth": truth}]
    for split in ("pope_random", "pope_adversarial"):  # the splits repeat a question: counted once
        rows += [{"benchmark": split, "image": "a.png", "text": f"Is there a {name} in the image?",
                  "label": "yes" if name in truth else "no", "parsed": "yes" if name in said_yes else "no",
                  "answer": ""} for name in asked]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_each_object_is_counted_once_by_its_kind_and_whether_the_caption_names_it(research, tmp_path):
    formats, world = research("formats"), load_params(REPO / "params.yaml").world
    truth = ["red cross"]
    mate, other_mate, named_mate = absent_partners(truth, world)
    stranger = next(n for n in object_names(world)
                    if n not in truth + absent_partners(truth, world))
    asked = ["red cross", mate, other_mate, named_mate, stranger]
    theta0 = formats.beliefs(_answers(tmp_path / "0.jsonl", ["red cross", mate, named_mate],
                                      {"red cross", mate, named_mate, stranger}, asked, truth), dev=False, world=world)
    cells = formats.agreement(theta0)
    assert cells["absent partner, named"] == (2, 2)
    assert cells["absent partner, not named"] == (0, 1)
    assert cells["other absent, not named"] == (1, 1)
    assert cells["present, named"] == (1, 1)
    assert sum(n for _, n in cells.values()) == len(asked)
    # θ3's caption drops one partner and its POPE answer follows; one partner stays named and "yes", one
    # unnamed and "no".
    theta3 = formats.beliefs(_answers(tmp_path / "3.jsonl", ["red cross", named_mate],
                                      {"red cross", named_mate, stranger}, asked, truth), dev=False, world=world)
    assert formats.transfer(theta0, theta3) == {"caption stopped naming it": [1, 1, 1],
                                                "caption unchanged or started": [1, 0, 2]}


def test_dev_reads_the_dev_set_only(research, tmp_path):
    formats, world = research("formats"), load_params(REPO / "params.yaml").world
    answers = _answers(tmp_path / "a.jsonl", ["red cross"], {"red cross"}, ["red cross"], ["red cross"])
    assert formats.beliefs(answers, dev=True, world=world) == {}  # no dev_pope rows: nothing asked on dev


def test_existence_answers_counts_differing_gen_answers_to_existence_questions_only(research, tmp_path):
    def record(kind, question, clean, corrupted):
        return {"type": kind, "question": question, "enhanced_answer": clean, "corrupted_answer": corrupted}
    rows = [record("gen", "Is there a red cross?", "Yes", "No"),
            record("gen", "Is there a blue circle?", "No", "no"),  # identical but for case: dropped as identical
            record("gen", "What shape is red?", "cross", "circle"),
            record("des", "Is there a red cross?", "A red cross.", "A blue cross.")]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert research("formats").existence_answers(path) == {("Yes", "No"): 1}
