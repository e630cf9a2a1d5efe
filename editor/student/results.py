"""What a student's training run leaves beside its weights (PAPER §4.4): the held-out metrics against the
teacher, a sample grid (source | teacher | student) and the loss plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p2pz.store.files import atomic_write

from ..plots import save_loss_plot


def _pil(t: torch.Tensor):
    return Image.fromarray(((t.permute(1, 2, 0).clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8))


def held_out_metrics(trainer, sources: torch.Tensor, targets: torch.Tensor, structure=None) -> dict:
    """Student vs teacher on held-out pairs: L1 and PSNR (images in [0, 1]), LPIPS when the trainer has it,
    structure distance when a DINO ``structure`` scorer is given, and the identity mapping's L1 for scale (what the
    student would score by copying its input)."""
    if len(sources) == 0:
        return {}
    pred = trainer.predict(sources)
    a, b = (pred + 1) / 2, (targets + 1) / 2
    mse = float(((a - b) ** 2).mean())
    out = {"held_out_pairs": len(sources), "l1": float((pred - targets).abs().mean()),
           "identity_l1": float((sources - targets).abs().mean()),
           "psnr": float(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))))}
    if trainer.lpips is not None:
        out["lpips"] = float(trainer.lpips(pred.to(trainer.device), targets.to(trainer.device)).mean())
    if structure is not None:
        values = structure([_pil(t) for t in targets], [_pil(t) for t in pred])
        out["structure_distance"] = float(sum(values) / len(values))
    return out


def write_samples(path: Path, trainer, sources: torch.Tensor, targets: torch.Tensor, k: int = 4) -> None:
    """A grid, one row per pair: source | teacher | student."""
    k = min(k, len(sources))
    if k == 0:
        return
    pred = trainer.predict(sources[:k])
    rows = [torch.cat([sources[i], targets[i], pred[i]], dim=2) for i in range(k)]  # [3, S, 3S]
    grid = ((torch.cat(rows, dim=1).permute(1, 2, 0).clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    atomic_write(path, writer=lambda p: Image.fromarray(grid).save(p, format="PNG"))


def write_loss_plot(path: Path, history: list[dict]) -> None:
    """The three GAN losses against the step (``losses.png``)."""
    steps = [h["step"] for h in history]
    save_loss_plot(path, [("", {k: (steps, [h[k] for h in history]) for k in ("loss_l1", "loss_gan", "loss_d")})])
