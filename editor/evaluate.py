"""Scoring edits: load the metric models once, score (source, edit) pairs, average a run (editor.metrics).

``Scorers.load`` takes the models the user named (hub ids or folders; nothing is downloaded in tests) and keeps
them for a whole run. ``score_pair`` gives every metric of one image; ``summarize`` the run's means (the paper's
CLIP-Acc is the mean of the per-image ``clip_acc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import EditorError
from .metrics import ClipScorer, DEFAULT_CLIP, DEFAULT_DINO, LPIPS, StructureDistance, background_metrics


@dataclass
class Scorers:
    clip: ClipScorer
    structure: StructureDistance
    lpips: LPIPS | None = None
    names: dict = field(default_factory=dict)  # what was loaded, recorded with every evaluation
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, clip_model: str | None = None, dino_model: str | None = None, lpips_weights: str | None = None,
             lpips_net: str = "alex", device: str = "cpu") -> "Scorers":
        clip_model, dino_model = clip_model or DEFAULT_CLIP, dino_model or DEFAULT_DINO
        notes = []
        try:
            lpips = LPIPS.from_weights(lpips_weights, net=lpips_net).to(device)
        except EditorError as exc:
            if lpips_weights is not None:
                raise
            lpips = None
            notes.append(f"bg_lpips skipped: {exc}")
        return cls(ClipScorer.from_pretrained(clip_model, device), StructureDistance.from_pretrained(dino_model, device),
                   lpips, {"clip_model": clip_model, "dino_model": dino_model,
                           "lpips": None if lpips is None else {"net": lpips_net, "weights": lpips_weights}}, notes)

    def score_pair(self, source_image, edit_image, source: str, target: str, mask=None) -> dict[str, float]:
        """:func:`score_pair` with these models (the interface a student's pair filter calls)."""
        return score_pair(self, source_image, edit_image, source, target, mask)


def texts(source: str, target: str) -> tuple[str, str]:
    """The prompts CLIP compares against: "a photo of a SOURCE", "a photo of a TARGET"."""
    return f"a photo of a {source}", f"a photo of a {target}"


def score_pair(scorers: Scorers, source_image, edit_image, source: str, target: str, mask=None) -> dict[str, float]:
    """Every metric of one edit against its source image (``mask``: the edited region, bool [H, W])."""
    src_text, tgt_text = texts(source, target)
    out = scorers.clip.all_scores(source_image, edit_image, src_text, tgt_text)
    out["structure_distance"] = scorers.structure([source_image], [edit_image])[0]
    out.update(background_metrics(source_image, edit_image, mask, scorers.lpips))
    return out


def summarize(per_image: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the images (infinite PSNRs — identical backgrounds — left out of its mean)."""
    keys = sorted({k for row in per_image for k in row})
    out = {}
    for k in keys:
        values = [row[k] for row in per_image if k in row and math.isfinite(row[k])]
        if values:
            out[k] = sum(values) / len(values)
    return out
