"""p2pz's version: the one place it is written (architecture §2). The wheel's metadata reads it from here
(``pyproject.toml``: ``version = {attr = "p2pz.store.version.__version__"}``), ``p2pz --version`` and
``p2pz.__version__`` print it, and every output's provenance records it."""

from __future__ import annotations

__version__ = "0.1.0"


def package_version() -> str:
    """The version recorded in provenance and reported by the web app."""
    return __version__
