"""Bad and unusual image files in a pool: unreadable ones are skipped and counted, odd modes work."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from sena_cli.artifacts import open_rgb
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.frame import read_jsonl
from sena_cli.stages.noise import run_noise
from sena_cli.stages.sample import inspect_image, run_sample


def _pool(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    Image.new("RGB", (40, 40), "red").save(pool / "good.png")
    (pool / "zero.jpg").write_bytes(b"")
    Image.new("RGB", (64, 64), "blue").save(pool / "full.jpg", quality=95)
    (pool / "truncated.jpg").write_bytes((pool / "full.jpg").read_bytes()[:300])
    (pool / "full.jpg").unlink()
    (pool / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    Image.new("CMYK", (40, 40), (255, 0, 0, 0)).save(pool / "cmyk.jpg")  # pure cyan ink
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(pool / "grey16.png")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 200, 0, 10, 10, 10] + [0] * 762)
    palette.paste(1, (20, 20, 40, 40))  # an opaque corner, so it differs from the all-transparent RGBA
    palette.save(pool / "palette.png", transparency=0)  # index 0 (green) fully transparent
    Image.new("RGBA", (40, 40), (0, 200, 0, 0)).save(pool / "rgba.png")
    Image.new("1", (9000, 9000)).save(pool / "huge.png")  # 81 M pixels: decompression-bomb sized
    outside = tmp_path / "outside.png"
    Image.new("RGB", (40, 40), "yellow").save(outside)
    os.symlink(outside, pool / "link_out.png")
    return pool


def test_unreadable_files_are_skipped_and_odd_modes_are_converted(tmp_path):
    _pool(tmp_path)
    params = params_from_dict({"loop": {"iterations": 1},
                               "sample": {"pool": "pool", "images_per_iteration": 5}})
    reasons = {name: inspect_image(tmp_path / "pool" / name)[1]
               for name in ("zero.jpg", "truncated.jpg", "notes.jpg", "huge.png")}
    assert reasons["zero.jpg"] == "zero-byte file"
    assert reasons["truncated.jpg"].startswith("unreadable")
    assert reasons["notes.jpg"].startswith("unreadable")
    assert reasons["huge.png"] == "too large (9000x9000 pixels; sample.max_pixels is 64000000)"  # header only
    info = run_sample(params, 1, root=tmp_path)
    report = json.loads((tmp_path / "data/iter1/sample/report.json").read_text())
    assert info["skipped"] == report["skipped"] == len(report["skipped_files"]) <= 4
    assert {s["reason"] for s in report["skipped_files"]} <= set(reasons.values())
    manifest = (tmp_path / "data/iter1/sample/manifest.jsonl").read_text().splitlines()
    kept = [json.loads(line)["path"] for line in manifest]
    assert sorted(p.split("/")[-1] for p in kept) == ["cmyk.jpg", "good.png", "grey16.png", "palette.png", "rgba.png"]
    assert not any("link_out" in p for p in kept)  # a symlink out of the pool root is not a candidate

    # The odd modes come out as ordinary RGB, with their content kept.
    assert open_rgb(tmp_path / "pool/rgba.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert open_rgb(tmp_path / "pool/palette.png").getpixel((0, 0)) == (255, 255, 255)
    grey = open_rgb(tmp_path / "pool/grey16.png").getpixel((0, 0))
    assert grey[0] == grey[1] == grey[2] == round(40000 / 65535 * 255)  # scaled, not clipped to white
    cyan = open_rgb(tmp_path / "pool/cmyk.jpg").getpixel((0, 0))
    assert cyan[0] < 30 and cyan[1] > 220 and cyan[2] > 220


def test_noise_runs_on_the_converted_images(tmp_path, micro_project):
    import shutil

    _pool(tmp_path)
    shutil.copytree(micro_project / "models" / "iter0", tmp_path / "models" / "iter0")
    params = params_from_dict({"loop": {"iterations": 1},
                               "sample": {"pool": "pool", "images_per_iteration": 5}})
    run_sample(params, 1, root=tmp_path)
    info = run_noise(params, 1, root=tmp_path)
    assert info["images"] == 5


# ---------------------------------------------------------------- real photos


def _exif_rotated(path, size=(60, 20), orientation=6, **save):
    """A landscape image stored with an EXIF orientation: shown upright it is portrait, blue on top."""
    im = Image.new("RGB", size, (200, 30, 30))
    im.paste((30, 30, 200), (0, 0, 10, size[1]))  # a blue strip on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: rotate 90 degrees clockwise to show
    im.save(path, exif=exif, **save)
    return im


def test_exif_orientation_is_applied_where_images_are_read(tmp_path):
    from sena_cli.artifacts import open_manifest_image, to_rgb
    from sena_cli.frame import read_jsonl

    pool = tmp_path / "pool"
    pool.mkdir()
    _exif_rotated(pool / "portrait.jpg", quality=95)
    _exif_rotated(pool / "portrait.png")
    for name in ("portrait.jpg", "portrait.png"):
        upright = open_rgb(pool / name)
        assert upright.size == (20, 60)
        top, bottom = upright.getpixel((10, 3)), upright.getpixel((10, 56))
        assert top[2] > 150 > top[0] and bottom[0] > 150 > bottom[2]  # blue on top: turned, not mirrored
        with Image.open(pool / name) as im:
            assert to_rgb(im).tobytes() == upright.tobytes()
    params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "pool", "images_per_iteration": 2}})
    run_sample(params, 1, root=tmp_path)
    for rec in read_jsonl(tmp_path / "data/iter1/sample/manifest.jsonl"):
        assert (rec["width"], rec["height"]) == (20, 60)  # the size the model sees
        assert open_manifest_image(tmp_path, rec).size == (20, 60)


def _strip(path, width, height):
    Image.new("1", (width, height)).save(path)  # 1-bit PNGs: a 200000x1 strip is a few hundred bytes


def test_size_side_and_aspect_limits_are_read_from_the_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    pool = tmp_path / "pool"
    pool.mkdir()
    _strip(pool / "strip.png", 200_000, 1)
    _strip(pool / "long.png", 2_000_000, 1)
    _strip(pool / "wide.png", 2000, 50)
    _strip(pool / "tall.png", 1000, 17000)
    Image.new("RGB", (40, 30), "red").save(pool / "ok.png")
    assert (pool / "strip.png").stat().st_size < 1000
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size) or real_load(im))
    reasons = {name: inspect_image(pool / name)[1] for name in ("strip.png", "long.png", "wide.png", "tall.png")}
    assert reasons == {
        "strip.png": "a side too long (200000x1; sample.max_side is 16384)",
        "long.png": "a side too long (2000000x1; sample.max_side is 16384)",
        "wide.png": "too elongated (2000x50; sample.max_aspect_ratio is 20)",
        "tall.png": "a side too long (1000x17000; sample.max_side is 16384)",
    }
    assert decoded == []  # refused from the header: nothing was decoded
    assert inspect_image(pool / "ok.png")[1] is None and set(decoded) == {(40, 30)}  # a usable one is decoded
    limits = params_from_dict({"sample": {"max_side": 100_000, "max_aspect_ratio": 1e6, "max_pixels": 150_000}}).sample
    assert inspect_image(pool / "strip.png", limits)[1] == "too large (200000x1 pixels; sample.max_pixels is 150000)"
    params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "pool", "images_per_iteration": 1}})
    run_sample(params, 1, root=tmp_path)
    report = json.loads((tmp_path / "data/iter1/sample/report.json").read_text())
    assert {s["id"]: s["reason"] for s in report["skipped_files"]}.keys() <= set(reasons)


def _copies(pool):
    """One picture as: a PNG, the same bytes, a symlink, a hard link, a lossless WebP, an EXIF-rotated
    PNG of the turned pixels, and a JPEG; plus a different picture."""
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((96, 72),
                                                                                                 Image.BICUBIC))
    picture = Image.fromarray(np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8))
    picture.save(pool / "a.png")
    (pool / "a_copy.png").write_bytes((pool / "a.png").read_bytes())
    os.symlink("a.png", pool / "a_link.png")
    os.link(pool / "a.png", pool / "a_hard.png")
    picture.save(pool / "a_lossless.webp", lossless=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    picture.transpose(Image.Transpose.ROTATE_90).save(pool / "a_turned.png", exif=exif)
    picture.save(pool / "a.jpg", quality=90)
    Image.fromarray(255 - np.asarray(picture)).save(pool / "b.png")


SAME_FILE = ["a.png", "a_copy.png", "a_link.png", "a_hard.png"]


@pytest.mark.parametrize("dedup, pictures", [
    ("files", [SAME_FILE, ["a_lossless.webp"], ["a_turned.png"], ["a.jpg"], ["b.png"]]),
    ("pixels", [SAME_FILE + ["a_lossless.webp", "a_turned.png"], ["a.jpg"], ["b.png"]]),
    ("perceptual", [SAME_FILE + ["a_lossless.webp", "a_turned.png", "a.jpg"], ["b.png"]]),
])
def test_copies_of_one_picture_are_drawn_once(tmp_path, dedup, pictures):
    pool = tmp_path / "pool"
    pool.mkdir()
    _copies(pool)

    def params(m):
        return params_from_dict({"loop": {"iterations": 1},
                                 "sample": {"pool": "pool", "images_per_iteration": m, "dedup": dedup}})

    n = len(pictures)
    with pytest.raises(SenaError, match=f"only {n} usable, distinct images, need {n + 1} .* 0 skipped, "
                                        f"{8 - n} duplicates"):
        run_sample(params(n + 1), 1, root=tmp_path)
    run_sample(params(n), 1, root=tmp_path)
    kept = {r["id"] for r in read_jsonl(tmp_path / "data/iter1/sample/manifest.jsonl")}
    # Which copy is kept depends on the seeded order; that each picture is drawn once does not.
    assert [len(kept & set(copies)) for copies in pictures] == [1] * n
    report = json.loads((tmp_path / "data/iter1/sample/report.json").read_text())
    assert report["duplicates"] == len(report["duplicate_files"]) >= 1
    for dup in report["duplicate_files"]:
        how, first = dup["reason"].rsplit(" as ", 1)
        assert any({dup["id"], first} <= set(copies) for copies in pictures)
        assert how in {"files": ("the same file", "the same bytes"), "pixels": ("the same file", "the same bytes",
                       "the same pixels"), "perceptual": ("the same file", "the same bytes", "the same pixels",
                                                           "the same picture")}[dedup]


def test_one_file_by_several_paths_in_a_json_list(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (10, 10), (80 * i, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
    rows = [{"image": p} for p in ("imgs/0.png", "./imgs/0.png", "imgs//0.png", "imgs/./0.png", "imgs/1.png",
                                   "imgs/2.png")]
    (tmp_path / "list.json").write_text(json.dumps(rows))

    def params(m):
        return params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "list.json", "images_per_iteration": m}})

    with pytest.raises(SenaError, match="only 3 usable, distinct images, need 4 .* 3 duplicates"):
        run_sample(params(4), 1, root=tmp_path)
    run_sample(params(3), 1, root=tmp_path)
    paths = [r["path"] for r in read_jsonl(tmp_path / "data/iter1/sample/manifest.jsonl")]
    assert sorted(paths) == ["imgs/0.png", "imgs/1.png", "imgs/2.png"]
    report = json.loads((tmp_path / "data/iter1/sample/report.json").read_text())
    assert {d["reason"].split(" as ")[0] for d in report["duplicate_files"]} <= {"the same file"}


def test_a_file_name_that_is_not_utf8_goes_through_sample_and_noise(tmp_path, micro_project):
    import shutil

    from sena_cli.artifacts import open_manifest_image

    pool = tmp_path / "pool"
    pool.mkdir()
    odd = pool / os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8
    Image.new("RGB", (40, 40), "green").save(odd)
    Image.new("RGB", (40, 40), "red").save(pool / "plain.png")
    shutil.copytree(micro_project / "models" / "iter0", tmp_path / "models" / "iter0")
    params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "pool", "images_per_iteration": 2}})
    run_sample(params, 1, root=tmp_path)
    text = (tmp_path / "data/iter1/sample/manifest.jsonl").read_bytes()
    text.decode("ascii")  # plain JSON: the odd bytes are escaped
    rec = next(r for r in read_jsonl(tmp_path / "data/iter1/sample/manifest.jsonl") if "caf" in r["id"])
    assert rec["id"] == "caf\\xe9 \\xff.png"  # plain text, for noise seeds and messages
    assert os.fsencode(rec["path"]) == b"pool/caf\xe9 \xff.png"  # the bytes, to open the file
    assert open_manifest_image(tmp_path, rec).getpixel((0, 0)) == (0, 128, 0)
    assert run_noise(params, 1, root=tmp_path)["images"] == 2
    odd.write_bytes(b"")
    with pytest.raises(SenaError) as err:
        open_manifest_image(tmp_path, rec, k=1)
    assert str(err.value) == (f"{tmp_path}/pool/caf\\xe9 \\xff.png: changed since it was sampled (sha256 differs "
                              "from the manifest); rerun `sena sample --iter 1`")
