"""The evidence study: the method against SeVa and its ablations, over several θ0, chosen on dev, reported on test.

    python research/study.py theta0 [--out study]            # world + θ0 for each base.seed, θ0's scores
    python research/study.py search [--out study] [-j 2]     # candidate settings, scored on the dev set
    python research/study.py final  [--out study] [-j 2]     # the chosen setting: full, SeVa, ablations
    python research/study.py table  [--out study]            # -> docs/results.md

Every run is a scratch clone of this repository under OUT with params.yaml set (θ0's base.seed,
the loop seed, the variant's parameters) and `dvc repro`; all clones share one DVC cache, so the
world and each θ0 are built once and restored from DVC's run cache. A run's params are nothing but
keys of params.yaml, laid over the clone's params.yaml layer by layer with `sena profile`'s own
`apply_profile` (validated, comments kept; the ablations are the shipped profiles/*.yaml themselves):
`run.json` holds the keys that changed and the equivalent `dvc exp run -S ...` command. Runs go `-j` at a
time, each on one CPU thread (two torch jobs of two threads each on 2 cores slow both ~5x); θ0 is
trained alone on base.threads threads, as the shipped params say. `table` reads every run's
metrics/iterK.json and writes the tables: no number is typed by hand.

Design (issue 18): the world has a test set (world.eval: what results report) and a dev set
(world.eval_dev, benchmark world_dev: where settings are chosen) on disjoint images; THETA0_SEEDS
are the θ0; SEARCH are the candidate settings, each run once per θ0 on the dev set only; the
chosen one (CHOSEN, written by `search` to OUT/chosen.json) then runs as the full method and SeVa
with two loop seeds per θ0 and each ablation with one, scored on test and dev.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sena_cli.yamlfile import merge

REPO = Path(__file__).resolve().parents[1]
THETA0_SEEDS = (0, 1, 2)
LOOP_SEEDS = (0, 1)
SEED_KEYS = (("sample", "seed"), ("qa", "seed"), ("train", "seed"), ("noise", "seed"))
# The test set: one standard error of POPE accuracy (~0.9) and of CHAIR_i (~0.15) at most ~0.005.
TEST_SET = {"pope_images": 900, "chair_images": 2000}
# What a run builds and scores: the search reads only θ3 − θ0 on dev (ENDS); the final runs score
# every iteration on test and dev (EVERY), so the tables show the path θ0 → θ3.
ENDS = ("eval@0", "eval@3")
EVERY = ("eval@0", "eval@1", "eval@2", "eval@3")
DEV_ONLY = {"eval": {"benchmarks": ["world_dev"]}}
TEST_AND_DEV = {"eval": {"benchmarks": ["world_pope", "world_chair", "world_vqa", "world_questions", "world_dev"]}}
# Candidate settings of the embedded profile, within the method (its parameters, per-iteration lr, M).
# The shipped params halve train.lr at each iteration (3e-5, 1.5e-5, 7.5e-6).
SEARCH = {
    "shipped": {},
    "lr-constant": {"iterations": {"2": {"train": {"lr": 3.0e-5}}, "3": {"train": {"lr": 3.0e-5}}}},
    "lr1e-4-halved": {"train": {"lr": 1.0e-4},
                      "iterations": {"2": {"train": {"lr": 5.0e-5}}, "3": {"train": {"lr": 2.5e-5}}}},
    "beta0.3": {"train": {"beta": 0.3}},
}
# Tried only with `search --more` (each M1200 run costs about four runs of the others).
MORE = {
    "lr1e-4": {"train": {"lr": 1.0e-4}},
    "align2": {"train": {"alignment_weight": 2.0}},
    "M1200": {"world": {"pool_images": 3600}, "sample": {"images_per_iteration": 1200}},
    # More DPO steps per pair (docs/results.md's open list after v7): each pair seen three times.
    "epochs3": {"train": {"epochs": 3.0}},
    # The noise step (declared 2026-12-04, before any run of them): the reference code's default is 500, its
    # launch script and the paper set 600. A weaker corruption keeps more of the image, so the rejected
    # answer differs from the chosen one less by noise chaos and more by the prior (calibration: the partner
    # share of caption hallucinations is 0.50-0.54 at t = 600 and 0.57-0.66 on clean inputs).
    "t500": {"noise": {"timestep": 500}},
    "t400": {"noise": {"timestep": 400}},
}


def _laid(base: dict, over: dict) -> dict:
    """A recipe as another plus its changes: `over` laid on `base` as profiles are (sena_cli.yamlfile.merge),
    copied so that no two recipes share a mapping."""
    return copy.deepcopy(merge(base, over))


# θ0 recipes the study can run on instead of the shipped one (docs/world.md's calibration candidates), laid over
# every run right after θ0's seed: `--recipe NAME` on the first action, recorded in OUT/recipe.json, so that
# every later action of the study builds the same θ0.
# Each was declared for a study if its three θ0 beat v7's calibration (docs/results.md); v17's did not, and
# v19-v27 stopped at their base.seed 0 or missed more targets over three, so none has run.
_V17 = {"world": {"reading_share": 0.2, "caption_positions": True}, "base": {"steps": 4560}}
# v17 with each given-answer rate at the highest accuracy any of v17's three θ0 reaches on the form
_V20 = _laid(_V17, {"world": {"enhance_given_right": {
    "colour": 0.86, "shape": 0.87, "count": 0.88, "colour_count": 0.88, "position": 0.83, "quadrant_colour": 0.89,
    "quadrant_shape": 0.89, "exists": 0.89}}})
# v20 with the reading examples' given answers right at the same per-form rates
_V25 = _laid(_V20, {"world": {"reading_given_at_enhance_rates": True}})
RECIPES = {  # docs/world.md has each one's declaration and result
    "v17": _V17,
    # v17 with the enhancement examples' given answers right at v17's own accuracy per form
    "v19": _laid(_V17, {"world": {"enhance_given_right": {
        "colour": 0.85, "shape": 0.84, "count": 0.84, "colour_count": 0.84, "position": 0.72,
        "quadrant_colour": 0.72, "quadrant_shape": 0.72, "exists": 0.85}}}),
    "v20": _V20,
    # v17 with each rate at the highest accuracy any of the five θ0 of v17, v19, v20 reaches
    "v21": _laid(_V17, {"world": {"enhance_given_right": {
        "colour": 0.88, "shape": 0.87, "count": 0.88, "colour_count": 0.88, "position": 0.83,
        "quadrant_colour": 0.98, "quadrant_shape": 0.98, "exists": 0.90}}}),
    # v17 with each quadrant right after the object's name in captions
    "v22": _laid(_V17, {"world": {"caption_positions_adjacent": True}}),
    # v17 with a 3-layer decoder, at 3800 steps to stay inside θ0's 10 minutes
    "v23": _laid(_V17, {"base": {"steps": 3800, "text_layers": 3}}),
    # v17 with reading examples about a random part of each scene, 1 object up
    "v24": _laid(_V17, {"world": {"reading_subsets": True}}),
    "v25": _V25,
    # v25 at 4200 steps, inside θ0's 10 minutes with room
    "v26": _laid(_V25, {"base": {"steps": 4200}}),
    # v25 with each rate at the best placed-caption θ0's accuracy (capped at 0.98), at 4400 steps
    "v27": _laid(_V25, {"world": {"enhance_given_right": {
        "colour": 0.90, "shape": 0.92, "count": 0.95, "colour_count": 0.95, "position": 0.83,
        "quadrant_colour": 0.98, "quadrant_shape": 0.98, "exists": 0.90}}, "base": {"steps": 4400}}),
}
ABLATIONS = {  # the paper's ablations and SeVa: the shipped profiles (profiles/NAME.yaml), the full method none
    "full": None,
    "seva": "seva",
    "no-alignment": "ablation-no-alignment",
    "no-enhancement": "ablation-no-enhancement",
    "no-questioning": "ablation-no-questioning",
}


def _leaves(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """A candidate's settings as `key.path=value` pairs, for the tables."""
    out = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _sh(args, cwd: Path, log=None, env: dict | None = None) -> str:
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd),
           "DVC_NO_ANALYTICS": "1", **(env or {})}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, text=True, stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed in {cwd}" +
                           (f":\n{proc.stdout[-3000:]}" if proc.stdout else ""))
    return proc.stdout or ""


