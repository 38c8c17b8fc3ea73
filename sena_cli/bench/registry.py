"""Every benchmark sena runs, found in the modules of sena_cli/bench/ (as lmms-eval's task folders).

A benchmark is declared once, in its own module, as a `Benchmark` record (bench/record.py):
its params section, runner, counter, metric keys, headline charts and, when judged, the
judge's rubric and version. This module discovers the records (pkgutil over the package), so
adding a benchmark touches only its module, its test and a docs row. `sena eval` runs the
records listed in eval.benchmarks; `sena history`, `sena report` and `dvc plots` take their
headline metrics from the records of the benchmarks found in the metrics files.

The configuration imports none of this: `check_params` checks eval.benchmarks and every
benchmark's section eval.<name> with config's own field validator, when `sena eval`,
`sena params` or `sena profile` runs.
"""

from __future__ import annotations

import dataclasses
import pkgutil
import typing
from pathlib import Path

from sena_cli.bench.record import Benchmark, Chart, Context  # noqa: F401 - the names benchmarks use
from sena_cli.config import build, check_value
from sena_cli.errors import SenaError, redact


def _discover() -> tuple[Benchmark, ...]:
    found: list[Benchmark] = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):  # the modules of sena_cli/bench/
        if info.name in ("registry", "record"):
            continue
        module = pkgutil.resolve_name(f"{__package__}.{info.name}")
        found += ([module.BENCHMARK] if hasattr(module, "BENCHMARK") else []) + list(getattr(module, "BENCHMARKS", ()))
    return tuple(sorted(found, key=lambda b: (b.order, b.name)))


BENCHMARKS: tuple[Benchmark, ...] = _discover()
BY_NAME = {b.name: b for b in BENCHMARKS}
NAMES = [b.name for b in BENCHMARKS]
SECTIONS = {b.name: b.section for b in BENCHMARKS if b.section is not None}


def get(name: str) -> Benchmark:
    if name not in BY_NAME:
        raise SenaError(f"'eval.benchmarks' has {name!r}; allowed: {', '.join(NAMES)}")
    return BY_NAME[name]


def check_params(params, source: str = "params") -> dict:
    """eval.benchmarks names registered benchmarks, and every eval.<name> section is one of a
    benchmark's, each key valid: config's own field check. Returns {name: its section's settings}."""
    check_value(list[str], params.eval.benchmarks, "eval.benchmarks", {"choices": NAMES}, source)
    for name in params.eval.sections:
        if name not in SECTIONS:
            raise SenaError(f"{source}: unknown key 'eval.{name}'; remove it or use one of the generic keys or "
                            f"a benchmark's section: {', '.join(SECTIONS)}")
    return {name: build(cls, params.eval.sections.get(name) or {}, f"eval.{name}.", source)
            for name, cls in SECTIONS.items()}


def selected(params, source: str = "params") -> list[str]:
    """The benchmarks θK is scored on: eval.benchmarks, or, when it is [], the synthetic world's for the
    embedded θ0. A real model.base with [] is refused: shapes on 48-px images say nothing about it."""
    if params.eval.benchmarks:
        return list(params.eval.benchmarks)
    if params.model.base == "embedded":
        return [b.name for b in BENCHMARKS if b.embedded_default]
    real = [b.name for b in BENCHMARKS if not b.run.startswith("sena_cli.bench.world:")]
    raise SenaError(f"{source}: 'eval.benchmarks' is [], which scores the synthetic world (embedded θ0 only), and "
                    f"model.base is a real model ({redact(params.model.base)}); name the benchmarks to score it on, "
                    f"e.g. `eval.benchmarks: [coco_pope, amber, mmbench]`, with their files (docs/benchmarks.md; "
                    f"one of: {', '.join(real)})")


def file_keys(b: Benchmark) -> list[str]:
    """The keys of eval.<name> that name a file or folder the benchmark reads (from its inputs;
    `eval.<name>.*` is every text or list-of-text key without fixed choices)."""
    if b.section is None:
        return []
    fields = {f.name: f for f in dataclasses.fields(b.section)}
    hints = typing.get_type_hints(b.section)
    paths = [name for name, f in fields.items() if hints[name] in (str, list[str]) and not f.metadata.get("choices")]
    prefix = f"eval.{b.name}."
    keys = [key.removeprefix(prefix) for key in b.inputs if key.startswith(prefix)]
    return paths if "*" in keys else [key for key in keys if key in paths]


def check_files(b: Benchmark, settings) -> None:
    """Every file or folder `b` reads is set and there; else one line naming the key and where to get it."""
    for name in file_keys(b):
        value = getattr(settings, name)
        key = f"eval.{b.name}.{name}"
        if not value:
            raise SenaError(f"'{key}' is empty; {b.name} reads files you download: {b.source}; set {key} to "
                            f"where you put them")
        for path in [value] if isinstance(value, str) else value:
            if not Path(path).exists():
                raise SenaError(f"{path}: not found ({key}); {b.name}'s files come from {b.source}")


def judge_versions() -> dict[str, str]:
    """{judged benchmark: its prompt version}: what a journaled judge reply depends on."""
    return {b.name: b.prompt_version for b in BENCHMARKS if b.judged}


def ran(metrics_files: list[dict]) -> list[Benchmark]:
    """The benchmarks whose key appears in any of the metrics, in registry order."""
    keys = {key for metrics in metrics_files for key in metrics}
    return [b for b in BENCHMARKS if b.key in keys]


def metric(metrics: dict, dotted: str) -> float | None:
    """The number at a dotted key ('coco_pope.adversarial.f1'), or None."""
    for part in dotted.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return metrics if isinstance(metrics, int | float) and not isinstance(metrics, bool) else None


def headline_keys(metrics: list[dict]) -> list[str]:
    """The headline metrics of the benchmarks that ran, in registry order, each present somewhere."""
    keys = [key for b in ran(metrics) for key in b.headlines]
    return [key for key in dict.fromkeys(keys) if any(metric(m, key) is not None for m in metrics)]
