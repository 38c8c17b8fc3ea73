"""research/probe.py: the linear read-out of θ0's image tokens and its hit rate at a given false-alarm rate."""

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]



def test_hit_rate_at_a_false_alarm_rate(research):
    probe = research("probe")
    absent = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    present = [2.5, 5.5, 8.5, 9.5]
    assert probe.hit_rate_at(0.1, present, absent) == 0.5  # threshold 8 (one absent score above): 8.5, 9.5
    assert probe.hit_rate_at(0.5, present, absent) == 0.75  # threshold 4: 5.5, 8.5, 9.5
    assert probe.hit_rate_at(1.0, present, absent) == 1.0  # past the end: the lowest absent score


def test_the_probe_reads_a_label_its_features_carry_and_not_one_they_do_not(research):
    probe = research("probe")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 8, generator=generator)
    carried = (features[:, 3] > 0).float()
    noise = (torch.rand(400, generator=generator) > 0.5).float()
    fitted = probe.fit_probe(features[:300], torch.stack([carried, noise], dim=1)[:300])
    said = probe.probe_scores(fitted, features[300:]) > 0
    assert (said[:, 0] == carried[300:].bool()).float().mean() > 0.95
    assert (said[:, 1] == noise[300:].bool()).float().mean() < 0.7


def test_faint_context_names_the_evidence_an_absent_object_could_be_mistaken_for(research):
    from sena_cli.world.scenes import Scene, SceneObject

    probe = research("probe")
    faint_red_circle = Scene((SceneObject("red", "circle", "top left", (0, 0, 9, 9), hard=True),), (255, 255, 255))
    plain_blue_cross = Scene((SceneObject("blue", "cross", "top left", (0, 0, 19, 19)),), (255, 255, 255))
    assert probe.faint_context(faint_red_circle, "red square") == "a faint object of its colour"
    assert probe.faint_context(faint_red_circle, "green circle") == "a faint object of its shape"
    assert probe.faint_context(faint_red_circle, "green square") == "another faint object"
    assert probe.faint_context(plain_blue_cross, "blue square") == "no faint object"