def set_params(params_file: Path, layers: tuple) -> dict:
    """Lay each layer over params_file in order, with `sena profile`'s apply_profile: a layer is a dict of
    params keys or the name of a shipped profile (profiles/NAME.yaml beside params_file). Returns the keys
    that changed, with their new values."""
    import tempfile

    from sena_cli.config import apply_profile

    changed: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, layer in enumerate(layers):
            if layer is None:
                continue
            if isinstance(layer, str):
                profile = params_file.parent / "profiles" / f"{layer}.yaml"
            else:
                profile = Path(tmp) / f"layer{i}.yaml"
                profile.write_text(yaml.safe_dump(layer, sort_keys=False))
            changed.update(apply_profile(params_file, profile))
    return changed


def study_commit(out: Path) -> str:
    """The commit every run of the study clones: main's HEAD when the study began (OUT/commit.txt), so
    that work landing on main during the study cannot change the code of later runs (and retrain θ0)."""
    pinned = out / "commit.txt"
    if not pinned.is_file():
        pinned.write_text(_sh(["git", "rev-parse", "HEAD"], REPO).strip() + "\n")
    return pinned.read_text().strip()


def study_recipe(out: Path, name: str | None = None) -> dict:
    """The θ0 recipe of the study in `out` (RECIPES; {} = the shipped params). `name` sets it on the study's
    first action and must match it afterwards: one study, one kind of θ0."""
    recorded = out / "recipe.json"
    if recorded.is_file():
        kept = json.loads(recorded.read_text())
        if name is not None and name != kept["name"]:
            raise SystemExit(f"{out} is a study of recipe {kept['name']!r}; give --recipe {kept['name']} or "
                             "another --out")
        return kept["params"]
    if name is None:
        return {}
    if (out / "runs").is_dir() and any((out / "runs").iterdir()):
        raise SystemExit(f"{out} already holds runs on the shipped θ0; give recipe {name!r} a new --out")
    if name not in RECIPES:
        raise SystemExit(f"--recipe {name!r} is not one of research/study.py's RECIPES ({', '.join(RECIPES)})")
    recorded.write_text(json.dumps({"name": name, "params": RECIPES[name]}, indent=2) + "\n")
    return RECIPES[name]


