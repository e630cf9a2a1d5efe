"""What the registry returns: plain records holding no session, and the registry's one error type.

``Bank``, ``Direction`` and ``SearchHit`` are dataclasses (docs/architecture.md, "Registry API"). A
``Direction`` read from a database materializes its vector Δ [1, 77, D] and loads its search key [D] on first
use, through loaders bound to that database, so listings stay cheap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import from_bytes


class RegistryError(Exception):
    """A user mistake or an unusable input; the message is one line naming the problem and the fix."""


# A terminal escape: CSI (ESC [ … or the C1 CSI), OSC (ESC ] … BEL or ST), or ESC and one more character.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.?)|\x9b[0-?]*[ -/]*[@-~]")


def printable(text, keep: str = "") -> str:
    """``text`` without terminal escape sequences and control characters (C0, DEL, C1), except the characters in
    ``keep`` (``"\t"``, ``"\n"``): the one filter for anything that came from elsewhere (a Hub's or another
    registry's answer, pulled sentences) before it reaches a terminal."""
    import unicodedata  # lazy: start-up

    return "".join(c for c in _ESCAPES.sub("", str(text)) if c in keep or unicodedata.category(c) != "Cc")


class NotFound(RegistryError, LookupError):
    """What was asked for does not exist (an unknown name, version, bank, student or job); the HTTP API answers
    404 for it, the CLI the same one line as for any :class:`RegistryError`."""


# How to act on a missing record, in the front ends' terms (the store only says what is missing): the CLI and the
# HTTP API show the same line.
FIXES = {
    "bank": "create one with: p2pz bank create {name}",
    "direction": "see p2pz direction list, or build it with p2pz direction build SOURCE TARGET",
    "student": "distil one with p2pz distill pairs … and p2pz distill train …",
    "deprecated-student": "ask for one by version (--version N, --student @N) or undeprecate it "
                          "(p2pz student undeprecate)",
}


def not_found_message(exc) -> str:
    """A store :class:`~store.repository.NotFoundError`'s message with the fix it names."""
    fix = FIXES.get(getattr(exc, "fix", None) or "")
    return f"{exc}; {fix.format(name=exc.name)}" if fix else str(exc)


@contextlib.contextmanager
def user_errors():
    """Turn the lower layers' user-facing errors (store, generators, vectors) into :class:`RegistryError`."""
    from p2pz.generators import GeneratorError  # lazy: start-up
    from p2pz.store.db import StoreError  # lazy: sqlalchemy
    from p2pz.store.repository import NotFoundError  # lazy: sqlalchemy
    from p2pz.store.vectors import VectorError  # lazy: start-up

    try:
        yield
    except NotFoundError as exc:
        raise NotFound(not_found_message(exc)) from None
    except (StoreError, GeneratorError, VectorError) as exc:
        raise RegistryError(str(exc)) from None


@dataclass
class Bank:
    concept: str
    version: int
    sentences: list[str]
    sha256: str
    generator: str
    params: dict
    n_sentences: int
    created_at: dt.datetime
    note: str | None = None
    id: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.concept}@{self.version}"

    def to_dict(self, sentences: bool = False) -> dict:
        d = {"concept": self.concept, "version": self.version, "ref": self.ref, "generator": self.generator,
             "params": self.params, "n_sentences": self.n_sentences, "sha256": self.sha256,
             "created_at": self.created_at.isoformat(), "note": self.note}
        if sentences:
            d["sentences"] = self.sentences
        return d


def bank_record(row, with_sentences: bool = True) -> Bank:
    """A stored bank row → :class:`Bank` (sentences are a deferred column: read only when asked for)."""
    return Bank(concept=row.concept, version=row.version, sentences=list(row.sentences) if with_sentences else [],
                sha256=row.sha256, generator=row.generator, params=dict(row.params or {}),
                n_sentences=row.n_sentences, created_at=row.created_at, note=row.note, id=row.id)


