"""`sample` in step with what it reads: the pool (DVC reruns it when the pool changes, for each
kind of pool), the draws of earlier iterations (honoured when M changes), and the images later
stages re-read (checked against the manifest's sha256)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sena_cli.artifacts import open_manifest_image
from sena_cli.config import params_from_dict
from sena_cli.errors import SenaError
from sena_cli.frame import read_jsonl
from sena_cli.stages.sample import run_sample

REPO = Path(__file__).resolve().parents[2]


def _pool(folder: Path, n: int, offset: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12 + i % 5, 10), ((offset + i) * 7 % 256, i, 40)).save(folder / f"{offset + i:03d}.png")


def _params(m: int, **sample):
    return params_from_dict({"loop": {"iterations": 3},
                             "sample": {"pool": "pool", "images_per_iteration": m, **sample}})


def _ids(root: Path, k: int) -> list[str]:
    return [r["id"] for r in read_jsonl(root / f"data/iter{k}/sample/manifest.jsonl")]


# ---------------------------------------------------------------- earlier draws


def test_changing_m_between_iterations_never_redraws_an_image(tmp_path):
    _pool(tmp_path / "pool", 40)
    run_sample(_params(4), 1, root=tmp_path)
    run_sample(_params(10), 2, root=tmp_path)  # M raised after iteration 1
    run_sample(_params(3), 3, root=tmp_path)  # and lowered before iteration 3
    draws = [_ids(tmp_path, k) for k in (1, 2, 3)]
    assert [len(d) for d in draws] == [4, 10, 3]
    assert len(set(sum(draws, []))) == 17  # disjoint
    report = json.loads((tmp_path / "data/iter3/sample/report.json").read_text())
    assert report["earlier_draws_honoured"] == {"1": 4, "2": 10}


def test_without_earlier_manifests_each_earlier_iteration_took_the_next_m(tmp_path):
    """The rule when a manifest is absent: that iteration drew the next M of the order with today's M."""
    for root in (tmp_path / "all", tmp_path / "third_only", tmp_path / "gap"):
        _pool(root / "pool", 30)
    for k in (1, 2, 3):
        run_sample(_params(5), k, root=tmp_path / "all")
    run_sample(_params(5), 3, root=tmp_path / "third_only")
    run_sample(_params(5), 1, root=tmp_path / "gap")
    run_sample(_params(5), 3, root=tmp_path / "gap")  # iteration 2 never drawn
    third = _ids(tmp_path / "all", 3)
    assert _ids(tmp_path / "third_only", 3) == third == _ids(tmp_path / "gap", 3)


def test_a_copy_of_an_image_an_earlier_iteration_drew_is_not_drawn_again(tmp_path):
    _pool(tmp_path / "pool", 20)
    run_sample(_params(3), 1, root=tmp_path)
    first = _ids(tmp_path, 1)
    for i, name in enumerate(first):  # copies of iteration 1's images under new names
        shutil.copy(tmp_path / "pool" / name, tmp_path / "pool" / f"zz-copy-{i}.png")
    # A grown pool is shuffled anew, so only the manifest knows what iteration 1 drew.
    for k in (2, 3):
        run_sample(_params(5), k, root=tmp_path)
        later = _ids(tmp_path, k)
        assert not set(later) & set(first) and not any(i.startswith("zz-copy") for i in later)
    report = json.loads((tmp_path / "data/iter3/sample/report.json").read_text())
    assert report["earlier_draws_honoured"] == {"1": 3, "2": 5}


def test_a_malformed_earlier_manifest_is_named(tmp_path):
    _pool(tmp_path / "pool", 20)
    run_sample(_params(3), 1, root=tmp_path)
    (tmp_path / "data/iter1/sample/manifest.jsonl").write_text("{not json\n")
    with pytest.raises(SenaError, match=re.escape("data/iter1/sample/manifest.jsonl: malformed JSON at line 1; rerun "
                                                  "`sena sample --iter 1` (iteration 2's draw skips what it drew)")):
        run_sample(_params(3), 2, root=tmp_path)


# ---------------------------------------------------------------- images re-read later


def test_open_manifest_image_checks_the_sha256(tmp_path):
    _pool(tmp_path / "pool", 12)
    run_sample(_params(3), 1, root=tmp_path)
    rec = read_jsonl(tmp_path / "data/iter1/sample/manifest.jsonl")[0]
    path = tmp_path / rec["path"]
    assert open_manifest_image(tmp_path, rec).size == (rec["width"], rec["height"])
    Image.new("RGB", (rec["width"], rec["height"]), "white").save(path)  # replaced after sampling
    with pytest.raises(SenaError) as err:
        open_manifest_image(tmp_path, rec, k=1)
    assert str(err.value) == (f"{path}: changed since it was sampled (sha256 differs from the manifest); "
                              "rerun `sena sample --iter 1`")
    path.unlink()
    with pytest.raises(SenaError, match=re.escape(f"{path}: image listed in the sample manifest is missing; "
                                                  "rerun `sena sample`")):
        open_manifest_image(tmp_path, rec)
    with pytest.raises(SenaError, match=r"a sample manifest record \(x\) has no 'path' or 'sha256'"):
        open_manifest_image(tmp_path, {"id": "x", "path": rec["path"]})


# ---------------------------------------------------------------- DVC follows the pool


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _repro(root) -> set[str]:
    out = _run([sys.executable, "-m", "dvc", "repro", "sample@1"], root)
    return set(re.findall(r"Running stage '([^']+)'", out))


def _project(root: Path, sample: dict) -> Path:
    shutil.copytree(REPO / "sena_cli", root / "sena_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["sample"].update(images_per_iteration=2, **sample)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], root)
    return root


def _datasets_pool(folder: Path, colours) -> None:
    import datasets

    images = [Image.new("RGB", (10, 8), c) for c in colours]
    datasets.Dataset.from_dict({"img": images}, features=datasets.Features({"img": datasets.Image()})) \
        .save_to_disk(str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "json", "datasets"])
def test_dvc_reruns_sample_when_the_pool_it_reads_changes(tmp_path, kind):
    root = tmp_path / "project"
    root.mkdir()
    if kind == "folder":
        _pool(root / "photos", 8)
        _project(root, {"pool": "photos"})
    elif kind == "json":  # the images live beside the list, outside any folder DVC was told about
        _pool(root / "images", 8)
        (root / "lists").mkdir()
        (root / "lists/pool.json").write_text(json.dumps([{"image": f"{i:03d}.png"} for i in range(8)]))
        _project(root, {"pool": "lists/pool.json", "image_root": "images"})
    else:
        _datasets_pool(root / "hfpool", [(i * 30, 0, 0) for i in range(8)])
        _project(root, {"pool": "hfpool"})
    # the world is not built for a pool of one's own (`code` runs first: it writes the commands' fingerprints)
    assert _repro(root) == {"code", "pool", "sample@1"}
    if kind == "folder":  # (one kind is enough to show it; each repro costs seconds)
        assert _repro(root) == {"pool"}  # unchanged pool: the fingerprint reruns, sample does not
    if kind == "folder":
        _pool(root / "photos", 1, offset=50)  # a new photo
    elif kind == "json":
        Image.new("RGB", (30, 30), "white").save(root / "images/003.png")  # an image replaced, list unchanged
    else:
        shutil.rmtree(root / "hfpool")
        _datasets_pool(root / "hfpool", [(i * 30, 0, 0) for i in range(9)])
    assert _repro(root) == {"pool", "sample@1"}
