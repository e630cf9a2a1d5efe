"""Applying a trained student: one forward pass per image (PAPER §4.4, "real-time").

``Student.load(registry, "cat-to-dog")(image) -> PIL.Image``. Weights travel only as safetensors bytes (never a
pickle), checked against the configuration's network before use.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import EditorError
from ..image import load_image
from .model import StudentConfig, UNetGenerator

MAX_WEIGHTS_BYTES = 2 << 30


def weights_bytes(generator: torch.nn.Module) -> bytes:
    from safetensors.torch import save  # lazy: safetensors

    return save({k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()})


class Student:
    def __init__(self, generator: UNetGenerator, config: StudentConfig, label: str = "student", device: str = "cpu"):
        self.generator = generator.eval().requires_grad_(False).to(device)
        self.config, self.label, self.device = config, label, device

    @classmethod
    def from_weights(cls, weights: bytes, config: dict, label: str = "student", device: str = "cpu") -> "Student":
        from safetensors import SafetensorError  # lazy: safetensors
        from safetensors.torch import load  # lazy: safetensors

        if len(weights) > MAX_WEIGHTS_BYTES:
            raise EditorError(f"student {label}: weights of {len(weights)} bytes exceed the {MAX_WEIGHTS_BYTES >> 30} GiB cap")
        try:
            cfg = StudentConfig(**config)
            state = load(bytes(weights))
        except (SafetensorError, TypeError, ValueError) as exc:
            raise EditorError(f"student {label}: unusable weights or configuration ({str(exc)[:200]})") from None
        generator = UNetGenerator(cfg)
        expected = generator.state_dict()
        wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
        if wrong or set(state) - set(expected):
            raise EditorError(f"student {label}: its weights do not fit its configuration ({(wrong or sorted(set(state) - set(expected)))[:2]})")
        generator.load_state_dict(state)
        return cls(generator, cfg, label, device)

    @classmethod
    def load(cls, registry, ref: str, version: int | None = None, device: str = "cpu") -> "Student":
        """The latest (or ``version``) student of a stored direction, from anything with ``student(ref, version)``
        returning a record with ``weights``, ``config`` and ``ref`` (``registry.Registry``)."""
        record = registry.student(ref, version)
        return cls.from_weights(record.weights, record.config, record.ref, device)

    @torch.no_grad()
    def __call__(self, image) -> Image.Image:
        return self.batch([image])[0]

    @torch.no_grad()
    def batch(self, images: list) -> list[Image.Image]:
        """Edit images (any size: each is resized to the student's size and back)."""
        size = self.config.size
        pils = [load_image(im) for im in images]
        x = torch.stack([torch.from_numpy(np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32)
                                          / 127.5 - 1.0).permute(2, 0, 1) for im in pils]).to(self.device)
        y = self.generator(x).clamp(-1, 1)
        out = []
        for im, t in zip(pils, y):
            arr = ((t.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            out.append(Image.fromarray(arr).resize(im.size, Image.BICUBIC))
        return out
