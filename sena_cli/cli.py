"""The `sena` command line: one thin command per stage. No method logic lives here.

Every command reads params.yaml (or --params FILE), calls its stage, prints a rich summary.
Errors are one red line; --debug shows the traceback.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as ProgressBars
from rich.table import Table

from sena_cli.config import DEFAULT_PARAMS_FILE, Params, load_params
from sena_cli.errors import SenaError, redact, redact_logs
from sena_cli.progress import Progress, Tick

app = typer.Typer(
    help="sena: a vision-language model improves itself from unlabeled images (SENA, AAAI 2025).\n\n"
    "Each command is one DVC stage; `dvc repro` runs them all, `sena <stage> --iter K` runs one by hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


class _State:
    debug = False
    params_file = Path(DEFAULT_PARAMS_FILE)


STATE = _State()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    params: Path = typer.Option(Path(DEFAULT_PARAMS_FILE), "--params", "-p", help="Parameters file."),
) -> None:
    STATE.debug = debug or os.environ.get("SENA_DEBUG") == "1"
    STATE.params_file = params
    redact_logs("sena_cli", "transformers", "huggingface_hub", "httpx", "openai")


def _fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    from sena_cli.artifacts import shown

    # shown(): a file name with bytes that are not UTF-8 must not crash the error line itself;
    # redact(): a URL's password, token or signature never reaches the terminal or a CI log.
    console.print(f"[bold red]error:[/] {escape(redact(shown(message)))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn any failure into one red line, unless --debug."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except SenaError as exc:
        if STATE.debug:
            raise
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; finished work is kept and a rerun resumes", 130)
    except OSError as exc:
        if STATE.debug:
            raise
        full = {errno.ENOSPC: ("no space left on the device", "free space"),
                errno.EDQUOT: ("disk quota exceeded", "free space"),
                errno.EFBIG: ("file size limit reached", "raise the limit (ulimit -f)")}
        if exc.errno in full:
            what, fix = full[exc.errno]
            _fail(f"{what} writing {exc.filename or 'an artifact'}; {fix} and rerun "
                  "(finished work is kept, nothing half-written was published)")
        _fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc} (rerun with --debug for the traceback)")
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if STATE.debug:
            raise
        if _disk_full(exc):  # safetensors' Rust writer reports a full disk as a SafetensorError, not an OSError
            _fail("no space left on the device writing an artifact (" + type(exc).__name__ + "); free space and "
                  "rerun (finished work is kept, nothing half-written was published)")
        _fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def _disk_full(exc: Exception) -> bool:
    """A library's own error for ENOSPC/EDQUOT (Rust io::Error text: `os error 28`, `StorageFull`)."""
    text = str(exc)
    return any(mark in text for mark in ("No space left on device", "os error 28", "StorageFull",
                                         "Disk quota exceeded", "os error 122"))


