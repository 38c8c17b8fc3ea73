"""Synthetic scenes with ground truth: 1-4 coloured shapes, one per image quadrant.

A scene is sampled from a seeded generator and drawn with PIL. Three regularities of real
photos are built in, because they are what makes real VLMs hallucinate (docs/world.md):
- a long tail of object frequency (`popularity_exponent`), as in COCO;
- graded co-occurrence: each object has a few partners of decreasing strength
  (`partner_weights`), and each further object of a scene is a partner of one already placed
  with probability `cooccurrence_prob` (a fork beside a plate, a mouse beside a keyboard);
- a tail of hard-to-see objects, small and faded toward the background, more often among the
  objects placed as partners (`hard_share`, `hard_share_partners`): where evidence is weak, a
  model falls back on what usually co-occurs.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from sena_cli.config import PALETTE, WorldParams

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    quadrant: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive pixel bounds
    hard: bool = False  # small and faded: the evidence is weak

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "quadrant": self.quadrant, "box": list(self.box),
                "hard": self.hard}

    @classmethod
    def from_dict(cls, d: dict) -> SceneObject:
        return cls(d["colour"], d["shape"], d["quadrant"], tuple(d["box"]), bool(d.get("hard", False)))


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in reading order of their quadrants
    background: tuple[int, int, int]

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def to_dict(self) -> dict:
        return {"objects": [o.to_dict() for o in self.objects], "background": list(self.background)}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(SceneObject.from_dict(o) for o in d["objects"]), tuple(d["background"]))


def object_names(world: WorldParams) -> list[str]:
    return [f"{c} {s}" for c in world.colours for s in world.shapes]


@functools.cache
def _structure(names: tuple[str, ...], weights: tuple[float, ...], seed: int, exponent: float):
    rng = random.Random(f"{seed}-structure")
    ranked = list(names)
    rng.shuffle(ranked)
    popularity = {n: (i + 1) ** -exponent for i, n in enumerate(ranked)}
    graph = {}
    for name in names:
        others = [n for n in names if n != name]
        rng.shuffle(others)
        graph[name] = tuple(zip(others[: len(weights)], weights))
    return popularity, graph


def popularity(world: WorldParams) -> dict[str, float]:
    """Each object's relative frequency as a scene's first (or non-partner) object."""
    return _structure(tuple(object_names(world)), tuple(world.partner_weights), world.seed,
                      world.popularity_exponent)[0]


def partner_graph(world: WorldParams) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each object's co-occurrence partners with their weights, strongest first."""
    return _structure(tuple(object_names(world)), tuple(world.partner_weights), world.seed,
                      world.popularity_exponent)[1]


def partners(world: WorldParams) -> dict[str, list[str]]:
    """Each object's co-occurrence partners, strongest first."""
    return {name: [p for p, _ in mates] for name, mates in partner_graph(world).items()}


def absent_partners(scene_names: list[str], world: WorldParams) -> list[str]:
    """Objects the scene lacks that partner one it has: the absent-but-plausible ones."""
    mates = partners(world)
    out: list[str] = []
    for name in scene_names:
        out += [p for p in mates[name] if p not in scene_names and p not in out]
    return out


def _weighted(rng: random.Random, options: list[tuple[str, float]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def sample_scene(rng: random.Random, world: WorldParams) -> Scene:
    names = object_names(world)
    freq = popularity(world)
    graph = partner_graph(world)
    count = rng.randint(1, world.max_objects)
    chosen: list[tuple[str, bool]] = []  # (name, placed as a partner)
    while len(chosen) < count:
        taken = {n for n, _ in chosen}
        if chosen and rng.random() < world.cooccurrence_prob:
            source = rng.choice([n for n, _ in chosen])
            options = [(p, w) for p, w in graph[source] if p not in taken]
            if options:
                chosen.append((_weighted(rng, options), True))
                continue
        chosen.append((_weighted(rng, [(n, freq[n]) for n in names if n not in taken]), False))
    quadrants = rng.sample(range(4), len(chosen))
    half = world.image_size // 2
    placed = []
    for (name, as_partner), q in zip(chosen, quadrants):
        hard = rng.random() < (world.hard_share_partners if as_partner else world.hard_share)
        size = (rng.randint(world.hard_min_size, world.hard_max_size) if hard
                else rng.randint(world.min_object_size, world.max_object_size))
        qx, qy = (q % 2) * half, (q // 2) * half
        x0 = qx + rng.randint(1, max(1, half - size - 1))
        y0 = qy + rng.randint(1, max(1, half - size - 1))
        colour, shape = name.split(" ")
        placed.append((q, SceneObject(colour, shape, QUADRANTS[q], (x0, y0, x0 + size - 1, y0 + size - 1), hard)))
    placed.sort(key=lambda item: item[0])
    grey = rng.randint(225, 250)
    background = (grey + rng.randint(-5, 5), grey + rng.randint(-5, 5), grey + rng.randint(-5, 5))
    background = tuple(max(0, min(255, v)) for v in background)
    return Scene(tuple(o for _, o in placed), background)


def _fill(obj: SceneObject, background: tuple[int, int, int], fade: float) -> tuple[int, int, int]:
    colour = PALETTE[obj.colour]
    if not obj.hard:
        return colour
    return tuple(round(c + (b - c) * fade) for c, b in zip(colour, background))


def draw_scene(scene: Scene, size: int, fade: float = 0.0) -> Image.Image:
    """The scene's pixels; `fade` (world.hard_fade) blends hard objects toward the background."""
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = _fill(obj, scene.background, fade)
        x0, y0, x1, y1 = obj.box
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
        elif obj.shape == "cross":
            w = max(2, (x1 - x0 + 1) // 3)
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            draw.rectangle((cx - w // 2, y0, cx - w // 2 + w - 1, y1), fill=fill)
            draw.rectangle((x0, cy - w // 2, x1, cy - w // 2 + w - 1), fill=fill)
        else:  # config validation keeps this unreachable
            raise ValueError(f"unknown shape {obj.shape}")
    return image
