"""The shapes world: a seeded generator of (image, caption, attributes) with known ground truth.

A scene is one object — a circle, an axis-aligned square, an upright triangle or a five-pointed star — in one of
six colours, three sizes and five positions, on a plain colour background or a day / night sky (a light and a
dark vertical gradient, so that a *scene* edit exists beside object and attribute edits). Images are 64 × 64 RGB,
drawn at 4× and box-filtered down (anti-aliased edges, like a photograph's, not a pixel-art mask).

Everything is a pure function of its seed: ``sample(seed)`` gives the same scene, caption and pixels on every
machine (PIL's polygon fill and numpy's box filter are exact integer / float64 arithmetic). The parser in
:mod:`editor.shapes.parse` reads an image back into :class:`Scene` attributes and judges every functional check.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

import numpy as np

SIZE = 64  # image side, pixels
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# sky gradients, top row → bottom row
SKIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "day": ((110, 170, 235), (185, 220, 250)),
    "night": ((12, 18, 58), (40, 52, 112)),
}
BACKGROUNDS = tuple(COLOURS) + tuple(SKIES)
SIZES: dict[str, int] = {"small": 20, "medium": 28, "large": 36}  # object extent (bounding-box side), pixels
POSITIONS: dict[str, tuple[int, int]] = {  # object centre (x, y), pixels
    "center": (32, 32),
    "top left": (20, 20),
    "top right": (44, 20),
    "bottom left": (20, 44),
    "bottom right": (44, 44),
}
JITTER = 3  # ± pixels of the centre, uniform
MIN_CONTRAST = 80.0  # least RGB distance between an object and every background pixel behind it


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image: what the caption says and the parser reads back."""

    shape: str
    colour: str
    background: str
    size: str = "medium"
    position: str = "center"
    dx: int = 0  # jitter of the centre, pixels
    dy: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def centre(self) -> tuple[int, int]:
        x, y = POSITIONS[self.position]
        return x + self.dx, y + self.dy


def background_pixels(background: str) -> np.ndarray:
    """The background alone, float64 [64, 64, 3] in 0‥255."""
    if background in SKIES:
        top, bottom = (np.array(c, dtype=np.float64) for c in SKIES[background])
        t = (np.arange(SIZE, dtype=np.float64) + 0.5) / SIZE  # [64]
        rows = top[None, :] * (1 - t[:, None]) + bottom[None, :] * t[:, None]  # [64, 3]
        return np.repeat(rows[:, None, :], SIZE, axis=1)
    return np.broadcast_to(np.array(COLOURS[background], dtype=np.float64), (SIZE, SIZE, 3)).copy()


def contrast(colour: str, background: str) -> float:
    """The least RGB distance between ``colour`` and any pixel of ``background``."""
    bg = background_pixels(background)[:, 0, :]  # [64, 3] one column covers every row
    return float(np.min(np.linalg.norm(bg - np.array(COLOURS[colour], dtype=np.float64), axis=1)))


def allowed(colour: str, background: str) -> bool:
    """An object colour is drawn on a background only when it stands out (a parser and a person can see it)."""
    return colour != background and contrast(colour, background) >= MIN_CONTRAST


def fits(size: str, position: str) -> bool:
    """Large objects sit in the centre only (a corner would push them off the image)."""
    half = SIZES[size] / 2 + JITTER
    x, y = POSITIONS[position]
    return min(x, y) - half >= 2 and max(x, y) + half <= SIZE - 2


def _polygon(shape: str, cx: float, cy: float, extent: float) -> list[tuple[float, float]] | None:
    r = extent / 2
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":  # upright isosceles, base = height = extent
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":  # five points, inner radius 0.382 R (a regular pentagram's), fitted to the extent box
        pts = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.382
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((radius * math.cos(a), radius * math.sin(a)))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        w, h = max(xs) - min(xs), max(ys) - min(ys)
        s = extent / max(w, h)
        oy = (max(ys) + min(ys)) / 2
        return [(cx + s * x, cy + s * (y - oy)) for x, y in pts]
    return None


def object_mask(scene: Scene) -> np.ndarray:
    """Coverage of the object, float64 [64, 64] in 0‥1 (anti-aliased at the edges)."""
    from PIL import Image, ImageDraw  # lazy: PIL

    k = SUPERSAMPLE
    big = Image.new("L", (SIZE * k, SIZE * k), 0)
    draw = ImageDraw.Draw(big)
    cx, cy = scene.centre
    extent = SIZES[scene.size]
    if scene.shape == "circle":
        r = extent / 2
        draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k - 1, (cy + r) * k - 1], fill=255)
    else:
        pts = _polygon(scene.shape, cx, cy, extent)
        if pts is None:
            raise ValueError(f"unknown shape {scene.shape!r}; known: {', '.join(SHAPES)}")
        draw.polygon([(x * k, y * k) for x, y in pts], fill=255)
    a = np.asarray(big, dtype=np.float64) / 255.0
    return a.reshape(SIZE, k, SIZE, k).mean(axis=(1, 3))


