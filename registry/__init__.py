"""p2pz registry: the public Python API and the CLI (architecture §5).

>>> from p2pz import Registry
>>> reg = Registry.open()          # $P2PZ_DB_URL, else $P2PZ_HOME/registry.db

Attributes are imported lazily so that ``p2pz --help`` stays fast.
"""

__all__ = ["Registry", "RegistryError", "Bank", "Direction", "SearchHit", "direction_kwargs"]


def __getattr__(name):
    if name == "direction_kwargs":  # stored directions in any diffusers pipeline
        from p2pz.registry.library.pipelines import direction_kwargs  # lazy: torch

        return direction_kwargs
    if name in __all__:
        from p2pz.registry.library import api  # lazy: sqlalchemy

        return getattr(api, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
