"""The shapes model's training configuration (one dataclass, recorded in every checkpoint and the manifest) and
its learning-rate schedule: linear warm-up, then cosine decay to 10 %.

``captions`` picks the training text: ``"plain"`` (the world's own caption of each image, as the shipped model
was trained) or ``"varied"`` (``caption_variants`` captions per image — the world's own, then
``world.varied_caption`` phrasings in many sentence frames; algorithm §11)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CAPTIONS = ("plain", "varied")


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
    captions: str = "plain"  # plain | varied
    caption_variants: int = 1  # captions encoded per pool image (> 1 only with captions="varied")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` (one line) for settings no run can use."""
        if self.captions not in CAPTIONS:
            raise ValueError(f"captions must be one of {', '.join(CAPTIONS)}, not {self.captions!r}")
        v = self.caption_variants
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"caption_variants must be an integer ≥ 1, not {self.caption_variants!r}")
        if self.caption_variants > 1 and self.captions != "varied":
            raise ValueError(f"caption_variants = {self.caption_variants} needs captions='varied' (plain training "
                             "has one caption per image)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_widths"] = list(self.unet_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config of a checkpoint or manifest; keys added since it was written take their defaults."""
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
