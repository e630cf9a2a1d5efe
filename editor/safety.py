"""Stable Diffusion's safety checker on edited images: flagged images are blanked, as diffusers' pipeline does."""

from __future__ import annotations

import numpy as np
import torch


def blank_flagged(images: list, checker, extractor, device, dtype) -> tuple[list, list[bool]]:
    """(images with the flagged ones blanked, a flag per image); no checker: unchanged, all False."""
    if checker is None or extractor is None:
        return images, [False] * len(images)
    with torch.inference_mode():
        clip_input = extractor(images, return_tensors="pt").pixel_values.to(device, dtype)
        arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
        checked, flags = checker(images=arr, clip_input=clip_input)
    flags = [bool(f) for f in flags]
    if any(flags):
        from PIL import Image  # lazy: PIL

        images = [Image.fromarray((np.asarray(c) * 255).round().astype(np.uint8)) if f else im
                  for im, c, f in zip(images, checked, flags)]
    return images, flags
