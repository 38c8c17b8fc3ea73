"""Several processes inside `dvc repro`, and stages run by hand recorded in dvc.lock.

**The launcher is a parameter.** `launch.qa: "torchrun --nproc_per_node 8"` (or `accelerate launch
--config_file x.yaml`, for `qa`, `pair`, `train` and `eval`) makes `sena qa --iter K` rerun itself
under that launcher: `torchrun --nproc_per_node 8 -m sena_cli qa --iter K`, with SENA_LAUNCHED=1 in
its environment. The processes it starts run the stage (`ranks.py` shares the work); the first
process only waits for them and passes on their exit status. So `dvc repro`, whose command stays
`sena qa --iter K`, runs each stage on every GPU. A process already inside a launch (WORLD_SIZE set
by torchrun or accelerate, or SENA_LAUNCHED set) never relaunches: a stage started by hand under
torchrun runs as it is, and a launcher that sets neither cannot loop.

The launcher is deliberately not templated into dvc.yaml's `cmd`, and dvc.yaml does not track the
`launch` keys: DVC reruns a stage whose `cmd` or tracked params change, and the launcher changes
how many processes do the work, not what the stage writes (the ranks' outputs are the ones of one
process: tests/stages/test_qa.py compares them), so moving from 1 to 8 GPUs reruns nothing.

**Hand runs are recorded.** After `sena <stage> --iter K` by hand in a DVC project (a `.dvc`
folder and a dvc.yaml with stage `<stage>@K`), sena runs `dvc commit --force <stage>@K`, so dvc.lock
holds what the hand run used and made and a later `dvc repro` reruns nothing. Not under `dvc repro`
(DVC sets DVC_STAGE in the environment of every stage command it runs, and records the stage
itself), not in the processes a launcher started (the process that launched them records once),
and not on ranks other than 0. If recording fails, the stage's work stands and a warning gives the
command to run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from sena_cli.config import DEFAULT_PARAMS_FILE, Params
from sena_cli.errors import SenaError

LAUNCHED = "SENA_LAUNCHED"  # set in the environment of the processes a launcher starts
DVC_STAGE = "DVC_STAGE"  # set by `dvc repro` for every stage command it runs (dvc/stage/run.py)
LAUNCHABLE = ("qa", "pair", "train", "eval")  # the stages with a launch.<stage> key


def launcher(params: Params, stage: str) -> list[str]:
    """launch.<stage> as words ([] = one process); a launcher shlex cannot split is one line naming it."""
    if stage not in LAUNCHABLE:
        return []
    text = getattr(params.launch, stage)
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise SenaError(f"launch.{stage}: cannot split {text!r} into words ({exc}); fix its quotes in params.yaml"
                        ) from None


def inside_launch(env: dict | None = None) -> bool:
    """Whether this process is one a launcher started (torchrun/accelerate set WORLD_SIZE; sena sets LAUNCHED)."""
    env = os.environ if env is None else env
    return bool(env.get(LAUNCHED)) or "WORLD_SIZE" in env


def relaunch_argv(words: list[str], stage: str, k: int | None, params_file: str | Path = DEFAULT_PARAMS_FILE,
                  debug: bool = False) -> list[str]:
    """The command line that reruns `sena <stage> --iter K` under the launcher `words`."""
    options = [] if str(params_file) == DEFAULT_PARAMS_FILE else ["--params", str(params_file)]
    options += ["--debug"] if debug else []
    return [*words, "-m", "sena_cli", *options, stage, *([] if k is None else ["--iter", str(k)])]


def relaunch(params: Params, stage: str, k: int | None, params_file: str | Path = DEFAULT_PARAMS_FILE,
             debug: bool = False) -> int | None:
    """Run the stage under launch.<stage> and return the launch's exit status; None when this process
    runs the stage itself (no launcher set, or already inside a launch)."""
    words = launcher(params, stage)
    if not words or inside_launch():
        return None
    argv = relaunch_argv(words, stage, k, params_file, debug)
    try:
        proc = subprocess.run(argv, env={**os.environ, LAUNCHED: "1"})
    except (FileNotFoundError, PermissionError) as exc:
        raise SenaError(f"launch.{stage}: cannot start {words[0]!r} ({exc.strerror}); install it, give its full "
                        f"path, or set launch.{stage}: '' in params.yaml for one process") from None
    return proc.returncode


def dvc_name(stage: str, k: int | None) -> str:
    """The stage's name in dvc.yaml: `qa@2` for `sena qa --iter 2`, `report` for `sena report`."""
    return stage if k is None else f"{stage}@{k}"


def should_record(env: dict | None = None) -> bool:
    """Whether a finished stage in this process is a hand run to record (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get(DVC_STAGE) or env.get(LAUNCHED):
        return False
    return int(env.get("RANK", "0") or 0) == 0


def record_hand_run(stage: str, k: int | None, root: Path = Path("."),
                    params_file: str | Path | None = None) -> str | None:
    """`dvc commit --force <stage>@K` after a hand run in a DVC project, so `dvc repro` reruns nothing.
    `params_file` is the file the run read (root/params.yaml when None).

    Returns None when recorded or nothing to record, else a one-line warning with the command to run."""
    from sena_cli.tracked import stage_definition

    root = Path(root)
    if not should_record() or not (root / ".dvc").is_dir():
        return None
    name = dvc_name(stage, k)
    try:
        if stage_definition(stage, k, root) is None:
            return None  # a stage this project's dvc.yaml does not have (or another iteration count)
    except SenaError as exc:
        return f"{name} not recorded in dvc.lock ({exc}); after fixing it run `dvc commit --force {name}`"
    if params_file is not None and Path(params_file).resolve() != (root / DEFAULT_PARAMS_FILE).resolve():
        # dvc.lock would pair params.yaml's values with outputs made from another file's
        return (f"{name} not recorded in dvc.lock: it ran with {params_file}, and DVC tracks {DEFAULT_PARAMS_FILE}; "
                f"`dvc repro` will run it again (copy the settings into {DEFAULT_PARAMS_FILE} and run "
                f"`dvc commit --force {name}` if they are the same)")
    command = [sys.executable, "-m", "dvc", "commit", "--force", name]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    except OSError as exc:
        return f"{name} not recorded in dvc.lock ({exc.strerror}); run `dvc commit --force {name}`"
    if proc.returncode:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        return (f"{name} not recorded in dvc.lock ({why}); run `dvc commit --force {name}` or `dvc repro` "
                "will run it again")
    return None
