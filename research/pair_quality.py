"""How often is a pair's chosen answer really better than its rejected one? (embedded world only)

The world knows the truth, so each pair can be judged: for `des` pairs, the objects each answer
names that are absent (hallucinations), absent co-occurrence partners among them, and present
(recall); for `gen` pairs whose question the
world can parse, whether each short answer is right. Reads data/iterK/pairs/pairs.jsonl and
data/world/truth/pool.jsonl of a run.

    python research/pair_quality.py [RUN_DIR] [--iter K]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sena_cli.config import load_params
from sena_cli.world.language import answers_match, ask, mentioned_objects, parse_question
from sena_cli.world.scenes import Scene, absent_partners


def judge(run: Path, k: int) -> dict:
    """The pairs of iteration k of the run in folder `run`, judged against the world's truth."""
    params = load_params(run / "params.yaml")
    world = params.world
    truth = {}
    for line in (run / "data/world/truth/pool.jsonl").read_text().splitlines():
        row = json.loads(line)
        truth[row["image"]] = Scene.from_dict(row)
    pairs = [json.loads(x) for x in (run / f"data/iter{k}/pairs/pairs.jsonl").read_text().splitlines()]
    des = {"chosen fewer hallucinations": 0, "same": 0, "chosen more hallucinations": 0,
           "chosen hallucinates at all": 0, "rejected hallucinates at all": 0, "pairs": 0,
           "chosen present named": 0, "rejected present named": 0,
           "chosen absent partners named": 0, "rejected absent partners named": 0,
           "chosen other absent named": 0, "rejected other absent named": 0}
    gen = {"chosen right, rejected wrong": 0, "both right": 0, "both wrong": 0, "chosen wrong, rejected right": 0,
           "parsed": 0, "pairs": 0}
    for p in pairs:
        scene = truth[Path(p["image"]).name]
        if p["type"] == "des":
            des["pairs"] += 1
            named = {side: set(mentioned_objects(p[side], world)) for side in ("chosen", "rejected")}
            mates = set(absent_partners(list(scene.names), world))
            for side, said in named.items():
                des[f"{side} present named"] += len(said & set(scene.names))
                des[f"{side} absent partners named"] += len(said & mates)
                des[f"{side} other absent named"] += len(said - set(scene.names) - mates)
            bad = [len(named[side] - set(scene.names)) for side in ("chosen", "rejected")]
            des["chosen fewer hallucinations" if bad[0] < bad[1] else "same" if bad[0] == bad[1]
                else "chosen more hallucinations"] += 1
            des["chosen hallucinates at all"] += bad[0] > 0
            des["rejected hallucinates at all"] += bad[1] > 0
            continue
        gen["pairs"] += 1
        question = p["prompt"].split("?")[0] + "?"
        parsed = parse_question(question, world)
        if parsed is None:
            continue
        answer = ask(parsed[0], scene, world, **parsed[1]).answer
        if answer is None:
            continue
        gen["parsed"] += 1
        right = [answers_match(p[side], answer) for side in ("chosen", "rejected")]
        key = {(True, False): "chosen right, rejected wrong", (True, True): "both right",
               (False, False): "both wrong", (False, True): "chosen wrong, rejected right"}[tuple(right)]
        gen[key] += 1
    return {"iteration": k, "des": des, "gen": gen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=Path("."))
    parser.add_argument("--iter", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(judge(args.run, args.iter), indent=2))


if __name__ == "__main__":
    main()
