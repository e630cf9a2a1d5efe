"""Image in, image out (algorithm §3): loading, preprocessing to [−1, 1], and decoding back to PIL.

Loading applies the EXIF orientation and converts every mode to RGB (alpha composited on white, 16-bit
scaled down, palette and CMYK converted). By default an image is resized to a square of the model's native size
(512 px for SD, as the paper); ``keep_aspect=True`` scales the longer side to that size and rounds both sides to
multiples of the VAE factor instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageError, missing_image


def load_image(source, notes: list[str] | None = None) -> Image.Image:
    """A PIL RGB image, upright, from a path or a PIL image. ``notes`` collects warnings (animated input)."""
    if isinstance(source, Image.Image):
        img = source
        name = "image"
    else:
        name = str(source)
        path = Path(source)
        if not path.is_file():
            raise missing_image(name)
        try:
            img = Image.open(path)
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is larger than Pillow's decompression-bomb limit ({exc}); refusing it") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name} is not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        img.seek(0)
        if notes is not None:
            notes.append(f"{name} is animated ({frames} frames); only the first frame is edited")
    img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def target_size(width: int, height: int, size: int, multiple: int, keep_aspect: bool) -> tuple[int, int]:
    if not keep_aspect:
        return size, size
    scale = size / max(width, height)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return w, h


def preprocess(images: list[Image.Image], size: int, multiple: int, keep_aspect: bool = False) -> torch.Tensor:
    """[B, 3, H, W] float32 in [−1, 1] (LANCZOS resize, as the reference)."""
    tensors = []
    shape = None
    for img in images:
        w, h = target_size(img.width, img.height, size, multiple, keep_aspect)
        if shape is not None and (w, h) != shape:
            raise ImageError("images in one batch must have the same size; edit them separately or drop keep_aspect")
        shape = (w, h)
        arr = np.asarray(img.resize((w, h), Image.LANCZOS), dtype=np.float32) / 255.0  # [H, W, 3]
        tensors.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(tensors) * 2.0 - 1.0


def pixels_sha256(img: Image.Image) -> str:
    """Content address of an (upright, RGB) image: its size and pixels."""
    h = hashlib.sha256(f"{img.width}x{img.height}".encode())
    h.update(np.asarray(img, dtype=np.uint8).tobytes())
    return h.hexdigest()


def to_pil(decoded: torch.Tensor) -> list[Image.Image]:
    """VAE output [B, 3, H, W] in [−1, 1] → PIL images: (y/2 + 0.5).clamp(0, 1) · 255, rounded."""
    arr = (decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]
