"""BLIP captioning (PAPER §4 uses BLIP; algorithm §2): transformers' ``BlipForConditionalGeneration``.

The settings of the LAVIS ``blip_caption`` model the official code uses: decoding starts from the text prompt
"a picture of", beam search with 3 beams, 10 to 30 tokens counted *with* the prompt's tokens (transformers'
``generate`` counts ``min_length``/``max_length`` over the whole sequence, as LAVIS does), and the prompt is cut
off the returned caption. Default model: a snapshot's own ``captioner/`` folder when it ships one, else
``Salesforce/blip-image-captioning-base``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .shapes.caption import ShapesCaptioner

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


class _SnapshotCaptioner:
    """The default of ``Editor.from_pretrained(captioner=…)``: see :func:`snapshot_captioner`."""

    def __repr__(self) -> str:
        return f"<the snapshot's captioner/, else {DEFAULT_CAPTIONER}>"


SNAPSHOT_CAPTIONER = _SnapshotCaptioner()
PROMPT = "a picture of"
GENERATE = {"num_beams": 3, "min_length": 10, "max_length": 30}


CAPTION_KEY = "p2pz:caption"  # the PNG text chunk in which p2pz records the caption of an image it rendered


def snapshot_captioner(folder) -> str:
    """The captioner to use with the model snapshot in ``folder``: its own ``captioner/`` subfolder when it ships
    one (a BLIP ``config.json``, or a ``captioner.json`` naming a built-in captioner such as the shapes model's),
    else :data:`DEFAULT_CAPTIONER`."""
    own = Path(folder) / "captioner"
    return str(own) if (own / "config.json").is_file() or (own / "captioner.json").is_file() else DEFAULT_CAPTIONER


def recorded_caption(image) -> str | None:
    """The caption recorded in an image's ``p2pz:caption`` PNG text chunk (a PIL image or a path), else None."""
    info = getattr(image, "info", None)
    if info is None:
        from PIL import Image  # lazy: PIL

        try:
            with Image.open(image) as im:
                info = dict(im.info)
        except (OSError, ValueError):
            return None
    text = info.get(CAPTION_KEY)
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())[:500]
    return text or None


def png_info(caption: str):
    """A ``PngInfo`` recording ``caption``: ``image.save(path, pnginfo=png_info(caption))``."""
    from PIL.PngImagePlugin import PngInfo  # lazy: PIL

    info = PngInfo()
    info.add_text(CAPTION_KEY, caption)
    return info


def strip_prompt(text: str) -> str:
    """The caption without the decoding prompt and extra whitespace."""
    text = " ".join(text.split()).strip()
    if text.lower().startswith(PROMPT):
        text = text[len(PROMPT):].strip()
    return text


class Captioner:
    def __init__(self, model, processor, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.device = device

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_CAPTIONER, device: str = "cpu",
                        dtype: torch.dtype = torch.float32) -> "Captioner":
        builtin = Path(str(name_or_path)) / "captioner.json"
        if builtin.is_file():
            kind = json.loads(builtin.read_text()).get("kind")
            if kind == "shapes-parser":
                return ShapesCaptioner()
            raise ValueError(f"{builtin} names an unknown captioner kind {kind!r}")
        from transformers import BlipForConditionalGeneration, BlipProcessor  # lazy: transformers
        from transformers.utils import logging as hf_logging  # lazy: transformers

        hf_logging.disable_progress_bar()
        processor = BlipProcessor.from_pretrained(name_or_path)
        model = BlipForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
        model.requires_grad_(False)
        return cls(model, processor, device)

    @torch.inference_mode()
    def __call__(self, images) -> list[str]:
        images = list(images)
        inputs = self.processor(images=images, text=[PROMPT] * len(images), return_tensors="pt").to(self.device)
        pixel_values = inputs["pixel_values"].to(self.model.dtype)
        ids = self.model.generate(pixel_values=pixel_values, input_ids=inputs["input_ids"],
                                  attention_mask=inputs["attention_mask"], **GENERATE)
        return [strip_prompt(t) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
