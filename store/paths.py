"""The one owner of where p2pz keeps its data (architecture §2).

``$P2PZ_HOME`` if set, else ``$XDG_DATA_HOME/p2pz``, else ``~/.local/share/p2pz``. Inside it:
``registry.db`` (the default SQLite registry), ``index/`` (FAISS caches), ``cache/`` (fingerprints,
tokenizer vocabularies, LLM responses, inversions).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    env = os.environ.get("P2PZ_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "p2pz"


def cache_dir() -> Path:
    return data_home() / "cache"


def default_db_url() -> str:
    """``$P2PZ_DB_URL`` if set, else SQLite at ``<data home>/registry.db``."""
    env = os.environ.get("P2PZ_DB_URL")
    if env:
        return env
    return f"sqlite:///{data_home() / 'registry.db'}"