def render(scene: Scene) -> np.ndarray:
    """The image of ``scene``, uint8 [64, 64, 3]."""
    if scene.colour not in COLOURS:
        raise ValueError(f"unknown colour {scene.colour!r}; known: {', '.join(COLOURS)}")
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}; known: {', '.join(BACKGROUNDS)}")
    bg = background_pixels(scene.background)
    a = object_mask(scene)[..., None]
    img = bg * (1 - a) + np.array(COLOURS[scene.colour], dtype=np.float64) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_pil(scene: Scene, caption: str | None = None):
    """``render`` as a PIL image; ``caption`` (when given) is recorded in the PNG text chunk ``caption``."""
    from PIL import Image  # lazy: PIL

    img = Image.fromarray(render(scene), "RGB")
    if caption is not None:
        img.info["caption"] = caption
    return img


# --- captions -------------------------------------------------------------------------------------

_PLAIN = (
    "a {colour} {shape} on a {bg} background",
    "a photo of a {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape} on a {bg} background",
    "a {colour} {shape} {where} on a {bg} background",
    "a photo of a {size} {colour} {shape} {where}, {bg} background",
    "an image of a {colour} {shape} against a {bg} backdrop",
    "a drawing of a {size} {colour} {shape} on {bg}",
    "a {colour} {shape}, {bg} background",
    "there is a {colour} {shape} {where} of a {bg} picture",
    "a simple picture of a {colour} {shape} on a plain {bg} background",
)
_SKY = {
    "day": ("in the daytime sky", "in a bright day sky", "on a sunny day", "in the sky during the day",
            "under a light daytime sky"),
    "night": ("in the night sky", "in a dark night sky", "at night", "in the sky at night",
              "under a dark night sky"),
}
_SKY_TEMPLATES = (
    "a {colour} {shape} {sky}",
    "a photo of a {colour} {shape} {sky}",
    "a {size} {colour} {shape} {sky}",
    "a {colour} {shape} {where} {sky}",
    "a photo of a {size} {colour} {shape} {where}, {sky}",
    "an image of a {colour} {shape} {sky}",
)
_WHERE = {"center": ("in the center", "in the middle"), "top left": ("in the top left corner", "at the top left"),
          "top right": ("in the top right corner", "at the top right"),
          "bottom left": ("in the bottom left corner", "at the bottom left"),
          "bottom right": ("in the bottom right corner", "at the bottom right")}


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A natural-English caption of ``scene``, chosen by ``rng`` among several phrasings."""
    where = _WHERE[scene.position][int(rng.integers(len(_WHERE[scene.position])))]
    fields = {"colour": scene.colour, "shape": scene.shape, "size": scene.size, "where": where}
    if scene.background in SKIES:
        options = _SKY[scene.background]
        fields["sky"] = options[int(rng.integers(len(options)))]
        template = _SKY_TEMPLATES[int(rng.integers(len(_SKY_TEMPLATES)))]
    else:
        fields["bg"] = scene.background
        template = _PLAIN[int(rng.integers(len(_PLAIN)))]
    text = template.format(**fields)
    return ("an " + text[2:]) if text.startswith("a ") and text[2] in "aeiou" else text


# --- varied captions (training only) -------------------------------------------------------------------------
# Real prompts and the sentence banks of algorithm §1.1 look like "A night scene with a lighthouse." or "An image
# showing a large red apple in a quiet garden.", not like the world's sixteen templates. ``varied_caption`` states
# the same facts in many frames, orders and synonyms, with distractor words that say nothing false of the image.
# Every word list below avoids the colour, shape and size words of the world (and "day" / "night" outside the sky
# phrases), so a caption names the scene's own attributes and no others.

_V_SIZE = {"small": ("small", "tiny", "little"), "medium": ("medium", "mid-sized", "medium-sized"),
           "large": ("large", "big", "huge")}
_V_WHERE = {
    "center": ("in the middle", "centered", "at the center", "in the center", "in the centre",
               "in the middle of the picture"),
    "top left": ("in the top left corner", "at the top left", "in the upper left", "in the upper left corner",
                 "top left"),
    "top right": ("in the top right corner", "at the top right", "in the upper right", "in the upper right corner",
                  "top right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left",
                    "in the lower left corner", "bottom left"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right",
                     "in the lower right corner", "bottom right"),
}
_V_ADJ = ("simple", "flat", "solid", "single", "lone", "plain", "basic", "clean", "vintage", "neat")
_V_MEDIUM = ("a photo of", "an image of", "an image showing", "a picture of", "a drawing of", "an illustration of",
             "a sketch of", "a graphic of", "an icon of", "a rendering of", "a painting of", "a digital drawing of")
_V_EXTRA = ("drawn by hand", "for a children's book", "in a minimal style", "with nothing else around it",
            "nothing else in the picture", "as a simple icon", "in a flat style", "clip art", "vector art",
            "digital art", "on its own", "in a clean graphic style", "with clean edges", "seen from the front")
# the background, by kind: after the object ("on"), as a noun phrase ("scene"), as a description ("is"), and as
# the opening words of a bank-like sentence ("view")
_V_BG = {
    "plain": {
        "on": ("on a {c} background", "against a {c} backdrop", "on plain {c}", "on a plain {c} background",
               "against {c}", "on a {c} field", "on a solid {c} background", "set against plain {c}",
               "in front of a {c} backdrop", "on {c}"),
        "scene": ("a {c} background", "a plain {c} backdrop", "a {c} field", "plain {c}",
                  "a solid {c} background", "a flat {c} backdrop"),
        "is": ("{c}", "plain {c}", "solid {c}", "a flat {c}", "{c} all over"),
        "view": ("a plain {c} picture of", "a {c} backdrop with", "a picture on plain {c} of",
                 "a {c} background with"),
    },
    "day": {
        "on": ("in the daytime sky", "in a bright day sky", "against a daylight sky", "in the sky during the day",
               "on a clear day", "in daylight", "under a light daytime sky", "in the day sky", "during the day",
               "in the daytime"),
        "scene": ("a daytime sky", "the day sky", "a clear daylight sky", "a bright day sky", "the sky by day"),
        "is": ("a daytime sky", "the sky by day", "a clear day sky", "daylight"),
        "view": ("a day view of", "a daytime scene with", "a daylight picture of", "a day scene with",
                 "a daytime photo of"),
    },
    "night": {
        "on": ("in the night sky", "at night", "under a dark night sky", "against the nighttime sky",
               "in the sky at night", "on a clear night", "at nighttime", "in a dark night sky", "by night",
               "during the night"),
        "scene": ("the night sky", "a dark night sky", "a nighttime sky", "the sky at night",
                  "a clear night sky"),
        "is": ("a night sky", "the sky at night", "a dark nighttime sky", "night"),
        "view": ("a night view of", "a night scene with", "a nighttime picture of", "a night photo of",
                 "a nighttime scene with"),
    },
}
# sentence frames: {obj} the object (article, colour and shape, maybe a size and a distractor adjective), {where}
# its position or nothing, {at} its position always, {on} / {scene} / {is} / {view} the background, {medium} a
# bank-like opening; {nc} the object without its colour, stated in {colour}
_V_FRAMES = (
    # object first
    "{obj} {where} {on}",
    "{obj} {on}",
    "{obj} {on}, {at}",
    "{obj}, {at}, {on}",
    "{obj} {at} against {scene}",
    "{obj} against {scene}",
    "{obj} over {scene}",
    "{obj} {where} with {scene} behind it",
    "{obj} sits {where} {on}",
    "{obj} shown {where} {on}",
    "{obj} drawn {where} {on}",
    "{obj} placed {where} {on}",
    "{obj} floating {where} {on}",
    "{obj} seen {where} {on}",
    "{obj} is {at} {on}",
    "{obj} {at}. the background is {is}",
    "{obj} {where}, and the background is {is}",
    "just {obj} {where} {on}",
    "only {obj} {on}",
    "{nc} {where} {on}. it is {colour}",
    "{nc} in {colour} {where} {on}",
    "{nc} {on}, coloured {colour}",
    # background first
    "{on}, {obj} {where}",
    "{on}, there is {obj} {where}",
    "{at} {on}, {obj}",
    "{scene} with {obj} {where}",
    "{scene} and {obj} {where}",
    "{scene}. {obj} {where}",
    "{scene} showing {obj} {where}",
    "{scene} featuring {obj} {where}",
    "{scene} with {obj} in it",
    "{medium} {scene} with {obj} {where}",
    "{at}, {obj} {on}",
    # bank-like
    "{medium} {obj} {where} {on}",
    "{medium} {obj} {on}",
    "{medium} {obj} {on}, {at}",
    "{medium} {obj} against {scene}",
    "{view} {obj} {where}",
    "{view} {obj}",
    "there is {obj} {where} {on}",
    "there is {obj} {on}",
    "here is {obj} {where} {on}",
    "this is {obj} {on}",
    "we see {obj} {where} {on}",
)


def _articles(text: str) -> str:
    """Every article a/an agrees with the word after it ("an image", "a huge")."""
    def fix(m: re.Match) -> str:
        art = "an" if m.group(2)[0].lower() in "aeiou" else "a"
        return (art.capitalize() if m.group(1)[0].isupper() else art) + " " + m.group(2)

    return re.sub(r"\b(an?|An?) (\w)", fix, text)


def varied_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of ``scene`` in one of many sentence frames (training text as varied as real prompts).

    The shape and colour appear as whole words; a day scene says "day" / "daytime" / "daylight" and never "night",
    a night scene the reverse; a plain background is named by its colour and no other colour but the object's
    appears. Optional parts — size (with synonyms), position (with synonyms), a distractor adjective, a
    distractor clause — are drawn by ``rng``; the result is a pure function of ``(scene, rng)``.
    """
    def pick(options):
        return options[int(rng.integers(len(options)))]

    kind = scene.background if scene.background in SKIES else "plain"
    bg = {k: pick(v).format(c=scene.background) for k, v in _V_BG[kind].items()}
    size = pick(_V_SIZE[scene.size]) if rng.random() < 0.5 else ""
    adj = pick(_V_ADJ) if rng.random() < 0.25 else ""
    at = pick(_V_WHERE[scene.position])
    where = at if rng.random() < 0.5 else ""
    if rng.random() < 0.2:
        obj = f"a {size} {adj} {scene.shape} in {scene.colour}"
    else:
        obj = f"a {size} {adj} {scene.colour} {scene.shape}"
    fields = {"obj": obj, "nc": f"a {size} {adj} {scene.shape}", "colour": scene.colour, "where": where, "at": at,
              "medium": pick(_V_MEDIUM), **bg}
    text = pick(_V_FRAMES).format(**fields)
    if rng.random() < 0.3:
        text += ", " + pick(_V_EXTRA)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r" ([,.])", r"\1", text).strip(" ,")
    text = _articles(text)
    if rng.random() < 0.5:  # sentence case with a full stop, like a bank's sentences; else lower case
        text = re.sub(r"(^|\. )(\w)", lambda m: m.group(1) + m.group(2).upper(), text) + "."
    return text


