"""The shapes model's training configuration (one dataclass, recorded in every checkpoint and the manifest) and
its learning-rate schedule: linear warm-up, then cosine decay to 10 %."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class TrainConfig:
    seed: int = 0
    vae_steps: int = 1000
    unet_steps: int = 6000
    batch: int = 32
    vae_batch: int = 16
    vae_lr: float = 2e-3
    unet_lr: float = 8e-4
    warmup: int = 200
    ema_decay: float = 0.999
    pool: int = 8192
    p_uncond: float = 0.1
    kl_weight: float = 1e-6
    min_snr_gamma: float = 5.0
    unet_widths: tuple = (32, 64, 64)
    checkpoint_every: int = 100

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_widths"] = list(self.unet_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["unet_widths"] = tuple(d["unet_widths"])
        return cls(**d)

    def identity(self) -> dict:
        """The settings a resumed run must share (checkpoint_every may change)."""
        d = self.to_dict()
        d.pop("checkpoint_every")
        return d


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % of ``lr`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
