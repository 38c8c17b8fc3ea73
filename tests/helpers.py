"""Test helpers: projects that share the session's micro world (the model families, scripted models, photos and
paired iterations are in the sena_fixtures package, which the benchmarks use too)."""

from __future__ import annotations

from pathlib import Path

from sena_fixtures.micro import write_manifest  # noqa: F401 - the tests import it from here


def project_from(micro_project: Path, root: Path) -> Path:
    """A fresh project folder sharing the micro world (hard-linked, read-only use) with its own copy of θ0."""
    import os
    import shutil

    (root / "data").mkdir(parents=True)
    # hard links, not a symlink: a pool reached through a link out of the project is refused (it would not
    # travel); the files are shared all the same, read-only use
    shutil.copytree(micro_project / "data" / "world", root / "data" / "world", copy_function=os.link)
    shutil.copytree(micro_project / "models" / "iter0", root / "models" / "iter0")
    return root


def torchrun(*args: str, cwd: Path, env: dict | None = None, processes: int = 2, timeout: float = 300,
             wait: bool = True, **popen):
    """`python -m torch.distributed.run --nproc_per_node <processes> <args>` on a free local port, one
    thread a process, with this checkout first on the path (so the ranks run the code under test).

    `args` is what follows the launcher: a script and its arguments, or `-m sena_cli <stage> ...`; `env`
    is laid over this process's environment. Waits for it (`timeout` seconds) and returns the finished
    process with its output as text; with `wait=False` returns the running Popen, given `popen`'s args."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(port), *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, **popen)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
