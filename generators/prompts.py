"""The LLM generator's text (PAPER §3.2 asks a language model for ≈ 1000 diverse captions per concept): one
prompt per bank kind, the suffixes asking for plain lines or a JSON object, the JSON schema of structured
replies, and the cleaning of each reply line (numbering, bullets, quotes) with the duplicate and length tests."""

import re

from .base import clean_sentence

PROMPTS = {
    "object": (
        "Write {batch} different one-sentence captions for photographs that show {a_concept}. Vary the setting, "
        "the viewpoint, the lighting, what the {concept} is doing and what surrounds it. Every caption must "
        "contain the word \"{concept}\" and be at most 25 words long."
    ),
    "style": (
        "Write {batch} different one-sentence captions for pictures made in the {concept} style. Vary the "
        "subject (people, animals, places, objects), the setting and the mood. Every caption must contain the "
        "words \"{concept}\" and be at most 25 words long."
    ),
    "attribute": (
        "Write {batch} different one-sentence captions for photographs of people, animals or things with "
        "{concept}. Vary who or what it is, the setting and the lighting. Every caption must contain the words "
        "\"{concept}\" and be at most 25 words long."
    ),
    "scene": (
        "Write {batch} different one-sentence captions for photographs of places, landscapes and things seen in "
        "the {concept}. Vary the place, the subject and the viewpoint. Every caption must contain the words "
        "\"{concept}\" and be at most 25 words long."
    ),
}
TEXT_SUFFIX = " Answer with the captions only, one per line, without numbering."
JSON_SUFFIX = " Answer with a JSON object {{\"captions\": [...]}}."
SCHEMA = {
    "name": "captions",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"captions": {"type": "array", "items": {"type": "string"}}},
        "required": ["captions"],
        "additionalProperties": False,
    },
}


_PREFIX = re.compile(
    r"^\s*(?:(?:[-*•·‣–—>]+|\(?\d{1,4}\s*[.):\]]|\d{1,4}\s*-(?=\s))\s*)+"  # bullets and list numbers
    r"|^\s*(?:caption|sentence)\s*#?\s*\d*\s*[:.\-)]\s*",  # "Caption 3:" / "Sentence:"
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»`"


def clean_line(line: str) -> str:
    """Strip numbering, bullets, 'Caption N:' prefixes, surrounding quotes and markdown emphasis."""
    s = line.strip()
    for _ in range(3):
        new = _PREFIX.sub("", s).strip().strip("*_").strip()
        if len(new) >= 2 and new[0] in _QUOTES and new[-1] in _QUOTES + ".":
            new = new.strip(_QUOTES + " ").strip()
            if new and new[-1] in _QUOTES:
                new = new[:-1]
        if new == s:
            break
        s = new
    s = s.strip(_QUOTES).strip()
    return clean_sentence(s)


def normal_key(s: str) -> str:
    """Duplicate test: case-, space- and final-punctuation-insensitive."""
    return re.sub(r"[\s.!]+$", "", re.sub(r"\s+", " ", s.lower())).strip()


def estimate_tokens(sentence: str) -> int:
    """A lower bound on CLIP BPE tokens (each word and punctuation mark is at least one token)."""
    return len(re.findall(r"\w+|[^\w\s]", sentence))


def article(concept: str) -> str:
    """"a cat", "an owl"."""
    return ("an " if concept[:1].lower() in "aeiou" else "a ") + concept
