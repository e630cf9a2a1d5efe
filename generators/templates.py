"""``templates`` generator: built-in template sets for objects, styles, attributes and scenes (architecture §4).

The reference's fixed-template generator (algorithm §1.1) combines 10 backgrounds × 10 verbs × 20 adjectives
with an *unseeded* RNG, and puts animal verbs on any concept ("a car is sleeping"). Here each set is a
grammar of sentence frames × slot values chosen to read correctly for any noun (objects), medium or style
(styles), "with …" attribute or colour word (attributes: "a cat with glasses", "a red car"), or time of day,
season or weather (scenes: "A night scene with a lighthouse."); a bank is a seeded sample of distinct
combinations, so the same (concept, kind, n, seed) always gives the same sentences. Every set has well over 1000
combinations. With no kind given (``auto``), :func:`choose_kind` picks one from the concept's words.

User template files: one template per line, ``{}`` marks the concept; lines without ``{}`` are refused.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from .base import BankDraft, GeneratorError, check_concept, normalize_sentences

TEMPLATE_SET_VERSION = "p2pz-templates-v2"  # v2: the scene set and colour attribute frames (issue 20 item 6)
# The sampler's seed string stays at v1, so the sets unchanged since v1 (object, style, attribute for a concept
# that is not a colour) still give v1's sentences for the same (concept, kind, n, seed).
SAMPLER_SALT = "p2pz-templates-v1"

PLACES = [
    "on a sunny beach", "in a quiet garden", "on a wooden table", "in a busy city street", "in a snowy forest",
    "near a calm lake", "on a grassy hill", "in a cozy living room", "under a cloudy sky", "at sunset",
    "in the rain", "in a field of flowers", "on a mountain trail", "beside an old stone wall", "in a sunlit kitchen",
    "on a city rooftop", "in a medieval castle", "on a country road", "in a misty meadow", "under the street lights at night",
    "in front of a red door", "in a sandy desert", "by a river", "in a dim room", "against a white background",
    "in a park in autumn", "near a wooden fence", "in a snowy village", "on a rainy sidewalk", "in a greenhouse",
    "on a rocky shore", "in an old library", "on a farm", "in a photo studio with soft lighting", "at a busy market",
    "in a tropical jungle", "on a frozen lake", "next to a window", "in a backyard", "on a stone bridge",
]

ADJECTIVES = [
    "", "small", "large", "beautiful", "colorful", "lonely", "bright", "ordinary", "elegant", "striking",
    "familiar", "charming", "simple", "tiny", "huge", "quiet", "dusty", "shiny", "classic", "lovely",
    "unusual", "modern", "vintage", "graceful", "cheerful", "famous",
]

OBJECT_FRAMES = [
    "A photo of {a_adj_c} {place}.",
    "A close-up photo of {the_adj_c} {place}.",
    "{A_adj_c} {place}.",
    "There is {a_adj_c} {place}.",
    "A picture of {a_adj_c} {place}.",
    "{Place}, there is {a_adj_c}.",
    "An image showing {a_adj_c} {place}.",
    "A blurry photo of {a_adj_c} {place}.",
    "A wide shot of {a_adj_c} {place}.",
    "A black and white photo of {a_adj_c} {place}.",
    "My favorite photo of {a_adj_c} {place}.",
    "{A_adj_c} can be seen {place}.",
    "A snapshot of {the_adj_c} {place}.",
    "A detailed photograph of {a_adj_c} {place}.",
    "A postcard with {a_adj_c} {place}.",
]

STYLE_SUBJECTS = [
    "a lighthouse", "an old farmhouse", "a cat", "a bowl of fruit", "a city skyline", "a mountain lake",
    "a young woman", "an old man", "a sailing boat", "a field of sunflowers", "a quiet village", "a forest path",
    "a vase of flowers", "a horse", "a busy harbor", "a cup of coffee", "a rainy street", "a castle on a hill",
    "a dog", "a bridge over a river", "a market square", "a snowy cabin", "a pair of shoes", "a child reading",
    "a waterfall", "a train station", "a bicycle", "a garden", "a portrait of a girl", "a desert landscape",
    "an apple tree", "a fishing village", "a city park", "a church", "a windmill", "a beach at low tide",
    "a kitchen table", "a mountain range", "a cafe terrace", "a wooden boat",
]
STYLE_MEDIA = ["painting", "drawing", "illustration", "artwork", "picture", "rendering", "image", "piece"]
STYLE_SETTINGS = ["", "at sunset", "in winter", "on a rainy day", "at night", "in the morning light",
                  "in spring", "under a stormy sky", "in autumn", "on a summer afternoon"]
STYLE_FRAMES = [
    "{A_c} {medium} of {subject}{setting}.",
    "{Subject}{setting}, in {c} style.",
    "{Subject}{setting}, rendered in {c}.",
    "A {medium} of {subject}{setting} in the style of {c}.",
    "{Subject}{setting} as {a_c} {medium}.",
    "{A_c} {medium} showing {subject}{setting}.",
]

ATTRIBUTE_SUBJECTS = [
    "a cat", "a dog", "a man", "a woman", "a child", "an old man", "a young woman", "a horse", "a teenager",
    "a girl", "a boy", "an old woman", "a puppy", "a kitten", "a person", "a student", "a grandfather",
    "a baby", "a musician", "a farmer", "a chef", "a doctor", "a teacher", "a tourist", "a runner",
    "a painter", "a sailor", "a dancer", "a rabbit", "a bear",
]
ATTRIBUTE_FRAMES = [
    "A photo of {subject} with {c} {place}.",
    "{Subject} with {c} {place}.",
    "A close-up portrait of {subject} with {c}, {place}.",
    "A picture of {subject} with {c}, taken {place}.",
    "{Place}, {subject} with {c}.",
    "A candid photo of {subject} with {c} {place}.",
]

COLOUR_WORDS = frozenset({
    "red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink", "brown", "gray", "grey",
    "violet", "cyan", "magenta", "turquoise", "teal", "navy", "maroon", "beige", "gold", "golden", "silver",
    "crimson", "scarlet", "indigo", "lavender", "lime", "olive", "ivory", "amber",
})
COLOUR_MODIFIERS = frozenset({"light", "dark", "pale", "bright", "deep", "pastel", "neon", "sky", "royal", "dusty"})
COLOUR_SIZES = ["", "small", "large", "bright", "simple", "shiny", "plain", "tiny", "big", "old"]
COLOUR_SUBJECTS = [
    "car", "circle", "star", "square", "triangle", "apple", "balloon", "umbrella", "door", "house", "bicycle",
    "flower", "bird", "ball", "cup", "chair", "dress", "hat", "boat", "kite", "bus", "book", "vase", "shirt",
    "truck", "heart", "butterfly", "lamp", "scarf", "tulip",
]
COLOUR_PLACES = [
    "", "on a white background", "in a quiet garden", "on a wooden table", "in a busy city street",
    "on a grassy hill", "under a cloudy sky", "in the rain", "in a field of flowers", "beside an old stone wall",
    "in front of a brick wall", "in a dim room", "on a sandy beach", "by a river", "in a snowy village",
    "on a country road", "next to a window", "in a backyard", "at a busy market", "in a photo studio",
]
COLOUR_FRAMES = [
    "A photo of {a_thing}{place}.",
    "{A_thing}{place}.",
    "A close-up photo of {a_thing}{place}.",
    "There is {a_thing}{place}.",
    "A simple picture of {a_thing}{place}.",
    "An image showing {a_thing}{place}.",
]

SCENE_WORDS = frozenset({
    "day", "daytime", "daylight", "night", "nighttime", "sunset", "sunrise", "dawn", "dusk", "evening", "morning",
    "noon", "midday", "afternoon", "midnight", "twilight", "winter", "summer", "spring", "autumn", "fall",
    "rain", "rainfall", "drizzle", "snow", "snowfall", "blizzard", "fog", "mist", "haze", "storm", "thunderstorm",
    "sunshine", "sunlight", "moonlight", "starlight", "overcast", "hour",
})
SCENE_MODIFIERS = frozenset({
    "a", "an", "the", "late", "early", "heavy", "light", "dark", "bright", "sunny", "rainy", "snowy", "foggy",
    "misty", "stormy", "cloudy", "windy", "hazy", "clear", "cold", "warm", "hot", "golden", "blue", "starry",
    "moonlit", "winter", "summer", "spring", "autumn", "fall", "night", "morning", "evening", "thick",
})
SCENE_SUBJECTS = [
    "a city street", "a lighthouse", "a small village", "a red circle", "a yellow star", "a mountain lake",
    "a forest path", "a quiet beach", "a farmhouse", "a stone bridge", "a busy harbor", "a city park",
    "a country road", "a castle on a hill", "a church", "a garden", "a cat on a wall", "a dog in a field",
    "a wooden house", "a train station", "a market square", "a wheat field", "a river", "an old oak tree",
    "a parked car", "a bicycle by a fence", "a blue square", "a green triangle", "a small boat", "a windmill",
]
SCENE_DETAILS = [
    "", "seen from a distance", "with trees around it", "near the water", "in the countryside", "seen from above",
    "with a few people nearby", "by a narrow road", "under a wide sky", "in a quiet town", "by the sea",
    "on a hillside",
]
SCENE_FRAMES = [
    "{A_c} scene with {subject}{detail}.",
    "{Subject}{detail} in the {c}.",
    "{A_c} view of {subject}{detail}.",
    "{A_c} photo of {subject}{detail}.",
    "A photo of {subject}{detail} during the {c}.",
    "{Subject}{detail}, seen in the {c}.",
    "A picture of {subject}{detail} in the {c}.",
    "{A_c} landscape with {subject}{detail}.",
]

STYLE_WORDS = frozenset({
    "watercolor", "watercolour", "painting", "sketch", "drawing", "cartoon", "anime", "manga", "pixel", "style",
    "impressionism", "impressionist", "cubism", "cubist", "surrealism", "surrealist", "expressionism", "baroque",
    "pastel", "charcoal", "pencil", "ink", "engraving", "woodcut", "lithograph", "mosaic", "fresco", "ukiyo-e",
    "pop art", "art", "illustration", "render", "rendering", "comic", "graffiti", "origami", "lineart",
    "line art", "claymation", "vaporwave", "cyberpunk", "steampunk", "gouache", "acrylic", "etching", "photorealistic",
})

KINDS = ("object", "style", "attribute", "scene")
AUTO = "auto"


def _words(concept: str) -> list[str]:
    return concept.lower().replace("-", " ").split()


def is_colour(concept: str) -> bool:
    """A colour word, maybe with a shade ("red", "light blue", "navy blue", "dark grey")."""
    words = _words(concept)
    return (0 < len(words) <= 3 and words[-1] in COLOUR_WORDS
            and all(w in COLOUR_WORDS or w in COLOUR_MODIFIERS for w in words))


def choose_kind(concept: str) -> str:
    """The template kind for a concept when none is given: ``scene`` for times of day, seasons and weather
    ("night", "winter", "heavy rain", "golden hour"), ``attribute`` for colours, ``style`` for media and styles
    ("watercolor", "oil painting", "pixel art", "… style"), else ``object``. Small word lists, not a model:
    pass a kind to override."""
    words = _words(concept)
    if not words:
        return "object"
    if is_colour(concept):
        return "attribute"
    if len(words) <= 3 and words[-1] in SCENE_WORDS and all(w in SCENE_WORDS or w in SCENE_MODIFIERS for w in words):
        return "scene"
    if words[-1] in STYLE_WORDS or " ".join(words[-2:]) in STYLE_WORDS or (len(words) == 1 and words[0] in STYLE_WORDS):
        return "style"
    return "object"


def article(phrase: str) -> str:
    """'a' or 'an' for a phrase, by its first sound (a heuristic with the common exceptions)."""
    word = phrase.strip().split(" ")[0].lower()
    if not word:
        return "a"
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    if word.startswith(("uni", "use", "usu", "uti", "euro", "eu", "one", "once", "ubiq", "ure")):
        return "a"
    if len(word) == 1 or word.isupper() and len(word) <= 4:  # letters and acronyms: "an X-ray", "an SUV"
        return "an" if word[0] in "aefhilmnorsx" else "a"
    return "an" if word[0] in "aeiou" else "a"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _slots(kind: str, concept: str) -> tuple[list[str], list[list[str]]]:
    if kind == "object":
        return OBJECT_FRAMES, [ADJECTIVES, PLACES]
    if kind == "style":
        media = [m for m in STYLE_MEDIA if m not in concept.lower().split()]
        return STYLE_FRAMES, [STYLE_SUBJECTS, media, STYLE_SETTINGS]
    if kind == "attribute":
        if is_colour(concept):
            return COLOUR_FRAMES, [COLOUR_SIZES, COLOUR_SUBJECTS, COLOUR_PLACES]
        return ATTRIBUTE_FRAMES, [ATTRIBUTE_SUBJECTS, PLACES]
    if kind == "scene":
        return SCENE_FRAMES, [SCENE_SUBJECTS, SCENE_DETAILS]
    raise GeneratorError(f"unknown template kind {kind!r}; choose one of {AUTO}, {', '.join(KINDS)}")


def render(kind: str, concept: str, frame: str, values: tuple[str, ...]) -> str:
    c = concept
    if kind == "object":
        adj, place = values
        adj_c = f"{adj} {c}" if adj else c
        fields = {"a_adj_c": _with_article(adj_c), "A_adj_c": _cap(_with_article(adj_c)),
                  "the_adj_c": f"the {adj_c}", "place": place, "Place": _cap(place)}
    elif kind == "style":
        subject, medium, setting = values
        setting = f" {setting}" if setting else ""
        fields = {"c": c, "a_c": _with_article(c), "A_c": _cap(_with_article(c)), "medium": medium,
                  "subject": subject, "Subject": _cap(subject), "setting": setting}
    elif kind == "scene":
        subject, detail = values
        fields = {"c": c, "A_c": _cap(_with_article(c)), "subject": subject, "Subject": _cap(subject),
                  "detail": f" {detail}" if detail else ""}
    elif len(values) == 3:  # a colour: adjective frames
        size, thing, place = values
        if place == "on a white background" and c.lower() == "white":
            place = "on a black background"
        thing = " ".join(w for w in (size, c, thing) if w)
        fields = {"a_thing": _with_article(thing), "A_thing": _cap(_with_article(thing)),
                  "place": f" {place}" if place else ""}
    else:
        subject, place = values
        fields = {"c": c, "subject": subject, "Subject": _cap(subject), "place": place, "Place": _cap(place)}
    return frame.format(**fields)


def combinations(kind: str, concept: str) -> int:
    frames, slots = _slots(kind, concept)
    total = len(frames)
    for s in slots:
        total *= len(s)
    return total


@dataclass
class TemplateGenerator:
    """Seeded sample of distinct (frame, slot values) combinations of one built-in set. ``template_kind``
    ``auto`` (or None) picks the set from the concept (:func:`choose_kind`); the bank's parameters record the
    kind used and whether it was ``given`` or chosen (``auto``)."""

    template_kind: str | None = AUTO
    kind: str = "templates"

    def generate(self, concept: str, n: int = 1000, *, seed: int = 0) -> BankDraft:
        concept = check_concept(concept)
        source = "auto" if self.template_kind in (None, AUTO) else "given"
        kind = choose_kind(concept) if source == "auto" else self.template_kind
        frames, slots = _slots(kind, concept)
        total = combinations(kind, concept)
        if n < 1:
            raise GeneratorError("n must be at least 1")
        if n > total:
            raise GeneratorError(f"the {kind} templates make at most {total} sentences; ask for fewer")
        rng = random.Random(f"{SAMPLER_SALT}:{kind}:{seed}")
        sentences: list[str] = []
        seen: set[str] = set()
        for index in rng.sample(range(total), min(total, n + n // 10 + 10)):
            rest, parts = index, []
            for s in reversed(slots):
                rest, i = divmod(rest, len(s))
                parts.append(s[i])
            frame = frames[rest]
            sentence = render(kind, concept, frame, tuple(reversed(parts)))
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
            if len(sentences) == n:
                break
        params = {"templates": TEMPLATE_SET_VERSION, "template_kind": kind, "template_kind_source": source,
                  "seed": seed, "n": n}
        return BankDraft(sentences=sentences, params=params)


@dataclass
class TemplateFileGenerator:
    """User template file: one template per line, ``{}`` marks the concept."""

    path: str | Path
    kind: str = "templates"

    def generate(self, concept: str, n: int = 1000, *, seed: int = 0) -> BankDraft:
        concept = check_concept(concept)
        path = Path(self.path)
        if not path.is_file():
            raise GeneratorError(f"template file {str(path)!r} does not exist")
        try:
            data = path.read_bytes()
            lines = [ln for ln in data.decode("utf-8-sig").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise GeneratorError(f"template file {path} is not UTF-8 text") from None
        bad = [i + 1 for i, ln in enumerate(lines) if "{}" not in ln]
        if bad:
            raise GeneratorError(f"template file {path}: line(s) {bad[:5]} lack the '{{}}' concept marker")
        if not lines:
            raise GeneratorError(f"template file {path} holds no templates; put one per line with '{{}}'")
        filled = [ln.replace("{}", concept) for ln in lines]
        sentences, counts = normalize_sentences(filled)
        rng = random.Random(f"user-templates:{seed}")
        rng.shuffle(sentences)
        sentences = sentences[:n]
        params = {"templates": "file", "file": path.name, "file_sha256": hashlib.sha256(data).hexdigest(),
                  "seed": seed, "n": n, "available": len(filled), **counts}
        return BankDraft(sentences=sentences, params=params)
