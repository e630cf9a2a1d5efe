"""Stored directions in any diffusers pipeline: the keyword arguments that generate with a direction applied.

Users who never run p2pz's editor can still use the registry from their own code::

    from diffusers import StableDiffusionXLPipeline
    from p2pz.registry import Registry, direction_kwargs

    pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0")
    d = Registry.open().get("cat-to-dog", "stabilityai/stable-diffusion-xl-base-1.0")
    image = pipe(**direction_kwargs(pipe, "a cat sitting on a sofa", d, scale=1.0)).images[0]

The embeddings are exactly the editor's (:mod:`editor.conditioning`): the conditional prompt is c + s·Δ (SDXL: and
pooled + s·Δ_pooled) and the negative is the prompt itself, c — pix2pix-zero's rule (PAPER §3.3), which keeps what
the prompt describes and moves only along Δ — or ``negative_prompt``'s embeddings when given.
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

from p2pz.editor.errors import EditorError

from .records import RegistryError

_fingerprints: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _fingerprint(module) -> str:
    """A loaded text encoder's fingerprint (computed once per module object: hashing every weight takes seconds
    on SDXL's bigG)."""
    from p2pz.editor.loader import compute_fingerprint  # lazy: torch

    if module not in _fingerprints:
        _fingerprints[module] = compute_fingerprint(module)
    return _fingerprints[module]


def pipeline_encoder(pipe) -> SimpleNamespace:
    """What p2pz needs of a loaded ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``: its family, text
    encoders and tokenizers, device, dtype and the fingerprint a direction's ``encoder`` is checked against."""
    from p2pz.editor.text import SD, SDXL, pair_fingerprint  # lazy: torch

    second = getattr(pipe, "text_encoder_2", None)
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise RegistryError(f"{type(pipe).__name__} has no text_encoder/tokenizer; give a StableDiffusionPipeline or "
                            "StableDiffusionXLPipeline")
    family = SD if second is None else SDXL
    encoders = [pipe.text_encoder] + ([second] if second is not None else [])
    fingerprint = (_fingerprint(pipe.text_encoder) if family == SD
                   else pair_fingerprint([_fingerprint(m) for m in encoders]))
    return SimpleNamespace(
        family=family, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, device=pipe.device,
        tokenizer_2=getattr(pipe, "tokenizer_2", None), text_encoder_2=second, dtype=pipe.unet.dtype,
        vae_factor=getattr(pipe, "vae_scale_factor", 8), fingerprint=fingerprint,
        hidden_size=sum(int(m.config.hidden_size) for m in encoders),
        pooled_size=None if second is None else int(second.config.projection_dim),
        model=getattr(pipe, "name_or_path", None) or type(pipe).__name__)


def direction_kwargs(pipe, prompt: str | list[str], direction, scale: float = 1.0, *,
                     negative_prompt: str | list[str] | None = None) -> dict:
    """``prompt_embeds`` and ``negative_prompt_embeds`` (SDXL: and ``pooled_prompt_embeds``,
    ``negative_pooled_prompt_embeds``) for ``pipe(**kwargs, …)`` with ``direction`` applied at ``scale``.

    ``direction`` is a registry :class:`~registry.library.records.Direction` (its text encoder is checked against the
    pipeline's: a direction of another encoder is refused) or raw tensors (Δ; for SDXL a ``(Δ, Δ_pooled)`` pair)."""
    from p2pz.editor.conditioning import prompt_conditioning  # lazy: torch
    from p2pz.editor.records import direction_deltas  # lazy: torch

    enc = pipeline_encoder(pipe)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if negative_prompt is None:
        negatives = prompts
    else:
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts):
        raise RegistryError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    try:
        delta, pooled, _ = direction_deltas(direction, enc.fingerprint, enc.model, enc.hidden_size, enc.pooled_size,
                                            enc.device, scale)
    except EditorError as exc:
        raise RegistryError(str(exc)) from None
    shape = (len(prompts), 4, 128, 128)  # time ids are the pipeline's own: only the embeddings are used here
    cond, neg = prompt_conditioning(enc, prompts, shape), prompt_conditioning(enc, negatives, shape)
    kwargs = {"prompt_embeds": (cond.hidden.float() + delta).to(enc.dtype),
              "negative_prompt_embeds": neg.hidden}
    if pooled is not None:
        kwargs.update(pooled_prompt_embeds=(cond.pooled.float() + pooled).to(enc.dtype),
                      negative_pooled_prompt_embeds=neg.pooled)
    return kwargs
