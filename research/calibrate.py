"""θ0 against its calibration targets (docs/world.md), and the two probes issue 25 asks for before any loop run.

    python research/calibrate.py run [--seed 0] [--out calib] [--set base.steps=4500 ...]
                                             # world + θ0 (base.seed) + world_cal + probes
    python research/calibrate.py table [--out calib]            # every θ0 run under OUT against the targets

`run` clones this repository (with the working tree's uncommitted changes laid over it) into
OUT/theta0-SEED, sets base.seed (and each `--set KEY=VALUE`, a candidate recipe's params, recorded with the
run), and runs `dvc repro eval@0` with eval.benchmarks [world_cal]: the
calibration set only, neither dev nor test. All runs share one DVC cache, so the world is built once.
Then, in-process on that θ0:
- captions of the calibration images, clean and corrupted as `sena noise` corrupts them (noise.* at
  t = PROBE_TIMESTEP, the paper's 600 that issue 25's deliverable 2 names, whatever params.yaml's
  noise.timestep is): the share of hallucinated objects that are absent co-occurrence partners in each;
- the enhancement probe on the dev set's short-answer questions: θ0 answers, describes the image, then
  enhances its own answer with the method's prompt; right→wrong and wrong→right flips are counted.
Everything is written to OUT/theta0-SEED/calibration.json; `table` prints the markdown docs/world.md holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Issue 25's deliverable 2: "show, before the loop, that the t = 600 input makes θ0's errors shift toward
# partners". params.yaml ships noise.timestep 400 since the study chose it, so the probe fixes its own t.
PROBE_TIMESTEP = 600


def _study():
    """research/study.py, for its clone-and-set machinery (research/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("study", REPO / "research" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# docs/world.md, "Calibration targets for θ0" (fixed 2026-12-02 in bc3ad6f): (low, high) per quantity.
TARGETS = {
    "pope.random.f1": (0.85, 0.89),
    "pope.popular.f1": (0.84, 0.88),
    "pope.adversarial.f1": (0.82, 0.86),
    "random_minus_adversarial_f1": (0.02, math.inf),
    "pope.adversarial.yes_ratio": (0.42, 0.50),
    "chair.chair_i": (0.08, 0.15),
    "vqa.accuracy": (0.65, 0.85),
    "partner_yes_ratio": (2.0, math.inf),
}


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def parse_sets(sets: list[str]) -> dict:
    """`--set a.b=v` options as one nested params layer (each value read as YAML: 4500, 5e-4, [1, 2])."""
    import yaml

    layer: dict = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SystemExit(f"--set {item!r}: write it as KEY=VALUE, e.g. --set base.steps=4500")
        *parents, leaf = key.split(".")
        node = layer
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
        try:  # PyYAML reads 5e-4 (no dot) as a string
            node[leaf] = float(node[leaf]) if isinstance(node[leaf], str) else node[leaf]
        except ValueError:
            pass
    return layer


def run(out: Path, seed: int, sets: dict | None = None) -> Path:
    where, sets = out / f"theta0-{seed}", sets or {}
    recorded = where / "set.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != sets:
        raise SystemExit(f"{where} was run with --set {recorded.read_text().strip()}, not {json.dumps(sets)}: "
                         "give this candidate its own --out")
    if not (where / "metrics" / "iter0.json").is_file():
        if where.exists():
            subprocess.run(["rm", "-rf", str(where)], check=True)
        out.mkdir(parents=True, exist_ok=True)
        study = _study()
        _sh, set_params = study._sh, study.set_params
        _sh(["git", "clone", "-q", REPO, where], out)
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, capture_output=True, check=True).stdout
        if diff:
            subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=where, input=diff, check=True)
        _sh([Path(sys.executable).parent / "dvc", "cache", "dir", "--local", (out / "cache").resolve()], where)
        set_params(where / "params.yaml",
                   (sets or None, {"base": {"seed": seed}, "eval": {"benchmarks": ["world_cal"]}}))
        recorded.write_text(json.dumps(sets) + "\n")
        started = time.perf_counter()
        with open(where / "repro.log", "w") as log:
            _sh([Path(sys.executable).parent / "dvc", "repro", "eval@0"], where, log=log)
        (where / "repro_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    if not (where / "calibration.json").is_file():
        result = {"seed": seed, "set": sets, **probes(where)}
        (where / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    return where


def probes(where: Path) -> dict:
    """The partner share of caption hallucinations on clean vs corrupted inputs, and the enhancement flips."""
    import torch

    from sena_cli.bench.world import WorldEvalSet, chair_images, mentions
    from sena_cli.config import load_params
    from sena_cli.method import prompts as P
    from sena_cli.method.noise import corrupt_image, corrupt_pictures, scheduler
    from sena_cli.vlm import VLM
    from sena_cli.world.language import answers_match
    from sena_cli.world.scenes import absent_partners

    torch.set_num_threads(2)
    params = load_params(where / "params.yaml")
    vlm = VLM.from_params(params.model, where / "models" / "iter0", dtype=params.model.dtype)
    world = where / "data" / "world"
    bs, new = params.eval.batch_size, params.eval.max_new_tokens

    cal = WorldEvalSet(world, "eval_cal", params.world.eval_cal)
    names = chair_images(cal, params)
    prompt = params.eval.chair_prompt or params.qa.prompts.describe_instructions[0]
    images = [cal.image(n) for n in names]
    noise = dataclasses.replace(params.noise, timestep=PROBE_TIMESTEP)
    sched = scheduler(noise)
    if noise.space == "pixel_values":
        def transform(pictures, keys):
            return [corrupt_pictures(p, noise, k, sched) for p, k in zip(pictures, keys, strict=True)]
        corrupted = vlm.generate(images, [prompt] * len(images), max_new_tokens=new, batch_size=bs,
                                 pixel_transform=transform, keys=names)
    else:
        corrupted = vlm.generate([corrupt_image(im, noise, n, sched) for im, n in zip(images, names)],
                                 [prompt] * len(images), max_new_tokens=new, batch_size=bs)
    clean = vlm.generate(images, [prompt] * len(images), max_new_tokens=new, batch_size=bs)
    captions = {}
    for label, texts in (("clean", clean), ("corrupted", corrupted)):
        wrong = partner = 0
        for n, text in zip(names, texts):
            real = cal.truth[n].names
            mates = set(absent_partners(real, params.world))
            bad = [m for m in mentions(text, params) if m not in real]
            wrong += len(bad)
            partner += sum(m in mates for m in bad)
        captions[label] = {"hallucinated": wrong, "partners": partner,
                           "partner_share": partner / wrong if wrong else 0.0}

    dev = WorldEvalSet(world, "eval_dev", params.world.eval_dev)
    rows = dev.rows("vqa.jsonl")
    qp = params.qa.prompts
    imgs = [dev.image(r["image"]) for r in rows]
    asks = [P.short_answer_prompt(qp, r["text"]) for r in rows]
    direct = vlm.generate(imgs, asks, max_new_tokens=new, batch_size=bs)
    described = vlm.generate(imgs, [P.description_prompt(qp, qp.describe_instructions[0])] * len(rows),
                             max_new_tokens=new, batch_size=bs)
    enhanced = vlm.generate(imgs, [P.enhance_prompt(qp, d, a_prompt, a)
                                   for d, a_prompt, a in zip(described, asks, direct)],
                            max_new_tokens=new, batch_size=bs)

    def counts() -> dict[str, int]:
        return dict.fromkeys(("questions", "right_to_wrong", "wrong_to_right", "direct_right", "enhanced_right",
                              "parsed"), 0)

    flips, by_kind = counts(), {}
    for r, d, e in zip(rows, direct, enhanced):
        answer, parsed = P.parse_improved(e, d)
        before, after = answers_match(d, r["answer"]), answers_match(answer, r["answer"])
        for c in (flips, by_kind.setdefault(r["kind"], counts())):  # overall, and per question form
            c["questions"] += 1
            c["direct_right"] += before
            c["enhanced_right"] += after
            c["parsed"] += parsed
            c["right_to_wrong"] += before and not after
            c["wrong_to_right"] += after and not before
    flips["by_kind"] = by_kind
    metrics = json.loads((where / "metrics" / "iter0.json").read_text())
    return {"captions": captions, "probe_timestep": PROBE_TIMESTEP, "enhancement": flips,
            "world_cal": metrics["world_cal"],
            "seconds": int((where / "repro_seconds.txt").read_text().strip()),
            "train_seconds": json.loads((where / "models" / "iter0" / "train_log.json").read_text())["train_seconds"]}


def quantities(c: dict) -> dict:
    m = c["world_cal"]
    q = {k: _get(m, k) for k in TARGETS if k.count(".") >= 1}
    q["random_minus_adversarial_f1"] = q["pope.random.f1"] - q["pope.adversarial.f1"]
    partner, other = m["pope"]["partner"]["yes_rate"], m["pope"]["partner"]["other_yes_rate"]
    q["partner_yes_ratio"] = partner / other if other else math.inf
    return q


def _share(run: dict, key: str) -> float:
    return run["enhancement"][key] / run["enhancement"]["questions"]


def table(out: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("theta0-*/calibration.json"))]
    if not runs:
        return f"no run under {out}; run `python research/calibrate.py run --seed 0` first"
    lines = ["| quantity (θ0, calibration split) | target | " + " | ".join(f"base.seed {r['seed']}" for r in runs)
             + " |", "|---|---|" + "---|" * len(runs)]
    per_run = [quantities(r) for r in runs]
    for key, (lo, hi) in TARGETS.items():
        target = f"≥ {lo}" if hi == math.inf else f"{lo}–{hi}"
        cells = []
        for q in per_run:
            v = q[key]
            cells.append(f"{v:.3f} {'✓' if lo <= v <= hi else '✗'}")
        lines.append(f"| {key} | {target} | " + " | ".join(cells) + " |")
    lines += ["", "| per θ0 | " + " | ".join(f"base.seed {r['seed']}" for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in runs) + " |")
    pm = lambda r: r["world_cal"]["pope"]  # noqa: E731
    row("POPE yes to an absent partner (± s.e., n)", lambda r: f"{pm(r)['partner']['yes_rate']:.3f} ± "
        f"{_se(pm(r)['partner']['yes_rate'], pm(r)['n']['partner']['yes_rate']):.3f} "
        f"({pm(r)['n']['partner']['yes_rate']})")
    row("POPE yes to another absent object (± s.e., n)", lambda r: f"{pm(r)['partner']['other_yes_rate']:.3f} ± "
        f"{_se(pm(r)['partner']['other_yes_rate'], pm(r)['n']['partner']['other_yes_rate']):.3f} "
        f"({pm(r)['n']['partner']['other_yes_rate']})")
    cm = lambda r: r["world_cal"]["chair"]  # noqa: E731
    row("captions: absent partners named per chance (± s.e., chances)", lambda r: f"{cm(r)['partner']['rate']:.3f} ± "
        f"{_se(cm(r)['partner']['rate'], cm(r)['n']['partner']['rate']):.3f} ({cm(r)['n']['partner']['rate']})")
    row("POPE random / popular / adversarial accuracy", lambda r: " / ".join(
        f"{pm(r)[s]['accuracy']:.3f}" for s in ("random", "popular", "adversarial")))
    row("POPE adversarial precision / recall", lambda r: f"{pm(r)['adversarial']['precision']:.3f} / "
        f"{pm(r)['adversarial']['recall']:.3f}")
    row("caption recall", lambda r: f"{cm(r)['recall']:.3f}")
    row(f"partner share of caption hallucinations: clean → corrupted (t = {PROBE_TIMESTEP})", lambda r:
        f"{r['captions']['clean']['partner_share']:.2f} ({r['captions']['clean']['partners']}/"
        f"{r['captions']['clean']['hallucinated']}) → {r['captions']['corrupted']['partner_share']:.2f} "
        f"({r['captions']['corrupted']['partners']}/{r['captions']['corrupted']['hallucinated']})")
    row("enhancing its own answer (dev): right→wrong / wrong→right of n", lambda r:
        f"{r['enhancement']['right_to_wrong']} / {r['enhancement']['wrong_to_right']} of "
        f"{r['enhancement']['questions']} (direct {_share(r, 'direct_right'):.3f}, "
        f"enhanced {_share(r, 'enhanced_right'):.3f})")
    kinds = sorted({k for r in runs for k in r["enhancement"].get("by_kind", {})})
    for k in kinds:
        def per_kind(r, k=k):
            c = r["enhancement"].get("by_kind", {}).get(k)
            return (f"{c['right_to_wrong']} / {c['wrong_to_right']} of {c['questions']} "
                    f"(direct {c['direct_right'] / c['questions']:.2f})") if c else "–"
        row(f"… {k} questions: right→wrong / wrong→right", per_kind)
    row("world + θ0 + calibration eval, seconds", lambda r: str(r["seconds"]))
    row("θ0 training alone, seconds (issue 25: ≤ 600)", lambda r: f"{r['train_seconds']:.0f}" if "train_seconds" in r
        else "–")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("--out", type=Path, default=REPO / "calib")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params key of the candidate recipe, laid over params.yaml (repeatable)")
    args = parser.parse_args()
    if args.what == "run":
        where = run(args.out, args.seed, parse_sets(args.set))
        print(f"θ0 base.seed {args.seed}: {where}")
    print(table(args.out))


if __name__ == "__main__":
    main()
