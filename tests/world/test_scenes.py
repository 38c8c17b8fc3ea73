import hashlib
import random

from PIL import Image

from sena_cli.config import PALETTE, WorldParams
from sena_cli.world.build import build_world
from sena_cli.world.scenes import QUADRANTS, Scene, draw_scene, sample_scene


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, micro_params, micro_dict):
    from sena_cli.config import params_from_dict

    build_world(micro_params, tmp_path / "a")
    build_world(micro_params, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = params_from_dict({**micro_dict, "world": {**micro_dict["world"], "seed": 7}})
    build_world(other, tmp_path / "c")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _centre_pixel(obj):
    x0, y0, x1, y1 = obj.box
    if obj.shape == "triangle":  # the centroid lies two thirds of the way down
        return (x0 + x1) // 2, y0 + 2 * (y1 - y0) // 3
    return (x0 + x1) // 2, (y0 + y1) // 2


def test_ground_truth_agrees_with_pixels():
    world = WorldParams()
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng, world)
        image = draw_scene(scene, world.image_size)
        px = image.load()
        assert 1 <= len(scene.objects) <= world.max_objects
        assert len({o.quadrant for o in scene.objects}) == len(scene.objects)
        half = world.image_size // 2
        for obj in scene.objects:
            assert px[_centre_pixel(obj)] == PALETTE[obj.colour]
            q = QUADRANTS.index(obj.quadrant)
            x0, y0, x1, y1 = obj.box
            assert (q % 2) * half <= x0 <= x1 < (q % 2 + 1) * half
            assert (q // 2) * half <= y0 <= y1 < (q // 2 + 1) * half
        # every coloured pixel belongs to some object's box; the rest is background
        boxes = [o.box for o in scene.objects]
        for y in range(world.image_size):
            for x in range(world.image_size):
                if px[x, y] != scene.background:
                    assert any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes)
        # the colours in the image are exactly the colours of the objects
        colours = {c for _, c in image.getcolors(4096)} - {scene.background}
        assert colours == {PALETTE[o.colour] for o in scene.objects}


def test_shapes_are_told_apart_by_their_pixels():
    world = WorldParams()
    fill = {}
    for shape in world.shapes:
        from sena_cli.world.scenes import SceneObject

        scene = Scene((SceneObject("red", shape, "top left", (2, 2, 19, 19)),), (240, 240, 240))
        image = draw_scene(scene, world.image_size)
        fill[shape] = sum(image.getpixel((x, y)) == PALETTE["red"] for x in range(24) for y in range(24)) / 18**2
    assert fill["square"] > fill["circle"] > fill["triangle"] and fill["cross"] < fill["circle"]


def test_cooccurrence_bias_is_in_the_images():
    world = WorldParams()
    rng = random.Random(1)
    scenes = [sample_scene(rng, world) for _ in range(3000)]
    with_a = [s for s in scenes if "red circle" in s.names]
    together = sum("blue square" in s.names for s in with_a) / len(with_a)
    with_c = [s for s in scenes if "red cross" in s.names]  # red cross has no partner
    by_chance = sum("blue square" in s.names for s in with_c) / len(with_c)
    assert together > 0.6 and by_chance < 0.35


def test_pool_and_truth_are_separate_files(tmp_path, micro_params):
    build_world(micro_params, tmp_path / "w")
    pool = sorted((tmp_path / "w" / "pool").iterdir())
    assert len(pool) == micro_params.world.pool_images and all(p.suffix == ".png" for p in pool)
    assert (tmp_path / "w" / "truth" / "pool.jsonl").is_file()
    with Image.open(pool[0]) as im:
        assert im.size == (micro_params.world.image_size,) * 2
