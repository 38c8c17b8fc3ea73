"""How stages report long work: `progress(name, total)` opens a phase and returns `tick(n)`.

Stages stay free of rich; the CLI passes a factory that draws progress bars.
"""

from __future__ import annotations

from collections.abc import Callable

Tick = Callable[[int], None]
Progress = Callable[[str, int], Tick]


def no_progress(name: str, total: int) -> Tick:
    return lambda n: None
