"""p2pz: reusable, searchable, reproducible edit directions for diffusion models (pix2pix-zero).

Installed, every part of p2pz lives under this one package (architecture §2): ``p2pz.registry`` (the registry,
its CLI and web app), ``p2pz.editor`` (models and editing), ``p2pz.store``, ``p2pz.generators`` and
``p2pz.migrations``. The everyday names are here:

>>> import p2pz
>>> from p2pz import Registry, Editor, direction_kwargs
>>> reg = Registry.open()            # $P2PZ_DB_URL, else $P2PZ_HOME/registry.db      # doctest: +SKIP

Names load on first use, so ``import p2pz`` imports neither torch nor SQLAlchemy.
"""

from p2pz.store.version import __version__

__all__ = ["__version__", "Registry", "RegistryError", "Bank", "Direction", "SearchHit", "direction_kwargs",
           "Editor", "EditorError", "EditResult", "Inversion", "InversionConfig", "EditConfig"]

_FROM_REGISTRY = {"Registry", "RegistryError", "Bank", "Direction", "SearchHit", "direction_kwargs"}


def __getattr__(name):
    if name in _FROM_REGISTRY:
        import p2pz.registry as registry  # lazy: start-up (sqlalchemy, torch for direction_kwargs)

        return getattr(registry, name)
    if name in __all__:
        import p2pz.editor as editor  # lazy: start-up (torch for Editor)

        return getattr(editor, name)
    raise AttributeError(f"module 'p2pz' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
