"""pix2pix-zero editor (DESIGN §6): captioning, regularized DDIM inversion, cross-attention guidance.

>>> from editor import Editor
>>> ed = Editor.from_pretrained("CompVis/stable-diffusion-v1-4")           # doctest: +SKIP
>>> inv = ed.invert("cat.png")                                             # doctest: +SKIP
>>> res = ed.edit(inv, registry.get("cat-to-dog"))                         # doctest: +SKIP

Models load through :mod:`registry.loader`; directions are read through :mod:`registry` only. Names resolve
lazily so that importing :mod:`editor.errors` stays light.
"""

from .errors import EditorError, ImageError

__all__ = ["Editor", "EditorError", "ImageError", "EditResult", "Inversion", "DEFAULT_MODEL"]


def __getattr__(name):
    if name in ("Editor", "EditResult", "Inversion", "DEFAULT_MODEL"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'editor' has no attribute {name!r}")
