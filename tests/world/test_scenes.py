import collections
import hashlib
import random

from PIL import Image

from sena_cli.config import PALETTE, WorldParams
from sena_cli.world.build import build_world
from sena_cli.world.scenes import QUADRANTS, Scene, draw_scene, object_names, partners, sample_scene


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
    hard = 0
    for _ in range(300):
        scene = sample_scene(rng, world)
        image = draw_scene(scene, world.image_size, world.hard_fade)
        px = image.load()
        assert 1 <= len(scene.objects) <= world.max_objects
        assert len({o.quadrant for o in scene.objects}) == len(scene.objects)
        half = world.image_size // 2
        expected = {}
        for obj in scene.objects:
            # a hard-to-see object is small and its colour blended toward the background by hard_fade
            colour = PALETTE[obj.colour]
            if obj.hard:
                hard += 1
                colour = tuple(round(c + (b - c) * world.hard_fade) for c, b in zip(colour, scene.background))
                assert world.hard_min_size <= obj.box[2] - obj.box[0] + 1 <= world.hard_max_size
            else:
                assert world.min_object_size <= obj.box[2] - obj.box[0] + 1 <= world.max_object_size
            expected[obj] = colour
            assert px[_centre_pixel(obj)] == colour
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
        assert colours == set(expected.values())
    assert hard > 50  # the hard tail is there


def test_shapes_are_told_apart_by_their_pixels():
    world = WorldParams()
    fill = {}
    for shape in world.shapes:
        from sena_cli.world.scenes import SceneObject

        scene = Scene((SceneObject("red", shape, "top left", (2, 2, 19, 19)),), (240, 240, 240))
        image = draw_scene(scene, world.image_size)
        fill[shape] = sum(image.getpixel((x, y)) == PALETTE["red"] for x in range(24) for y in range(24)) / 18**2
    assert fill["square"] > fill["circle"] > fill["triangle"] and fill["cross"] < fill["circle"]


def test_cooccurrence_is_graded_and_the_hard_tail_sits_among_partners():
    world = WorldParams()
    rng = random.Random(1)
    scenes = [sample_scene(rng, world) for _ in range(6000)]
    mates = partners(world)
    names = object_names(world)

    def given(a: str, b: str) -> float:
        with_a = [s for s in scenes if a in s.names]
        return sum(b in s.names for s in with_a) / len(with_a)

    by_rank = [sum(given(a, mates[a][r]) for a in names) / len(names) for r in range(len(world.partner_weights))]
    others = sum(given(a, b) for a in names for b in names if b != a and b not in mates[a]) / \
        sum(1 for a in names for b in names if b != a and b not in mates[a])
    # P(partner | object) falls with the partner's weight, and every partner beats a non-partner
    assert by_rank[0] > by_rank[1] + 0.05 > by_rank[2] + 0.05 and by_rank[2] > others + 0.03, (by_rank, others)
    # object frequency has a long tail (popularity_exponent)
    freq = collections.Counter(n for s in scenes for n in s.names)
    assert freq.most_common()[0][1] > 2.5 * freq.most_common()[-1][1]
    # hard objects: mostly ones placed beside a present object they partner
    def partnered(scene, obj):
        return any(obj.name in mates[o.name] for o in scene.objects if o is not obj)
    hard = [partnered(s, o) for s in scenes for o in s.objects if o.hard]
    easy = [partnered(s, o) for s in scenes for o in s.objects if not o.hard]
    assert sum(hard) / len(hard) > sum(easy) / len(easy) + 0.2


def test_pool_and_truth_are_separate_files(tmp_path, micro_params):
    build_world(micro_params, tmp_path / "w")
    pool = sorted((tmp_path / "w" / "pool").iterdir())
    assert len(pool) == micro_params.world.pool_images and all(p.suffix == ".png" for p in pool)
    assert (tmp_path / "w" / "truth" / "pool.jsonl").is_file()
    with Image.open(pool[0]) as im:
        assert im.size == (micro_params.world.image_size,) * 2


def test_the_shipped_test_set_sees_co_occurrence_hallucination():
    """Issue 25: at least 500 absent-partner POPE negatives (each image and object once over the three
    splits) and 500 chances for a caption to name an absent partner, from the shipped params."""
    from sena_cli.config import load_params
    from sena_cli.world.build import _scenes, cooccurrence_stats, pope_questions
    from sena_cli.world.language import parse_question
    from sena_cli.world.scenes import absent_partners

    params = load_params("params.yaml")
    world = params.world
    scenes = _scenes(world, "eval", max(world.eval.pope_images, world.eval.chair_images))
    names = [f"{i:05d}.png" for i in range(len(scenes))]
    stats = cooccurrence_stats(_scenes(world, "instruct", world.instruct_images))
    truth = dict(zip(names, scenes))
    negatives = {(r["image"], parse_question(r["text"], world)[1]["name"])
                 for rows in pope_questions(scenes, names, params, stats).values() for r in rows if r["label"] == "no"}
    partner_negatives = [1 for image, name in negatives if name in absent_partners(truth[image].names, world)]
    chances = sum(len(absent_partners(s.names, world)) for s in scenes[: world.eval.chair_images])
    assert len(partner_negatives) >= 500 and chances >= 500, (len(partner_negatives), chances)


def test_reading_images_are_blank_twins_and_leave_the_rest_of_the_world_as_it_was(tmp_path, micro_params):
    """world.reading_share draws some instruction scenes again with their background only, beside
    enhancement examples of their own; every other file and example is the default world's."""
    import json
    from dataclasses import replace

    from sena_cli.world.build import _scenes

    plain_counts = build_world(micro_params, tmp_path / "plain")
    reading = replace(micro_params, world=replace(micro_params.world, reading_share=0.25))
    counts = build_world(reading, tmp_path / "read")
    world = micro_params.world
    blanks = sorted((tmp_path / "read" / "instruct" / "images").glob("blank-*.png"))
    assert len(blanks) == round(0.25 * world.instruct_images) == counts["blank reading images"]
    assert "blank reading images" not in plain_counts
    backgrounds = {s.background for s in _scenes(world, "instruct", world.instruct_images)}
    for path in blanks:
        with Image.open(path) as im:
            colours = im.convert("RGB").getcolors()
        assert len(colours) == 1 and colours[0][1] in backgrounds
    lines = lambda w: (tmp_path / w / "instruct" / "train.jsonl").read_text().splitlines()  # noqa: E731
    plain, read = lines("plain"), lines("read")
    assert read[: len(plain)] == plain
    extra = [json.loads(x) for x in read[len(plain):]]
    assert len(extra) == len(blanks) * world.instruct_examples_per_image
    assert {e["image"] for e in extra} == {p.name for p in blanks} and {e["task"] for e in extra} == {"enhance_reading"}
    blank_free = lambda w: {p.relative_to(tmp_path / w): p.read_bytes() for p in (tmp_path / w).rglob("*")  # noqa: E731
                            if p.is_file() and not p.name.startswith("blank-") and p.name != "train.jsonl"}
    assert blank_free("plain") == blank_free("read")
