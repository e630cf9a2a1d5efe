"""What the editor returns and checks: :class:`Inversion` (x_T and what made it), :class:`EditResult`, the
text-encoder check of a direction, and dtype names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import EditorError


@dataclass
class Inversion:
    """x_T and everything that made it. Constructible from raw latents: ``Inversion(latents=x_T, caption="…")``."""

    latents: torch.Tensor  # x_T [B, 4, h, w]
    caption: str | list[str]
    steps: int = 50
    schedule: str = "symmetric"
    params: dict = field(default_factory=dict)
    image_sha256: list[str] | None = None
    synthetic: bool = False  # x_T drawn from a seed (negative prompt "" and xa 0.15 by default)
    key: str | None = None  # cache key, when it came from / went to the cache
    cached: bool = False  # True when x_T was read from the disk cache instead of computed

    @property
    def captions(self) -> list[str]:
        b = self.latents.shape[0]
        caps = [self.caption] * b if isinstance(self.caption, str) else list(self.caption)
        if len(caps) != b:
            raise EditorError(f"{len(caps)} captions for a batch of {b} latents")
        return caps


@dataclass
class EditResult:
    edited: object  # PIL image (a list for a batch)
    reconstruction: object
    latents: torch.Tensor  # final edited latents [B, 4, h, w]
    reconstruction_latents: torch.Tensor
    caption: str | list[str]
    direction: str
    params: dict = field(default_factory=dict)
    nsfw: list[bool] | None = None
    timings: dict = field(default_factory=dict)
    reference_cached: bool = False  # True when the reference maps came from the disk cache
    notes: list[str] = field(default_factory=list)  # one line each: what the edit did differently than asked


def check_encoder(direction, fingerprint: str, model_id: str | None) -> None:
    """Refuse a direction (anything with ``encoder``, the fingerprint of the text encoder it was built with)
    that was not built with the text encoder whose fingerprint is ``fingerprint``."""
    built = getattr(direction, "encoder", None)
    if built is None or built == fingerprint:
        return
    ref = getattr(direction, "ref", "the direction")
    raise EditorError(
        f"direction {ref} was built with text encoder {built[:12]} ({getattr(direction, 'encoder_model', '?')}), "
        f"but this model's text encoder is {fingerprint[:12]} ({model_id or 'loaded pipeline'}); rebuild it with "
        f"--model {model_id or 'MODEL'}")


def torch_dtype(dtype) -> torch.dtype:
    """A torch dtype from its name (float32, float16, bfloat16 and their short forms) or itself."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise EditorError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return names[dtype]


def delta_tensor(direction, fingerprint: str, model_id: str | None, hidden_size: int, device,
                 scale: float = 1.0) -> tuple[torch.Tensor, str]:
    """(Δ [1, 77, D] on ``device`` in fp32, times ``scale``; its label) from a registry ``Direction`` (checked
    against the text encoder ``fingerprint``) or a raw tensor [77, D] / [1, 77, D]."""
    if hasattr(direction, "vector") and hasattr(direction, "encoder"):
        check_encoder(direction, fingerprint, model_id)
        vec, label = direction.vector, direction.ref
    elif isinstance(direction, torch.Tensor):
        vec, label = direction, "tensor"
    else:
        raise EditorError(f"a direction must be a registry Direction or a tensor [1, 77, D], got "
                          f"{type(direction).__name__}")
    if vec.dim() == 2:
        vec = vec[None]
    if vec.dim() != 3 or vec.shape[0] != 1 or vec.shape[-1] != hidden_size:
        raise EditorError(f"direction {label} has shape {tuple(vec.shape)}, but this model needs [1, 77, "
                          f"{hidden_size}] (a direction for another text encoder width?)")
    if not torch.isfinite(vec).all():
        raise EditorError(f"direction {label} contains NaN or Inf")
    return vec.to(device, torch.float32) * float(scale), label


def is_vector_pair(direction) -> bool:
    """True for an SDXL ``(vector [1, 77, D] or [77, D], pooled [1, P] or [P])`` pair of tensors (not a list of two
    directions)."""
    return (isinstance(direction, (tuple, list)) and len(direction) == 2
            and all(isinstance(t, torch.Tensor) for t in direction)
            and (direction[1].dim() == 1 or (direction[1].dim() == 2 and direction[1].shape[0] == 1)))


def direction_deltas(direction, fingerprint: str, model_id: str | None, hidden_size: int, pooled_size: int | None,
                     device, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(Δ [1, 77, D], Δ_pooled [1, P] or None, label), both times ``scale``: :func:`delta_tensor` plus, for an SDXL
    model (``pooled_size`` set), Δ_pooled from a registry ``Direction`` (``.pooled``) or from a ``(vector,
    pooled)`` pair of tensors (algorithm §12)."""
    pooled = None
    if is_vector_pair(direction):
        direction, pooled = direction
    vec, label = delta_tensor(direction, fingerprint, model_id, hidden_size, device, scale)
    if pooled_size is None:
        if pooled is not None:
            raise EditorError(f"direction {label} carries Δ_pooled, but this model has no pooled conditioning "
                              "(an SD 1.x/2.x model): pass the vector alone")
        return vec, None, label
    if pooled is None:
        pooled = getattr(direction, "pooled", None)
    if pooled is None:
        raise EditorError(f"direction {label} has no Δ_pooled, which an SDXL model needs: build it with the SDXL "
                          "model (p2pz direction build … --model SDXL) or pass a (vector, pooled) pair")
    if pooled.dim() == 1:
        pooled = pooled[None]
    if tuple(pooled.shape) != (1, pooled_size):
        raise EditorError(f"direction {label} has Δ_pooled of shape {tuple(pooled.shape)}, but this model needs "
                          f"[1, {pooled_size}]")
    if not torch.isfinite(pooled).all():
        raise EditorError(f"direction {label}'s Δ_pooled contains NaN or Inf")
    return vec, pooled.to(device, torch.float32) * float(scale), label
