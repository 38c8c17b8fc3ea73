import json

import pytest
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.sample import run_sample


def _pool(root, sources=("coco", "gqa"), per_source=12):
    for s in sources:
        (root / "pool" / s).mkdir(parents=True)
        for i in range(per_source):
            Image.new("RGB", (8 + i, 6), (i * 10, 0, 0)).save(root / "pool" / s / f"{i}.png")


def _params(**sample):
    return params_from_dict({"loop": {"iterations": 3},
                             "sample": {"pool": "pool", "images_per_iteration": 4, **sample}})


def _manifest(root, k):
    return [json.loads(line) for line in (root / "data" / f"iter{k}" / "sample" / "manifest.jsonl").open()]


def test_iterations_are_disjoint_seeded_and_independent(tmp_path):
    _pool(tmp_path)
    params = _params()
    for k in (3, 1, 2):  # iteration 3 can be drawn first
        run_sample(params, k, root=tmp_path)
    ids = [[r["id"] for r in _manifest(tmp_path, k)] for k in (1, 2, 3)]
    assert all(len(i) == 4 for i in ids)
    assert len(set(sum(ids, []))) == 12
    first = (tmp_path / "data" / "iter1" / "sample" / "manifest.jsonl").read_bytes()
    run_sample(params, 1, root=tmp_path)
    assert (tmp_path / "data" / "iter1" / "sample" / "manifest.jsonl").read_bytes() == first
    rec = _manifest(tmp_path, 1)[0]
    assert set(rec) == {"id", "path", "source", "sha256", "width", "height"}
    with Image.open(tmp_path / rec["path"]) as im:
        assert im.size == (rec["width"], rec["height"])


def test_stratified_draws_sources_equally(tmp_path):
    _pool(tmp_path, sources=("a", "b"), per_source=12)
    run_sample(_params(stratify_by="path"), 1, root=tmp_path)
    report = json.loads((tmp_path / "data" / "iter1" / "sample" / "report.json").read_text())
    assert report["per_source"] == {"a": 2, "b": 2}


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path):
    _pool(tmp_path, sources=("a",), per_source=14)
    (tmp_path / "pool" / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "pool" / "a" / "text.jpg").write_text("not an image")
    params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "pool", "images_per_iteration": 14}})
    info = run_sample(params, 1, root=tmp_path)
    report = json.loads((tmp_path / "data" / "iter1" / "sample" / "report.json").read_text())
    assert info["skipped"] == 2 and report["skipped"] == 2
    assert {s["id"]: s["reason"] for s in report["skipped_files"]} == {
        "a/empty.png": "zero-byte file", "a/text.jpg": "unreadable (UnidentifiedImageError)"}


def test_small_pool_is_refused_with_counts(tmp_path):
    _pool(tmp_path, sources=("a",), per_source=5)
    with pytest.raises(SenaError, match="found 5 images, need 12"):
        run_sample(_params(), 1, root=tmp_path)


def test_jsonl_pool_and_paths_that_escape_the_root(tmp_path):
    _pool(tmp_path, sources=("imgs",), per_source=12)
    rows = [{"id": i, "image": f"imgs/{i}.png", "conversations": []} for i in range(12)]
    (tmp_path / "pool" / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = _params(pool="pool/list.jsonl")
    run_sample(params, 1, root=tmp_path)
    assert all(r["path"].startswith("pool/imgs/") for r in _manifest(tmp_path, 1))
    rows.append({"image": "../../etc/passwd"})
    (tmp_path / "pool" / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SenaError, match="leaves the image root"):
        run_sample(params, 1, root=tmp_path)


@pytest.mark.parametrize("k", [0, 4])
def test_iteration_out_of_range(tmp_path, k):
    _pool(tmp_path)
    with pytest.raises(SenaError, match="--iter"):
        run_sample(_params(), k, root=tmp_path)


def test_datasets_pool_with_an_image_column(tmp_path):
    import datasets

    images = [Image.new("RGB", (10, 8), (i * 20, 0, 0)) for i in range(12)]
    features = datasets.Features({"img": datasets.Image(), "source": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"img": images, "source": ["a", "b"] * 6}, features=features)
    ds.save_to_disk(str(tmp_path / "hfpool"))
    run_sample(_params(pool="hfpool", stratify_by="source"), 2, root=tmp_path)
    rows = _manifest(tmp_path, 2)
    assert len(rows) == 4 and {r["source"] for r in rows} == {"a", "b"}
    for r in rows:
        with Image.open(tmp_path / r["path"]) as im:
            assert im.size == (10, 8)


def test_pool_fingerprint_follows_names_and_sizes_of_what_the_draw_reads(tmp_path):
    import shutil

    from sena_cli.stages.sample import pool_fingerprint

    _pool(tmp_path, sources=("imgs",), per_source=4)
    rows = [{"image": f"imgs/{i}.png"} for i in range(3)]
    (tmp_path / "pool" / "list.json").write_text(json.dumps(rows))
    folder, listed = _params(), _params(pool="pool/list.json")
    before = pool_fingerprint(folder, tmp_path), pool_fingerprint(listed, tmp_path)
    assert before[0]["files"] == 5 and before[1]["files"] == 4  # the list and the 3 images it names
    shutil.copytree(tmp_path / "pool", tmp_path / "copy" / "pool")  # new times, same files: same print
    assert (pool_fingerprint(folder, tmp_path / "copy"), pool_fingerprint(listed, tmp_path / "copy")) == before
    Image.new("RGB", (30, 30)).save(tmp_path / "pool" / "imgs" / "3.png")  # not in the list
    assert pool_fingerprint(folder, tmp_path) != before[0] and pool_fingerprint(listed, tmp_path) == before[1]
    Image.new("RGB", (31, 30)).save(tmp_path / "pool" / "imgs" / "2.png")  # in the list
    assert pool_fingerprint(listed, tmp_path) != before[1]
