"""The student networks (PAPER §4.4 "distillation"; Isola et al., "Image-to-Image Translation with Conditional
Adversarial Networks", 2017): a pix2pix U-Net generator and a 70×70 PatchGAN discriminator.

The paper distils a direction into a conditional GAN trained on source/edit pairs made by the diffusion editor; its
architecture is not published beyond "conditional GAN", so p2pz uses pix2pix's, configurable in width and depth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..errors import EditorError


@dataclass(frozen=True)
class StudentConfig:
    """Networks and training (pix2pix defaults where the paper gives none)."""

    size: int = 256  # training and inference resolution (square)
    base_channels: int = 64  # generator width at full resolution (ngf)
    depth: int = 7  # down-sampling levels of the U-Net (size must be divisible by 2^depth)
    disc_channels: int = 64  # discriminator width (ndf)
    disc_layers: int = 3  # 3 → the 70×70 PatchGAN
    lambda_l1: float = 100.0
    lambda_lpips: float = 0.0  # > 0 only when LPIPS weights are given
    lr: float = 2e-4
    beta1: float = 0.5
    batch: int = 8
    seed: int = 0
    # pix2pix's augmentation (Isola et al. 2017, §6.2): each pair upscaled by ``jitter`` (286/256), randomly
    # cropped back, and mirrored half the time — the same transform for source and target. 0 / False: off.
    jitter: float = 286 / 256 - 1
    mirror: bool = True

    def __post_init__(self):
        if self.size % (2 ** self.depth):
            raise EditorError(f"size {self.size} must be divisible by 2^depth = {2 ** self.depth}; lower --depth "
                              "or pick another size")
        if not 0 <= self.jitter <= 1:
            raise EditorError(f"jitter must be between 0 and 1 (pix2pix: {286 / 256 - 1:.3f}), got {self.jitter}")
        if min(self.base_channels, self.disc_channels, self.depth, self.disc_layers, self.batch) < 1:
            raise EditorError("widths, depths and the batch size must be ≥ 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(channels: int) -> nn.Module:
    # Instance norm: the same output for a sample whatever its batch (students run one image at a time).
    return nn.InstanceNorm2d(channels, affine=True)


class UNetGenerator(nn.Module):
    """pix2pix U-Net: 4×4 stride-2 convolutions down to 1/2^depth, transposed convolutions back up with skip
    connections, tanh output in [−1, 1]."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        widths = [min(cfg.base_channels * 2 ** i, cfg.base_channels * 8) for i in range(cfg.depth)]
        self.down = nn.ModuleList()
        c_in = 3
        for i, w in enumerate(widths):
            layers = [nn.Conv2d(c_in, w, 4, 2, 1, bias=False)]
            if 0 < i < cfg.depth - 1:
                layers.append(_norm(w))
            self.down.append(nn.Sequential(*layers))
            c_in = w
        self.up = nn.ModuleList()
        for i in reversed(range(cfg.depth)):
            c_skip = widths[i - 1] if i > 0 else 0
            c_from = widths[i] if i == cfg.depth - 1 else widths[i] * 2
            if i > 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_from, c_skip, 4, 2, 1, bias=False),
                                             _norm(c_skip)))
            else:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_from, 3, 4, 2, 1), nn.Tanh()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, S, S] in [−1, 1]
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else nn.functional.leaky_relu(h, 0.2))
            skips.append(h)
        h = skips.pop()
        for i, block in enumerate(self.up):
            h = block(h)
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        return h  # [B, 3, S, S]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: scores overlapping patches of concat(source, image) (70×70 receptive field for three
    layers); the last layer is linear (LSGAN)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        w = cfg.disc_channels
        layers = [nn.Conv2d(6, w, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = w
        for n in range(1, cfg.disc_layers):
            c_next = min(w * 2 ** n, w * 8)
            layers += [nn.Conv2d(c, c_next, 4, 2, 1, bias=False), _norm(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        c_next = min(w * 2 ** cfg.disc_layers, w * 8)
        layers += [nn.Conv2d(c, c_next, 4, 1, 1, bias=False), _norm(c_next), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_next, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([source, image], 1))  # [B, 1, patches, patches]


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