def _params() -> Params:
    return load_params(STATE.params_file)


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    """Yield `phase(name, total) -> tick(n)`: one progress bar per phase of long work."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rich draws the bars; no tqdm bars for loading or saving weights
    hf_logging.get_logger()  # transformers makes its own handler on first use: redact what it prints too
    redact_logs("transformers")
    bar = ProgressBars(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )

    def phase(name: str, total: int) -> Tick:
        task = bar.add_task(name, total=total)
        return lambda n: bar.advance(task, n)

    with bar:
        yield phase


def _summary(title: str, rows: dict, seconds: float | None = None) -> None:
    table = Table(title=redact(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else redact(str(value)))
    if seconds is not None:
        table.add_row("time", f"{seconds:.1f} s")
    out.print(table)


def _warn(warnings: list[str]) -> None:
    """Each warning in one yellow line (the run goes on)."""
    from rich.markup import escape

    for line in warnings:
        console.print(f"[bold yellow]warning:[/] {escape(redact(line))}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _lock(stage: str, k: int | None = None) -> Iterator[None]:
    """One run of a stage (and iteration) at a time: a second one stops in one line, touching nothing."""
    from sena_cli.artifacts import stage_lock

    # Under accelerate/torchrun every process of the launch runs the command: one lock per rank.
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    with stage_lock(stage, k, rank=rank):
        yield


def _launched(params: Params, stage: str, k: int | None) -> bool:
    """Rerun the command under launch.<stage> when one is set (sena_cli/launch.py); True when it ran there.

    A failed launch is one line (its processes printed their own errors above it)."""
    from sena_cli.launch import relaunch

    status = relaunch(params, stage, k, STATE.params_file, STATE.debug)
    if status is None:
        return False
    if status:
        _fail(f"launch.{stage} ({getattr(params.launch, stage)}): the launched `sena {stage}` exited with status "
              f"{status}; see its errors above", status if 0 < status < 256 else 1)
    return True


def _record(stage: str, k: int | None) -> None:
    """A stage run by hand in a DVC project goes into dvc.lock (`dvc commit`), so `dvc repro` does not rerun it."""
    from rich.markup import escape

    from sena_cli.launch import record_hand_run

    warning = record_hand_run(stage, k, params_file=STATE.params_file)
    if warning:
        console.print(f"[yellow]warning:[/] {escape(redact(warning))}", highlight=False, soft_wrap=True)


def _run_stage(title: str, run: Callable[..., dict], k: int, hide: tuple[str, ...] = ()) -> dict | None:
    """Run one loop stage with progress bars and print its summary table (None when launched elsewhere)."""
    from sena_cli.config import for_iteration

    params = for_iteration(_params(), k)  # every parameter checked before the lock and any work
    stage = run.__module__.rsplit(".", 1)[-1]  # one module per stage: sena_cli.stages.qa is stage qa
    if _launched(params, stage, k):  # its processes printed the summary
        _record(stage, k)
        return None
    with _lock(stage, k), _progress() as phase:
        info = run(params, k, progress=phase)
    shown = {key: v for key, v in info.items() if key not in (*hide, "seconds")}
    _summary(f"iteration {k}: {title}", shown, info.get("seconds"))
    _record(stage, k)
    return info


ITER_OPTION = typer.Option(..., "--iter", "-k", help="Iteration K (θ(K-1) generates, θK is trained).")


# ---------------------------------------------------------------- the pipeline's code


@app.command("code")
def code_fingerprints() -> None:
    """The fingerprint of the code each command runs (data/code/COMMAND.json): DVC reruns a stage when it changes."""
    with _errors():
        from sena_cli import layout
        from sena_cli.artifacts import atomic_dir, atomic_write_text
        from sena_cli.codedeps import PACKAGE, fingerprint_text, fingerprints

        # The folder DVC hashes for this stage (./sena_cli), not wherever the running package was installed from.
        if not Path(PACKAGE, "cli.py").is_file():
            raise SenaError(f"{PACKAGE}/cli.py: not found; run `sena code` in the repository root (where dvc.yaml is)")
        started = time.perf_counter()
        with _lock("code"):
            prints = fingerprints(Path("."))
            with atomic_dir(layout.code_dir()) as tmp:
                for command, files in prints.items():
                    atomic_write_text(tmp / layout.code_file(command).name, fingerprint_text(files))
        _summary(f"code fingerprints written to {layout.code_dir()}", {c: f"{len(f)} files" for c, f in prints.items()},
                 time.perf_counter() - started)
        _record("code", None)


# ---------------------------------------------------------------- embedded default


@app.command()
def world() -> None:
    """Draw the embedded synthetic world: image pool, θ0's instruction set, held-out eval sets."""
    with _errors():
        from sena_cli import layout
        from sena_cli.world.build import build_world, total_images

        params = _params()
        started = time.perf_counter()
        with _lock("world"), _progress() as phase:
            counts = build_world(params, layout.world_dir(), phase("drawing scenes", total_images(params)))
        _summary(f"world written to {layout.world_dir()}", counts, time.perf_counter() - started)
        _record("world", None)


@app.command()
def base() -> None:
    """θ0: train the embedded tiny LLaVA, or point models/iter0 at model.base (your checkpoint)."""
    with _errors():
        from sena_cli.stages.base import run_base

        params = _params()
        started = time.perf_counter()
        with _lock("base"), _progress() as phase:
            info = run_base(params, progress=phase)
        warnings = info.pop("warnings", [])
        _summary("θ0", info, time.perf_counter() - started)
        _warn(warnings)
        _record("base", None)


# ---------------------------------------------------------------- the loop


