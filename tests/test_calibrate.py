"""research/calibrate.py: θ0's calibration table checks the targets docs/world.md fixed, no others."""

import json
import math
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]



def test_the_targets_are_the_ones_docs_world_md_fixed(research):
    targets = research("calibrate").TARGETS
    text = (REPO / "docs" / "world.md").read_text()
    fixed = text[text.index("## Calibration targets for θ0"):text.index("## Calibration of θ0")]
    f1 = re.search(r"\| POPE F1 random / popular / adversarial \| ([\d.]+) / ([\d.]+) / ([\d.]+), each ± ([\d.]+)",
                   fixed)
    centre, tol = [float(x) for x in f1.groups()[:3]], float(f1.group(4))
    for split, c in zip(("random", "popular", "adversarial"), centre):
        assert targets[f"pope.{split}.f1"] == (round(c - tol, 2), round(c + tol, 2))
    assert targets["random_minus_adversarial_f1"] == (float(re.search(r"by at least ([\d.]+)", fixed).group(1)),
                                                      math.inf)
    yes = re.search(r"POPE adversarial yes-ratio \| ([\d.]+)–([\d.]+)", fixed)
    assert targets["pope.adversarial.yes_ratio"] == (float(yes.group(1)), float(yes.group(2)))
    chair = re.search(r"CHAIR_i of captions \| ([\d.]+)–([\d.]+)", fixed)
    assert targets["chair.chair_i"] == (float(chair.group(1)), float(chair.group(2)))
    short = re.search(r"short-answer accuracy [^|]*\| ([\d.]+)–([\d.]+)", fixed)
    assert targets["vqa.accuracy"] == (float(short.group(1)), float(short.group(2)))
    assert targets["partner_yes_ratio"] == (float(re.search(r"at least (\d+)×", fixed).group(1)), math.inf)


def _run(seed, adversarial_f1, partner, other):
    pope = {s: {"accuracy": 0.9, "precision": 0.9, "recall": 0.85, "f1": f, "yes_ratio": 0.46}
            for s, f in (("random", 0.87), ("popular", 0.86), ("adversarial", adversarial_f1))}
    pope["partner"] = {"yes_rate": partner, "other_yes_rate": other}
    pope["n"] = {"partner": {"yes_rate": 1000, "other_yes_rate": 800}}
    chair = {"chair_i": 0.1, "recall": 0.7, "partner": {"rate": 0.02, "share": 0.6}, "n": {"partner": {"rate": 1900}}}
    return {"seed": seed, "world_cal": {"pope": pope, "chair": chair, "vqa": {"accuracy": 0.78}},
            "captions": {k: {"hallucinated": 10, "partners": 6, "partner_share": 0.6} for k in ("clean", "corrupted")},
            "enhancement": {"right_to_wrong": 3, "wrong_to_right": 4, "direct_right": 240, "enhanced_right": 241,
                            "parsed": 300, "questions": 300}, "seconds": 600}


def test_the_table_ticks_a_theta0_inside_every_target_and_crosses_one_outside(research, tmp_path):
    calibrate = research("calibrate")
    for seed, run in ((0, _run(0, 0.84, 0.12, 0.04)), (1, _run(1, 0.80, 0.12, 0.08))):
        (tmp_path / f"theta0-{seed}").mkdir()
        (tmp_path / f"theta0-{seed}" / "calibration.json").write_text(json.dumps(run))
    rows = {line.split(" | ")[0].strip("| "): line for line in calibrate.table(tmp_path).splitlines()}
    assert rows["pope.adversarial.f1"].endswith("| 0.840 ✓ | 0.800 ✗ |")
    assert rows["random_minus_adversarial_f1"].endswith("| 0.030 ✓ | 0.070 ✓ |")
    assert rows["partner_yes_ratio"].endswith("| 3.000 ✓ | 1.500 ✗ |")
    assert "0.120 ± 0.010 (1000)" in rows["POPE yes to an absent partner (± s.e., n)"]


def test_the_partner_share_probe_corrupts_at_the_papers_t_whatever_params_yaml_ships(research):
    from sena_cli.config import NoiseParams

    calibrate = research("calibrate")
    assert calibrate.PROBE_TIMESTEP == NoiseParams().timestep == 600  # issue 25's deliverable 2: "the t = 600 input"
    assert f"clean → corrupted (t = {calibrate.PROBE_TIMESTEP})" in (REPO / "docs" / "world.md").read_text()


def test_a_candidate_recipe_is_given_as_nested_params_read_as_yaml(research):
    calibrate = research("calibrate")
    layer = calibrate.parse_sets(["base.steps=4500", "world.partner_weights=[0.6, 0.4]", "base.lr=5e-4"])
    assert layer == {"base": {"steps": 4500, "lr": 5e-4}, "world": {"partner_weights": [0.6, 0.4]}}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        calibrate.parse_sets(["base.steps"])


def test_a_run_directory_refuses_another_candidates_params(research, tmp_path):
    calibrate = research("calibrate")
    (tmp_path / "theta0-0").mkdir()
    (tmp_path / "theta0-0" / "set.json").write_text(json.dumps({"base": {"steps": 4500}}))
    with pytest.raises(SystemExit, match="its own --out"):
        calibrate.run(tmp_path, 0, {"base": {"steps": 5000}})
