"""Atomic file writes: the one way p2pz puts a file in place (outputs, libraries, caches, indexes).

The content goes to a temporary file in the destination folder, which is then renamed over the final name, so
an interrupted write (an error, Ctrl-C, a kill) never leaves a partial file under the final name. The finished
file gets the permissions an ordinary ``open(path, "w")`` would give it (0666 minus the umask: 0644 under the
usual umask 022), so a teammate or a web server can read outputs; ``tempfile`` alone would leave them 0600.

A temporary is named ``.NAME.p2pz-HOST-PID-XXXXXXXX.tmp`` (HOST: 8 hex digits of the host name's hash). A writer
killed outright (``kill -9``, a power cut) cannot remove its own, so the first write into a folder in each
process removes the stale ones it finds there: those of this host whose process is gone, those of any host older
than a day, and those of the older naming (``.NAME.XXXXXXXX.tmp``, before p2pz recorded the owner) older than an
hour. Nothing else in the folder is touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

_umask_lock = threading.Lock()
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TEMP = re.compile(r"\..+\.p2pz-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[a-z0-9_]{8}\.tmp")
_LEGACY_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
STALE_FOREIGN_S = 24 * 3600   # a temporary of another host (whose processes we cannot see), or a reused pid
STALE_LEGACY_S = 3600         # a temporary of the older naming (no owner recorded)
_swept: set[str] = set()
_swept_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or not ours to judge): keep its file
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries :func:`atomic_write` left in ``folder`` when a writer was killed (see the module
    docstring for the rule) → the paths removed. Errors (a folder we cannot list or write) are ignored."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not e.name.endswith(".tmp") or not e.name.startswith("."):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            age = now - e.stat(follow_symlinks=False).st_mtime
            m = _TEMP.fullmatch(e.name)
            if m:
                stale = age > STALE_FOREIGN_S or (m["host"] == _HOST and not _alive(int(m["pid"])))
            else:
                stale = bool(_LEGACY_TEMP.fullmatch(e.name)) and age > STALE_LEGACY_S
            if stale:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_stale_temporaries(folder)


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
    _sweep_once(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.p2pz-{_HOST}-{os.getpid()}-",
                                    suffix=".tmp")
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