@app.command()
def pool(
    add: Path = typer.Option(None, "--add", metavar="DIR", help="Make the photos in DIR part of the run: copy "
                             "them into the project's pool/, track it with DVC (`dvc add pool`) and set "
                             "sample.pool: pool in params.yaml. Then commit pool.dvc and `dvc push`."),
    link: bool = typer.Option(False, "--link", help="With --add: hard-link the photos into pool/ instead of "
                              "copying them (same filesystem only)."),
) -> None:
    """The pool's fingerprint (names and sizes of the files `sample` reads): DVC reruns sample when it changes.
    With --add DIR: put your photos under the project and DVC first, so the run travels with them."""
    with _errors():
        if add is not None:
            from sena_cli.stages.pool import add_pool

            with _lock("pool"), _progress() as phase:
                info = add_pool(add, params_file=STATE.params_file, link=link, progress=phase)
            _summary(f"photos of {add} added to the run", {key: v for key, v in info.items() if key != "seconds"},
                     info["seconds"])
            return
        if link:
            raise SenaError("--link goes with --add DIR (`sena pool --add DIR --link`); without --add, `sena pool` "
                            "writes the pool's fingerprint")
        from sena_cli.stages.sample import run_pool

        params = _params()
        with _lock("pool"):
            info = run_pool(params)
        _summary(f"pool fingerprint ({params.sample.pool})", {key: v for key, v in info.items() if key != "seconds"},
                 info["seconds"])


@app.command()
def sample(k: int = ITER_OPTION) -> None:
    """Step 1: draw M fresh images for iteration K from the unlabeled pool."""
    with _errors():
        from sena_cli.stages.sample import run_sample

        _run_stage("sample", run_sample, k)


@app.command()
def noise(k: int = ITER_OPTION) -> None:
    """Step 2: corrupt every sampled image by forward diffusion (t = noise.timestep)."""
    with _errors():
        from sena_cli.stages.noise import run_noise

        _run_stage("noise", run_noise, k)


@app.command()
def qa(k: int = ITER_OPTION) -> None:
    """Step 3: self-questioning, answers on clean and corrupted images, answer self-enhancement."""
    with _errors():
        from sena_cli.stages.qa import run_qa

        _run_stage("qa", run_qa, k)


@app.command()
def pair(k: int = ITER_OPTION) -> None:
    """Step 4: build and filter preference pairs; store θ(K-1)'s reference log-probs."""
    with _errors():
        from sena_cli.stages.pair import run_pair

        info = _run_stage("pairs", run_pair, k, hide=("dropped",))
        if info is None:  # launched: its processes printed the table
            return
        dropped = info["dropped"]
        table = Table(title="pairs dropped, by the first filter they fail", title_justify="left")
        table.add_column("filter", style="bold")
        table.add_column("dropped", justify="right")
        for name, count in dropped.items():
            table.add_row(name, str(count))
        out.print(table)


@app.command()
def train(k: int = ITER_OPTION) -> None:
    """Step 5: θK = θ(K-1) trained on the pairs with DPO + image-content alignment loss."""
    with _errors():
        from sena_cli.stages.train import run_train

        _run_stage("training", run_train, k)


@app.command("eval")
def evaluate(k: int = ITER_OPTION) -> None:
    """Step 6: score θK (models/iterK) and write metrics/iterK.json."""
    with _errors():
        from sena_cli import layout
        from sena_cli.bench.registry import check_params
        from sena_cli.stages.eval import flatten, read_metrics, run_eval

        params = _params()
        check_params(params, str(STATE.params_file))
        if _launched(params, "eval", k):  # its processes printed the table
            _record("eval", k)
            return
        with _lock("eval", k), _progress() as phase:
            before = flatten(read_metrics(0) or {}) if k else {}  # θ0's, for the change: checked before any work
            result = run_eval(params, k, progress=phase)
        # the counts under each benchmark's "n" (what its proportions are over) are no scores to compare
        now = {key: v for key, v in flatten(result["metrics"]).items() if "n" not in key.split(".")}
        table = Table(title=f"θ{k} metrics ({layout.metrics_file(k)})", title_justify="left")
        table.add_column("metric", style="bold")
        table.add_column(f"θ{k}", justify="right")
        if before:
            table.add_column("vs θ0", justify="right")
        for key, value in now.items():
            if not isinstance(value, int | float):  # e.g. the judge's model name, stored with its scores
                table.add_row(key, str(value))
                continue
            row = [key, f"{value:.4f}"]
            if before and isinstance(before.get(key), int | float):
                row.append(f"{value - before[key]:+.4f}")
            table.add_row(*row)
        out.print(table)
        for name, why in result["skipped"].items():
            console.print(f"[yellow]{name}[/]: {redact(why)}", highlight=False)
        _warn(result.get("warnings", []))
        console.print(f"evaluated in {result['seconds']:.1f} s; batches run now: {result['batches run now']}")
        _record("eval", k)


