"""Progress bars: the one helper every long task uses (encoding banks, LLM requests, inversion, editing).

Bars go to stderr, vanish when done, and are off when ``enabled`` is false (the CLI turns them off for
``--quiet`` and when stderr is not a terminal). A disabled bar still accepts ``update`` and works as a context
manager, so callers never branch on it.
"""

from __future__ import annotations

import sys


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "it"):
    """A tqdm bar (imported lazily) on stderr; ``with progress_bar(n, "encoding cat") as bar: bar.update(k)``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not enabled)
