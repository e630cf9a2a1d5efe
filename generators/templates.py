"""``templates`` generator: built-in template sets for objects, styles and attributes (architecture §4).

The reference's fixed-template generator (algorithm §1.1) combines 10 backgrounds × 10 verbs × 20 adjectives
with an *unseeded* RNG, and puts animal verbs on any concept ("a car is sleeping"). Here each set is a
grammar of sentence frames × slot values chosen to read correctly for any noun (objects), medium or style
(styles), or "with …" attribute (attributes); a bank is a seeded sample of distinct combinations, so the
same (concept, kind, n, seed) always gives the same sentences. Every set has well over 1000 combinations.

User template files: one template per line, ``{}`` marks the concept; lines without ``{}`` are refused.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from .base import BankDraft, GeneratorError, check_concept, normalize_sentences

TEMPLATE_SET_VERSION = "p2pz-templates-v1"

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

KINDS = ("object", "style", "attribute")


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
        return ATTRIBUTE_FRAMES, [ATTRIBUTE_SUBJECTS, PLACES]
    raise GeneratorError(f"unknown template kind {kind!r}; choose one of {', '.join(KINDS)}")


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
    """Seeded sample of distinct (frame, slot values) combinations of one built-in set."""

    template_kind: str = "object"
    kind: str = "templates"

    def generate(self, concept: str, n: int = 1000, *, seed: int = 0) -> BankDraft:
        concept = check_concept(concept)
        frames, slots = _slots(self.template_kind, concept)
        total = combinations(self.template_kind, concept)
        if n < 1:
            raise GeneratorError("n must be at least 1")
        if n > total:
            raise GeneratorError(f"the {self.template_kind} templates make at most {total} sentences; ask for fewer")
        rng = random.Random(f"{TEMPLATE_SET_VERSION}:{self.template_kind}:{seed}")
        sentences: list[str] = []
        seen: set[str] = set()
        for index in rng.sample(range(total), min(total, n + n // 10 + 10)):
            rest, parts = index, []
            for s in reversed(slots):
                rest, i = divmod(rest, len(s))
                parts.append(s[i])
            frame = frames[rest]
            sentence = render(self.template_kind, concept, frame, tuple(reversed(parts)))
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
            if len(sentences) == n:
                break
        params = {"templates": TEMPLATE_SET_VERSION, "template_kind": self.template_kind, "seed": seed, "n": n}
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