@app.command()
def history() -> None:
    """The headline metrics of θ0…θK in metrics/history.csv (`dvc plots show` draws them)."""
    with _errors():
        from sena_cli.stages.history import run_history

        params = _params()
        with _lock("history"):
            info = run_history(params)
        table = Table(title=f"headline metrics by iteration ({info['output']})", title_justify="left")
        table.add_column("metric", style="bold")
        rows = list(csv.DictReader(open(info["output"])))
        for row in rows:
            table.add_column(f"θ{row['iteration']}", justify="right")
        for key in info["columns"]:
            table.add_row(key, *[f"{float(r[key]):.4g}" if r[key] else "" for r in rows])
        out.print(table)
        _record("history", None)


@app.command()
def report() -> None:
    """A self-contained HTML page about the run: metrics, training curves, filters, sample pairs."""
    with _errors():
        from sena_cli.stages.report import run_report

        params = _params()
        started = time.perf_counter()
        with _lock("report"), _progress() as phase:
            info = run_report(params, progress=phase)
        _summary("report", info, time.perf_counter() - started)
        _record("report", None)


@app.command()
def profile(name: str = typer.Argument(..., help="A file profiles/NAME.yaml of overrides, e.g. `ci`.")) -> None:
    """Lay profiles/NAME.yaml over params.yaml in place (validated; comments and other keys kept)."""
    with _errors():
        from sena_cli.bench.registry import check_params
        from sena_cli.config import apply_profile

        changed = apply_profile(STATE.params_file, Path("profiles") / f"{name}.yaml", check=check_params)
        if not changed:
            out.print(f"profile {name}: {STATE.params_file} already has its values; nothing changed")
            return
        _summary(f"profile {name} applied to {STATE.params_file}",
                 {key: "removed" if v is None else str(v) for key, v in changed.items()})


@app.command("params")
def show_params(
    k: int = typer.Option(None, "--iter", "-k", help="Show iteration K's settings (its overrides applied)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print docs/params.md's reference table instead."),
    write_docs: Path = typer.Option(None, "--write-docs", help="Rewrite that file's generated table."),
) -> None:
    """Every parameter: its effective value (of iteration K), default, allowed values and help."""
    with _errors():
        from rich.markup import escape

        from sena_cli import paramdocs
        from sena_cli.bench.registry import NAMES, SECTIONS, check_params
        from sena_cli.config import for_iteration

        choices = {"eval.benchmarks": NAMES}
        if markdown or write_docs:
            defaults = {name: cls() for name, cls in SECTIONS.items()}
            if write_docs:
                changed = paramdocs.write_docs(write_docs, choices, defaults)
                out.print(f"{write_docs}: {'updated' if changed else 'already current'}")
            else:
                out.print(paramdocs.markdown(choices, defaults), markup=False, highlight=False, soft_wrap=True)
            return
        params = _params()
        sections = check_params(params, str(STATE.params_file))
        if k is not None:
            if not 1 <= k <= params.loop.iterations:
                raise SenaError(f"--iter {k}: iterations with overrides are 1..loop.iterations "
                                f"({params.loop.iterations})")
            params = for_iteration(params, k)
        title = f"{STATE.params_file}" + (f", iteration {k}" if k is not None else "")
        table = Table(title=title, title_justify="left")
        table.add_column("key", style="bold", no_wrap=True)
        for column in ("value", "default", "allowed"):
            table.add_column(column, max_width=28, overflow="fold")
        table.add_column("help", ratio=1)
        for r in paramdocs.rows(params, choices, sections):
            value = redact(paramdocs.show(r.value))
            changed = r.value != r.default
            table.add_row(r.key, f"[yellow]{escape(value)}[/]" if changed else escape(value),
                          escape(paramdocs.show(r.default)), escape(r.allowed), escape(r.help))
        out.print(table)


def main() -> None:
    app()
