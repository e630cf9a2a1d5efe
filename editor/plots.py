"""Training-loss plots (the student's ``losses.png``, the shapes model's ``loss.png``): one PNG, one panel per
stage, written atomically. matplotlib loads only here, with its file-only backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2pz.store.files import atomic_write


def save_loss_plot(path: Path, panels: list[tuple[str, dict[str, tuple[list, list]]]], *, smooth: bool = False,
                   size: tuple[float, float] = (6, 3), dpi: int = 100) -> None:
    """``panels``: (title, {label: (steps, values)}) each, side by side, log-scaled. ``smooth``: each series
    drawn faintly and with its moving average over about 1/50 of its points (noisy per-step losses)."""
    import matplotlib  # heavy: only when a plot is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib

    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for label, (steps, values) in series.items():
            if not len(values):
                continue
            if smooth:
                ax.plot(steps, values, lw=0.5, alpha=0.4)
                w = max(1, len(values) // 50)
                ax.plot(steps[w - 1:], np.convolve(values, np.ones(w) / w, mode="valid"), lw=1.5)
            else:
                ax.plot(steps, values, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        if title:
            ax.set_title(title, fontsize=9)
        if not smooth and len(series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, writer=lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
