"""Do θ's captions and its yes/no answers hold one belief about an image? Read from a study's runs.

    python research/formats.py [--out study] [--variant full] [--dev] [--to 3]

The loop trains POPE-style answers only through descriptions (a pair whose answer is exactly "Yes" or "No"
is dropped, as the method says), so POPE can move only as far as a caption's belief and a yes/no answer's
belief are one. For every run of VARIANT under OUT/runs and each of θ0 and θK (K = `--to`, default 3), on
the images that have both a caption (world_chair) and POPE questions (world_pope; `--dev`: world_dev's),
each (image, object) asked about once (the three POPE splits share questions):
- P(POPE "yes" | the caption names the object) against P(POPE "yes" | it does not), for absent and for
  present objects: how much the two formats agree;
- θ0 → θK: of the absent partners a caption stopped naming, how many POPE answers turned from "yes" to "no",
  against the same turn where the caption did not change.
- the loop's own existence questions ("Is there ...?", record type gen, iterations 1 to K): how often the clean
  (enhanced) and the corrupted answer differ, and how: the pairs the method's yes/no filter drops.
Eval's answers.jsonl (data/iterK/eval) and qa's records.jsonl (data/iterK/qa) are the only inputs.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path


def beliefs(answers_file: Path, dev: bool, world) -> dict[tuple[str, str], dict]:
    """(image, object) -> {"present", "partner" (an absent partner of a present object), "named" (by the
    caption), "yes" (POPE)} for every POPE question."""
    from sena_cli.world.language import parse_question
    from sena_cli.world.scenes import absent_partners

    pope_prefix, chair_name = ("dev_pope_", "dev_chair") if dev else ("pope_", "chair")
    captions, truth, asked = {}, {}, {}
    for line in answers_file.read_text().splitlines():
        row = json.loads(line)
        if row["benchmark"] == chair_name:
            captions[row["image"]] = set(row["mentioned"])
            truth[row["image"]] = row["truth"]
        elif row["benchmark"].startswith(pope_prefix):
            question = parse_question(row["text"], world)
            if question and question[0] == "exists":
                asked[(row["image"], question[1]["name"])] = {"present": row["label"] == "yes",
                                                               "yes": row["parsed"] == "yes"}
    return {key: {**v, "named": key[1] in captions[key[0]],
                  "partner": key[1] in absent_partners(truth[key[0]], world)}
            for key, v in asked.items() if key[0] in captions}


def _kind(v: dict) -> str:
    return "present" if v["present"] else "absent partner" if v["partner"] else "other absent"


def agreement(b: dict) -> dict:
    """P(yes | named) and P(yes | not named) for present objects, absent partners and other absent
    objects, with their counts."""
    cells = defaultdict(lambda: [0, 0])
    for v in b.values():
        cell = cells[(_kind(v), v["named"])]
        cell[0] += v["yes"]
        cell[1] += 1
    return {f"{kind}, {'named' if named else 'not named'}": (cells[(kind, named)][0], cells[(kind, named)][1])
            for kind in ("absent partner", "other absent", "present") for named in (True, False)}


def transfer(b0: dict, bk: dict) -> dict:
    """Absent partners: POPE yes→no turns where the caption stopped naming the partner, and where it did not."""
    stopped, kept = [0, 0, 0], [0, 0, 0]  # yes at θ0, of those no at θK, all
    for key, v0 in b0.items():
        vk = bk.get(key)
        if not v0["partner"] or vk is None:
            continue
        group = stopped if (v0["named"] and not vk["named"]) else kept
        group[2] += 1
        if v0["yes"]:
            group[0] += 1
            group[1] += not vk["yes"]
    return {"caption stopped naming it": stopped, "caption unchanged or started": kept}


def existence_answers(records_file: Path) -> Counter:
    """(enhanced clean answer, corrupted answer) of the gen records whose question asks whether an object is
    there, where the two differ (the rest are dropped as identical)."""
    out: Counter = Counter()
    for line in records_file.read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "gen" and r["question"].startswith(("Is there", "Are there")):
            chosen, rejected = r["enhanced_answer"].strip(), r["corrupted_answer"].strip()
            if chosen.lower() != rejected.lower():
                out[(chosen, rejected)] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("study"))
    parser.add_argument("--variant", default="full")
    parser.add_argument("--dev", action="store_true", help="world_dev's captions and POPE instead of the test set's")
    parser.add_argument("--to", type=int, default=3, help="compare θ0 with this θK (default 3, the loop's last)")
    args = parser.parse_args()
    from sena_cli.config import load_params

    totals = {"θ0": defaultdict(lambda: [0, 0]), f"θ{args.to}": defaultdict(lambda: [0, 0])}
    turns = defaultdict(lambda: [0, 0, 0])
    existence: Counter = Counter()
    runs = sorted((args.out / "runs" / args.variant).glob("theta0-*/seed*"))
    for run in runs:
        world = load_params(run / "params.yaml").world
        b = {k: beliefs(run / f"data/iter{k}/eval/answers.jsonl", args.dev, world) for k in (0, args.to)}
        for label, k in (("θ0", 0), (f"θ{args.to}", args.to)):
            for cell, (yes, n) in agreement(b[k]).items():
                totals[label][cell][0] += yes
                totals[label][cell][1] += n
        for group, counts in transfer(b[0], b[args.to]).items():
            turns[group] = [a + c for a, c in zip(turns[group], counts)]
        for k in range(1, args.to + 1):
            records = run / f"data/iter{k}/qa/records.jsonl"
            if records.is_file():
                existence += existence_answers(records)
    print(f"{len(runs)} runs of {args.variant} under {args.out} ({'dev' if args.dev else 'test'} set)")
    print("| POPE \"yes\" rate | " + " | ".join(totals["θ0"]) + " |")
    print("|---" * (len(totals["θ0"]) + 1) + "|")
    for label, cells in totals.items():
        print(f"| {label} | " + " | ".join(f"{yes / n:.3f} ({yes}/{n})" if n else "–" for yes, n in cells.values())
              + " |")
    for group, (yes0, turned, n) in turns.items():
        print(f"absent partners, {group}: {n}; POPE yes at θ0 {yes0}, of them no at θ{args.to} {turned}"
              + (f" ({turned / yes0:.2f})" if yes0 else ""))
    print("the loop's existence questions, clean (enhanced) vs corrupted answer where they differ, "
          f"iterations 1-{args.to}: "
          + (", ".join(f"{c!r} over {r!r} {n}" for (c, r), n in existence.most_common()) or "none"))


if __name__ == "__main__":
    main()
