"""Noise regularization of DDIM inversion (PAPER §3.1 "Noise regularization", algorithm §5).

During inversion each predicted ε is pushed toward white Gaussian noise by plain gradient steps on two losses:

* **autocorrelation** ``L_auto``: over a pyramid (each level a 2×2 average pool of the last, down to 8×8), the
  squared mean of η·roll(η, r) along H and along W, r drawn uniformly from [1, H/2) — never 0, which would
  turn the term into a variance penalty (the bug the official repo fixed in 2024);
* **KL** to N(0, 1): σ² + μ² − 1 − log(σ² + 1e−7) with the unbiased variance (2× the Gaussian KL).

Per timestep: ``reg_steps`` × (``ac_rolls`` AC steps of size λ_ac/ac_rolls, each with fresh rolls, then one KL
step of size λ_kl). Always computed in fp32. Each batch element is regularized on its own (a fix over both
reference implementations), with its own roll generator, so a batch equals the same images one by one.

The steps run on the whole batch at once: every sample's loss only depends on that sample, so the gradient of the
batch's summed loss is each sample's own gradient, and the shifts are drawn from each sample's generator in the
order :func:`autocorrelation_loss` draws them (channel by channel, level by level). One loop per sample and channel
was 16× slower and most of an inversion's time on small models.
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


def _roll_each(x: torch.Tensor, shifts: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.roll`` of each [H, W] plane of x [B, C, H, W] by its own shift (``shifts`` [B, C]) along ``dim``."""
    n = x.shape[dim]
    idx = (torch.arange(n, device=x.device)[None, None, :] - shifts[:, :, None]) % n  # [B, C, n]
    idx = idx[:, :, :, None] if dim == 2 else idx[:, :, None, :]
    return x.gather(dim, idx.expand_as(x))


def batched_autocorrelation_loss(eps: torch.Tensor, generators) -> torch.Tensor:
    """Σ_b L_auto(ε_b) of ε [B, C, H, W], sample b's shifts drawn from ``generators[b]`` exactly as
    :func:`autocorrelation_loss` draws them, so each sample's gradient equals its own loss's gradient."""
    b, c, h, w = eps.shape
    sizes = [(h, w)]
    while max(sizes[-1]) > 8:
        lh, lw = sizes[-1]
        sizes.append((lh // 2 if lh > 1 else 1, lw // 2 if lw > 1 else 1))
    draws = [[[level_shifts(lh, lw, generators[i]) for lh, lw in sizes] for _ in range(c)] for i in range(b)]
    total = eps.new_zeros(())
    noise = eps
    for level, (lh, lw) in enumerate(sizes):
        if level:
            noise = F.avg_pool2d(noise, kernel_size=(2 if noise.shape[2] > 1 else 1, 2 if noise.shape[3] > 1 else 1))
        for axis, dim in ((0, 2), (1, 3)):
            if draws[0][0][level][axis] is None:  # a side of 1: no neighbours along it (the same for every plane)
                continue
            shifts = torch.tensor([[draws[i][k][level][axis] for k in range(c)] for i in range(b)],
                                  device=eps.device)  # [B, C]
            total = total + ((noise * _roll_each(noise, shifts, dim)).mean(dim=(2, 3)) ** 2).sum()
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
    e = eps.detach().float()  # [B, C, H, W]
    with torch.enable_grad():
        for _ in range(reg_steps):
            if lambda_ac > 0:
                for _ in range(ac_rolls):
                    v = e.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(batched_autocorrelation_loss(v, generators), v)
                    e = e - lambda_ac * g / ac_rolls
            if lambda_kl > 0:
                v = e.detach().requires_grad_(True)
                flat = v.flatten(1)  # [B, C·H·W]: each sample's own mean and (unbiased) variance
                mean, var = flat.mean(1), flat.var(1)
                (g,) = torch.autograd.grad((var + mean ** 2 - 1 - torch.log(var + 1e-7)).sum(), v)
                e = e - lambda_kl * g
            e = e.detach()
    return e.to(eps.dtype)
