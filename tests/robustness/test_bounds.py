"""Impossible values in an artifact a stage reads, through the real CLI (issue 23): refused in one
line naming the file, the line and the field, before any model loads (so before any training step)."""

import json

import pytest

from sena_cli.bounded import limits
from tests.robustness.helpers import fails
from tests.robustness.test_schemas import _edited, _no_model

MAX_TEXT_CHARS = limits().max_text_chars


def _line(n, change):
    """An edit of a JSON-lines file: `change(record)` applied to its record on line n."""
    def edit(text):
        lines = text.splitlines()
        record = json.loads(lines[n - 1])
        change(record)
        lines[n - 1] = json.dumps(record)
        return "\n".join(lines) + "\n"
    return edit


PAIRS = "data/iter1/pairs/pairs.jsonl"


@pytest.mark.parametrize("artifact, change, command, expected", [
    (PAIRS, lambda r: r.update(ref_chosen_logp=12.5), "train",
     "data/iter1/pairs/pairs.jsonl: line 2: 'ref_chosen_logp' must be a log-probability (a finite number <= 0), "
     "got 12.5; rerun `sena pair --iter 1`"),
    (PAIRS, lambda r: r.update(ref_rejected_logp=1e300), "train",
     "data/iter1/pairs/pairs.jsonl: line 2: 'ref_rejected_logp' must be a log-probability (a finite number <= 0), "
     "got 1e+300; rerun `sena pair --iter 1`"),
    (PAIRS, lambda r: r.update(ref_chosen_logp_mean=0.25), "train",
     "data/iter1/pairs/pairs.jsonl: line 2: 'ref_chosen_logp_mean' must be a log-probability"),
    (PAIRS, lambda r: r.update(chosen="a" * (MAX_TEXT_CHARS + 1)), "train",
     f"data/iter1/pairs/pairs.jsonl: line 2: 'chosen' must be text of at most limits.max_text_chars characters, got "
     f"\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... ({MAX_TEXT_CHARS + 1} characters); rerun `sena pair --iter 1`"),
    ("data/iter1/qa/records.jsonl", lambda r: r.update(corrupted_answer="b" * (MAX_TEXT_CHARS + 1)), "pair",
     "data/iter1/qa/records.jsonl: line 2: 'corrupted_answer' must be text of at most limits.max_text_chars "
     "characters"),
    ("data/iter1/noised/index.jsonl", lambda r: r.update(seed=-3), "qa",
     "data/iter1/noised/index.jsonl: line 2: 'seed' must be a whole number in [0, 9223372036854775807], got -3; "
     "rerun `sena noise --iter 1`"),
    ("data/iter1/sample/manifest.jsonl", lambda r: r.update(width=0), "noise",
     "data/iter1/sample/manifest.jsonl: line 2: 'width' must be a whole number >= 1, got 0; rerun "
     "`sena sample --iter 1`"),
    ("data/iter1/noised/index.jsonl", lambda r: r.update(pictures=[[0, 3]] + r["pictures"][1:]), "qa",
     "data/iter1/noised/index.jsonl: line 2: 'pictures[0]' must be a list of whole numbers >= 1, got [0, 3]; "
     "rerun `sena noise --iter 1`"),
])
def test_impossible_values_are_refused_naming_file_line_and_field(project, monkeypatch, artifact, change, command,
                                                                   expected):
    _no_model(monkeypatch)
    with _edited(project / artifact, _line(2, change)):
        fails(project, monkeypatch, [command, "--iter", "1"], expected)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(sqrt_alpha_bar=1.5), "'sqrt_alpha_bar' must be a number in (0, 1], got 1.5"),
    (lambda d: d.update(timestep=-1), "'timestep' must be a whole number >= 0, got -1"),
])
def test_impossible_noise_settings_recorded_are_refused(project, monkeypatch, change, expected):
    def edit(text):
        data = json.loads(text)
        change(data)
        return json.dumps(data)

    _no_model(monkeypatch)
    with _edited(project / "data/iter1/noised/info.json", edit):
        fails(project, monkeypatch, ["qa", "--iter", "1"],
              f"data/iter1/noised/info.json: {expected}; rerun `sena noise --iter 1`")
