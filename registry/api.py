"""The public Python API of p2pz: :class:`Registry` (DESIGN §5).

A registry is a database (SQLite file by default, any SQLAlchemy URL) plus a FAISS cache beside it. Every
public method is one transaction: slow work (generating sentences, loading a model, encoding) happens first,
outside any write lock, then everything it produced is written at once, so a failure or an interrupt leaves
the database as it was. Returned objects are plain dataclasses holding no session.

Vectors: a concept embedding is the mean text-encoder output of its bank, [1, 77, D]; a direction is
Δ = scale · (mean(target) − mean(source)) (reference §1.3, PAPER §3.2), or a weighted sum of directions. Δ is
materialized on read from the two stored embeddings, never stored a second time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from store.lazy import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from generators import BankDraft, GeneratorError, bank_sha256, check_concept, get_generator
from store import models as m
from store.db import StoreError, ensure_schema, make_engine, session_scope
from store.index import DirectionIndex
from store.paths import data_home, default_db_url
from store.vectors import VectorError, from_bytes, to_bytes

from .naming import RefError, direction_name, parse_ref


class RegistryError(Exception):
    """A user mistake or an unusable input; the message is one line naming the problem and the fix."""


# --- returned records -------------------------------------------------------------------------------

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
    id: int | None = None
    content_sha256: str | None = None
    _materialize: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    _vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    _key: np.ndarray | None = field(default=None, repr=False, compare=False)
    _load_key: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> np.ndarray:
        """The search key [D] float32 (decoded on first use)."""
        if self._key is None:
            if self.key_bytes is None and self._load_key is not None:
                self.key_bytes = self._load_key()
            self._key = from_bytes(self.key_bytes, (self.hidden_size,) if self.hidden_size else None)
        return self._key

    def vector_numpy(self) -> np.ndarray:
        """Δ as a float32 numpy array [1, 77, D] (materialized once, on first use)."""
        if self._vector is None:
            if self._materialize is None:
                raise RegistryError(f"direction {self.ref} has no vector source")
            self._vector = self._materialize()
        return self._vector

    @property
    def vector(self):
        """Δ as a torch tensor [1, 77, D] float32."""
        import torch

        return torch.from_numpy(self.vector_numpy().copy())

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "ref": self.ref, "kind": self.kind,
                "source": self.source, "target": self.target, "scale": self.scale, "components": self.components,
                "encoder": self.encoder, "encoder_model": self.encoder_model, "hidden_size": self.hidden_size,
                "tags": list(self.tags), "note": self.note, "deprecated": self.deprecated,
                "created_at": self.created_at.isoformat()}


@dataclass
class SearchHit:
    direction: Direction
    score: float

    def to_dict(self) -> dict:
        return {"score": round(self.score, 6), **self.direction.to_dict()}


@dataclass
class _PendingBank:
    """A bank that may or may not be stored yet (content-addressed on write)."""

    concept: str
    sha256: str
    draft: BankDraft | None = None
    generator: str = "templates"
    row_id: int | None = None


@dataclass
class _PendingEmbedding:
    bank: _PendingBank
    mean: np.ndarray | None = None
    key: np.ndarray | None = None
    key_kind: str = "pooler"
    row_id: int | None = None


def _json_list(value) -> list:
    """A JSON list column as fetched raw: text on SQLite, already parsed on PostgreSQL."""
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value) if value not in ("[]", "null") else []
    return list(value)


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Registry:
    """Banks, embeddings and directions in one database (DESIGN §3, §5).

    >>> reg = Registry.open("sqlite:///:memory:")          # or Registry.open() for $P2PZ_HOME/registry.db
    >>> bank = reg.make_bank("cat", n=1000, seed=0)
    >>> d = reg.build_direction("cat", "dog", model="CompVis/stable-diffusion-v1-4")   # doctest: +SKIP
    """

    def __init__(self, url: str | None = None, *, progress: bool = False, index_dir: str | Path | None = None):
        self.url = url or default_db_url()
        self.progress = progress
        try:
            self.engine = make_engine(self.url)
            ensure_schema(self.engine)
        except StoreError as exc:
            raise RegistryError(str(exc)) from None
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._index_dir = Path(index_dir) if index_dir else self._default_index_dir()
        self._indexes: dict[str, DirectionIndex] = {}

    @classmethod
    def open(cls, url: str | None = None, **kwargs) -> "Registry":
        """Open (and create or upgrade when needed) the registry at ``url`` (default: ``$P2PZ_DB_URL`` or
        ``$P2PZ_HOME/registry.db``)."""
        return cls(url, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _default_index_dir(self) -> Path | None:
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            db = url.database
            if not db or db == ":memory:" or db.startswith("file:"):
                return None
            return Path(db).expanduser().resolve().with_name(Path(db).name + ".index")
        return data_home() / "index" / _sha(url.render_as_string(hide_password=True))[:16]

    # --- sessions ----------------------------------------------------------------------------------
    def _read(self):
        return self._scope(write=False)

    def _write(self):
        return self._scope(write=True)

    def _scope(self, write: bool):
        import contextlib

        @contextlib.contextmanager
        def scope():
            try:
                with session_scope(self._factory, write=write) as s:
                    yield s
            except OperationalError as exc:
                msg = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
                if "readonly" in msg or "read-only" in msg:
                    raise RegistryError(f"the registry database is read-only ({self.engine.url.database}); "
                                        "reads work, writes need a writable file and folder") from None
                raise RegistryError(f"database error: {msg}") from None
        return scope()

    # --- encoders ----------------------------------------------------------------------------------
    def _load_encoder(self, model: str | None, device: str | None = None):
        from .loader import DEFAULT_MODEL, ModelLoadError, load_text_encoder

        try:
            return load_text_encoder(model or DEFAULT_MODEL, device=device)
        except ModelLoadError as exc:
            raise RegistryError(str(exc)) from None

    @classmethod
    def _encoder_row(cls, session, enc) -> m.Encoder:
        cls._lock(session, "encoder", enc.fingerprint)
        row = session.scalar(select(m.Encoder).where(m.Encoder.fingerprint == enc.fingerprint))
        if row is None:
            row = m.Encoder(fingerprint=enc.fingerprint, model=enc.location.model, subfolder=enc.subfolder,
                            revision=enc.location.revision, architecture=enc.architecture,
                            hidden_size=enc.hidden_size, max_length=enc.max_length, pad_id=enc.pad_id)
            session.add(row)
            session.flush()
        return row

    def encoders(self) -> list[dict]:
        with self._read() as s:
            rows = s.scalars(select(m.Encoder).order_by(m.Encoder.id)).all()
            return [{"fingerprint": r.fingerprint, "model": r.model, "architecture": r.architecture,
                     "hidden_size": r.hidden_size, "max_length": r.max_length} for r in rows]

    # --- banks -------------------------------------------------------------------------------------
    @staticmethod
    def _bank(row: m.Bank, with_sentences: bool = True) -> Bank:
        return Bank(concept=row.concept, version=row.version, sentences=list(row.sentences) if with_sentences else [],
                    sha256=row.sha256, generator=row.generator, params=dict(row.params or {}),
                    n_sentences=row.n_sentences, created_at=row.created_at, note=row.note, id=row.id)

    def _draft(self, concept: str, generator: str, n: int, seed: int, options: dict) -> _PendingBank:
        try:
            concept = check_concept(concept)
            if generator == "llm":
                options = self._llm_options(options)
            gen = get_generator(generator, **options)
            draft = gen.generate(concept, n, seed=seed)
        except GeneratorError as exc:
            raise RegistryError(str(exc)) from None
        if not draft.sentences:
            raise RegistryError(f"the {generator} generator produced no sentences for {concept!r}")
        return _PendingBank(concept=concept, sha256=bank_sha256(draft.sentences), draft=draft, generator=generator)

    def _llm_options(self, options: dict) -> dict:
        """The registry's side of the LLM generator: its cache folder, progress, and a CLIP token counter
        from ``tokenizer_model`` (an SD model), or from the default model when it is already on disk."""
        from store.paths import cache_dir

        options = dict(options)
        if options.get("llm_model"):
            options["model"] = options.pop("llm_model")
        options.pop("llm_model", None)
        tokenizer_model = options.pop("tokenizer_model", None)
        options.setdefault("cache_dir", cache_dir() / "llm")
        options.setdefault("progress", self.progress)
        from .loader import ModelLoadError, load_tokenizer

        try:
            tok = load_tokenizer(tokenizer_model, local_only=tokenizer_model is None)
        except ModelLoadError as exc:
            if tokenizer_model:
                raise RegistryError(str(exc)) from None
            tok = None
        if tok is not None:
            def count(sentences: list[str]) -> list[int]:
                ids = tok(list(sentences), add_special_tokens=False, truncation=False)["input_ids"]
                return [len(x) for x in ids]

            options["token_counter"] = count
            options["token_counter_name"] = f"tokenizer of {tokenizer_model or 'the default model'}"
        return options

    @staticmethod
    def _lock(s, kind: str, key) -> None:
        """Serialize writers of one (kind, key) inside the database. SQLite writers already hold the database
        write lock (``BEGIN IMMEDIATE``); PostgreSQL takes a transaction-scoped advisory lock, so version numbers
        stay unique and gap-free per name and content addressing sees every committed row."""
        if s.get_bind().dialect.name == "postgresql":
            from sqlalchemy import text

            s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"p2pz:{kind}:{key}"})

    def _store_bank(self, s, pending: _PendingBank, note: str | None = None) -> m.Bank:
        self._lock(s, "bank", pending.concept)
        row = s.scalar(select(m.Bank).where(m.Bank.concept == pending.concept, m.Bank.sha256 == pending.sha256))
        if row is not None:
            pending.row_id = row.id
            return row
        if pending.draft is None:
            raise RegistryError(f"bank {pending.concept} ({pending.sha256[:12]}) vanished from the database")
        version = (s.scalar(select(func.max(m.Bank.version)).where(m.Bank.concept == pending.concept)) or 0) + 1
        row = m.Bank(concept=pending.concept, version=version, generator=pending.generator,
                     params=pending.draft.params, sentences=pending.draft.sentences,
                     n_sentences=len(pending.draft.sentences), sha256=pending.sha256, note=note)
        s.add(row)
        s.flush()
        pending.row_id = row.id
        return row

    def make_bank(self, concept: str, generator: str = "templates", n: int = 1000, seed: int = 0, *,
                  note: str | None = None, **options) -> Bank:
        """Generate and store a bank; the same sentences for the same concept return the stored version."""
        pending = self._draft(concept, generator, n, seed, options)
        with self._write() as s:
            return self._bank(self._store_bank(s, pending, note))

    def bank(self, ref: str) -> Bank:
        """``cat`` (latest version) or ``cat@2``."""
        concept, version = self._parse(ref, "bank")
        with self._read() as s:
            row = self._bank_row(s, concept, version)
            return self._bank(row)

    def _bank_row(self, s, concept: str, version: int | None) -> m.Bank:
        q = select(m.Bank).where(m.Bank.concept == concept)
        q = q.where(m.Bank.version == version) if version else q.order_by(m.Bank.version.desc()).limit(1)
        row = s.scalar(q)
        if row is None:
            known = s.scalars(select(m.Bank.version).where(m.Bank.concept == concept)).all()
            if known:
                raise RegistryError(f"bank {concept}@{version} does not exist; versions: {sorted(known)}")
            raise RegistryError(f"no bank for concept {concept!r}; create one with: p2pz bank create {concept}")
        return row

    def banks(self, concept: str | None = None) -> list[Bank]:
        with self._read() as s:
            q = select(m.Bank).order_by(m.Bank.concept, m.Bank.version)
            if concept:
                q = q.where(m.Bank.concept == concept)
            return [self._bank(r, with_sentences=False) for r in s.scalars(q)]

    @staticmethod
    def _parse(ref: str, what: str) -> tuple[str, int | None]:
        try:
            return parse_ref(ref, what)
        except RefError as exc:
            raise RegistryError(str(exc)) from None

    # --- embeddings --------------------------------------------------------------------------------
    def _resolve_bank(self, ref: str, generator: str | None, n: int, seed: int, options: dict) -> _PendingBank:
        """A stored bank (``cat@2``, or the latest ``cat`` when no generator is asked for) or a new draft."""
        concept, version = self._parse(ref, "bank")
        if version is not None or generator is None:
            with self._read() as s:
                q = select(m.Bank).where(m.Bank.concept == concept)
                q = q.where(m.Bank.version == version) if version else q.order_by(m.Bank.version.desc()).limit(1)
                row = s.scalar(q)
                if row is None and version is not None:
                    self._bank_row(s, concept, version)  # raises the precise error
                if row is not None:
                    return _PendingBank(concept=row.concept, sha256=row.sha256, generator=row.generator,
                                        row_id=row.id)
        return self._draft(concept, generator or "templates", n, seed, options)

    def _embed(self, pending: _PendingBank, enc, batch_size: int = 32) -> _PendingEmbedding:
        """Reuse the stored embedding of (bank, encoder) or encode the bank now (outside any transaction)."""
        with self._read() as s:
            row = s.scalar(
                select(m.Embedding).join(m.Bank).join(m.Encoder)
                .where(m.Bank.concept == pending.concept, m.Bank.sha256 == pending.sha256,
                       m.Encoder.fingerprint == enc.fingerprint))
            if row is not None:
                return _PendingEmbedding(bank=pending, row_id=row.id, key=from_bytes(row.key, (None,)),
                                         key_kind=row.key_kind)
            sentences = pending.draft.sentences if pending.draft else list(s.get(m.Bank, pending.row_id).sentences)
        if not sentences:
            raise RegistryError(f"bank {pending.concept} has no sentences to encode (imported embeddings can only be "
                                "used with the encoder they were made with)")
        from .encoding import encode_bank

        bar = self._bar(len(sentences), f"encoding {pending.concept}")
        try:
            encoded = encode_bank(enc, sentences, batch_size=batch_size, progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        return _PendingEmbedding(bank=pending, mean=encoded.mean, key=encoded.key, key_kind=encoded.key_kind)

    def _store_embedding(self, s, pe: _PendingEmbedding, encoder_row: m.Encoder) -> m.Embedding:
        if pe.row_id is not None:
            return s.get(m.Embedding, pe.row_id)
        bank_row = self._store_bank(s, pe.bank)
        self._lock(s, "embedding", f"{bank_row.id}:{encoder_row.id}")
        row = s.scalar(select(m.Embedding).where(m.Embedding.bank_id == bank_row.id,
                                                 m.Embedding.encoder_id == encoder_row.id))
        if row is None:
            try:
                row = m.Embedding(bank_id=bank_row.id, encoder_id=encoder_row.id, mean=to_bytes(pe.mean),
                                  key=to_bytes(pe.key), key_kind=pe.key_kind)
            except VectorError as exc:
                raise RegistryError(f"embedding of {pe.bank.concept}: {exc}") from None
            s.add(row)
            s.flush()
        pe.row_id = row.id
        return row

    def _bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="sent", file=sys.stderr, leave=False)

    def embedding(self, ref: str, model: str | None = None) -> np.ndarray:
        """The mean embedding [1, 77, D] of a bank under a model (encoding and storing it when missing)."""
        enc = self._load_encoder(model)
        pe = self._embed(self._resolve_bank(ref, None, 0, 0, {}), enc)
        with self._write() as s:
            row = self._store_embedding(s, pe, self._encoder_row(s, enc))
            return from_bytes(row.mean, (1, None, enc.hidden_size))

    # --- directions --------------------------------------------------------------------------------
    def _fetch(self, s, *where, order=True) -> list[Direction]:
        """Directions matching ``where``, in one Core query with only the columns a listing needs (no ORM
        objects, no blobs but the 3 KB key): listing 10k directions stays well under a second."""
        from sqlalchemy.orm import aliased

        d, e = m.Direction, m.Encoder
        se, te, sb, tb = aliased(m.Embedding), aliased(m.Embedding), aliased(m.Bank), aliased(m.Bank)
        from sqlalchemy import Text, type_coerce

        # JSON columns come back as text and are parsed only when not empty; the key blob is fetched on use.
        q = (select(d.id, d.name, d.version, d.kind, d.scale, type_coerce(d.components, Text), d.content_sha256,
                    type_coerce(d.tags, Text), d.note, d.deprecated, type_coerce(d.created_at, Text), e.fingerprint, e.model,
                    e.hidden_size, sb.concept, sb.version, tb.concept, tb.version)
             .join(e, d.encoder_id == e.id)
             .outerjoin(se, d.source_id == se.id).outerjoin(sb, se.bank_id == sb.id)
             .outerjoin(te, d.target_id == te.id).outerjoin(tb, te.bank_id == tb.id)
             .where(*where))
        if order:
            q = q.order_by(d.name, d.version)
        out = []
        for (rid, name, version, kind, scale, comps, sha, tags, note, deprecated, created, fp, model, hidden,
             sc, sv, tc, tv) in s.connection().execute(q):
            if isinstance(created, str):
                created = dt.datetime.fromisoformat(created)
            out.append(Direction(
                name=name, version=version, encoder=fp, source=f"{sc}@{sv}" if sc else None,
                target=f"{tc}@{tv}" if tc else None, scale=scale,
                tags=_json_list(tags), created_at=created, kind=kind, components=_json_list(comps) or None, note=note,
                deprecated=deprecated, encoder_model=model, hidden_size=hidden, id=rid, content_sha256=sha,
                _materialize=lambda rid=rid: self._materialize(rid), _load_key=lambda rid=rid: self._key_bytes(rid)))
        return out

    def _key_bytes(self, direction_id: int) -> bytes:
        with self._read() as s:
            return s.scalar(select(m.DirectionKey.key).where(m.DirectionKey.direction_id == direction_id))

    def _direction(self, s, row: m.Direction) -> Direction:
        s.flush()
        return self._fetch(s, m.Direction.id == row.id, order=False)[0]

    def _materialize(self, direction_id: int) -> np.ndarray:
        with self._read() as s:
            return self._vector_of(s, s.get(m.Direction, direction_id))

    def _vector_of(self, s, row: m.Direction, depth: int = 0) -> np.ndarray:
        if depth > 32:
            raise RegistryError(f"direction {row.name}@{row.version}: combination nested too deeply")
        d = row.encoder.hidden_size
        if row.vector is not None:
            return from_bytes(row.vector, (1, None, d)).astype(np.float32)
        if row.kind == "pair":
            src = from_bytes(s.get(m.Embedding, row.source_id).mean, (1, None, d))
            tgt = from_bytes(s.get(m.Embedding, row.target_id).mean, (1, None, d))
            delta = tgt - src  # [1, 77, D]
            return delta if row.scale == 1.0 else (np.float32(row.scale) * delta).astype(np.float32)
        if row.kind == "combination":
            total = None
            for comp in row.components:
                part = np.float32(comp["weight"]) * self._vector_of(s, s.get(m.Direction, comp["id"]), depth + 1)
                total = part if total is None else total + part
            return total.astype(np.float32)
        raise RegistryError(f"direction {row.name}@{row.version} has unknown kind {row.kind!r}")

    def _direction_row(self, s, name: str, version: int | None, include_deprecated: bool = False) -> m.Direction:
        q = select(m.Direction).where(m.Direction.name == name)
        if version is not None:
            q = q.where(m.Direction.version == version)
        else:
            if not include_deprecated:
                q = q.where(m.Direction.deprecated.is_(False))
            q = q.order_by(m.Direction.version.desc()).limit(1)
        row = s.scalar(q)
        if row is None:
            versions = s.scalars(select(m.Direction.version).where(m.Direction.name == name)).all()
            if versions and version is not None:
                raise RegistryError(f"direction {name}@{version} does not exist; versions: {sorted(versions)}")
            if versions:
                raise RegistryError(f"every version of direction {name!r} is deprecated; ask for one as {name}@N")
            raise RegistryError(f"no direction named {name!r}; see p2pz direction list, or build it with "
                                "p2pz direction build SOURCE TARGET")
        return row

    def get(self, ref: str) -> Direction:
        """``cat-to-dog@2``, or ``cat-to-dog`` for the latest non-deprecated version."""
        name, version = self._parse(ref, "direction")
        with self._read() as s:
            return self._direction(s, self._direction_row(s, name, version))

    def versions(self, name: str) -> list[Direction]:
        name, version = self._parse(name, "direction")
        with self._read() as s:
            found = self._fetch(s, m.Direction.name == name)
            if not found:
                self._direction_row(s, name, None)
            return found

    def directions(self, include_deprecated: bool = False, tag: str | None = None) -> list[Direction]:
        with self._read() as s:
            out = self._fetch(s, *([] if include_deprecated else [m.Direction.deprecated.is_(False)]))
        return [d for d in out if tag is None or tag in d.tags]

    def _insert_direction(self, s, *, name: str, kind: str, encoder_row: m.Encoder, key: np.ndarray,
                          content: dict, source_id=None, target_id=None, scale=1.0, components=None,
                          tags=(), note=None) -> m.Direction:
        """Content-addressed insert: the same content under the same name returns the stored version."""
        content_sha = _sha(content)
        self._lock(s, "direction", name)
        row = s.scalar(select(m.Direction).where(m.Direction.name == name, m.Direction.content_sha256 == content_sha))
        if row is not None:
            return row
        try:
            key_bytes = to_bytes(np.asarray(key, dtype=np.float32))
        except VectorError as exc:
            raise RegistryError(f"direction {name}: {exc}") from None
        version = (s.scalar(select(func.max(m.Direction.version)).where(m.Direction.name == name)) or 0) + 1
        row = m.Direction(name=name, version=version, kind=kind, encoder_id=encoder_row.id, source_id=source_id,
                          target_id=target_id, scale=float(scale), components=components,
                          content_sha256=content_sha, tags=sorted(set(tags)), note=note, deprecated=False)
        s.add(row)
        s.flush()
        s.add(m.DirectionKey(direction_id=row.id, key=key_bytes))
        s.flush()
        self._bump_generation(s)
        return row

    @staticmethod
    def _bump_generation(s) -> None:
        s.execute(update(m.Meta).where(m.Meta.key == "generation").values(value=m.Meta.value + 1))

    def _generation(self) -> int:
        with self._read() as s:
            return int(s.scalar(select(m.Meta.value).where(m.Meta.key == "generation")) or 0)

    def build_direction(self, source: str, target: str, model: str | None = None, *, name: str | None = None,
                        generator: str | None = None, n: int = 1000, seed: int = 0, scale: float = 1.0,
                        tags: Iterable[str] = (), note: str | None = None, device: str | None = None,
                        **options) -> Direction:
        """Δ = scale · (mean(target) − mean(source)) under ``model``'s text encoder.

        ``source``/``target`` are concepts (latest bank, made from templates when the concept has none) or
        bank refs (``cat@2``). With ``generator`` set, banks are (re)generated with it — content addressing
        returns the stored bank when the sentences are the same. Re-running the same build returns the
        stored direction version.
        """
        if not np.isfinite(scale):
            raise RegistryError("scale must be a finite number")
        if generator == "llm":  # check lengths with this model's own tokenizer (before spending tokens)
            from .loader import DEFAULT_MODEL

            options.setdefault("tokenizer_model", model or DEFAULT_MODEL)
        src = self._resolve_bank(source, generator, n, seed, options)
        tgt = self._resolve_bank(target, generator, n, seed, options)
        name = name or direction_name(src.concept, tgt.concept)
        self._parse(name, "direction")
        enc = self._load_encoder(model, device)
        src_e = self._embed(src, enc)
        tgt_e = self._embed(tgt, enc) if (tgt.concept, tgt.sha256) != (src.concept, src.sha256) else src_e
        key = self._pair_key(src_e, tgt_e, enc.hidden_size, scale)
        content = {"kind": "pair", "encoder": enc.fingerprint, "source": [src.concept, src.sha256],
                   "target": [tgt.concept, tgt.sha256], "scale": float(scale)}
        with self._write() as s:
            enc_row = self._encoder_row(s, enc)
            se = self._store_embedding(s, src_e, enc_row)
            te = self._store_embedding(s, tgt_e, enc_row)
            row = self._insert_direction(s, name=name, kind="pair", encoder_row=enc_row, key=key, content=content,
                                         source_id=se.id, target_id=te.id, scale=scale, tags=tags, note=note)
            return self._direction(s, row)

    def _pair_key(self, src_e: _PendingEmbedding, tgt_e: _PendingEmbedding, dim: int, scale: float) -> np.ndarray:
        def key_of(pe):
            if pe.key is not None:
                return pe.key
            with self._read() as s:
                return from_bytes(s.get(m.Embedding, pe.row_id).key, (dim,))
        return (np.float32(scale) * (key_of(tgt_e) - key_of(src_e))).astype(np.float32)

    def combine(self, weights: dict[str, float], name: str, *, tags: Iterable[str] = (), note: str | None = None) -> Direction:
        """A weighted sum Σ wᵢ Δᵢ of stored directions, recorded as such (materialized on read)."""
        if not weights:
            raise RegistryError("combine needs at least one NAME=WEIGHT")
        self._parse(name, "direction")
        with self._write() as s:
            rows = []
            for ref, w in weights.items():
                if not np.isfinite(w):
                    raise RegistryError(f"weight of {ref} must be a finite number")
                n_, v_ = self._parse(ref, "direction")
                rows.append((self._direction_row(s, n_, v_), float(w)))
            first = rows[0][0]
            for row, _ in rows[1:]:
                if row.encoder_id != first.encoder_id:
                    raise RegistryError(self._encoder_mismatch(first, row))
            key = sum(np.float32(w) * from_bytes(r.key, (r.encoder.hidden_size,)) for r, w in rows)
            components = [{"id": r.id, "name": r.name, "version": r.version, "weight": w} for r, w in rows]
            content = {"kind": "combination", "encoder": first.encoder.fingerprint,
                       "components": [[r.content_sha256, w] for r, w in rows]}
            row = self._insert_direction(s, name=name, kind="combination", encoder_row=first.encoder, key=key,
                                         content=content, components=components, tags=tags, note=note)
            return self._direction(s, row)

    @staticmethod
    def _encoder_mismatch(a: m.Direction, b: m.Direction) -> str:
        return (f"directions from different text encoders cannot be mixed: {a.name}@{a.version} uses "
                f"{a.encoder.model} ({a.encoder.fingerprint[:12]}, D={a.encoder.hidden_size}) but "
                f"{b.name}@{b.version} uses {b.encoder.model} ({b.encoder.fingerprint[:12]}, D={b.encoder.hidden_size})")

    def tag(self, ref: str, tag: str) -> Direction:
        tag = (tag or "").strip()
        if not tag or "," in tag:
            raise RegistryError("a tag must be a non-empty word without commas")
        name, version = self._parse(ref, "direction")
        with self._write() as s:
            row = self._direction_row(s, name, version)
            if tag not in (row.tags or []):
                row.tags = sorted(set(row.tags or []) | {tag})
            s.flush()
            return self._direction(s, row)

    def deprecate(self, ref: str) -> Direction:
        name, version = self._parse(ref, "direction")
        if version is None:
            raise RegistryError(f"deprecate needs an explicit version, e.g. {name}@1")
        with self._write() as s:
            row = self._direction_row(s, name, version)
            if not row.deprecated:
                row.deprecated = True
                self._bump_generation(s)
            s.flush()
            return self._direction(s, row)

    # --- search ------------------------------------------------------------------------------------
    def _index(self, fingerprint: str) -> DirectionIndex:
        generation = self._generation()
        cached = self._indexes.get(fingerprint)
        if cached is not None and cached.generation == generation:
            return cached
        with self._read() as s:
            enc = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fingerprint))
            if enc is None:
                raise RegistryError(f"no encoder {fingerprint[:12]} in this registry")
            dim = enc.hidden_size
            index = DirectionIndex.load(self._index_dir, fingerprint, dim, generation) if self._index_dir else None
            if index is None:
                rows = s.execute(select(m.Direction.id, m.DirectionKey.key).join(
                    m.DirectionKey, m.DirectionKey.direction_id == m.Direction.id).where(
                    m.Direction.encoder_id == enc.id, m.Direction.deprecated.is_(False))).all()
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                keys = np.stack([from_bytes(r[1], (dim,)) for r in rows]) if rows else np.zeros((0, dim), np.float32)
                index = DirectionIndex.build(fingerprint, dim, generation, ids, keys)
                if self._index_dir:
                    try:
                        index.save(self._index_dir)
                    except OSError:  # a read-only place: the index stays in memory
                        pass
        self._indexes[fingerprint] = index
        return index

    def rebuild_index(self) -> dict[str, int]:
        """Drop and rebuild every FAISS index from the database (``p2pz index rebuild``)."""
        self._indexes.clear()
        out = {}
        for enc in self.encoders():
            if self._index_dir:
                for p in DirectionIndex.paths(self._index_dir, enc["fingerprint"]):
                    p.unlink(missing_ok=True)
            out[enc["fingerprint"]] = self._index(enc["fingerprint"]).size
        return out

    def _hits(self, fingerprint: str, key: np.ndarray, k: int) -> list[SearchHit]:
        if k < 1:
            raise RegistryError("k must be at least 1")
        pairs = self._index(fingerprint).search(key, k)
        with self._read() as s:
            ds = {d.id: d for d in self._fetch(s, m.Direction.id.in_([i for i, _ in pairs]), order=False)}
            return [SearchHit(ds[i], score) for i, score in pairs if i in ds]

    def search(self, ref: str, k: int = 10) -> list[SearchHit]:
        """Directions most similar (cosine of search keys) to a stored one, itself included, same encoder."""
        d = self.get(ref)
        return self._hits(d.encoder, d.key, k)

    def search_pair(self, source: str, target: str, k: int = 10, *, model: str | None = None,
                    save: bool = False, name: str | None = None) -> list[SearchHit]:
        """Directions similar to the one the two concepts would make, without storing it (unless ``save``)."""
        if save:
            d = self.build_direction(source, target, model, name=name)
            return self._hits(d.encoder, d.key, k)
        src = self._resolve_bank(source, None, 1000, 0, {})
        tgt = self._resolve_bank(target, None, 1000, 0, {})
        fingerprint = None if model else self._shared_encoder(src, tgt)
        if fingerprint is not None:
            with self._read() as s:
                keys = []
                for pb in (src, tgt):
                    row = s.scalar(select(m.Embedding).join(m.Bank).join(m.Encoder).where(
                        m.Bank.concept == pb.concept, m.Bank.sha256 == pb.sha256, m.Encoder.fingerprint == fingerprint))
                    keys.append(from_bytes(row.key, (None,)))
            return self._hits(fingerprint, keys[1] - keys[0], k)
        enc = self._load_encoder(model)
        se, te = self._embed(src, enc), self._embed(tgt, enc)
        return self._hits(enc.fingerprint, self._pair_key(se, te, enc.hidden_size, 1.0), k)

    def _shared_encoder(self, src: _PendingBank, tgt: _PendingBank) -> str | None:
        """The newest encoder under which both (stored) banks are already encoded, if any."""
        if src.row_id is None or tgt.row_id is None:
            return None
        with self._read() as s:
            a = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == src.row_id)))
            b = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == tgt.row_id)))
            common = sorted(a & b)
            return s.get(m.Encoder, common[-1]).fingerprint if common else None

    # --- exchange ----------------------------------------------------------------------------------
    def export(self, refs: Iterable[str], path: str | Path) -> dict:
        """Write a ``.p2pz`` library (zip: manifest.json + tensors.safetensors) with full provenance."""
        from .exchange import export_library

        return export_library(self, list(refs), Path(path))

    def import_(self, path: str | Path) -> dict:
        """Import a ``.p2pz`` library (idempotent: importing twice adds nothing)."""
        from .exchange import import_library

        return import_library(self, Path(path))

    def import_pt(self, source_pt: str | Path, target_pt: str | Path, name: str | None = None,
                  model: str | None = None) -> Direction:
        """A direction from the official pix2pix-zero per-concept ``.pt`` means (``torch.load(weights_only=True)``)."""
        from .exchange import import_pt

        return import_pt(self, Path(source_pt), Path(target_pt), name=name, model=model)
