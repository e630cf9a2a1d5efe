"""Atomic file writes: the one way p2pz puts a file in place (outputs, libraries, caches, indexes).

The content goes to a temporary file in the destination folder, which is then renamed over the final name, so
an interrupted write (an error, Ctrl-C, a kill) never leaves a partial file under the final name. The finished
file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 minus the umask: 0644 under the
usual umask 022), so a teammate or a web server can read outputs; ``tempfile`` alone would leave them 0600.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str | None = None, *,
                 writer: Callable[[Path], None] | None = None, mode: int | None = None) -> Path:
    """Write ``data`` (bytes or text) — or let ``writer(tmp_path)`` write the file — then rename it to ``path``.

    ``mode``: the final permission bits (default: ``0o666 & ~umask``). The folder is created when missing.
    Returns the final path.

    >>> atomic_write("out/report.json", '{"ok": true}')                      # doctest: +SKIP
    >>> atomic_write("out/edit.png", writer=lambda p: image.save(p, "PNG"))   # doctest: +SKIP
    """
    if (data is None) == (writer is None):
        raise TypeError("atomic_write needs exactly one of data or writer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if data is not None:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            os.close(fd)
            writer(tmp)
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