# --- sampling -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    seed: int
    scene: Scene
    caption: str

    def image(self):
        return render_pil(self.scene, self.caption)

    def pixels(self) -> np.ndarray:
        return render(self.scene)


def sample_scene(rng: np.random.Generator, **fixed) -> Scene:
    """A random valid scene; ``fixed`` pins attributes (``shape="circle"``, ``background="day"`` …)."""
    for _ in range(1000):
        shape = fixed.get("shape") or SHAPES[int(rng.integers(len(SHAPES)))]
        background = fixed.get("background") or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        colour = fixed.get("colour") or tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = fixed.get("size") or tuple(SIZES)[int(rng.integers(len(SIZES)))]
        position = fixed.get("position") or tuple(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        also = fixed.get("also_on", ())  # backgrounds the colour must also stand out on (for scene edits)
        also_colours = fixed.get("also_colours", ())  # colours that must also stand out here (for colour edits)
        if allowed(colour, background) and fits(size, position) and all(allowed(colour, b) for b in also) \
                and all(allowed(c, background) for c in also_colours):
            dx, dy = (int(v) for v in rng.integers(-JITTER, JITTER + 1, size=2))
            return Scene(shape, colour, background, size, position, dx, dy)
    raise ValueError(f"no valid scene with {fixed}")


def sample(seed: int, **fixed) -> Sample:
    """The scene and caption of ``seed`` (a pure function of the seed and ``fixed``)."""
    rng = np.random.default_rng([int(seed), 20230401])
    scene = sample_scene(rng, **fixed)
    return Sample(int(seed), scene, caption(scene, rng))


# Seeds: training draws from [0, HELD_OUT); tests, benchmarks and the demo use seeds ≥ HELD_OUT, never trained on.
HELD_OUT = 10_000_000


def held_out(n: int, offset: int = 0, **fixed) -> list[Sample]:
    """``n`` samples the model never saw in training (seeds HELD_OUT + offset …)."""
    return [sample(HELD_OUT + offset + i, **fixed) for i in range(n)]


def with_(scene: Scene, **changes) -> Scene:
    return replace(scene, **changes)


def describe(shape: str | None, colour: str | None, background: str, size: str | None = None,
             position: str | None = None) -> str:
    """The plain caption of a set of attributes (what the parser-based captioner writes)."""
    if shape is None:
        return f"an empty {background} sky" if background in SKIES else f"a plain {background} background"
    obj = " ".join(w for w in (size, colour, shape) if w)
    where = f" {_WHERE[position][0]}" if position else ""
    tail = f" {_SKY[background][0]}" if background in SKIES else f" on a {background} background"
    text = f"a {obj}{where}{tail}"
    return ("an " + text[2:]) if text[2] in "aeiou" else text
