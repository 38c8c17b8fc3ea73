"""Does θ0's image encoding hold the objects its answers miss? A linear probe against θ0's own POPE answers.

    python research/probe.py --run /work/study-v8/runs/full/theta0-0/seed0

A diagnostic for docs/results.md (reading 9). Preference training can only teach θ0 to use evidence its
image tokens carry. If a linear read-out of those tokens finds the faint objects θ0 says "no" to and
rejects the partners it says "yes" to, the evidence is there and the language model overrides it, the
situation of a real VLM whose prior beats what it sees. If the read-out cannot either, no loop can fix
those answers. The probe: one logistic regression per object (colour and shape), on the image tokens θ0's
language model receives (after the projector; the vision tower's output too, for comparison), mean- and
max-pooled over the tokens, fitted on the pool's images (data/world/truth/pool.jsonl, the loop's images)
and read on the test set's POPE questions, where θ0's own answers come from its eval (data/iter0/eval).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

FEATURES = ("vision", "projector", "projector tokens")


def _scenes(truth_file: Path) -> dict:
    """Image name -> its Scene (the world's ground truth)."""
    from sena_cli.frame import read_jsonl
    from sena_cli.world.scenes import Scene

    return {row["image"]: Scene.from_dict(row) for row in read_jsonl(truth_file)}


@torch.no_grad()
def encode(model, processor, image_dir: Path, names: list[str], batch: int = 64) -> dict[str, torch.Tensor]:
    """Image tokens after the vision tower and after the projector, per image: mean- and max-pooled
    (`vision`, `projector`) and every token laid end to end (`projector tokens`)."""
    from PIL import Image

    out: dict[str, list[torch.Tensor]] = {"vision": [], "projector": [], "projector tokens": []}
    for start in range(0, len(names), batch):
        images = [Image.open(image_dir / n).convert("RGB") for n in names[start:start + batch]]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        vision = model.get_image_features(pixel_values=pixels).last_hidden_state
        projected = model.model.multi_modal_projector(vision)
        for key, tokens in (("vision", vision), ("projector", projected)):
            out[key].append(torch.cat([tokens.mean(1), tokens.amax(1)], dim=1))
        out["projector tokens"].append(projected.flatten(1))
    return {key: torch.cat(v) for key, v in out.items()}


def fit_probe(features: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3,
              steps: int = 500) -> torch.nn.Linear:
    """One logistic regression per label column (multi-label), standardised inputs, full-batch L-BFGS."""
    torch.manual_seed(0)
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    probe = torch.nn.Linear(features.size(1), labels.size(1))
    x = (features - mean) / std
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x), labels)
        loss = loss + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    probe.mean, probe.std = mean, std
    return probe


