"""Content hashes: the one helper that turns a JSON-able description into a sha256 address.

Used for direction content (deduplication of versions), cache keys of inversions and attention maps, and the
folder name of a server database's search index. Keys are sorted and non-ASCII text is kept as is, so equal
descriptions always hash equally; values JSON cannot hold (paths, dtypes) are written with ``str``.
"""

from __future__ import annotations

import hashlib
import json


def sha256_json(obj) -> str:
    """sha256 (hex) of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
