"""Can description pairs move POPE at all in the miniature? One DPO iteration on ideal description pairs.

    python research/carryover.py run --study /work/study-v8 --out /work/carryover [--theta0 0]
    python research/carryover.py table --out /work/carryover

A diagnostic, not a candidate setting: nothing here is chosen or shipped. The loop trains POPE-style
answers only through description pairs (the method drops bare "Yes"/"No" answers), and docs/results.md
(reading 7) finds that its caption fixes reach θ0's yes/no answers about a tenth of the time. Is that the
loop's pairs or θ0 itself? Here iteration 1 of a study run (`STUDY/runs/VARIANT/theta0-T/seed0`, copied;
VARIANT full unless `--variant` says) is redone with ideal description pairs in place of the loop's:
- chosen: θ0's own clean caption of the image with every object the image lacks removed;
- rejected: the same caption with one absent co-occurrence partner of a named object inserted right after
  it (drawn by partner weight, as the world's caption noise draws one), the hallucination the method
  targets and nothing else.
The question (gen) records are left out. `sena pair`, `sena train` and `sena eval` of iteration 1 then run
with the study run's own code (its clone) and params. `table` compares θ1 with θ0 and with the loop's own
θ1 of the same run: caption partner rate, POPE partner "yes", and how often a caption fix reached POPE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ideal_pair(said: list[str], present: list[str], graph: dict, rng: random.Random,
               replace: bool = False) -> tuple[str, str] | None:
    """(chosen, rejected) captions from the objects a caption named (`said`, in order), the image's objects
    and the world's partner graph (object -> [(partner, weight)]); None when no named object is present or
    none of them has an absent partner. The partner is inserted after the object it partners, or with
    `replace` takes that object's place (the two captions then name as many objects)."""
    from sena_cli.world.language import join_names

    kept = [n for n in said if n in present]
    if not kept:
        return None
    options = [(i, p, w) for i, n in enumerate(kept) for p, w in graph[n] if p not in present]
    if not options:
        return None
    i, partner, _ = rng.choices(options, weights=[w for _, _, w in options])[0]
    return join_names(kept), join_names(kept[: i + (not replace)] + [partner] + kept[i + 1:])


def ideal_records(records: list[dict], truth: dict[str, list[str]], world, seed: int,
                  replace: bool = False) -> list[dict]:
    """The des records of a qa stage with their answers replaced by an ideal pair (the gen records dropped)."""
    from sena_cli.world.language import mentioned_objects
    from sena_cli.world.scenes import partner_graph

    graph, rng, out = partner_graph(world), random.Random(seed), []
    for r in records:
        if r["type"] != "des":
            continue
        pair = ideal_pair(mentioned_objects(r["clean_answer"], world), truth[Path(r["image"]).name], graph, rng,
                          replace)
        if pair:
            chosen, rejected = pair
            out.append({**r, "clean_answer": chosen, "enhanced_answer": chosen, "corrupted_answer": rejected,
                        "enhance_output": f"Improved Answer: {chosen}"})
    return out


