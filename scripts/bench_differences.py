"""The table of docs/benchmarks.md: sena's scores against the official code's, per benchmark.

Reads tests/bench/fixtures/*.json (written by scripts/official_bench_fixtures.py from the
official code), scores the same answers with sena and prints one Markdown row per benchmark:
official code, answers scored, distinct hard cases, metrics compared, largest difference.

    PYTHONPATH=. python scripts/bench_differences.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from sena_cli.bench import amber as amber_lib
from sena_cli.bench import chair as chair_lib
from sena_cli.bench import mmbench as mmb
from sena_cli.bench.pope import parse_yes_no, pope_metrics

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "bench" / "fixtures"


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _diff(sena: dict, official: dict) -> tuple[int, float]:
    a, b = _flat(sena), _flat(official)
    assert set(a) == set(b), (set(a) ^ set(b))
    return len(b), max(abs(a[k] - b[k]) for k in b)


def pope(f: dict):
    sena = {s: pope_metrics([parse_yes_no(a) for a in c["answers"]], [q["label"] for q in c["questions"]])
            for s, c in f["splits"].items()}
    answers = sum(len(c["answers"]) for c in f["splits"].values())
    return answers, len(set(f["answers"])), _diff(sena, {s: c["expected"] for s, c in f["splits"].items()})


def amber(f: dict):
    annotations = [None] * max(int(i) for i in f["annotations"])
    for i, a in f["annotations"].items():
        annotations[int(i) - 1] = a
    data = amber_lib.AmberData(f["queries"], annotations, f["relation"],
                               [w.split("\n")[0] for w in f["safe_words"].splitlines(keepends=True)])
    table = {frozenset((a, b)): s for a, b, s in f["similarity"]}

    def similar(a, b):
        return (1.0 if a == b else table.get(frozenset((a, b)), 0.0)) > f["threshold"]

    sena = amber_lib.score(f["responses"], f["nouns"], [q["id"] for q in f["queries"]], data, similar)
    return len(f["responses"]), len(set(f["responses"])), _diff(sena, f["expected"])


def mmbench(f: dict):
    import pandas as pd

    path = Path("/tmp/sena_mmbench_fixture.tsv")
    path.write_text(f["tsv_indexed"])
    rows = mmb.read_mmbench_tsv(path)
    by_index = dict(zip(pd.read_csv(io.StringIO(f["tsv_full"]), sep="\t")["index"], f["predictions"]))
    matched = {r.index: mmb.match_option(mmb.as_read_back(by_index[r.index]), r.options) for r in rows}
    sena = mmb.report(rows, mmb.group_hits(rows, matched))
    official = {("overall" if k == "Overall" else k): v for k, v in f["expected"].items()}
    return len(f["predictions"]), len(set(f["predictions"])), _diff(sena, official)


def chair(f: dict):
    chair = chair_lib.CocoChair(f["synonyms"], f["tokens"].__getitem__, f["singular"].__getitem__)
    names = {c["id"]: c["name"] for c in f["instances"]["categories"]}
    said, truths = [], []
    for image, caption in f["generated"].items():
        classes = [names[a["category_id"]] for a in f["instances"]["annotations"] if str(a["image_id"]) == image]
        refs = [a["caption"] for a in f["captions"]["annotations"] if str(a["image_id"]) == image]
        said.append(chair.mentions(caption))
        truths.append(chair.truth(classes, refs))
    sena = chair_lib.coco_chair_metrics(said, truths)
    sena = {k: sena[k] for k in ("chair_s", "chair_i")}
    return len(f["generated"]), len(set(f["generated"].values())), _diff(sena, f["expected"])


def main() -> None:
    print("| benchmark | official code | answers scored | distinct hard cases | metrics compared "
          "| largest difference |")
    print("|---|---|---|---|---|---|")
    for name, fixture_name, fn in (("POPE", "pope", pope), ("CHAIR (coco_chair)", "chair", chair),
                                   ("AMBER", "amber", amber), ("MMBench", "mmbench", mmbench)):
        fixture = json.loads((FIXTURES / f"{fixture_name}.json").read_text())
        answers, distinct, (metrics, diff) = fn(fixture)
        print(f"| {name} | `{fixture['official']}` {fixture['file']} | {answers} | {distinct} | {metrics} | {diff:g} |")


if __name__ == "__main__":
    main()
