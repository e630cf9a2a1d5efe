"""Addresses: ``name@version`` for directions and ``concept@version`` for banks (architecture §3)."""

from __future__ import annotations

import re

from .records import RegistryError

_NAME = re.compile(r"^[A-Za-z0-9][\w.+\- ]{0,199}$")


class RefError(RegistryError, ValueError):
    """A malformed name or ``name@version`` reference."""


def parse_ref(ref: str, what: str = "direction") -> tuple[str, int | None]:
    """Split ``name@version`` → (name, version); a bare name gives version None (the latest).

    Names may contain letters, digits, '_', '-', '.', '+', spaces (banks: concepts like "oil pastel") and any
    digit ("r2d2-to-c3po": no splitting on "2", unlike the reference's task parser).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RefError(f"empty {what} name; write NAME or NAME@VERSION")
    ref = ref.strip()
    name, sep, version = ref.partition("@")
    if sep:
        if not version.isdigit() or int(version) < 1:
            raise RefError(f"malformed {what} reference {ref!r}: the version after '@' must be a number ≥ 1, "
                           f"e.g. {name or 'cat-to-dog'}@1")
        if not _NAME.match(name):
            raise RefError(f"malformed {what} reference {ref!r}: write NAME@VERSION, e.g. cat-to-dog@1")
        return name, int(version)
    if not _NAME.match(name):
        raise RefError(f"malformed {what} name {ref!r}: use letters, digits, '-', '_', '.', e.g. cat-to-dog")
    return name, None


def slug(concept: str) -> str:
    """A concept as a direction-name part: whitespace → '-' ("oil pastel" → "oil-pastel")."""
    return re.sub(r"\s+", "-", concept.strip())


def direction_name(source: str, target: str) -> str:
    """Default name of a direction: ``SOURCE-to-TARGET``."""
    return f"{slug(source)}-to-{slug(target)}"