def run_one(out: Path, name: str, theta0: int, loop_seed: int, layers: tuple, threads: int = 1,
            targets: tuple = ENDS) -> dict:
    """One clone, params set (θ0's seed and the test set, the loop seed, then `layers`), `dvc repro TARGETS`;
    returns (and writes) run.json."""
    where = out / "runs" / name / f"theta0-{theta0}" / f"seed{loop_seed}"
    if (where / "run.json").is_file():
        return json.loads((where / "run.json").read_text())
    if where.exists():
        subprocess.run(["rm", "-rf", str(where)], check=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    _sh(["git", "clone", "-q", REPO, where], out)
    _sh(["git", "checkout", "-q", study_commit(out)], where)
    _sh([Path(sys.executable).parent / "dvc", "cache", "dir", "--local", (out / "cache").resolve()], where)
    settings = set_params(where / "params.yaml", ({"base": {"seed": theta0}, "world": {"eval": TEST_SET}},
                                                  study_recipe(out) or None, {s: {k: loop_seed} for s, k in SEED_KEYS},
                                                  *layers))
    started = time.perf_counter()
    with open(where / "repro.log", "w") as log:
        _sh([Path(sys.executable).parent / "dvc", "repro", *targets], where, log=log,
            env={"OMP_NUM_THREADS": str(threads)})
    info = {"name": name, "theta0": theta0, "seed": loop_seed, "seconds": round(time.perf_counter() - started, 1),
            "commit": study_commit(out), "settings": settings,
            "command": "dvc exp run " + " ".join(f"-S {k}={json.dumps(v)}" for k, v in settings.items())
                       + "".join(f" {t}" for t in targets)}
    (where / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _pool(out: Path, jobs: list[tuple], parallel: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as ex:
        futures = {ex.submit(run_one, out, *job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            name, theta0, seed = futures[future][:3]
            try:
                info = future.result()
                print(f"{name} θ0-{theta0} seed {seed}: {info['seconds']:.0f} s", flush=True)
            except RuntimeError as exc:
                print(f"{name} θ0-{theta0} seed {seed}: FAILED\n{exc}", flush=True)


def theta0(out: Path) -> None:
    """World and θ0 per base.seed, trained one at a time as shipped (base.threads), with θ0's scores."""
    for seed in THETA0_SEEDS:
        info = run_one(out, "theta0", seed, 0, (TEST_AND_DEV,), threads=2, targets=("eval@0",))
        print(f"θ0 base.seed {seed}: {info['seconds']:.0f} s", flush=True)
    (out / "machine.json").write_text(json.dumps(_machine(), indent=2) + "\n")


def _machine() -> dict:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version()}


# The params sections θ0 is built from (the world and its training): a candidate that sets one of them
# has θ0s of its own.
THETA0_SECTIONS = ("world", "base")


def own_theta0s(out: Path, name: str, over: dict) -> None:
    """Build the θ0s of a candidate that changes them, one at a time on base.threads (as `theta0` does),
    before its runs go `-j` at a time: `sena base` takes base.threads whatever OMP_NUM_THREADS says, so
    two θ0 trained side by side on 2 cores oversubscribe them (the ~5x slowdown). The runs then restore
    each θ0 from the shared DVC run cache."""
    if not any(section in over for section in THETA0_SECTIONS):
        return
    for seed in THETA0_SEEDS:
        info = run_one(out, f"{name}.theta0", seed, 0, (DEV_ONLY, over), threads=2, targets=("base",))
        print(f"{name}: θ0 base.seed {seed}: {info['seconds']:.0f} s", flush=True)


def search(out: Path, parallel: int, more: bool = False, only: list[str] | None = None) -> None:
    candidates = {**SEARCH, **(MORE if more else {})}
    if only:
        candidates = {name: {**SEARCH, **MORE}[name] for name in only}
    for name, over in candidates.items():
        own_theta0s(out, name, over)
    jobs = [(name, t, 0, (DEV_ONLY, over)) for name, over in candidates.items() for t in THETA0_SEEDS]
    _pool(out, jobs, parallel)
    scores = {name: _dev_score(out, name) for name in {**SEARCH, **MORE}}
    best = max((n for n in scores if scores[n] is not None), key=lambda n: scores[n]["score"])
    (out / "chosen.json").write_text(json.dumps({"chosen": best, "scores": scores}, indent=2) + "\n")
    print(f"chosen on dev: {best}")


def final(out: Path, parallel: int, loop_seeds: int = len(LOOP_SEEDS), ends_only: bool = False) -> None:
    """The chosen setting as the full method and SeVa (`loop_seeds` loop seeds per θ0) and each ablation (one),
    scored on test and dev at every iteration, or at θ0 and θ3 only (`ends_only`: a study on a time budget)."""
    chosen = json.loads((out / "chosen.json").read_text())["chosen"]
    setting = {**SEARCH, **MORE}[chosen]
    own_theta0s(out, chosen, setting)
    jobs = []
    for variant, profile in ABLATIONS.items():
        seeds = LOOP_SEEDS[:loop_seeds] if variant in ("full", "seva") else LOOP_SEEDS[:1]
        jobs += [(variant, t, s, (TEST_AND_DEV, setting, profile), 1, ENDS if ends_only else EVERY)
                 for t in THETA0_SEEDS for s in seeds]
    _pool(out, jobs, parallel)


# ---------------------------------------------------------------- reading runs


def _metrics(run_dir: Path) -> dict[int, dict]:
    """metrics/iterK.json of a run by K (search runs score θ0 and θ3, final runs every θK)."""
    return {k: json.loads((run_dir / f"metrics/iter{k}.json").read_text()) for k in range(4)
            if (run_dir / f"metrics/iter{k}.json").is_file()}


def _runs(out: Path, name: str, needed: tuple = (0, 3)) -> list[dict]:
    found = []
    for run_file in sorted((out / "runs" / name).glob("theta0-*/seed*/run.json")):
        info = json.loads(run_file.read_text())
        info["metrics"] = _metrics(run_file.parent)
        if all(k in info["metrics"] for k in needed):
            found.append(info)
    return found


def _get(metrics: dict, path: tuple):
    for part in path:
        metrics = metrics[part]
    return metrics


def _keys(prefix: tuple) -> dict:
    return {"pope_adv_f1": (*prefix, "pope", "adversarial", "f1"), "chair_i": (*prefix, "chair", "chair_i"),
            "recall": (*prefix, "chair", "recall"), "pope_partner": (*prefix, "pope", "partner", "yes_rate"),
            "caption_partner": (*prefix, "chair", "partner", "rate")}


DEV, TEST = _keys(("world_dev",)), _keys(())
# Issue 25's pre-registered success (docs/results.md, "Pre-registered"), θ3 − θ0 of the same run, mean over
# θ0 × loop seeds: (name, quantity, test, the size of one step of the target for the dev score).
CRITERIA = (
    ("POPE adv. F1 gain ≥ +0.010", "pope_adv_f1_gain", lambda v: v >= 0.01, lambda v: max(0.0, 0.01 - v) / 0.01),
    ("POPE partner yes θ3/θ0 ≤ 0.75", "pope_partner_ratio", lambda v: v <= 0.75,
     lambda v: max(0.0, v - 0.75) / 0.25),
    ("caption partner rate θ3/θ0 ≤ 0.75", "caption_partner_ratio", lambda v: v <= 0.75,
     lambda v: max(0.0, v - 0.75) / 0.25),
    ("CHAIR_i θ3/θ0 < 1", "chair_i_ratio", lambda v: v < 1.0, lambda v: max(0.0, v - 1.0) / 0.1),
    ("caption recall gain ≥ −0.010", "recall_gain", lambda v: v >= -0.01, lambda v: max(0.0, -0.01 - v) / 0.01),
)


def _ratio(m0: dict, m3: dict, path: tuple) -> float:
    return _get(m3, path) / max(_get(m0, path), 1e-9)


def _targets(m0: dict, m3: dict, keys: dict) -> dict:
    """The quantities issue 25's success is stated in, for one run (θ3 against its own θ0)."""
    return {"pope_adv_f1_gain": _get(m3, keys["pope_adv_f1"]) - _get(m0, keys["pope_adv_f1"]),
            "pope_partner_ratio": _ratio(m0, m3, keys["pope_partner"]),
            "caption_partner_ratio": _ratio(m0, m3, keys["caption_partner"]),
            "chair_i_ratio": _ratio(m0, m3, keys["chair_i"]),
            "recall_gain": _get(m3, keys["recall"]) - _get(m0, keys["recall"])}


def _mean_targets(runs: list[dict], keys: dict) -> dict:
    t = [_targets(r["metrics"][0], r["metrics"][3], keys) for r in runs]
    return {k: statistics.mean(x[k] for x in t) for k in t[0]}


def dev_score(mean: dict) -> float:
    """How far a candidate's mean dev quantities are from meeting every criterion: minus the summed
    shortfalls, each in steps of its own target (0 when all are met; the highest is chosen)."""
    return -sum(shortfall(mean[q]) for _, q, _, shortfall in CRITERIA)


def _dev_score(out: Path, name: str) -> dict | None:
    """Mean over θ0 of the dev quantities, and their score."""
    runs = _runs(out, name)
    if not runs:
        return None
    mean = _mean_targets(runs, DEV)
    return {**mean, "score": dev_score(mean), "runs": len(runs)}


def _cell(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:+.{digits}f}"
    return f"{statistics.mean(values):+.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _se_pope(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def table(out: Path) -> str:
    heads = [("POPE adv. acc.", ("pope", "adversarial", "accuracy")), ("POPE adv. F1", ("pope", "adversarial", "f1")),
             ("POPE adv. yes-ratio", ("pope", "adversarial", "yes_ratio")), ("CHAIR_s", ("chair", "chair_s")),
             ("CHAIR_i", ("chair", "chair_i")), ("caption recall", ("chair", "recall")),
             ("caption F1", ("chair", "caption_f1")), ("POPE yes to absent partner", ("pope", "partner", "yes_rate")),
             ("POPE yes to other absent", ("pope", "partner", "other_yes_rate")),
             ("caption partner rate", ("chair", "partner", "rate"))]
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").is_file() else {}
    lines = ["Generated by `python research/study.py table` from the runs of `python research/study.py theta0`, "
             "`search` and `final`", "(metrics/iterK.json of each run); nothing here is typed by hand. Machine: "
             f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores. Differences are θ3 − θ0 of the same "
             "run; cells are mean ± sample standard deviation over all runs (θ0 × loop seeds).", ""]
    recipe = out / "recipe.json"
    if recipe.is_file():
        kept = json.loads(recipe.read_text())
        lines += [f"θ0 recipe: **{kept['name']}** (research/study.py RECIPES, laid over every run: "
                  + ", ".join(f"`{k}` {json.dumps(v)}" for k, v in _leaves(kept["params"])) + ").", ""]
    # θ0
    t0 = _runs(out, "theta0", needed=(0,))
    lines += ["## The three θ0 (base.seed 0, 1, 2: same params, same world)", "",
              "| base.seed | POPE random F1 | POPE adv. F1 | POPE adv. yes-ratio | CHAIR_i | caption recall "
              "| POPE yes to absent partner / other | caption partner rate | world VQA | dev POPE adv. F1 "
              "| dev CHAIR_i | θ0 wall time |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t0:
        m = r["metrics"][0]
        pope, chair, vqa, dev = m["pope"], m["chair"], m["world_vqa"], m["world_dev"]
        cells = [pope["random"]["f1"], pope["adversarial"]["f1"], pope["adversarial"]["yes_ratio"],
                 chair["chair_i"], chair["recall"]]
        lines.append(f"| {r['theta0']} | " + " | ".join(f"{c:.3f}" for c in cells) +
                     f" | {pope['partner']['yes_rate']:.3f} / {pope['partner']['other_yes_rate']:.3f} "
                     f"(n {pope['n']['partner']['yes_rate']} / {pope['n']['partner']['other_yes_rate']}) | "
                     f"{chair['partner']['rate']:.3f} (n {chair['n']['partner']['rate']}) | {vqa['accuracy']:.3f} | "
                     f"{dev['pope']['adversarial']['f1']:.3f} | {dev['chair']['chair_i']:.3f} | {r['seconds']:.0f} s |")
    # search
    chosen_file = out / "chosen.json"
    if chosen_file.is_file():
        chosen = json.loads(chosen_file.read_text())
        lines += ["", "## How the setting was chosen: dev set, θ3 − θ0, mean over the three θ0 (one loop seed)", "",
                  "Pre-registered criteria (issue 25): " + "; ".join(c[0] for c in CRITERIA) + ". Score = minus "
                  "the summed shortfalls, each in steps of its target (F1 0.01, partner ratios 0.25, CHAIR_i ratio "
                  "0.1, recall 0.01); the highest is chosen.", "",
                  "| candidate | settings | runs | " + " | ".join(c[0] for c in CRITERIA) + " | score |",
                  "|---|---|---|" + "---|" * len(CRITERIA) + "---|"]
        for name, s in chosen["scores"].items():
            if s is None:
                continue
            mark = " **(chosen)**" if name == chosen["chosen"] else ""
            settings = ", ".join(f"{k}={v}" for k, v in _leaves({**SEARCH, **MORE}[name])) or "the shipped params"
            lines.append(f"| {name}{mark} | {settings} | {s['runs']} | " +
                         " | ".join(f"{s[q]:+.3f}" if q.endswith("gain") else f"{s[q]:.3f}" for _, q, _, _ in CRITERIA)
                         + f" | {s['score']:.3f} |")
    # final
    variants = {v: _runs(out, v) for v in ABLATIONS}
    variants = {v: r for v, r in variants.items() if r}
    if variants:
        lines += ["", "## θ3 − θ0 on the test set (mean ± sd over θ0 × loop seeds)", "",
                  "| variant | runs | " + " | ".join(h for h, _ in heads) + " | wall time per run |",
                  "|---|---|" + "---|" * len(heads) + "---|"]
        for v, runs in variants.items():
            cells = [_cell([_get(r["metrics"][3], p) - _get(r["metrics"][0], p) for r in runs]) for _, p in heads]
            secs = [r["seconds"] for r in runs]
            lines.append(f"| {v} | {len(runs)} | " + " | ".join(cells) +
                         f" | {statistics.mean(secs):.0f} s |")
        lines += ["", "## Which pre-registered criteria hold (test set, mean over θ0 × loop seeds)", "",
                  "| variant | runs | " + " | ".join(c[0] for c in CRITERIA) + " |",
                  "|---|---|" + "---|" * len(CRITERIA)]
        for v, runs in variants.items():
            mean = _mean_targets(runs, TEST)
            lines.append(f"| {v} | {len(runs)} | " + " | ".join(
                (f"{mean[q]:+.3f}" if q.endswith("gain") else f"{mean[q]:.3f}") + (" ✓" if holds(mean[q]) else " ✗")
                for _, q, holds, _ in CRITERIA) + " |")
        if "seva" in variants and "full" in variants:
            lines += ["", "## The method against SeVa, paired by θ0 (θ3 − θ0 of full minus that of SeVa; test set)", "",
                      "Pre-registered: the full method ahead of SeVa on partner hallucination, i.e. a lower θ3/θ0 "
                      "of the POPE partner yes-rate and of the caption partner rate (mean over θ0).", "",
                      "| θ0 | " + " | ".join(h for h, _ in heads) + " | POPE partner θ3/θ0 full / SeVa "
                      "| caption partner θ3/θ0 full / SeVa |", "|---|" + "---|" * (len(heads) + 2)]
            paired = []
            for t in THETA0_SEEDS:
                full = [r for r in variants["full"] if r["theta0"] == t]
                seva = [r for r in variants["seva"] if r["theta0"] == t]
                if not full or not seva:
                    continue
                cells = []
                for _, p in heads:
                    df = statistics.mean(_get(r["metrics"][3], p) - _get(r["metrics"][0], p) for r in full)
                    ds = statistics.mean(_get(r["metrics"][3], p) - _get(r["metrics"][0], p) for r in seva)
                    cells.append(f"{df - ds:+.3f}")
                mf, ms = _mean_targets(full, TEST), _mean_targets(seva, TEST)
                paired.append((mf, ms))
                lines.append(f"| {t} | " + " | ".join(cells) + f" | {mf['pope_partner_ratio']:.3f} / "
                             f"{ms['pope_partner_ratio']:.3f} | {mf['caption_partner_ratio']:.3f} / "
                             f"{ms['caption_partner_ratio']:.3f} |")
            if paired:
                ahead = {q: statistics.mean(f[q] for f, _ in paired) < statistics.mean(s_[q] for _, s_ in paired)
                         for q in ("pope_partner_ratio", "caption_partner_ratio")}
                lines += ["", "Full method ahead of SeVa on partner hallucination (mean over θ0): POPE "
                          f"{'✓' if ahead['pope_partner_ratio'] else '✗'}, captions "
                          f"{'✓' if ahead['caption_partner_ratio'] else '✗'}."]
        lines += _pair_quality_table(out, variants)
        some = next(iter(variants.values()))
        any_run = some[0]
        n_pope = _test_questions(out, any_run)
        if n_pope:
            p = statistics.mean(r["metrics"][0]["pope"]["adversarial"]["accuracy"] for r in some)
            lines += ["", f"One standard error of a run's POPE adversarial accuracy on the test set: "
                      f"{_se_pope(p, n_pope):.4f} ({n_pope} questions); of its CHAIR_i: "
                      f"{_se_chair(out, any_run):.4f} (bootstrap over the test captions)."]
        for v, runs in variants.items():
            lines += ["", f"### {v}: per iteration (test set)", "",
                      f"Reproduce one run: `{runs[0]['command']}` (in a clone of this repository).", "",
                      "| metric | θ0 | θ1 | θ2 | θ3 |", "|---|---|---|---|---|"]
            for label, p in heads:
                lines.append(f"| {label} | " + " | ".join(
                    _cell([_get(r["metrics"][k], p) for r in runs]).replace("+", "") if all(
                        k in r["metrics"] for r in runs) else "not evaluated" for k in range(4)) + " |")
    # The study's own runs only: a diagnostic run laid beside them (docs/results.md, reading 9) is not the study's.
    known = {"theta0", *SEARCH, *MORE, *ABLATIONS}
    total = sum(json.loads(f.read_text())["seconds"] for f in (out / "runs").glob("*/theta0-*/seed*/run.json")
                if f.parents[2].name.removesuffix(".theta0") in known)
    lines += ["", f"Wall time of the study: {total / 3600:.1f} hours of runs (`-j` runs at a time; see each run.json).",
              "", "Commands: `python research/study.py theta0`, then `search`, `final` and `table` (each resumes: a "
              "finished run is kept)."]
    return "\n".join(lines) + "\n"


def _pair_quality_table(out: Path, variants: dict) -> list[str]:
    """research/pair_quality.py over every final run: how often a pair's chosen answer is really better."""
    from pair_quality import judge  # research/ is on sys.path when this file runs

    lines = ["", "## The preference pairs, judged against the world's truth (research/pair_quality.py), "
             "summed over the runs", "",
             "gen: pairs whose question the world can parse; des: description pairs, by absent objects named.", "",
             "| variant | iteration | gen right-over-wrong | gen wrong-over-right | gen both right / both wrong "
             "| des chosen fewer hallucinations | des chosen more | des present objects named, chosen / rejected "
             "| des absent partners named, chosen / rejected | des other absent objects named, chosen / rejected |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v, runs in variants.items():
        for k in (1, 2, 3):
            judged = [judge(_run_dir(out, r), k) for r in runs if (_run_dir(out, r) / f"data/iter{k}/pairs").is_dir()]
            if not judged:
                continue
            g = {key: sum(j["gen"][key] for j in judged) for key in judged[0]["gen"]}
            d = {key: sum(j["des"][key] for j in judged) for key in judged[0]["des"]}
            parsed, pairs = max(g["parsed"], 1), max(d["pairs"], 1)
            right, wrong = g["chosen right, rejected wrong"], g["chosen wrong, rejected right"]
            lines.append(f"| {v} | {k} | {right} ({right / parsed:.0%}) | {wrong} ({wrong / parsed:.0%})"
                         f" | {g['both right']} / {g['both wrong']} | {d['chosen fewer hallucinations']} "
                         f"({d['chosen fewer hallucinations'] / pairs:.0%}) | {d['chosen more hallucinations']} "
                         f"({d['chosen more hallucinations'] / pairs:.0%}) | {d['chosen present named']} / "
                         f"{d['rejected present named']} | {d['chosen absent partners named']} / "
                         f"{d['rejected absent partners named']} | {d['chosen other absent named']} / "
                         f"{d['rejected other absent named']} |")
    return lines


def _run_dir(out: Path, run: dict) -> Path:
    return out / "runs" / run["name"] / f"theta0-{run['theta0']}" / f"seed{run['seed']}"


def _test_questions(out: Path, run: dict) -> int:
    path = _run_dir(out, run) / "data/world/eval/pope_adversarial.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


def _se_chair(out: Path, run: dict, resamples: int = 1000) -> float:
    """Bootstrap standard error of CHAIR_i over the test captions of θ0 (mentions clustered by caption)."""
    import random

    path = _run_dir(out, run) / "data/iter0/eval/answers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    caps = [(len(r["mentioned"]), sum(m not in r["truth"] for m in r["mentioned"])) for r in rows
            if r.get("benchmark") == "chair"]
    rng = random.Random(0)
    values = []
    for _ in range(resamples):
        sample = [caps[rng.randrange(len(caps))] for _ in caps]
        named = sum(n for n, _ in sample)
        values.append(sum(h for _, h in sample) / named if named else 0.0)
    return statistics.stdev(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["theta0", "search", "final", "table"])
    parser.add_argument("--out", type=Path, default=REPO / "study")
    parser.add_argument("-j", type=int, default=2, help="runs at a time (each on one CPU thread)")
    parser.add_argument("--more", action="store_true", help="search: also the candidates of MORE")
    parser.add_argument("--only", help="search: these candidates only (comma-separated names of SEARCH or MORE)")
    parser.add_argument("--loop-seeds", type=int, default=len(LOOP_SEEDS),
                        help="final: loop seeds per θ0 for the full method and SeVa")
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="θ0's recipe for the whole study (RECIPES), given on its first action")
    parser.add_argument("--ends-only", action="store_true", help="final: score θ0 and θ3 only, not θ1 and θ2")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    study_recipe(out, args.recipe)
    started = time.perf_counter()
    if args.action == "theta0":
        theta0(out)
    elif args.action == "search":
        search(out, args.j, args.more, args.only.split(",") if args.only else None)
    elif args.action == "final":
        final(out, args.j, args.loop_seeds, args.ends_only)
    else:
        text = table(out)
        marker = "<!-- generated by research/study.py table: do not edit below -->"
        doc = REPO / "docs" / "results.md"
        old = doc.read_text() if doc.is_file() else ""
        head = old.split(marker)[0] if marker in old else "# Results: self-evolution on the embedded world\n\n"
        doc.write_text(head + marker + "\n\n" + text)
        print(text)
    print(f"{args.action}: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