def _sena(run: Path, *args: str) -> None:
    """A stage of the study run's own code (its clone on PYTHONPATH), as research/study.py runs them."""
    env = {**os.environ, "PYTHONPATH": str(run), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(run / "carryover.log", "a") as log:
        subprocess.run([str(Path(sys.executable).parent / "sena"), *args], cwd=run, env=env, check=True,
                       stdout=log, stderr=subprocess.STDOUT)


def run(study: Path, out: Path, theta0: int, train: dict, replace: bool = False, variant: str = "full") -> None:
    from sena_cli.config import load_params
    from sena_cli.frame import read_jsonl
    from sena_cli.world.scenes import Scene

    source = study / "runs" / variant / f"theta0-{theta0}" / "seed0"
    where = out / f"theta0-{theta0}"
    if (where / "carryover.json").is_file():  # written last: a run cut short is redone from the copy
        return
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(source, where, symlinks=True)
    for stale in ("data/iter1/pairs", "data/iter1/train", "data/iter1/eval", "models/iter1", "models/iter2",
                  "models/iter3", "data/iter2", "data/iter3", "metrics/iter1.json", "metrics/iter2.json",
                  "metrics/iter3.json"):
        path = where / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if train:  # laid over the run's params.yaml as research/study.py lays a candidate's keys
        layer = {"train": dict(train), "iterations": {"1": {"train": dict(train)}}}
        _research("study").set_params(where / "params.yaml", (layer,))
    params = load_params(where / "params.yaml")
    truth = {row["image"]: Scene.from_dict(row).names for row in read_jsonl(where / "data/world/truth/pool.jsonl")}
    records_file = where / "data/iter1/qa/records.jsonl"
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    ideal = ideal_records(records, truth, params.world, seed=theta0, replace=replace)
    records_file.write_text("".join(json.dumps(r) + "\n" for r in ideal))
    started = time.perf_counter()
    for stage in ("pair", "train", "eval"):  # θ0's eval (metrics/iter0.json, data/iter0/eval) is the study run's
        _sena(where, stage, "--iter", "1")
    info = {"source": str(source), "ideal_records": len(ideal), "train": train,
            "pairs": "replace" if replace else "insert",
            "seconds": round(time.perf_counter() - started)}
    (where / "carryover.json").write_text(json.dumps(info) + "\n")


def _research(name: str):
    """research/NAME.py as a module (research/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "research" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reached(formats, run: Path, world) -> str:
    """Absent partners a caption stopped naming θ0 → θ1 whose POPE "yes" turned "no", of those with a "yes"."""
    b0, b1 = (formats.beliefs(run / f"data/iter{k}/eval/answers.jsonl", False, world) for k in (0, 1))
    yes0, turned, _ = formats.transfer(b0, b1)["caption stopped naming it"]
    return f"{turned}/{yes0}"


def recall_split(answers_file: Path, world) -> tuple[float, float]:
    """Caption recall of the test images' present objects that are a partner of another present object, and
    of the rest: a prior against partners lowers the first more than the second; a check against the image
    lowers neither."""
    from sena_cli.world.scenes import partners

    mates, named, total = partners(world), [0, 0], [0, 0]
    for line in answers_file.read_text().splitlines():
        row = json.loads(line)
        if row["benchmark"] == "chair":
            for name in set(row["truth"]):
                group = 0 if any(name in mates[other] for other in row["truth"] if other != name) else 1
                named[group] += name in row["mentioned"]
                total[group] += 1
    return named[0] / total[0], named[1] / total[1]


def _arrow(metrics: list[dict], path: tuple, digits: int = 3) -> str:
    """θ0 → ideal θ1 (the loop's θ1) of one metrics key."""
    for part in path:
        metrics = [m[part] for m in metrics]
    return f"{metrics[0]:.{digits}f} → {metrics[1]:.{digits}f} ({metrics[2]:.{digits}f})"


def table(out: Path) -> None:
    from sena_cli.config import load_params

    formats = _research("formats")
    print("| θ0 | train; rejected | pairs | caption partner rate θ0 → θ1 (loop's θ1) "
          "| POPE partner yes θ0 → θ1 (loop's θ1) | POPE other absent yes | POPE adv. recall | CHAIR_i "
          "| caption recall | POPE adv. F1 | caption fixes that reached POPE (loop's) "
          "| caption recall θ0 → θ1: partners of a present object / the others |")
    print("|---" * 12 + "|")
    for where in sorted(out.glob("theta0-*")):
        if not (where / "carryover.json").is_file():
            continue
        info = json.loads((where / "carryover.json").read_text())
        loop = Path(info["source"])
        metrics = [json.loads(p.read_text()) for p in
                   (where / "metrics/iter0.json", where / "metrics/iter1.json", loop / "metrics/iter1.json")]
        pairs = json.loads((where / "data/iter1/pairs/stats.json").read_text())["pairs"]
        world = load_params(where / "params.yaml").world
        cells = [_arrow(metrics, path) for path in (("chair", "partner", "rate"), ("pope", "partner", "yes_rate"),
                                                     ("pope", "partner", "other_yes_rate"),
                                                     ("pope", "adversarial", "recall"), ("chair", "chair_i"),
                                                     ("chair", "recall"), ("pope", "adversarial", "f1"))]
        train = (", ".join(f"{k} {v}" for k, v in info["train"].items()) or "the loop's") + f"; {info['pairs']}"
        print(f"| {where.name} | {train} | {pairs} | " + " | ".join(cells)
              + f" | {_reached(formats, where, world)} ({_reached(formats, loop, world)}) | "
              + " / ".join(f"{a:.3f} → {b:.3f}" for a, b in zip(
                  *(recall_split(where / f"data/iter{k}/eval/answers.jsonl", world) for k in (0, 1)))) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--study", type=Path, default=Path("study"))
    parser.add_argument("--out", type=Path, default=Path("carryover"))
    parser.add_argument("--theta0", type=int, action="append", help="θ0 base.seed (repeatable; default 0, 1, 2)")
    parser.add_argument("--lr", type=float, help="train.lr of iteration 1 (default: the study run's)")
    parser.add_argument("--epochs", type=float, help="train.epochs (default: the study run's)")
    parser.add_argument("--variant", default="full", help="the study runs to redo (STUDY/runs/VARIANT)")
    parser.add_argument("--replace", action="store_true",
                        help="the rejected caption names the partner in place of an object, not beside it")
    args = parser.parse_args()
    if args.command == "run":
        for t in args.theta0 or (0, 1, 2):
            train = {k: v for k, v in (("lr", args.lr), ("epochs", args.epochs)) if v is not None}
            run(args.study, args.out, t, train, args.replace, args.variant)
            print(f"θ0 {t}: done", flush=True)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
