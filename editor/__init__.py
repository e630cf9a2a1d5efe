"""pix2pix-zero editor: captioning, regularized DDIM inversion, cross-attention guidance (docs/algorithm.md).

>>> from p2pz import Editor
>>> ed = Editor.from_pretrained("CompVis/stable-diffusion-v1-4")           # doctest: +SKIP
>>> inv = ed.invert("cat.png")                                             # doctest: +SKIP
>>> res = ed.edit(inv, registry.get("cat-to-dog"))                         # doctest: +SKIP

The editor knows nothing of the registry: a direction is anything with ``vector`` [1, 77, D] and ``encoder``
(the text-encoder fingerprint), or a raw tensor. Models load through :mod:`editor.loader`. Names resolve lazily
so that importing :mod:`editor.errors` stays light.
"""

from .errors import EditorError, ImageError

__all__ = ["Editor", "EditorError", "ImageError", "EditResult", "Inversion", "InversionConfig", "EditConfig",
           "DEFAULT_MODEL"]


def __getattr__(name):
    if name in ("Editor", "EditResult", "Inversion"):
        from . import pipeline  # lazy: torch

        return getattr(pipeline, name)
    if name == "DEFAULT_MODEL":
        from .loader import DEFAULT_MODEL  # lazy names

        return DEFAULT_MODEL
    if name in ("InversionConfig", "EditConfig"):
        from . import config  # lazy names

        return getattr(config, name)
    raise AttributeError(f"module 'editor' has no attribute {name!r}")
