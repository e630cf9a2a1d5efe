"""Stage 2 of the editor, regularized DDIM inversion (PAPER §3.1; algorithm §5), as functions of a loaded
:class:`editor.pipeline.Editor`: the image's VAE latent, then the inversion loop written out — predict ε under the
caption, pull it toward white Gaussian noise (autocorrelation and KL steps), one DDIM step up the schedule."""

from __future__ import annotations

import torch

from .cache import Expected
from .config import InversionConfig
from .errors import EditorError
from .image import preprocess, target_size
from .records import Inversion
from .regularize import regularize
from .schedule import ddim_step, inversion_plan


def image_latents(ed, images: list, cfg: InversionConfig) -> torch.Tensor:
    """Pixels → [B, 3, H, W] in [−1, 1] → the VAE latent z₀ [B, 4, h, w], scaled: the posterior's mean
    (``posterior="mode"``) or a sample with one CPU generator per image seeded ``cfg.seed`` (the same sample on
    every device and batch size)."""
    x = preprocess(images, cfg.size or ed.native_size, ed.vae_factor, cfg.keep_aspect).to(ed.device, ed.vae.dtype)
    with torch.inference_mode():
        dist = ed.vae.encode(x).latent_dist
        if cfg.posterior == "mode":
            z0 = dist.mode()
        else:
            noise = torch.cat([torch.randn((1, *dist.mean.shape[1:]),
                                           generator=torch.Generator("cpu").manual_seed(cfg.seed))
                               for _ in images]).to(ed.device, dist.mean.dtype)
            z0 = dist.mean + dist.std * noise
        return (z0 * ed.vae_scale).to(ed.dtype)


def latent_spec(ed, images: list, cfg: InversionConfig) -> Expected:
    """What x_T of these images must be: [B, C, H/f, W/f] in the model dtype (a cached one is checked)."""
    w, h = target_size(images[0].width, images[0].height, cfg.size or ed.native_size, ed.vae_factor,
                       cfg.keep_aspect)
    return Expected((len(images), int(ed.unet.config.in_channels), h // ed.vae_factor, w // ed.vae_factor), ed.dtype)


def inversion_loop(ed, z0: torch.Tensor, captions: list[str], cfg: InversionConfig) -> torch.Tensor:
    """The inversion loop on VAE latents z₀ [B, 4, h, w] (scaled) → x_T. CFG is off (scale 1); the
    regularization runs in fp32 whatever the model dtype; v-prediction outputs are converted to ε first."""
    try:
        plan = inversion_plan(ed.scheduler, cfg.steps, cfg.schedule)
    except ValueError as exc:
        raise EditorError(str(exc)) from None
    cond = ed.condition(captions, z0.shape)  # [B, 77, D] (SDXL: + pooled, time ids)
    gens = [torch.Generator("cpu").manual_seed(cfg.seed) for _ in captions]
    x = z0.to(ed.device, ed.dtype)
    ed.stats["inversions"] += 1
    with ed.progress_bar(len(plan), "inversion") as bar, torch.inference_mode(False), torch.no_grad():
        for move in plan:
            # (1) predict the noise at this level under the caption
            out = ed.unet_out(x, move.t, cond)
            eps = ed.epsilon(out.float(), x.float(), move.a_from)  # [B, 4, h, w], fp32
            # (2) pull ε toward white Gaussian noise: autocorrelation + KL gradient steps (algorithm §5)
            eps = regularize(eps, gens, cfg.lambda_ac, cfg.lambda_kl, cfg.reg_steps, cfg.ac_rolls)
            # (3) one deterministic DDIM step up the noise schedule
            x = ddim_step(eps, x.float(), move.a_from, move.a_to).to(ed.dtype)
            bar.update()
    return x


def synthetic_inversion(ed, prompt: str, seed: int = 0, size: int | None = None, steps: int = 50) -> Inversion:
    """x_T ~ N(0, I) from a seed, for editing a generated image (algorithm §0 "synthetic images")."""
    size = size or ed.native_size
    h = size // ed.vae_factor
    g = torch.Generator("cpu").manual_seed(seed)
    x_t = torch.randn((1, ed.unet.config.in_channels, h, h), generator=g).to(ed.device, ed.dtype)
    return Inversion(latents=x_t, caption=prompt, steps=steps, params={"seed": seed, "size": size}, synthetic=True)
