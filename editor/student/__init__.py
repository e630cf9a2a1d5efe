"""The real-time student (PAPER §4.4): a pix2pix-style conditional GAN distilled from a direction's diffusion edits.

``model`` holds the networks and their configuration, ``pairs`` the teacher's dataset, ``train`` the
deterministic, resumable training loop, ``apply`` the trained student.
"""

from .apply import Student, weights_bytes
from .model import PatchDiscriminator, StudentConfig, UNetGenerator, parameter_count
from .train import Trainer, lr_at

__all__ = ["StudentConfig", "UNetGenerator", "PatchDiscriminator", "Trainer", "lr_at", "parameter_count", "Student",
           "weights_bytes"]
