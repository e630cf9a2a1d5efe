"""The installed p2pz version (recorded in every output's provenance and reported by the web app)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """p2pz's version from its installed metadata; ``unknown`` when run from a tree that is not installed."""
    try:
        return version("p2pz")
    except PackageNotFoundError:
        return "unknown"
