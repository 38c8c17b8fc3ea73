"""`sena pool --add DIR`: a user's photos become versioned data of the run.

The images under DIR (its subfolders kept, so `sample.stratify_by: path` still sees them) are
copied into `pool/` at the project root — or hard-linked with `--link` (same filesystem only), so
pool/ takes no space of its own and only DVC's cache holds a second copy — then `dvc add pool` tracks
the folder (`pool.dvc` goes into git, the files
into DVC's cache and, on `dvc push`, to the remote) and `sample.pool: pool` is set in params.yaml.
A clone on another machine then gets the photos with `dvc pull`, and everything the run records
about them (the pool's fingerprint, the sample manifests) is a project-relative path and a
content hash. `pool/` is not under data/, which git ignores as the pipeline's output.

The stage `pool` itself (the fingerprint DVC reruns `sample` by) is `run_pool` in sample.py.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sena_cli.artifacts import atomic_dir, shown
from sena_cli.config import set_keys
from sena_cli.errors import SenaError
from sena_cli.progress import Progress, no_progress
from sena_cli.stages.sample import IMAGE_SUFFIXES

POOL = "pool"  # the folder, relative to the project root, and sample.pool's value


def _images(folder: Path) -> dict[str, Path]:
    """{path relative to folder: file} of the image files under folder."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def _differing(source: dict[str, Path], pool: Path) -> list[str]:
    """Files of pool/ that are not the source's images (other names, or other bytes under a name)."""
    held = {p.relative_to(pool).as_posix(): p for p in pool.rglob("*") if p.is_file()}
    return sorted({name for name in held if name not in source or not filecmp.cmp(held[name], source[name])}
                  | {name for name in source if name not in held})


def _dvc_add(root: Path, target: str) -> None:
    # --no-relink: DVC keeps its own copy in the cache and leaves pool/'s files as they are (by default it
    # would replace each with a fresh copy of the cache's: --link's hard links would become copies).
    args = [sys.executable, "-m", "dvc", "add", "--no-relink", target]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else
                   f"exit code {proc.returncode}")
        raise SenaError(f"`dvc add {target}` failed ({why}); fix that and rerun `sena pool --add`")


def add_pool(source: Path, root: Path = Path("."), params_file: Path = Path("params.yaml"), link: bool = False,
             progress: Progress = no_progress) -> dict:
    """Copy (or hard-link) source's images into root/pool, `dvc add pool`, set sample.pool: pool."""
    started = time.perf_counter()
    target = root / POOL
    if not source.is_dir():
        raise SenaError(f"{shown(source)}: not a folder; give `sena pool --add` the folder that holds your photos")
    if not (root / ".dvc").is_dir():
        raise SenaError(f"{shown(root.resolve())}: not a DVC project (no .dvc folder); run `dvc init` there first, "
                        "then `sena pool --add DIR`")
    src, dst = source.resolve(), target.resolve()
    if dst != src and dst.is_relative_to(src):
        raise SenaError(f"{shown(source)}: holds the project's {POOL}/ folder; give the folder of the photos itself")
    images = _images(source)
    if not images:
        raise SenaError(f"{shown(source)}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or its "
                        "subfolders; give the folder that holds your photos")
    others = sum(1 for p in source.rglob("*") if p.is_file()) - len(images)
    for name in images:
        if shown(name) != name:  # sena reads such names, DVC cannot track them
            raise SenaError(f"{shown(images[name])}: a file name that is not UTF-8, which DVC cannot track; rename "
                            "it (e.g. `convmv -f latin1 -t utf8 --notest -r DIR`) and rerun `sena pool --add`")
    if dst == src:
        how = "already in place"
    elif target.exists():
        if differ := _differing(images, target):
            raise SenaError(f"{POOL}/ already holds other files than {shown(source)}'s images ({len(differ)} differ, "
                            f"e.g. {shown(differ[0])}); to replace it run `dvc remove {POOL}.dvc`, delete {POOL}/ "
                            f"and rerun; to add photos to it copy them into {POOL}/ and run `dvc add {POOL}`")
        how = "already in place"
    else:
        how = "hard-linked" if link else "copied"
        tick = progress(f"{how} into {POOL}/", len(images))
        with atomic_dir(target) as tmp:
            for name, path in images.items():
                out = tmp / name
                out.parent.mkdir(parents=True, exist_ok=True)
                if link:
                    try:
                        os.link(path, out)
                    except OSError as exc:
                        raise SenaError(f"{shown(path)}: cannot be hard-linked into {POOL}/ ({exc.strerror}); "
                                        "drop --link to copy the photos") from None
                else:
                    shutil.copy2(path, out)
                tick(1)
    try:
        _dvc_add(root, POOL)
    except SenaError:
        if how != "already in place":
            shutil.rmtree(target)  # as it was before: no pool/ that DVC does not track
        raise
    changed = set_keys(params_file, {"sample.pool": POOL})
    return {"images": len(images), "bytes": sum(p.stat().st_size for p in images.values()),
            "left out (not images)": others, "pool": f"{POOL}/ ({how})", "tracked by": f"{POOL}.dvc",
            "sample.pool": POOL + ("" if changed else " (unchanged)"),
            "next": f"git add {POOL}.dvc .gitignore {params_file} && git commit; dvc push",
            "seconds": time.perf_counter() - started}
