"""A run travels: built in one folder with the user's photos added by `sena pool --add`, pushed to
an S3 remote (moto's server on loopback), cloned with git into another path where the photo folder
does not exist, pulled: nothing is left to rerun and `sena report` works there.

The run is the smallest that takes every stage: the micro world and θ0 (sena_fixtures.micro), one
iteration of 6 photos (dvc.yaml cut to iteration 1, as a one-iteration project has it). The micro θ0
writes no question that parses about a photo, so qa asks the fixed questions (qa.self_questioning:
false, the ablation) to give pair and train something to work on.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sena_fixtures.micro import full_params_yaml, micro_dict, photo

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, env=None):
    env = {**(env or os.environ), "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GIT_AUTHOR_NAME": "sena", "GIT_AUTHOR_EMAIL": "sena@test", "GIT_COMMITTER_NAME": "sena",
           "GIT_COMMITTER_EMAIL": "sena@test"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: " + proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _dvc(args, cwd, env=None):
    return _run([sys.executable, "-m", "dvc", *args], cwd, env)


def _sena(args, cwd):
    return _run([sys.executable, "-m", "sena_cli", *args], cwd)


def _git(args, cwd):
    return _run(["git", *args], cwd)


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def _one_iteration(dvc_yaml: str) -> str:
    """dvc.yaml with iteration 1 alone (eval of θ0 and θ1; history and report of those)."""
    d = yaml.safe_load(dvc_yaml)
    later = re.compile(r"iter[2-9]")
    for stage in d["stages"].values():
        if isinstance(stage.get("foreach"), dict):
            stage["foreach"] = {"1": stage["foreach"]["1"]}
        elif isinstance(stage.get("foreach"), list):
            stage["foreach"] = [0, 1]
        else:
            stage["deps"] = [dep for dep in stage.get("deps", []) if not later.search(str(dep))]
    for plot in d.get("plots", []):
        for spec in plot.values():
            if isinstance(spec, dict) and isinstance(spec.get("y"), dict):
                spec["y"] = {path: col for path, col in spec["y"].items() if not later.search(path)}
    return yaml.safe_dump(d, sort_keys=False)


def _project(root: Path) -> None:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "sena_cli", root / "sena_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    (root / "dvc.yaml").write_text(_one_iteration((REPO / "dvc.yaml").read_text()))
    d = micro_dict()
    d["loop"] = {"iterations": 1}
    d["sample"]["images_per_iteration"] = 6
    d["qa"]["self_questioning"] = False
    d["train"] = {"global_batch_size": 4, "per_device_batch_size": 4}
    (root / "params.yaml").write_text(full_params_yaml(d))
    _git(["init", "-q"], root)
    _dvc(["init", "-q"], root)


def _photos(folder: Path) -> None:
    """Photos of two sources (subfolders), JPEG and PNG."""
    for i in range(8):
        sub = folder / ("beach" if i % 2 else "city")
        sub.mkdir(parents=True, exist_ok=True)
        image = photo(40 + 4 * i, 30 + 2 * i, seed=i)
        image.save(sub / f"{i}.jpg" if i < 3 else sub / f"{i}.png")


def test_a_run_with_added_photos_pushed_to_s3_pulls_into_a_clone_elsewhere_with_nothing_to_rerun(tmp_path,
                                                                                                 record_property):
    from tests.s3 import loopback_s3

    photos, root = tmp_path / "photos", tmp_path / "here" / "run"
    _photos(photos)
    _project(root)
    added = _sena(["pool", "--add", str(photos)], root)
    print(f"sena pool --add {photos}:\n{added}")
    assert yaml.safe_load((root / "params.yaml").read_text())["sample"]["pool"] == "pool"
    assert sorted(p.relative_to(root / "pool").as_posix() for p in (root / "pool").rglob("*.*")) == \
        sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.*"))
    assert "/pool" in (root / ".gitignore").read_text().splitlines()  # git holds pool.dvc, DVC the files
    _git(["add", "-A"], root)
    _git(["commit", "-qm", "my photos"], root)  # as `sena pool --add` says to (dvclive wants a commit, too)

    with loopback_s3() as s3:
        _dvc(["remote", "add", "-d", "store", f"s3://{s3.bucket}/run"], root)
        _dvc(["remote", "modify", "store", "endpointurl", s3.endpoint], root)  # credentials: environment only
        started = time.perf_counter()
        repro = _dvc(["repro"], root)
        print(f"dvc repro (the run): {len(_ran(repro))} stages in {time.perf_counter() - started:.0f} s")
        assert {"pool", "sample@1", "train@1", "eval@1", "report"} <= _ran(repro)
        _git(["add", "-A"], root)
        _git(["commit", "-qm", "a run on my photos"], root)
        tracked = _git(["ls-files"], root).split()
        assert "pool.dvc" in tracked and "dvc.lock" in tracked and not any(t.startswith("pool/") for t in tracked)
        pushed = _dvc(["push"], root, s3.env)
        objects, size = s3.stored()
        print(f"dvc push: {pushed.strip()}; the bucket holds {objects} objects, {size:,} bytes")
        record_property("s3_bytes_pushed", size)
        models = sum((root / f"models/iter{k}/model.safetensors").stat().st_size for k in (0, 1))
        assert objects > 0 and size > models
        assert "up to date" in _dvc(["push"], root, s3.env).lower()  # a second push sends nothing
        assert s3.stored() == (objects, size)

        shutil.rmtree(photos)  # the photo folder exists nowhere now; the clone lives on another path
        clone = tmp_path / "elsewhere" / "clone"
        clone.parent.mkdir()
        _git(["clone", "-q", str(root), str(clone)], tmp_path)
        print(f"dvc pull (the clone): {_dvc(['pull'], clone, s3.env).strip()[-300:]}")
    for name in ("dvc.lock", "data/pool.json", "data/iter1/sample/manifest.jsonl"):  # relative paths only
        text = (clone / name).read_text()
        assert str(tmp_path) not in text and "photos" not in text, name
    manifest = [json.loads(line) for line in (clone / "data/iter1/sample/manifest.jsonl").open()]
    assert len(manifest) == 6 and all(r["path"].startswith("pool/") and len(r["sha256"]) == 64 for r in manifest)
    assert (clone / "pool/city/0.jpg").read_bytes() == (root / "pool/city/0.jpg").read_bytes()

    status = json.loads(_dvc(["status", "--json"], clone))
    print(f"dvc status (the clone): {status}")
    assert set(status) <= {"pool"}  # the fingerprint stage is always_changed; nothing else has changed
    repro = _dvc(["repro"], clone)
    print(f"dvc repro (the clone): ran {sorted(_ran(repro))}")
    assert _ran(repro) == {"pool"}  # the pool's fingerprint comes out the same: nothing after it reruns
    assert (clone / "data/pool.json").read_bytes() == (root / "data/pool.json").read_bytes()
    (clone / "report/index.html").unlink()
    print(_sena(["report"], clone).strip()[-400:])
    assert (clone / "report/index.html").stat().st_size > 10_000
    assert _git(["status", "--porcelain"], clone).strip() == ""


def test_photos_outside_the_project_are_refused_with_the_command_that_adds_them(tmp_path):
    from sena_cli.config import params_from_dict
    from sena_cli.errors import SenaError
    from sena_cli.stages.sample import pool_fingerprint, run_sample

    photos, root = tmp_path / "photos", tmp_path / "run"
    root.mkdir()
    _photos(photos)
    for pool in (str(photos), "../photos"):
        params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": pool, "images_per_iteration": 2}})
        for run in (lambda p=params: run_sample(p, 1, root=root), lambda p=params: pool_fingerprint(p, root)):
            with pytest.raises(SenaError) as err:
                run()
            assert str(err.value) == (f"sample.pool '{pool}' is outside the project ({root}), so a clone elsewhere "
                                      f"could not read it; run `sena pool --add {pool}` to copy it into the "
                                      "project's pool/ under DVC")
    (root / "linked").symlink_to(photos)  # inside by name, outside in fact
    params = params_from_dict({"loop": {"iterations": 1}, "sample": {"pool": "linked", "images_per_iteration": 2}})
    with pytest.raises(SenaError, match=re.escape(f"sample.pool 'linked' is a link out of the project (to {photos}) "
                                                  f"({root}), so a clone elsewhere could not read it; run `sena pool "
                                                  "--add linked`")):
        run_sample(params, 1, root=root)
    (root / "list.json").write_text(json.dumps([{"image": "city/0.jpg"}]))
    params = params_from_dict({"loop": {"iterations": 1},
                               "sample": {"pool": "list.json", "image_root": str(photos), "images_per_iteration": 1}})
    with pytest.raises(SenaError, match=r"^sample.image_root '.*' is outside the project .*; put the images under "
                                        r"the project and track them with `dvc add` \(for a folder of images, "
                                        r"`sena pool --add DIR` does both\)$"):
        run_sample(params, 1, root=root)


def _add(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", "sena_cli", "pool", *args], cwd=root, env=env, capture_output=True,
                          text=True)


def test_pool_add_links_refuses_in_one_line_and_is_idempotent(tmp_path):
    photos, root = tmp_path / "photos", tmp_path / "run"
    _photos(photos)
    (photos / "notes.txt").write_text("not a photo")
    root.mkdir()
    (root / "params.yaml").write_text("# my settings\n" + full_params_yaml({}))
    no_dvc = _add(root, "--add", str(photos))
    assert no_dvc.returncode == 1 and "not a DVC project (no .dvc folder); run `dvc init` there first" in no_dvc.stderr
    _run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], root)
    latin = tmp_path / "latin"
    latin.mkdir()
    shutil.copy(photos / "city" / "0.jpg", os.fsdecode(bytes(latin) + b"/caf\xe9.jpg"))  # sena reads it, DVC cannot
    for args, message in [
        (["--add", str(latin)], f"{latin}/caf\\xe9.jpg: a file name that is not UTF-8, which DVC cannot track; "
                                "rename it"),
        (["--add", str(tmp_path / "nope")], f"{tmp_path / 'nope'}: not a folder; give `sena pool --add` the folder"),
        (["--add", str(root / ".dvc")], "no images (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp) in it"),
        (["--link"], "--link goes with --add DIR"),
    ]:
        proc = _add(root, *args)
        assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr

    assert not (root / "pool").exists()
    linked = _add(root, "--add", str(photos), "--link")
    assert linked.returncode == 0, linked.stderr
    assert "hard-linked" in linked.stdout
    assert (root / "pool/city/0.jpg").stat().st_ino == (photos / "city/0.jpg").stat().st_ino  # no copy in pool/
    assert (photos / "city/0.jpg").stat().st_mode & 0o200  # the user's file is still writable (DVC's cache is not)
    assert not (root / "pool/notes.txt").exists() and (root / "pool.dvc").is_file()
    text = (root / "params.yaml").read_text()
    assert text.startswith("# my settings\n") and yaml.safe_load(text)["sample"]["pool"] == "pool"
    again = _add(root, "--add", str(photos))  # the same photos: nothing to do, no error
    assert again.returncode == 0 and "already in place" in again.stdout, again.stderr

    Image.new("RGB", (9, 9)).save(photos / "city" / "new.png")
    grown = _add(root, "--add", str(photos))
    assert grown.returncode == 1 and len(grown.stderr.strip().splitlines()) == 1
    assert "pool/ already holds other files than" in grown.stderr and "city/new.png" in grown.stderr
    assert "`dvc remove pool.dvc`" in grown.stderr


def test_theta0_inside_the_project_is_recorded_relative_and_outside_it_is_warned_about(micro_project, tmp_path):
    from sena_cli.config import params_from_dict
    from sena_cli.stages.base import run_base
    from sena_cli.vlm import resolve_model

    project = tmp_path / "project"
    shutil.copytree(micro_project / "models" / "iter0", project / "checkpoints" / "mine")
    info = run_base(params_from_dict({"model": {"base": str(project / "checkpoints" / "mine")}}), root=project)
    pointer = json.loads((project / "models/iter0/pointer.json").read_text())
    assert pointer == {"base": "checkpoints/mine", "kind": "folder"} and info["warnings"] == []
    moved = tmp_path / "moved"
    shutil.move(project, moved)  # the pointer holds nothing of where the project was
    assert resolve_model(moved / "models/iter0") == moved / "checkpoints" / "mine"

    outside = moved / "checkpoints" / "mine"
    info = run_base(params_from_dict({"model": {"base": str(outside)}}), root=tmp_path / "other")
    assert info["warnings"] == [f"model.base '{outside}' is outside the project: this run will not travel (a clone "
                                "on another machine has it only at that same path); give its hub id (any machine "
                                "downloads it), or put the folder under the project (not models/ or data/) and "
                                "track it with `dvc add`"]


def test_benchmark_files_outside_the_project_are_warned_about_by_key(tmp_path):
    from sena_cli.bench import registry
    from sena_cli.config import params_from_dict
    from sena_cli.stages.eval import outside_project

    params = params_from_dict({"eval": {
        "coco_pope": {"files": ["bench/pope_random.json", str(tmp_path / "elsewhere/pope_popular.json")],
                      "image_root": str(tmp_path / "run/bench/val2014")},
        "amber": {"queries": "../amber/query_all.json", "yes_no_parsing": "exact"}}})
    ctx = registry.Context(params, tmp_path / "run")
    warnings = outside_project(ctx, [registry.get(name) for name in ("world_pope", "coco_pope", "amber")])
    assert [w.split(" '")[0] for w in warnings] == ["eval.coco_pope.files", "eval.amber.queries"]
    assert warnings[1].startswith("eval.amber.queries '../amber/query_all.json' is outside the project: this run "
                                  "will not travel")
