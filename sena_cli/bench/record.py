"""What a benchmark declares about itself, in its own module: one `Benchmark` record.

A module of sena_cli/bench/ that defines `BENCHMARK` (or `BENCHMARKS`, a tuple of records)
is found by the registry (bench/registry.py) and nothing else has to name it. The record
holds everything about the benchmark: its name and metrics key, its params section (the
keys of eval.<name>, declared with config's `param`), its runner and counter, its metric
keys and headline charts, for a judged one the judge's rubric and its version, and where its
files come from (`source`, said in the one line that refuses a missing one). The runner
and counter are named as "module:function" (resolved when eval calls them), so that history
and report, which read the records' charts, do not depend on the benchmarks' running code:
    run(ctx, vlm, tick) -> (metrics dict, per-question records: a list, or what ctx.records() gave)
    count(ctx) -> questions it will ask; reads and checks its files before the model loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sena_cli.config import build


@dataclass(frozen=True)
class Chart:
    title: str
    series: tuple[tuple[str, str], ...]  # (label, metric key below the benchmark's key)


@dataclass(frozen=True)
class Benchmark:
    name: str  # its name in eval.benchmarks, and the key of its section eval.<name>
    key: str  # its top-level key in metrics/iterK.json
    inputs: tuple[str, ...]  # the params keys (or folder) it reads
    run: str  # "module:function" of run(ctx, vlm, tick), see the module docstring ...
    count: str  # ... and of count(ctx): named, not referenced, so that only eval runs them
    metrics: tuple[str, ...]  # its metric keys; <split>, <category>, … stand for families
    charts: tuple[Chart, ...]  # its headline metrics, grouped as the report draws them
    order: int = 100  # where it stands in tables and charts (the world's first)
    section: type | None = None  # the dataclass of eval.<name>'s keys; None: it reads none of its own
    judged: bool = False  # needs eval.judge; skipped with a note without one
    judge_prompt: str = ""  # the judge's rubric (sena's wording of the benchmark's published one) ...
    prompt_version: str = ""  # ... and its version, stored with the scores: change them together
    source: str = ""  # where its files come from, said whenever one of them is missing
    embedded_default: bool = False  # scored when eval.benchmarks is [] and θ0 is the embedded one

    @property
    def headlines(self) -> list[str]:
        """Full dotted keys of the headline metrics, e.g. 'coco_pope.adversarial.f1'."""
        return [f"{self.key}.{k}" for chart in self.charts for _, k in chart.series]

    def runner(self) -> Callable:
        return _resolve(self.run)

    def counter(self) -> Callable:
        return _resolve(self.count)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class Context:
    """What a runner gets besides the model: params, the project root, the judge (if any)."""

    params: Any  # sena_cli.config.Params
    root: Path = Path(".")
    judge: Any = None  # sena_cli.bench.judge.Judge for judged benchmarks
    # Where a runner's per-question records go (stage eval sets it per benchmark: a file they are
    # appended to as they come, so a benchmark's length does not grow memory); None: a list.
    sink: Callable[[], Any] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def records(self):
        """An empty collection for a runner's per-question records, to `extend` as its answers come
        and to return: a list, unless stage eval gave a sink."""
        return self.sink() if self.sink is not None else []

    def settings(self, name: str, section: type, source: str = "params"):
        """eval.<name> of the params as `section`, checked by config's own field validator."""
        return self.once(("settings", name), lambda: build(section, self.params.eval.sections.get(name) or {},
                                                           f"eval.{name}.", source))

    def once(self, key, make: Callable[[], Any]) -> Any:
        """make()'s result, made once per evaluation (a benchmark's files read once)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]