@dataclass
class Direction:
    name: str
    version: int
    key_bytes: bytes | None = field(default=None, repr=False)  # safetensors [D] float32; decoded by ``key``
    encoder: str = ""  # encoder fingerprint
    source: str | None = None  # bank ref "cat@1" (pair directions)
    target: str | None = None
    scale: float = 1.0
    tags: list[str] = field(default_factory=list)
    created_at: dt.datetime | None = None
    kind: str = "pair"
    components: list[dict] | None = None
    note: str | None = None
    deprecated: bool = False
    encoder_model: str | None = None
    hidden_size: int | None = None
    family: str = "sd"  # the encoder's: "sd" (one text encoder) or "sdxl" (the pair; see ``pooled``)
    key_size: int | None = None  # the key's width when it is not hidden_size (SDXL: the pooled width)
    id: int | None = None
    content_sha256: str | None = None
    origin: dict | None = None  # where it was pulled or imported from ({"source", "revision", "version", …})
    load_vector: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    load_key: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    load_token: Callable[[], "TokenDelta"] | None = field(default=None, repr=False, compare=False)
    _vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    _key: np.ndarray | None = field(default=None, repr=False, compare=False)
    _token: "TokenDelta | None" = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> np.ndarray:
        """The search key [D] float32 (decoded on first use)."""
        if self._key is None:
            if self.key_bytes is None and self.load_key is not None:
                self.key_bytes = self.load_key()
            width = self.key_size or self.hidden_size
            self._key = from_bytes(self.key_bytes, (width,) if width else None)
        return self._key

    def pooled_numpy(self) -> np.ndarray | None:
        """Δ_pooled [1, 1280] float32 for an SDXL direction, None otherwise (algorithm §12).

        An SDXL embedding's key *is* the mean pooled embedding of ``text_encoder_2`` (:mod:`.encoding`), and a
        direction's key is built from its embeddings' keys exactly as Δ from their means (scale · (target −
        source), or Σ wᵢ keyᵢ), so Δ_pooled is the key: stored once, shared by search and the editor."""
        if self.family != "sdxl":
            return None
        return self.key.reshape(1, -1)

    @property
    def pooled(self):
        """Δ_pooled as a torch tensor [1, 1280] float32 (SDXL), else None."""
        import torch  # lazy: torch

        p = self.pooled_numpy()
        return None if p is None else torch.from_numpy(p.copy())

    def vector_numpy(self) -> np.ndarray:
        """Δ as a float32 numpy array [1, 77, D] (materialized once, on first use)."""
        if self._vector is None:
            if self.load_vector is None:
                raise RegistryError(f"direction {self.ref} has no vector source")
            self._vector = self.load_vector()
        return self._vector

    def vector_stats(self) -> dict:
        """Δ's shape, norm ‖Δ‖ and the norm of its BOS row (what ``direction show`` and the web page report)."""
        v = self.vector_numpy()
        stats = {"shape": list(v.shape), "norm": float(np.linalg.norm(v)),
                 "bos_row_norm": float(np.linalg.norm(v[0, 0]))}
        pooled = self.pooled_numpy()
        if pooled is not None:  # SDXL: Δ_pooled too
            stats.update(pooled_shape=list(pooled.shape), pooled_norm=float(np.linalg.norm(pooled)))
        tok = self.token_delta
        stats["token"] = ({"shape": list(tok.vector.shape), "norm": float(np.linalg.norm(tok.vector)),
                           "word": tok.word, "target_word": tok.target_word, "sentences": tok.sentences,
                           "kind": tok.kind, "auto": _auto_placement(tok)}
                          if tok.vector is not None else {"none": tok.reason})
        return stats

    @property
    def token_delta(self) -> "TokenDelta":
        """Δ_token [D] with the source word it is applied at (docs/algorithm.md §13), or why there is none."""
        if self._token is None:
            self._token = self.load_token() if self.load_token is not None else TokenDelta(
                None, None, None, "this record carries no token-aligned direction")
        return self._token

    def detached(self) -> "Direction":
        """This record with Δ, Δ_token and the key materialized and no link to the database: plain data another
        process (a Ray worker) can receive."""
        return replace(self, _vector=self.vector_numpy(), _key=self.key, _token=self.token_delta, key_bytes=None,
                       load_vector=None, load_key=None, load_token=None)

    @property
    def vector(self):
        """Δ as a torch tensor [1, 77, D] float32."""
        import torch  # lazy: torch

        return torch.from_numpy(self.vector_numpy().copy())

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "ref": self.ref, "kind": self.kind,
                "source": self.source, "target": self.target, "scale": self.scale, "components": self.components,
                "encoder": self.encoder, "encoder_model": self.encoder_model, "hidden_size": self.hidden_size,
                "family": self.family,
                "tags": list(self.tags), "note": self.note, "deprecated": self.deprecated,
                "created_at": self.created_at.isoformat(), "content_sha256": self.content_sha256,
                "origin": self.origin}


