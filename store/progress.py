"""Progress bars: the one helper every long task uses (encoding banks, LLM requests, inversion, editing).

Bars go to stderr, vanish when done, and are off when ``enabled`` is false (the CLI turns them off for
``--quiet`` and when stderr is not a terminal). A disabled bar still accepts ``update`` and works as a context
manager, so callers never branch on it.
"""

from __future__ import annotations

import sys
from typing import Callable


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "it",
                 on_update: Callable[[str, int, int | None], None] | None = None):
    """A tqdm bar (imported lazily) on stderr; ``with progress_bar(n, "encoding cat") as bar: bar.update(k)``.

    ``on_update(desc, done, total)`` is also called after every update, bar shown or not (the web app's jobs
    report their progress through it)."""
    from tqdm import tqdm  # lazy: tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not enabled)
    return bar if on_update is None else _Reporting(bar, desc, total, on_update)


class _Reporting:
    """A tqdm bar that also tells a callback how far it got."""

    def __init__(self, bar, desc: str, total: int | None, on_update):
        self.bar, self.desc, self.total, self.on_update, self.done = bar, desc, total, on_update, 0

    def update(self, n: int = 1):
        self.bar.update(n)
        self.done += n
        self.on_update(self.desc, self.done, self.total)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.bar, name)
