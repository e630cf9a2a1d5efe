"""The real-time student (PAPER §4.4): a pix2pix-style conditional GAN distilled from a direction's diffusion edits.

``model`` holds the networks and their configuration, ``train`` the deterministic, resumable training loop.
"""

from .model import PatchDiscriminator, StudentConfig, UNetGenerator, parameter_count
from .train import Trainer, lr_at

__all__ = ["StudentConfig", "UNetGenerator", "PatchDiscriminator", "Trainer", "lr_at", "parameter_count"]
