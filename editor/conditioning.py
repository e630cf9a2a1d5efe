"""What the UNet is conditioned on: prompt embeddings and, for SDXL, its added conditioning (algorithm §12).

:class:`Conditioning` carries the rows the UNet is called with; :func:`prompt_conditioning` builds them for a loaded
:class:`~editor.pipeline.Editor` — SD: the text encoder's last hidden state [B, 77, D]; SDXL: the two encoders'
penultimate states [B, 77, 2048] (:func:`editor.text.sdxl_prompt_embeds`), the pooled ``text_embeds`` [B, 1280] and
``time_ids`` (:func:`sdxl_time_ids`), exactly as ``StableDiffusionXLPipeline`` conditions by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .text import SD, sdxl_prompt_embeds


@dataclass
class Conditioning:
    """What the UNet is conditioned on, row by row: the prompt embeddings [N, 77, D] and, for SDXL, its added
    conditioning — the pooled embeddings ``text_embeds`` [N, P] and ``time_ids`` [N, 6] (original size, crop
    top-left, target size: (H, W, 0, 0, H, W)). For a CFG pair the rows are [negative × B, conditional × B]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def unet_kwargs(self) -> dict:
        if self.pooled is None:  # SD 1.x / 2.x: exactly the call diffusers' SD pipeline makes
            return {"encoder_hidden_states": self.hidden}
        return {"encoder_hidden_states": self.hidden,
                "added_cond_kwargs": {"text_embeds": self.pooled, "time_ids": self.time_ids}}

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        """Rows of several conditionings stacked ([negative, conditional] → the CFG pair)."""
        def stack(name):
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values)
        return Conditioning(stack("hidden"), stack("pooled"), stack("time_ids"))


def as_conditioning(cond) -> Conditioning:
    """A :class:`Conditioning` from itself or from plain prompt embeddings (SD)."""
    return cond if isinstance(cond, Conditioning) else Conditioning(cond)


def sdxl_time_ids(height: int, width: int, rows: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """SDXL's micro-conditioning [rows, 6]: original size (H, W), crop top-left (0, 0), target size (H, W) — the
    image's own pixels, as the SDXL pipeline fills them when none are given."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device).repeat(rows, 1)


@torch.inference_mode()
def encode_text(ed, prompts: list[str]) -> torch.Tensor:
    """Prompt embeddings [B, 77, D] exactly as SD conditions on them (pad to 77, truncate, no mask); for SDXL the
    two encoders' penultimate states concatenated [B, 77, 2048]."""
    if ed.family != SD:
        return sdxl_embeds(ed, prompts)[0]
    ids = ed.tokenizer(list(prompts), padding="max_length", max_length=ed.tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids.to(ed.device)
    return ed.text_encoder(ids)[0].to(ed.dtype)


def sdxl_embeds(ed, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    hidden, pooled = sdxl_prompt_embeds((ed.tokenizer, ed.tokenizer_2), (ed.text_encoder, ed.text_encoder_2),
                                        list(prompts), ed.tokenizer.model_max_length, ed.device)
    return hidden.to(ed.dtype), pooled.to(ed.dtype)


def prompt_conditioning(ed, prompts: list[str], latents_shape) -> Conditioning:
    """What the UNet is conditioned on for ``prompts`` at latents of ``latents_shape`` [B, 4, h, w]."""
    if ed.family == SD:
        return Conditioning(encode_text(ed, prompts))
    hidden, pooled = sdxl_embeds(ed, prompts)
    h, w = (int(s) * ed.vae_factor for s in latents_shape[-2:])
    return Conditioning(hidden, pooled, sdxl_time_ids(h, w, len(prompts), ed.dtype, ed.device))
