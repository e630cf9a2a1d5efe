"""Editing with stored directions: which model to load for them (the registry's policy) and the editor.

The editor knows nothing of the registry; this is where the two meet. A direction records the text encoder it
was built with, so by default the editor loads the model the directions were built with.
"""

from __future__ import annotations


def choose_model(directions, model: str | None = None) -> str | None:
    """``model`` when given; else the one model every direction was built with; else None (the default model,
    ``$P2PZ_MODEL`` or CompVis/stable-diffusion-v1-4)."""
    if model:
        return model
    models = {d.encoder_model for d in directions if getattr(d, "encoder_model", None)}
    return models.pop() if len(models) == 1 else None


def open_editor(directions, model: str | None = None, **kwargs):
    """An :class:`editor.Editor` for ``directions`` (see :func:`choose_model`); ``kwargs`` go to
    ``Editor.from_pretrained`` (device, dtype, captioner, safety_checker, progress, map_dtype, cache). A
    direction built with another text encoder is refused before the UNet and VAE load."""
    from editor import Editor

    return Editor.from_pretrained(choose_model(directions, model), directions=list(directions), **kwargs)
