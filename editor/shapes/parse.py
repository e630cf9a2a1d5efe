"""The parser: reads a shapes-world image back into attributes; the judge of every functional check.

Steps (each one a measurement a person could make with a ruler and a colour chart):
1. **Background**, row by row, from the border columns (objects never touch the two outer pixels); its class is
   the nearest plain colour or sky by the mean of the top and the bottom border rows.
2. **Object mask**: a first pass marks pixels far (RGB distance > 40) from their row's background; the object's
   colour is estimated from the most distant half of them; then each pixel's *coverage* is its projection onto
   the background → object colour line, and the mask is coverage > ½ (the anti-aliased edge counts where
   more than half the pixel is object). The largest 4-connected component is the object.
3. **Colour**: nearest palette colour to the mean of the mask's confidently covered pixels.
4. **Shape** from the mask's geometry: a star is the one concave shape — solidity (area / convex-hull area) below
   0.8 (rendered stars ≈ 0.5; generated ones, with fatter arms, ≈ 0.6–0.75; the convex shapes ≥ 0.9) — and the
   convex ones are told apart by fill = area / bounding-box area (square 1, circle π/4, triangle ½), cut at the
   midpoints. (A fill-only rule, star ≈ 0.38, read the model's fat-armed stars as triangles.)
5. **Size** and **position**: the bounding box's side and centre, nearest named value.

Exact on the world's own renderings (tested on 500); on generated images it reads what a person would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .world import BACKGROUNDS, COLOURS, POSITIONS, SIZES, SIZE, background_pixels

FIRST_PASS = 40.0  # RGB distance of a pixel from its background that marks it as a candidate object pixel
MIN_AREA = 12  # pixels; a smaller component is noise, not an object
FILL_CUTS = ((0.645, "triangle"), (0.895, "circle"), (9.0, "square"))  # midpoints of the rendered fills
STAR_SOLIDITY = 0.8  # area / convex-hull area below this: a star

_BG_REF = {name: (background_pixels(name)[:2, [0, 1, -2, -1]].reshape(-1, 3).mean(0),
                  background_pixels(name)[-2:, [0, 1, -2, -1]].reshape(-1, 3).mean(0)) for name in BACKGROUNDS}
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float64)  # [6, 3]


@dataclass
class Parsed:
    background: str
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    fill: float = 0.0
    area: int = 0
    mask: np.ndarray = field(default_factory=lambda: np.zeros((SIZE, SIZE), dtype=bool), repr=False)

    @property
    def found(self) -> bool:
        return self.shape is not None

    def attributes(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "background": self.background, "size": self.size,
                "position": self.position}


def _as_array(image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float64)
    if arr.shape != (SIZE, SIZE, 3):
        raise ValueError(f"a shapes-world image is {SIZE}×{SIZE} RGB, got an array of shape {arr.shape}")
    return arr


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean [H, W] mask (flood fill; 64 × 64 is small)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, comp = [(int(y0), int(x0))], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def solidity(mask: np.ndarray) -> float:
    """Mask area / area of the convex hull of its pixels' squares (1 for convex shapes, ≈ 0.5 for a star)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    corners = {(x + dx, y + dy) for x, y in zip(xs.tolist(), ys.tolist()) for dx in (0, 1) for dy in (0, 1)}
    pts = sorted(corners)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:  # Andrew's monotone chain
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    area = 0.5 * abs(sum(hull[i][0] * hull[i - 1][1] - hull[i - 1][0] * hull[i][1] for i in range(len(hull))))
    return float(len(xs) / area) if area else 0.0


def _nearest(value: float, table: dict) -> str:
    return min(table, key=lambda k: abs(table[k] - value))


def parse(image) -> Parsed:
    """Attributes of a 64 × 64 shapes-world image (PIL image or uint8/float array [64, 64, 3] in 0‥255)."""
    img = _as_array(image)  # [64, 64, 3]
    border = np.concatenate([img[:, :2], img[:, -2:]], axis=1)  # [64, 4, 3]
    bg_rows = np.median(border, axis=1)  # [64, 3]
    top, bottom = border[:2].reshape(-1, 3).mean(0), border[-2:].reshape(-1, 3).mean(0)
    background = min(_BG_REF, key=lambda k: np.linalg.norm(_BG_REF[k][0] - top) + np.linalg.norm(_BG_REF[k][1] - bottom))
    bg = np.broadcast_to(bg_rows[:, None, :], img.shape)  # [64, 64, 3]
    diff = np.linalg.norm(img - bg, axis=2)  # [64, 64]
    candidate = diff > FIRST_PASS
    if candidate.sum() < MIN_AREA:
        return Parsed(background)
    strong = candidate & (diff >= np.quantile(diff[candidate], 0.5))
    colour_est = img[strong].mean(0)  # [3]
    line = colour_est[None, None, :] - bg  # background → object colour, per pixel [64, 64, 3]
    coverage = ((img - bg) * line).sum(2) / np.maximum((line * line).sum(2), 1e-6)  # [64, 64]
    mask = _largest_component((coverage > 0.5) & candidate | (coverage > 0.5) & (diff > FIRST_PASS / 2))
    area = int(mask.sum())
    if area < MIN_AREA:
        return Parsed(background)
    core = mask & (coverage > 0.9)
    pixels = img[core] if core.sum() >= 4 else img[mask]
    colour = tuple(COLOURS)[int(np.argmin(np.linalg.norm(_PALETTE - pixels.mean(0), axis=1)))]
    ys, xs = np.nonzero(mask)
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    fill = area / float(w * h)
    if solidity(mask) < STAR_SOLIDITY:
        shape = "star"
    else:
        shape = next(name for cut, name in FILL_CUTS if fill < cut)
    cx, cy = (xs.max() + xs.min() + 1) / 2, (ys.max() + ys.min() + 1) / 2
    position = min(POSITIONS, key=lambda k: (POSITIONS[k][0] - cx) ** 2 + (POSITIONS[k][1] - cy) ** 2)
    return Parsed(background, shape, colour, _nearest(max(w, h), SIZES), position, fill, area, mask)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def background_change(before, after, mask: np.ndarray) -> float:
    """Mean absolute pixel change (0‥1 per channel) outside ``mask`` — how much of the background an edit moved."""
    a, b = _as_array(before) / 255.0, _as_array(after) / 255.0
    outside = ~mask
    if not outside.any():
        return 0.0
    return float(np.abs(a - b)[outside].mean())
