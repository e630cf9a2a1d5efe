"""Addresses: ``name@version`` for directions and ``concept@version`` for banks (architecture §3)."""

from __future__ import annotations

import re
import unicodedata

from .records import RegistryError

_NAME = re.compile(r"[A-Za-z0-9][\w.+\- ]{0,199}")
# Versions are ASCII digits only: str.isdigit()/int() also accept "²" and "٢" (which int() reads as 2).
_VERSION = re.compile(r"[0-9]{1,10}")
MAX_VERSION = 2**31 - 1  # fits every backend's INTEGER column
MAX_TAG = 64
CONTENT_REF = re.compile(r"sha256:[0-9a-fA-F]{12,64}")  # a direction by its content hash (identity across registries)


class RefError(RegistryError, ValueError):
    """A malformed name or ``name@version`` reference."""


def parse_version(text: str, what: str = "version") -> int:
    """``"3"`` → 3: ASCII digits, 1 ≤ v ≤ 2³¹−1 (no signs, spaces, superscripts or other scripts' digits)."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text) or not 1 <= int(text) <= MAX_VERSION:
        raise RefError(f"malformed {what} {text!r}: write a whole number from 1 to {MAX_VERSION} in ASCII digits")
    return int(text)


def name_problem(name: str, what: str = "direction") -> str | None:
    """Why ``name`` cannot be a direction name or bank concept (the rule addresses use), or None when it can."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (f"malformed {what} name {name!r}: start with a letter or digit and use letters, digits, spaces, "
                "'-', '_', '.', '+' (at most 200 characters), e.g. cat-to-dog")
    return None


def check_name(name: str, what: str = "direction") -> str:
    """Validate a new name once, where it is created (``bank create``, builds, combinations, imports), with the
    rule addresses use, so whatever is stored can be addressed → the name without surrounding spaces."""
    name = name.strip() if isinstance(name, str) else name
    problem = name_problem(name, what)
    if problem:
        raise RefError(problem)
    return name


def check_tags(tags) -> list[str]:
    """Every tag checked (:func:`check_tag`) → the cleaned tags."""
    return [check_tag(t) for t in tags]


def check_tag(tag: str) -> str:
    """A tag: 1–64 characters, no commas, no control or invisible (format) characters → the stripped tag."""
    label = tag.strip() if isinstance(tag, str) else ""
    if not label or "," in label:
        raise RefError(f"malformed tag {tag!r}: a tag is a non-empty word without commas, e.g. animals")
    if len(label) > MAX_TAG:
        raise RefError(f"tag {label[:20]!r}… is {len(label)} characters long; use at most {MAX_TAG}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in label):
        raise RefError(f"malformed tag {label!r}: remove the control or invisible characters")
    return label


def parse_ref(ref: str, what: str = "direction") -> tuple[str, int | None]:
    """Split ``name@version`` → (name, version); a bare name gives version None (the latest).

    Names may contain letters, digits, '_', '-', '.', '+', spaces (banks: concepts like "oil pastel") and any
    digit ("r2d2-to-c3po": no splitting on "2", unlike the reference's task parser). Versions are ASCII digits
    from 1 to 2³¹−1 (:func:`parse_version`). A direction may also be named by its content hash,
    ``sha256:<12 to 64 hex digits>``: the identity it keeps in every registry it is pulled into.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RefError(f"empty {what} name; write NAME or NAME@VERSION")
    ref = ref.strip()
    if what == "direction" and CONTENT_REF.fullmatch(ref):  # ``sha256:<12–64 hex>``: a content hash, no version
        return ref.lower(), None
    name, sep, version = ref.partition("@")
    if sep:
        if not _VERSION.fullmatch(version) or not 1 <= int(version) <= MAX_VERSION:
            raise RefError(f"malformed {what} reference {ref!r}: the version after '@' must be a whole number from "
                           f"1 to {MAX_VERSION} in ASCII digits, e.g. {name or 'cat-to-dog'}@1")
        if not _NAME.fullmatch(name):
            raise RefError(f"malformed {what} reference {ref!r}: write NAME@VERSION, e.g. cat-to-dog@1")
        return name, int(version)
    if not _NAME.fullmatch(name):
        raise RefError(f"malformed {what} name {ref!r}: use letters, digits, '-', '_', '.', e.g. cat-to-dog")
    return name, None


def slug(concept: str) -> str:
    """A concept as a direction-name part: whitespace → '-' ("oil pastel" → "oil-pastel")."""
    return re.sub(r"\s+", "-", concept.strip())


def direction_name(source: str, target: str) -> str:
    """Default name of a direction: ``SOURCE-to-TARGET``."""
    return f"{slug(source)}-to-{slug(target)}"
