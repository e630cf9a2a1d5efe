"""The cache folder (``$P2PZ_HOME/cache``): what it holds, how big it is, and a size cap with LRU eviction.

Kinds of entries, each a file or a folder under ``<cache>/<kind>/<key[:2]>/``:

* ``inversions`` — one x_T per (image, model, caption, parameters): ≈ 64 KB at SD defaults;
* ``maps`` — reference cross-attention maps of one image, one float16 file per timestep plus the reconstruction
  latents (written last: an entry without them is incomplete). Only with ``--cache-maps``: ≈ 3.3 GB per image at
  SD defaults (16 layers × [16, HW, 77] × 50 steps);
* ``encodings`` — per-bank sentence statistics for ``direction inspect`` (block sums and sentence keys): ≈ 4 MB
  per 1000-sentence bank at D = 768;
* ``llm`` — raw LLM replies, one small JSON file per request;
* ``exports`` — ``.p2pz`` libraries a server handed out, one zip per content key (the manifest without its
  date and every tensor but students' weights, which it names by sha256): a direction's few kilobytes, or
  ≈ 100 MB with a student.

Every entry counts toward ``$P2PZ_CACHE_MAX_GB`` (default 20); after each write the least recently used entries
are removed until the total fits. A kind with a share (``SHARES``: ``exports``, which anonymous web requests can
fill) may hold at most that fraction of the cap, and a write of it evicts only its own entries: it can never push
out another kind. Reading an entry marks it used. Deleting any of it loses nothing but time.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from p2pz.store.db import StoreError

KINDS = ("maps", "inversions", "encodings", "llm", "exports")
DEFAULT_MAX_GB = 20.0
SHARES = {"exports": 0.25}  # fraction of the cap a kind may hold; its writes evict only its own entries


def max_bytes() -> int:
    """The cap from ``$P2PZ_CACHE_MAX_GB`` (GiB, may be fractional; 0 keeps nothing)."""
    raw = os.environ.get("P2PZ_CACHE_MAX_GB", "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * 2**30)
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"P2PZ_CACHE_MAX_GB={raw!r} is not a number; set it to a size in GB such as 20") from None
    if value < 0 or value != value:
        raise StoreError(f"P2PZ_CACHE_MAX_GB={raw!r} must be ≥ 0")
    return int(value * 2**30)


@dataclass
class Entry:
    kind: str
    path: Path
    bytes: int
    used: float  # last use (modification time of the entry)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def entries(root: Path, kinds=KINDS) -> list[Entry]:
    out = []
    for kind in kinds:
        base = Path(root) / kind
        if not base.is_dir():
            continue
        for shard in base.iterdir():
            if not shard.is_dir():
                continue
            for item in shard.iterdir():
                if item.name.startswith(".") and item.name.endswith(".tmp"):
                    continue  # an atomic_write in progress (or a killed one's, which store.files cleans up)
                try:
                    out.append(Entry(kind, item, _size(item), item.stat().st_mtime))
                except FileNotFoundError:  # removed meanwhile by another process
                    continue
    return out


def usage(root: Path) -> dict[str, dict]:
    """{kind: {"entries": n, "bytes": b}} for every kind, zeros included."""
    out = {kind: {"entries": 0, "bytes": 0} for kind in KINDS}
    for e in entries(root):
        out[e.kind]["entries"] += 1
        out[e.kind]["bytes"] += e.bytes
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear(root: Path, kind: str | None = None) -> dict:
    """Remove every entry (of one kind) → {"entries": n, "bytes": b} removed."""
    if kind is not None and kind not in KINDS:
        raise StoreError(f"unknown cache kind {kind!r}; choose one of {', '.join(KINDS)}")
    gone = entries(root, [kind] if kind else KINDS)
    for e in gone:
        _remove(e.path)
    return {"entries": len(gone), "bytes": sum(e.bytes for e in gone)}


def touch(path: Path) -> None:
    """Mark an entry used now (LRU order)."""
    try:
        now = time.time()
        os.utime(path, (now, now))
    except OSError:
        pass


def _kind_of(root: Path, path: Path | None) -> str | None:
    """The kind of the entry at ``path`` (``<root>/<kind>/<shard>/<name>``), or None."""
    try:
        parts = Path(path).relative_to(Path(root)).parts if path is not None else ()
    except ValueError:
        return None
    return parts[0] if len(parts) == 3 and parts[0] in KINDS else None


def evict(root: Path, limit: int | None = None, keep: Path | None = None) -> list[Entry]:
    """Remove least recently used entries until the cache fits ``limit`` (default :func:`max_bytes`); ``keep``
    (the entry just written) goes last. When ``keep`` is of a kind with a share (``SHARES``), only entries of
    that kind go, until the kind fits its share of ``limit`` and the whole cache fits ``limit``. Returns what was
    removed."""
    limit = max_bytes() if limit is None else limit
    all_entries = entries(root)
    total = sum(e.bytes for e in all_entries)
    kind = _kind_of(root, keep)
    if kind in SHARES:  # the kind's own entries only: what it may hold is its share and what the others leave
        own = [e for e in all_entries if e.kind == kind]
        held = sum(e.bytes for e in own)
        limit = min(int(SHARES[kind] * limit), limit - (total - held))
        all_entries, total = own, held
    removed = []
    order = sorted(all_entries, key=lambda e: (keep is not None and e.path == keep, e.used))
    for e in order:
        if total <= limit:
            break
        _remove(e.path)
        total -= e.bytes
        removed.append(e)
    return removed
