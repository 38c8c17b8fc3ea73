"""Tune θ0 of the embedded default: train variants of it and score them on the world.

    python research/theta0_sweep.py run NAME --out DIR [--device cuda] [--scale 0.01]
    python research/theta0_sweep.py all --out DIR [--device cuda] [--jobs 15] [--deadline-s 500]

Each variant is params.yaml plus overrides of `world`, `base` and the task mix of θ0's
instruction set (the logged rounds name the config they started from, `BEFORE`; `shipped`
is params.yaml as it is); its step count is chosen so that it trains in about the same time
on 2 CPU cores (seconds per step measured per row shape, see docs/world.md). The learning dynamics
per step do not depend on the device, so a GPU (or many CPU cores) runs a whole sweep at once;
the chosen variant is then checked on 2 CPU cores with `sena base`. Writes DIR/NAME.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# name -> overrides. Steps give each variant about the same training time on 2 CPU cores
# (~470 s), from the seconds per step measured here: 0.067 (32 rows of 1 example), 0.125
# (16 rows of 6), 0.077 (8 of 6), 0.15 (32 of 3). The 3-layer variants' steps are estimates.
# Rounds 1 and 2 ran on one H200 at once (15 processes); see docs/world.md.
VARIANTS: dict[str, dict] = {
    "base": {"base": {"steps": 7000, "examples_per_sequence": 1, "batch_size": 32}},
    "base-s1": {"base": {"steps": 7000, "examples_per_sequence": 1, "batch_size": 32, "seed": 1}},
    "p16x6": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16}},
    "p16x6-s1": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16, "seed": 1}},
    "p8x6": {"base": {"steps": 6100, "examples_per_sequence": 6, "batch_size": 8}},
    "p32x3": {"base": {"steps": 3100, "examples_per_sequence": 3, "batch_size": 32}},
    "p16x6-lr2": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16, "lr": 2e-3}},
    "p16x6-e12": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16},
                  "world": {"instruct_examples_per_image": 12}},
    "p8x12-e12": {"base": {"steps": 3800, "examples_per_sequence": 12, "batch_size": 8},
                  "world": {"instruct_examples_per_image": 12}},
    "p16x6-i24k": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16},
                   "world": {"instruct_images": 24000}},
    "p16x6-big": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16},
                  "world": {"min_object_size": 15, "max_object_size": 22}},
    "p16x6-w": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16},
                "weights": {"short_answer": 4.0, "yes_no": 5.0}},
    "p16x6-t3": {"base": {"steps": 2900, "examples_per_sequence": 6, "batch_size": 16, "text_layers": 3}},
    "p16x6-v3": {"base": {"steps": 3400, "examples_per_sequence": 6, "batch_size": 16, "vision_layers": 3}},
    "p16x6-lr5": {"base": {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16, "lr": 5e-4}},
}
# Second round: around the two best of the first (lr 5e-4; objects 15-22 px), with seeds.
P = {"steps": 3800, "examples_per_sequence": 6, "batch_size": 16}
BIG = {"min_object_size": 15, "max_object_size": 22}
VARIANTS.update({
    "lr5-s1": {"base": {**P, "lr": 5e-4, "seed": 1}},
    "lr5-s2": {"base": {**P, "lr": 5e-4, "seed": 2}},
    "big-s1": {"base": {**P, "seed": 1}, "world": BIG},
    "lr5-big": {"base": {**P, "lr": 5e-4}, "world": BIG},
    "lr5-big-s1": {"base": {**P, "lr": 5e-4, "seed": 1}, "world": BIG},
    "lr5-big-s2": {"base": {**P, "lr": 5e-4, "seed": 2}, "world": BIG},
    "lr3-big": {"base": {**P, "lr": 3e-4}, "world": BIG},
    "lr7-big": {"base": {**P, "lr": 7e-4}, "world": BIG},
    "lr5-w": {"base": {**P, "lr": 5e-4}, "weights": {"short_answer": 4.0}},
    "lr5-big-w": {"base": {**P, "lr": 5e-4}, "world": BIG, "weights": {"short_answer": 4.0}},
    "lr5-big-e12": {"base": {**P, "lr": 5e-4}, "world": {**BIG, "instruct_examples_per_image": 12}},
    "lr5-big-p32x3": {"base": {"steps": 3100, "examples_per_sequence": 3, "batch_size": 32, "lr": 5e-4},
                      "world": BIG},
    "lr5-big-n7": {"base": {**P, "lr": 5e-4}, "world": {**BIG, "caption_noise": 0.7}},
    "lr5-big-c9": {"base": {**P, "lr": 5e-4}, "world": {**BIG, "cooccurrence_prob": 0.9, "caption_noise": 0.7}},
    "lr5-big-w3": {"base": {**P, "lr": 5e-4, "warmup_steps": 300}, "world": BIG},
})
# Both rounds started from the config shipped before them (lr 1e-3, short-answer weight 2.5,
# no extra colour/shape share): each variant is that config plus its overrides, so it reruns
# as logged whatever params.yaml and the instruction mix say now.
BEFORE = {"base": {"lr": 1e-3}, "weights": {"short_answer": 2.5}, "grounding_share": 0.0}
for spec in VARIANTS.values():
    for section in ("base", "weights"):
        spec[section] = {**BEFORE[section], **spec.get(section, {})}
    spec.setdefault("grounding_share", BEFORE["grounding_share"])
VARIANTS["shipped"] = {}  # params.yaml and the code's instruction mix as they are


class Deadline(Exception):
    pass


def variant_params(name: str, scale: float):
    from sena_cli.config import load_params
    from sena_cli.world import instruct

    spec = VARIANTS[name]
    params = load_params("params.yaml")
    world = dataclasses.replace(params.world, **spec.get("world", {}))
    base = dataclasses.replace(params.base, **spec.get("base", {}))
    if scale != 1.0:  # a smoke run of the script itself
        base = dataclasses.replace(base, steps=max(4, int(base.steps * scale)), warmup_steps=2)
        world = dataclasses.replace(world, instruct_images=max(64, int(world.instruct_images * scale)),
                                    pool_images=8, eval=dataclasses.replace(
                                        world.eval, pope_images=6, chair_images=6, vqa_images=6, question_images=6))
    instruct.TASK_WEIGHTS.update(spec.get("weights", {}))
    instruct.GROUNDING_SHARE = spec.get("grounding_share", instruct.GROUNDING_SHARE)
    return dataclasses.replace(params, world=world, base=base)


def score(vlm, world_dir: Path, params, names=None) -> dict:
    from sena_cli.bench.record import Context
    from sena_cli.bench.world import BENCHMARKS, WorldEvalSet

    ctx = Context(params)
    ctx.once("world", lambda: WorldEvalSet(world_dir, "eval", params.world.eval))  # the test set of world_dir
    return {b.key: b.runner()(ctx, vlm, lambda n: None)[0] for b in BENCHMARKS
            if b.name != "world_dev" and (names is None or b.name in names)}


def headline(m: dict) -> dict:
    h = {}
    if "pope" in m:
        h["pope_random_acc"] = m["pope"]["random"]["accuracy"]
        if "adversarial" in m["pope"]:
            h["pope_adv_precision"] = m["pope"]["adversarial"]["precision"]
    if "world_vqa" in m:
        h.update(m["world_vqa"])
    if "chair" in m:
        h["chair_i"] = m["chair"]["chair_i"]
        h["chair_recall"] = m["chair"]["recall"]
    if "world_questions" in m:
        h["questions_well_formed"] = m["world_questions"]["well_formed"]
    return {k: round(v, 4) for k, v in h.items()}


def run_one(name: str, out: Path, device: str, scale: float, deadline: float) -> dict:
    import torch

    from sena_cli.bench.world import WorldEvalSet, world_pope, world_vqa
    from sena_cli.frame import read_jsonl
    from sena_cli.stages.base import pixel_tensor, vocabulary_texts
    from sena_cli.vlm import VLM
    from sena_cli.world import tiny
    from sena_cli.world.build import build_world

    torch.set_num_threads(1 if device == "cuda" else 2)
    params = variant_params(name, scale)
    world_dir = out / "worlds" / name
    started = time.time()
    if not (world_dir / "eval" / "truth.jsonl").is_file():
        build_world(params, world_dir)
    examples = read_jsonl(world_dir / "instruct" / "train.jsonl")
    tok = tiny.build_tokenizer(vocabulary_texts(params, examples, world_dir))
    proc = tiny.build_processor(tok, params.world, params.base)
    model = tiny.build_model(tok, params.world, params.base).to(device)
    names = sorted({ex["image"] for ex in examples})
    index = {n: i for i, n in enumerate(names)}
    pixels = pixel_tensor(proc, [world_dir / "instruct" / "images" / n for n in names], lambda n: None).to(device)
    encoded = tiny.encode_examples(proc, examples)
    prepared = time.time() - started
    steps = params.base.steps
    midway = {}

    def on_step(step: int, loss: float) -> None:
        if time.time() > deadline:
            raise Deadline(step)
        if step in (steps // 2, (3 * steps) // 4):  # the learning curve: POPE random and VQA so far
            model.eval()
            vlm, data = VLM(model, proc, torch.device(device)), WorldEvalSet(world_dir)
            pope = world_pope(vlm, data, params, lambda n: None)[0]["random"]["accuracy"]
            vqa = world_vqa(vlm, data, params, lambda n: None)[0]["accuracy"]
            midway[step] = {"pope_random_acc": round(pope, 4), "vqa": round(vqa, 4)}
            model.train()

    t0 = time.time()
    reached = steps
    log = []
    try:
        log = tiny.train_tiny(model, pixels, encoded, [index[ex["image"]] for ex in examples], params.base,
                              tok.pad_token_id, on_step=on_step)
    except Deadline as stop:
        reached = stop.args[0]
        model.eval()
    train_s = time.time() - t0
    vlm = VLM(model, proc, torch.device(device))
    metrics = score(vlm, world_dir, params)
    result = {
        "variant": name, "spec": VARIANTS[name], "steps": steps, "steps_reached": reached, "device": device,
        "prepare_s": round(prepared, 1), "train_s": round(train_s, 1), "eval_s": round(time.time() - t0 - train_s, 1),
        "midway": midway, "headline": headline(metrics), "metrics": metrics,
        "loss": [(e["step"], e["loss"]) for e in log if e["step"] % 500 == 0 or e["step"] == steps],
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_all(out: Path, device: str, scale: float, jobs: int, deadline_s: float, only: list[str]) -> None:
    deadline = time.time() + deadline_s
    names = only or list(VARIANTS)
    env = {**os.environ, "OMP_NUM_THREADS": "1" if device == "cuda" else "2", "PYTHONUNBUFFERED": "1"}
    pending, running = list(names), {}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "run", name, "--out", str(out), "--device", device,
                   "--scale", str(scale), "--deadline", str(deadline - 60)]
            running[name] = subprocess.Popen(cmd, env=env, stdout=open(logs / f"{name}.log", "w"),
                                             stderr=subprocess.STDOUT)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"{name}: exit {proc.returncode} at {time.time() - deadline + deadline_s:.0f} s", flush=True)
        if time.time() > deadline:
            for name, proc in running.items():
                proc.kill()
                print(f"{name}: killed at the deadline", flush=True)
            break
        time.sleep(2)
    table(out)


def table(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "results.json"]
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(r["variant"], r["steps_reached"], "/", r["steps"], f"train {r['train_s']} s", r["headline"], r["midway"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["run", "all", "table"])
    ap.add_argument("name", nargs="*")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=len(VARIANTS))
    ap.add_argument("--deadline-s", type=float, default=1e9)
    ap.add_argument("--deadline", type=float, default=1e12)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "run":
        run_one(args.name[0], args.out, args.device, args.scale, args.deadline)
    elif args.what == "all":
        run_all(args.out, args.device, args.scale, args.jobs, args.deadline_s, args.name)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