def probe_scores(probe: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return probe((features - probe.mean) / probe.std)


def hit_rate_at(false_alarm: float, present: list[float], absent: list[float]) -> float:
    """The share of `present` scores above the threshold at which a share `false_alarm` of `absent` is."""
    ranked = sorted(absent, reverse=True)
    threshold = ranked[min(int(false_alarm * len(ranked)), len(ranked) - 1)]
    return sum(s > threshold for s in present) / len(present)


def faint_context(scene, name: str) -> str:
    """What faint evidence a Scene offers for an absent object: a faint object of its colour, else one of
    its shape, else some other faint object, else none (every object plain: the absence is plain to see)."""
    colour, shape = name.split()
    faint = [o for o in scene.objects if o.hard]
    if any(o.colour == colour for o in faint):
        return "a faint object of its colour"
    if any(o.shape == shape for o in faint):
        return "a faint object of its shape"
    return "another faint object" if faint else "no faint object"


def main() -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from sena_cli.config import load_params
    from sena_cli.frame import read_jsonl
    from sena_cli.world.language import parse_question
    from sena_cli.world.scenes import absent_partners, object_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a study run (its models/iter0 and data/)")
    parser.add_argument("--model", default="iter0", help="models/NAME to probe (default θ0)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    run, world = args.run, load_params(args.run / "params.yaml").world
    objects = object_names(world)
    model = AutoModelForImageTextToText.from_pretrained(run / "models" / args.model).eval()
    processor = AutoProcessor.from_pretrained(run / "models" / args.model)

    pool, test = _scenes(run / "data/world/truth/pool.jsonl"), _scenes(run / "data/world/eval/truth.jsonl")

    def labels(scenes: dict, names: list[str]) -> torch.Tensor:
        return torch.tensor([[float(o in scenes[n].names) for o in objects] for n in names])

    train_names = sorted(pool)
    train = encode(model, processor, run / "data/world/pool", train_names)
    asked = {}
    for a in read_jsonl(run / f"data/{args.model}/eval/answers.jsonl"):
        question = parse_question(a["text"], world) if a["benchmark"].startswith("pope_") else None
        if question and question[0] == "exists":
            asked[(a["image"], question[1]["name"])] = a["parsed"] == "yes"
    test_names = sorted({image for image, _ in asked})
    test_features = encode(model, processor, run / "data/world/eval/images", test_names)
    row = {n: i for i, n in enumerate(test_names)}

    def kind(image: str, name: str) -> str:
        present = {o.name: o.hard for o in test[image].objects}
        if name in present:
            return "present, faint" if present[name] else "present, plain"
        return "absent partner" if name in absent_partners(list(present), world) else "other absent"

    print(f"{run}: probe fitted on {len(train_names)} pool images, read on {len(test_names)} test images, "
          f"{len(asked)} POPE questions")
    print("| says \"yes\" to | " + " | ".join(["θ0's answer", *(f"probe: {f}" for f in FEATURES)]) + " |")
    print("|---" * (2 + len(FEATURES)) + "|")
    scores = {key: probe_scores(fit_probe(train[key], labels(pool, train_names)), test_features[key])
              for key in FEATURES}
    groups = {g: [k for k in asked if kind(*k) == g]
              for g in ("present, plain", "present, faint", "absent partner", "other absent")}
    score = {f: {g: [float(scores[f][row[i], objects.index(o)]) for i, o in keys] for g, keys in groups.items()}
             for f in FEATURES}
    theta0 = {g: sum(asked[k] for k in keys) / len(keys) for g, keys in groups.items()}
    for group, keys in groups.items():
        cells = [theta0[group]] + [sum(s > 0 for s in score[f][group]) / len(keys) for f in FEATURES]
        print(f"| {group} (n {len(keys)}) | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print()
    print("| θ0's \"yes\" to an absent partner, on images with … | rate |")
    print("|---|---|")
    contexts: dict[str, list[bool]] = {}
    for image, name in groups["absent partner"]:
        contexts.setdefault(faint_context(test[image], name), []).append(asked[(image, name)])
    for context, said_yes in sorted(contexts.items()):
        print(f"| {context} | {sum(said_yes) / len(said_yes):.3f} ({sum(said_yes)}/{len(said_yes)}) |")
    print()
    # The probe at θ0's own false-alarm rate on absent partners, and at 0.75 of it (the success's partner
    # target): how many faint objects does it then find?
    print("| faint present objects found at a \"yes\" rate to absent partners of … | "
          + " | ".join(f"probe: {f}" for f in FEATURES) + " |")
    print("|---" * (1 + len(FEATURES)) + "|")
    for share in (1.0, 0.75):
        alarm = share * theta0["absent partner"]
        cells = [hit_rate_at(alarm, score[f]["present, faint"], score[f]["absent partner"]) for f in FEATURES]
        print(f"| {alarm:.3f} ({'θ0' if share == 1.0 else '0.75 of θ0'}'s; θ0 finds {theta0['present, faint']:.3f}) | "
              + " | ".join(f"{c:.3f}" for c in cells) + " |")

if __name__ == "__main__":
    main()
