"""Synthetic scenes with ground truth: 1-4 coloured shapes, one per image quadrant.

A scene is sampled from a seeded generator and drawn with PIL. The sampler carries a
deliberate *co-occurrence bias*: objects come in fixed partner pairs (world params),
and when one partner is placed the other follows with probability
`cooccurrence_prob`. Models trained on such images learn to expect the partner, the
same statistical shortcut that makes real VLMs hallucinate (a fork beside a plate).
"""

from __future__ import annotations

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

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "quadrant": self.quadrant, "box": list(self.box)}

    @classmethod
    def from_dict(cls, d: dict) -> SceneObject:
        return cls(d["colour"], d["shape"], d["quadrant"], tuple(d["box"]))


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


def partners(world: WorldParams) -> dict[str, str]:
    """Each paired object's co-occurrence partner."""
    out = {}
    for a, b in world.cooccurrence_pairs:
        out[a], out[b] = b, a
    return out


def sample_scene(rng: random.Random, world: WorldParams) -> Scene:
    names = object_names(world)
    partner = partners(world)
    count = rng.randint(1, world.max_objects)
    chosen: list[str] = []
    while len(chosen) < count:
        name = rng.choice([n for n in names if n not in chosen])
        chosen.append(name)
        mate = partner.get(name)
        if mate and mate not in chosen and len(chosen) < world.max_objects and rng.random() < world.cooccurrence_prob:
            chosen.append(mate)
    quadrants = rng.sample(range(4), len(chosen))
    half = world.image_size // 2
    placed = []
    for name, q in zip(chosen, quadrants):
        size = rng.randint(world.min_object_size, world.max_object_size)
        qx, qy = (q % 2) * half, (q // 2) * half
        x0 = qx + rng.randint(1, max(1, half - size - 1))
        y0 = qy + rng.randint(1, max(1, half - size - 1))
        colour, shape = name.split(" ")
        placed.append((q, SceneObject(colour, shape, QUADRANTS[q], (x0, y0, x0 + size - 1, y0 + size - 1))))
    placed.sort(key=lambda item: item[0])
    grey = rng.randint(225, 250)
    background = (grey + rng.randint(-5, 5), grey + rng.randint(-5, 5), grey + rng.randint(-5, 5))
    background = tuple(max(0, min(255, v)) for v in background)
    return Scene(tuple(o for _, o in placed), background)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = PALETTE[obj.colour]
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