def direction_maker(load_vector: Callable[[int], np.ndarray], load_key: Callable[[int], bytes],
                    load_token: Callable[[int], "TokenDelta"] | None = None):
    """A ``make`` for :func:`store.repository.list_directions`: a :class:`Direction` whose vector, key and Δ_token
    load lazily through ``load_vector(id)`` / ``load_key(id)`` / ``load_token(id)``."""
    def make(**fields) -> Direction:
        rid = fields["id"]
        return Direction(**fields, load_vector=lambda: load_vector(rid), load_key=lambda: load_key(rid),
                         load_token=None if load_token is None else (lambda: load_token(rid)))
    return make


@dataclass(frozen=True)
class TokenDelta:
    """A direction's token-aligned part (docs/algorithm.md §13): Δ_token [D] float32 — the target bank's mean
    hidden state at its concept word's tokens minus the source bank's — and the source ``word`` whose positions in
    a caption it is added at. ``vector`` is None when there is none, ``reason`` saying why."""

    vector: np.ndarray | None
    word: str | None
    target_word: str | None = None
    reason: str = ""
    sentences: tuple[int, int] | None = None  # bank sentences that contain each word (source, target)
    kind: str | None = None  # the source word's kind (object, attribute, scene, style): what --delta-at auto reads

    @property
    def tensor(self):
        """Δ_token as a torch tensor [D] float32, or None."""
        import torch  # lazy: torch

        return None if self.vector is None else torch.from_numpy(np.array(self.vector, dtype=np.float32))


def _auto_placement(token: "TokenDelta") -> str:
    from p2pz.editor.config import resolve_mode  # lazy: the editor's settings, no torch

    return resolve_mode("auto", token)


def token_line(token: dict | None) -> str:
    """The ``token`` entry of :meth:`Direction.vector_stats` as the one line ``direction show`` and the web page
    print: ``‖Δ_token‖ 1.23, 'cat' (in 18 bank sentences) → 'dog' (in 20)``, or ``none (why)``."""
    if not token:
        return "none (this record carries no token-aligned direction)"
    if "none" in token:
        return f"none ({token['none']})"
    counts = token.get("sentences") or (None, None)
    src = f"'{token.get('word')}'" + (f" (in {counts[0]} bank sentences)" if counts[0] is not None else "")
    tgt = f"'{token.get('target_word')}'" + (f" (in {counts[1]})" if counts[1] is not None else "")
    line = f"shape {token.get('shape')}, ‖Δ_token‖ {token['norm']:.4g}, {src} → {tgt}"
    if token.get("kind"):  # what --delta-at auto does with it (editor.config.AUTO)
        line += f"; {token['kind']} word: auto places it {'at the word' if token.get('auto') == 'word' else 'everywhere'}"
    return line


@dataclass
class SearchHit:
    direction: Direction
    score: float

    def to_dict(self) -> dict:
        return {"score": round(self.score, 6), **self.direction.to_dict()}
