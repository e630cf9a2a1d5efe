"""DDIM timesteps and steps, forward (sampling) and inverse (inversion) — algorithm §4, PAPER §3.1.

Both samplers share one signature, ``step(eps, x, a_from, a_to) -> x'``: a deterministic DDIM move (η = 0)
of ``x`` from noise level ᾱ = ``a_from`` to ``a_to`` given the noise prediction ε. Sampling moves down the
schedule, inversion up it; the arithmetic is the same.

Plans (lists of (unet timestep, ᾱ from, ᾱ to)):

* sampling — diffusers' DDIM spacing ("leading" + ``steps_offset``): with N = 50, t = 981, 961, …, 1; the
  last step lands on ``final_alpha_cumprod`` (ᾱ[0] for SD, ``set_alpha_to_one=False``);
* inversion, ``symmetric`` (default, = diffusers' ``DDIMInverseScheduler`` after PR #2619): the exact mirror,
  t = 1, 21, …, 981, from ᾱ[t − ratio] (ᾱ[0] for the first) to ᾱ[t], UNet evaluated at the target t;
* inversion, ``reference`` (the official repo): t = 21, 41, …, 961 (N − 2 steps), from ᾱ[t − 1] to
  ᾱ[t + ratio − 1], UNet at t. It is not the mirror of the sampler (documented in algorithm §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INVERSION_MODES = ("symmetric", "reference")


@dataclass(frozen=True)
class Move:
    t: int  # timestep given to the UNet
    a_from: float  # ᾱ of the current latent
    a_to: float  # ᾱ after the step


def sampler_timesteps(scheduler, steps: int) -> list[int]:
    """The sampler's timesteps, from the scheduler object itself (its ``set_timesteps`` contract)."""
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def _alphas(scheduler) -> torch.Tensor:
    return scheduler.alphas_cumprod.to(torch.float64)


def _final_alpha(scheduler) -> float:
    return 1.0 if scheduler.config.get("set_alpha_to_one", False) else float(_alphas(scheduler)[0])


def sampling_plan(scheduler, steps: int) -> list[Move]:
    ts = sampler_timesteps(scheduler, steps)
    a = _alphas(scheduler)
    ratio = scheduler.config.num_train_timesteps // steps
    plan = []
    for t in ts:
        prev = t - ratio
        plan.append(Move(t, float(a[t]), float(a[prev]) if prev >= 0 else _final_alpha(scheduler)))
    return plan


def inversion_plan(scheduler, steps: int, mode: str = "symmetric") -> list[Move]:
    if mode not in INVERSION_MODES:
        raise ValueError(f"unknown inversion schedule {mode!r}; choose one of {', '.join(INVERSION_MODES)}")
    ts = sampler_timesteps(scheduler, steps)[::-1]  # ascending: 1, 21, …, 981
    a = _alphas(scheduler)
    ratio = scheduler.config.num_train_timesteps // steps
    last = scheduler.config.num_train_timesteps - 1
    if mode == "symmetric":
        return [Move(t, float(a[t - ratio]) if t - ratio >= 0 else _final_alpha(scheduler), float(a[t])) for t in ts]
    if steps < 3:
        raise ValueError("the reference inversion schedule walks N − 2 steps: it needs at least 3")
    return [Move(t, float(a[t - 1]), float(a[min(t + ratio - 1, last)])) for t in ts[1:-1]]


def ddim_step(eps: torch.Tensor, x: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """One deterministic DDIM move (DDIM, Song et al. 2021, eq. 12 with σ = 0):
    x̂₀ = (x − √(1−ᾱ_from)·ε)/√ᾱ_from;  x' = √ᾱ_to·x̂₀ + √(1−ᾱ_to)·ε."""
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
    return a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps


def to_epsilon(model_output: torch.Tensor, x: torch.Tensor, alpha: float, prediction_type: str) -> torch.Tensor:
    """Convert a UNet output to ε at noise level ᾱ = ``alpha`` (ε-, v- and x₀-prediction)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha ** 0.5 * model_output + (1 - alpha) ** 0.5 * x
    if prediction_type == "sample":
        return (x - alpha ** 0.5 * model_output) / (1 - alpha) ** 0.5
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")
