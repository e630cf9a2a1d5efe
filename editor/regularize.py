"""Noise regularization of DDIM inversion (PAPER §3.1 "Noise regularization", algorithm §5).

During inversion each predicted ε is pushed toward white Gaussian noise by plain gradient steps on two losses:

* **autocorrelation** ``L_auto``: over a pyramid (each level a 2×2 average pool of the last, down to 8×8), the
  squared mean of η·roll(η, r) along H and along W, r drawn uniformly from [1, H/2) — never 0, which would
  turn the term into a variance penalty (the bug the official repo fixed in 2024);
* **KL** to N(0, 1): σ² + μ² − 1 − log(σ² + 1e−7) with the unbiased variance (2× the Gaussian KL).

Per timestep: ``reg_steps`` × (``ac_rolls`` AC steps of size λ_ac/ac_rolls, each with fresh rolls, then one KL
step of size λ_kl). Always computed in fp32. Each batch element is regularized on its own (a fix over both
reference implementations), with its own roll generator, so a batch equals the same images one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pyramid_levels(size: int) -> int:
    """Levels of the AC pyramid for a square latent of side ``size`` (64 → 4, 32 → 3)."""
    levels = 1
    while size > 8:
        size //= 2
        levels += 1
    return levels


def sample_roll(size: int, generator: torch.Generator | None) -> int:
    """r ∈ [1, size/2), from a seeded torch generator (never 0; 1 for sides of 2 or 3)."""
    high = max(size // 2, 2)
    return int(torch.randint(1, high, (1,), generator=generator).item())


def level_shifts(height: int, width: int, generator: torch.Generator | None) -> tuple[int | None, int | None]:
    """The circular shifts of one pyramid level along the height and the width (algorithm §5).

    A square level uses one shift for both axes, as the official code does. A non-square level (``keep_aspect``)
    draws each axis's shift from that axis's own size, so a shift is never a multiple of the side it rolls
    (which would turn the correlation term into a variance term). A side of 1 has no neighbours: None."""
    r_h = sample_roll(height, generator) if height > 1 else None
    if width == height:
        return r_h, r_h
    return r_h, (sample_roll(width, generator) if width > 1 else None)


def autocorrelation_loss(eps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_auto of one sample ε [C, H, W] (fresh random shifts per pyramid level and channel)."""
    total = eps.new_zeros(())
    for c in range(eps.shape[0]):
        noise = eps[c][None, None]  # [1, 1, H, W]
        while True:
            h, w = noise.shape[2], noise.shape[3]
            r_h, r_w = level_shifts(h, w, generator)
            if r_h is not None:
                total = total + (noise * torch.roll(noise, shifts=r_h, dims=2)).mean() ** 2
            if r_w is not None:
                total = total + (noise * torch.roll(noise, shifts=r_w, dims=3)).mean() ** 2
            if max(h, w) <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=(2 if h > 1 else 1, 2 if w > 1 else 1))  # down to 8 px
    return total


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """2·KL(N(μ, σ²) ‖ N(0, 1)) of all elements of one sample (unbiased σ²)."""
    mean, var = eps.mean(), eps.var()
    return var + mean ** 2 - 1 - torch.log(var + 1e-7)


def regularize(eps: torch.Tensor, generators: list[torch.Generator], lambda_ac: float = 20.0,
               lambda_kl: float = 20.0, reg_steps: int = 5, ac_rolls: int = 5) -> torch.Tensor:
    """Regularized ε [B, C, H, W] (same dtype as given; the work is done in fp32)."""
    if reg_steps <= 0 or (lambda_ac <= 0 and lambda_kl <= 0):
        return eps
    out = []
    for b in range(eps.shape[0]):
        e = eps[b].detach().float()
        with torch.enable_grad():
            for _ in range(reg_steps):
                if lambda_ac > 0:
                    for _ in range(ac_rolls):
                        v = e.detach().requires_grad_(True)
                        (g,) = torch.autograd.grad(autocorrelation_loss(v, generators[b]), v)
                        e = e - lambda_ac * g / ac_rolls
                if lambda_kl > 0:
                    v = e.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(kl_loss(v), v)
                    e = e - lambda_kl * g
                e = e.detach()
        out.append(e)
    return torch.stack(out).to(eps.dtype)
