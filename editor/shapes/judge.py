"""Judging edits and generations on the shapes world with the parser (the functional checks and the ablation).

Every figure is a measurement on images, never on latents:
- **edit success**: the parser reads the target attribute in the edited image;
- **structure kept**: IoU of the object masks of source and edit (for a scene edit, too: the object must stay);
- **background kept** (object edits): mean absolute pixel change (0‥1) outside both objects' masks, each grown
  by one pixel so the anti-aliased rims do not count;
- **kept**: the attributes that should not change (a colour edit keeps the shape …) read the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import world
from ..errors import EditorError
from .parse import Parsed, background_change, iou, parse

ATTRIBUTES = ("shape", "colour", "background")


def _grow(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


@dataclass
class EditScore:
    n: int
    success: float  # fraction whose parsed ``attribute`` is the target
    structure_iou: float  # mean mask IoU source ↔ edit
    background_change: float | None  # mean |Δpixel| outside the objects (object edits); None for scene edits
    kept: float  # fraction whose other attributes (of shape, colour, background) are unchanged

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def judge_edits(sources, edits, attribute: str, target: str) -> EditScore:
    """Score edited images against their sources (PIL images or uint8 arrays [64, 64, 3])."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}")
    if len(sources) != len(edits) or not sources:
        raise ValueError("give as many edits as sources, at least one")
    ok, ious, bgs, kept = [], [], [], []
    for src, out in zip(sources, edits):
        a, b = parse(src), parse(out)
        ok.append(getattr(b, attribute) == target)
        ious.append(iou(a.mask, b.mask))
        if attribute != "background":
            bgs.append(background_change(src, out, _grow(a.mask) | _grow(b.mask)))
        kept.append(all(getattr(a, k) == getattr(b, k) for k in ATTRIBUTES if k != attribute))
    return EditScore(len(sources), float(np.mean(ok)), float(np.mean(ious)),
                     float(np.mean(bgs)) if bgs else None, float(np.mean(kept)))


def attribute_of(value: str) -> str:
    """Which attribute of the world a concept names ("square" → shape, "blue" → colour, "night" → background)."""
    if value in world.SHAPES:
        return "shape"
    if value in world.SKIES:
        return "background"
    if value in world.COLOURS:
        return "colour"
    raise EditorError(f"'{value}' is not a shape, colour or sky of the shapes world ({', '.join(world.SHAPES)}; "
                      f"{', '.join(world.COLOURS)}; {', '.join(world.SKIES)}): filter its pairs with --no-filter "
                      "or the CLIP/DINO scorers")


@dataclass
class ShapesJudge:
    """The parser as a student's pair filter (PAPER §4.4 trains on filtered teacher pairs): for a direction
    SOURCE → TARGET of the world's vocabulary, a pair scores ``target_read`` (the edit reads TARGET),
    ``others_kept`` (the other attributes read as in the source) and ``mask_iou``. Same interface as
    :class:`editor.evaluate.Scorers`."""

    attribute: str
    target: str

    @classmethod
    def for_concepts(cls, source: str, target: str) -> "ShapesJudge":
        attribute = attribute_of(target)
        if attribute_of(source) != attribute:
            raise EditorError(f"'{source}' → '{target}' does not change one attribute of the shapes world")
        return cls(attribute, target)

    @property
    def names(self) -> dict:
        return {"judge": "shapes-parser", "attribute": self.attribute, "target": self.target}

    def score_pair(self, source_image, edit_image, source: str = "", target: str = "", mask=None) -> dict:
        a, b = parse(source_image), parse(edit_image)
        others = [k for k in ATTRIBUTES if k != self.attribute]
        return {"target_read": float(getattr(b, self.attribute) == self.target),
                "others_kept": float(all(getattr(a, k) == getattr(b, k) for k in others)),
                "mask_iou": round(float(iou(a.mask, b.mask)), 4)}


def accuracy(images, scenes) -> dict:
    """Shape / colour / background accuracy of generated images against the scenes their captions describe."""
    parsed: list[Parsed] = [parse(im) for im in images]
    out = {}
    for k in ATTRIBUTES:
        out[k] = float(np.mean([getattr(p, k) == getattr(s, k) for p, s in zip(parsed, scenes)]))
    out["n"] = len(parsed)
    return out


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images (peak 255)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
