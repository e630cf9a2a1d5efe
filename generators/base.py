"""The generator contract shared by every sentence-bank source (architecture §4).

``generate(concept, n, *, seed) -> BankDraft(sentences, params)``. A generator returns clean, unique
sentences; :func:`normalize_sentences` is the one cleaning step all of them share, and
:func:`bank_sha256` the one content address of a sentence list.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class GeneratorError(ValueError):
    """A generator could not produce a bank (bad input, empty file, too few sentences)."""


@dataclass
class BankDraft:
    """Sentences plus the parameters that made them (recorded as the bank's provenance)."""

    sentences: list[str]
    params: dict = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    kind: str

    def generate(self, concept: str, n: int, *, seed: int = 0) -> BankDraft: ...


_SPACE = re.compile(r"\s+")


def clean_sentence(sentence: str) -> str:
    """NFC-normalize and collapse whitespace."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", sentence)).strip()


def normalize_sentences(sentences) -> tuple[list[str], dict]:
    """Clean, drop blanks and duplicates (first occurrence kept, order kept). Returns (sentences, counts)."""
    out: list[str] = []
    seen: set[str] = set()
    blank = dup = 0
    for raw in sentences:
        s = clean_sentence(raw)
        if not s:
            blank += 1
            continue
        if s in seen:
            dup += 1
            continue
        seen.add(s)
        out.append(s)
    return out, {"blank_dropped": blank, "duplicates_dropped": dup}


def bank_sha256(sentences: list[str]) -> str:
    """Content address of a bank: sha256 of its normalized sentences as a sorted JSON list.

    Sorted, because a bank's mean embedding does not depend on sentence order (algorithm §1.2).
    """
    payload = json.dumps(sorted(clean_sentence(s) for s in sentences), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def check_concept(concept: str) -> str:
    """Validate a concept word/phrase; returns it cleaned."""
    c = clean_sentence(concept or "")
    if not c:
        raise GeneratorError("the concept is empty; give a word such as 'cat'")
    if "@" in c or "\n" in concept:
        raise GeneratorError(f"concept {concept!r} may not contain '@' or line breaks")
    if len(c) > 100:
        raise GeneratorError("the concept is longer than 100 characters; use a short word or phrase")
    return c


def contains_concept(sentence: str, concept: str) -> bool:
    """Case-insensitive, word-boundary match of the concept, allowing simple plurals (s/es)."""
    pattern = r"(?<!\w)" + re.escape(concept) + r"(?:s|es)?(?!\w)"
    return re.search(pattern, sentence, flags=re.IGNORECASE) is not None
