"""Bad and unusual image files in a pool: unreadable ones are skipped and counted, odd modes work."""

import json
import os

import numpy as np
from PIL import Image

from sena_cli.artifacts import open_rgb
from sena_cli.config import params_from_dict
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
