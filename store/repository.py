"""Repository functions: every read and content-addressed, versioned insert of the registry's records.

Each function takes an open :class:`~sqlalchemy.orm.Session` (one transaction, opened by the caller with
``Database.read()`` / ``Database.write()``) and works on plain values, so build, combine and import share one
implementation of each rule:

* **content addressing** — a bank is identified by (concept, sha256 of its sentences), an embedding by
  (bank, encoder), a direction by (name, :func:`direction_content`'s hash). Inserting what exists returns the
  stored row instead of a new version;
* **versions** — 1, 2, … per bank concept and per direction name, unique and gap-free under concurrent
  writers (:func:`lock`);
* **the generation counter** — grows with every change that affects search, so search indexes know when they
  are stale.

User-facing problems (an unknown name, a missing version) raise :class:`NotFoundError`, a
:class:`~store.db.StoreError` with a one-line message naming the fix.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Text, case, cast, func, or_, select, text, type_coerce, update
from sqlalchemy.orm import Session, aliased

from store import models as m
from store.db import StoreError
from store.hashing import sha256_json
from store.lazy import numpy as np
from store.vectors import VectorError, from_bytes, to_bytes

MAX_NESTING = 32  # combinations of combinations, at most this deep


class NotFoundError(StoreError, LookupError):
    """A bank, direction or encoder that the database does not hold."""


def lock(s: Session, kind: str, key) -> None:
    """Serialize writers of one (kind, key) inside the database.

    SQLite writers already hold the database write lock (``BEGIN IMMEDIATE``); PostgreSQL takes a
    transaction-scoped advisory lock, so version numbers stay unique and gap-free per name and content
    addressing sees every committed row.
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"p2pz:{kind}:{key}"})


# --- generation ---------------------------------------------------------------------------------------

def bump_generation(s: Session) -> None:
    s.execute(update(m.Meta).where(m.Meta.key == "generation").values(value=m.Meta.value + 1))


def generation(s: Session) -> int:
    return int(s.scalar(select(m.Meta.value).where(m.Meta.key == "generation")) or 0)


# --- encoders -----------------------------------------------------------------------------------------

ENCODER_FIELDS = ("fingerprint", "model", "subfolder", "revision", "architecture", "hidden_size", "max_length",
                  "pad_id")


def encoder_row(s: Session, facts: dict) -> tuple[m.Encoder, bool]:
    """The encoder with ``facts["fingerprint"]``, inserted from ``facts`` when new → (row, created)."""
    fp = facts["fingerprint"]
    lock(s, "encoder", fp)
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fp))
    if row is not None:
        if row.hidden_size != facts["hidden_size"]:
            raise StoreError(f"encoder {fp[:12]} is claimed with D={facts['hidden_size']} but this registry knows "
                             f"it as D={row.hidden_size}")
        return row, False
    row = m.Encoder(**{k: facts.get(k) for k in ENCODER_FIELDS})
    s.add(row)
    s.flush()
    return row, True


def encoder_facts(row: m.Encoder) -> dict:
    return {k: getattr(row, k) for k in ENCODER_FIELDS}


def encoder_by_fingerprint(s: Session, fingerprint: str) -> m.Encoder:
    row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fingerprint))
    if row is None:
        raise NotFoundError(f"no encoder {fingerprint[:12]} in this registry")
    return row


def encoders(s: Session) -> list[m.Encoder]:
    return list(s.scalars(select(m.Encoder).order_by(m.Encoder.id)))


# --- banks --------------------------------------------------------------------------------------------

def bank_by_sha(s: Session, concept: str, sha256: str) -> m.Bank | None:
    return s.scalar(select(m.Bank).where(m.Bank.concept == concept, m.Bank.sha256 == sha256))


def latest_bank(s: Session, concept: str, with_sentences: bool = False) -> m.Bank | None:
    """The concept's latest bank version; with ``with_sentences``, the latest that has sentences (what a build
    takes for a bare concept: never a mean embedding imported from a ``.pt`` file)."""
    q = select(m.Bank).where(m.Bank.concept == concept)
    if with_sentences:
        q = q.where(m.Bank.n_sentences > 0)
    return s.scalar(q.order_by(m.Bank.version.desc()).limit(1))


def bank_row(s: Session, concept: str, version: int | None) -> m.Bank:
    """``concept@version``, or the latest version when ``version`` is None."""
    if version is None:
        row = latest_bank(s, concept)
    else:
        row = s.scalar(select(m.Bank).where(m.Bank.concept == concept, m.Bank.version == version))
    if row is None:
        known = s.scalars(select(m.Bank.version).where(m.Bank.concept == concept)).all()
        if known:
            raise NotFoundError(f"bank {concept}@{version} does not exist; versions: {sorted(known)}")
        raise NotFoundError(f"no bank for concept {concept!r}; create one with: p2pz bank create {concept}")
    return row


def banks(s: Session, concept: str | None = None) -> list[m.Bank]:
    q = select(m.Bank).order_by(m.Bank.concept, m.Bank.version)
    if concept:
        q = q.where(m.Bank.concept == concept)
    return list(s.scalars(q))


def insert_bank(s: Session, *, concept: str, sha256: str, generator: str, params: dict, sentences: list[str],
                note: str | None = None) -> tuple[m.Bank, bool]:
    """Content-addressed insert: the same sentences for the same concept return the stored version."""
    lock(s, "bank", concept)
    row = bank_by_sha(s, concept, sha256)
    if row is not None:
        return row, False
    version = (s.scalar(select(func.max(m.Bank.version)).where(m.Bank.concept == concept)) or 0) + 1
    row = m.Bank(concept=concept, version=version, generator=generator, params=params, sentences=sentences,
                 n_sentences=len(sentences), sha256=sha256, note=note)
    s.add(row)
    s.flush()
    return row, True


# --- embeddings ---------------------------------------------------------------------------------------

def find_embedding(s: Session, concept: str, sha256: str, fingerprint: str) -> m.Embedding | None:
    """The stored embedding of the bank (concept, sha256) under the encoder ``fingerprint``, if any."""
    return s.scalar(select(m.Embedding).join(m.Bank).join(m.Encoder).where(
        m.Bank.concept == concept, m.Bank.sha256 == sha256, m.Encoder.fingerprint == fingerprint))


def insert_embedding(s: Session, *, bank_id: int, encoder_id: int, mean: np.ndarray, key: np.ndarray,
                     key_kind: str) -> tuple[m.Embedding, bool]:
    """Content-addressed insert of a bank's mean [1, 77, D] and key [D] under one encoder → (row, created)."""
    lock(s, "embedding", f"{bank_id}:{encoder_id}")
    row = s.scalar(select(m.Embedding).where(m.Embedding.bank_id == bank_id, m.Embedding.encoder_id == encoder_id))
    if row is not None:
        return row, False
    try:
        row = m.Embedding(bank_id=bank_id, encoder_id=encoder_id, mean=to_bytes(mean), key=to_bytes(key),
                          key_kind=key_kind)
    except VectorError as exc:
        bank = s.get(m.Bank, bank_id)
        raise StoreError(f"embedding of {bank.concept if bank else bank_id}: {exc}") from None
    s.add(row)
    s.flush()
    return row, True


def shared_encoder(s: Session, bank_a: int, bank_b: int) -> str | None:
    """The newest encoder under which both banks are already encoded, if any."""
    a = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_a)))
    b = set(s.scalars(select(m.Embedding.encoder_id).where(m.Embedding.bank_id == bank_b)))
    common = sorted(a & b)
    return s.get(m.Encoder, common[-1]).fingerprint if common else None


def embedding_key(s: Session, embedding_id: int, dim: int | None = None) -> np.ndarray:
    return from_bytes(s.get(m.Embedding, embedding_id).key, (dim,))


# --- directions ---------------------------------------------------------------------------------------

def direction_content(kind: str, encoder: str, *, source: tuple[str, str] | None = None,
                      target: tuple[str, str] | None = None, scale: float = 1.0,
                      components: Iterable[tuple[str, float]] = ()) -> dict:
    """What a direction *is*, independent of its name, version and annotations: the one description that
    build, combine and import hash (``content_sha256``) to deduplicate versions.

    ``pair``: encoder fingerprint, (concept, bank sha256) of each side and the scale. ``combination``: the
    content hashes of its components with their weights, in order.
    """
    if kind == "pair":
        return {"kind": "pair", "encoder": encoder, "source": list(source), "target": list(target),
                "scale": float(scale)}
    if kind == "combination":
        return {"kind": "combination", "encoder": encoder,
                "components": [[sha, float(w)] for sha, w in components]}
    raise StoreError(f"unknown direction kind {kind!r}; expected pair or combination")


def direction_by_content(s: Session, name: str, content: dict) -> m.Direction | None:
    return s.scalar(select(m.Direction).where(m.Direction.name == name,
                                              m.Direction.content_sha256 == sha256_json(content)))


def insert_direction(s: Session, *, name: str, content: dict, encoder_id: int, key: np.ndarray,
                     source_id: int | None = None, target_id: int | None = None, scale: float = 1.0,
                     components: list[dict] | None = None, tags: Iterable[str] = (), note: str | None = None,
                     deprecated: bool = False) -> tuple[m.Direction, bool]:
    """Content-addressed, versioned insert → (row, created). The same content under the same name returns the
    stored version (its annotations unchanged)."""
    content_sha = sha256_json(content)
    lock(s, "direction", name)
    row = s.scalar(select(m.Direction).where(m.Direction.name == name, m.Direction.content_sha256 == content_sha))
    if row is not None:
        return row, False
    try:
        key_bytes = to_bytes(np.asarray(key, dtype=np.float32))
    except VectorError as exc:
        raise StoreError(f"direction {name}: {exc}") from None
    version = (s.scalar(select(func.max(m.Direction.version)).where(m.Direction.name == name)) or 0) + 1
    row = m.Direction(name=name, version=version, kind=content["kind"], encoder_id=encoder_id, source_id=source_id,
                      target_id=target_id, scale=float(scale), components=components, content_sha256=content_sha,
                      tags=sorted(set(tags)), note=note, deprecated=bool(deprecated))
    s.add(row)
    s.flush()
    s.add(m.DirectionKey(direction_id=row.id, key=key_bytes))
    s.flush()
    bump_generation(s)
    return row, True


@dataclass
class InsertedDirection:
    """What :func:`insert_directions` returns per item: enough to link combinations and report refs."""

    id: int
    name: str
    version: int
    content_sha256: str
    created: bool


def insert_directions(s: Session, items: list[dict]) -> list[InsertedDirection]:
    """Many content-addressed, versioned inserts at once (a library import): the same rules as
    :func:`insert_direction` — the same (name, content) returns the stored version, new content gets the next
    version of its name — in a handful of statements instead of several per direction.

    Each item holds :func:`insert_direction`'s keywords (``name``, ``content``, ``encoder_id``, ``key``, …).
    Writers are serialized by the database write lock (SQLite) or a lock on the directions table
    (PostgreSQL; per-name advisory locks would overflow its lock table at library sizes)."""
    if not items:
        return []
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE directions IN SHARE ROW EXCLUSIVE MODE"))
    shas = [sha256_json(it["content"]) for it in items]
    names = sorted({it["name"] for it in items})
    stored: dict[tuple[str, str], tuple[int, int]] = {}
    top: dict[str, int] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        for rid, name, version, sha in s.execute(select(m.Direction.id, m.Direction.name, m.Direction.version,
                                                        m.Direction.content_sha256)
                                                 .where(m.Direction.name.in_(chunk))):
            stored[(name, sha)] = (rid, version)
            top[name] = max(top.get(name, 0), version)
    out: list[InsertedDirection | None] = [None] * len(items)
    rows, keys, pending = [], [], {}
    for i, (it, sha) in enumerate(zip(items, shas)):
        name = it["name"]
        if (name, sha) in stored:
            rid, version = stored[(name, sha)]
            out[i] = InsertedDirection(rid, name, version, sha, False)
            continue
        if (name, sha) in pending:  # the same content twice in one batch: one version
            out[i] = pending[(name, sha)]
            continue
        try:
            key_bytes = to_bytes(np.asarray(it["key"], dtype=np.float32))
        except VectorError as exc:
            raise StoreError(f"direction {name}: {exc}") from None
        top[name] = version = top.get(name, 0) + 1
        rows.append({"name": name, "version": version, "kind": it["content"]["kind"], "encoder_id": it["encoder_id"],
                     "source_id": it.get("source_id"), "target_id": it.get("target_id"),
                     "scale": float(it.get("scale", 1.0)), "components": it.get("components"),
                     "content_sha256": sha, "tags": sorted(set(it.get("tags") or ())), "note": it.get("note"),
                     "deprecated": bool(it.get("deprecated", False)), "created_at": m.utcnow()})
        keys.append(key_bytes)
        pending[(name, sha)] = out[i] = InsertedDirection(0, name, version, sha, True)
    if rows:
        from sqlalchemy import insert

        ids = s.execute(insert(m.Direction).returning(m.Direction.id, sort_by_parameter_order=True), rows).scalars().all()
        s.execute(insert(m.DirectionKey), [{"direction_id": i, "key": k} for i, k in zip(ids, keys)])
        by_ref = {(r["name"], r["version"]): i for r, i in zip(rows, ids)}
        for rec in pending.values():
            rec.id = by_ref[(rec.name, rec.version)]
        bump_generation(s)
    return out


def direction_row(s: Session, name: str, version: int | None, include_deprecated: bool = False) -> m.Direction:
    """``name@version``, or the latest non-deprecated version when ``version`` is None."""
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
            raise NotFoundError(f"direction {name}@{version} does not exist; versions: {sorted(versions)}")
        if versions:
            raise NotFoundError(f"every version of direction {name!r} is deprecated; ask for one as {name}@N")
        raise NotFoundError(f"no direction named {name!r}; see p2pz direction list, or build it with "
                            "p2pz direction build SOURCE TARGET")
    return row


@dataclass
class DirectionListing:
    """One direction as a listing shows it: its columns, its encoder's, and its banks' refs (no blobs)."""

    id: int
    name: str
    version: int
    kind: str
    scale: float
    components: list | None
    content_sha256: str
    tags: list
    note: str | None
    deprecated: bool
    created_at: dt.datetime
    encoder: str
    encoder_model: str
    hidden_size: int
    source: str | None
    target: str | None


def _json_list(value) -> list:
    """A JSON list column as fetched raw: text on SQLite, already parsed on PostgreSQL."""
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value) if value not in ("[]", "null") else []
    return list(value)


def _listing_query(columns, where):
    d = m.Direction
    se, te, sb, tb = aliased(m.Embedding), aliased(m.Embedding), aliased(m.Bank), aliased(m.Bank)
    q = (select(*columns(sb, tb))
         .join(m.Encoder, d.encoder_id == m.Encoder.id)
         .outerjoin(se, d.source_id == se.id).outerjoin(sb, se.bank_id == sb.id)
         .outerjoin(te, d.target_id == te.id).outerjoin(tb, te.bank_id == tb.id))
    return q.where(*where(sb, tb)), sb, tb


def list_directions(s: Session, *where, order: bool = True, make=DirectionListing, query=None,
                    order_by=None, offset: int = 0, limit: int | None = None) -> list:
    """Directions matching ``where`` in one Core query with only the columns a listing needs (no ORM objects, no
    blobs): listing 10k directions stays well under a second. ``make`` builds each record from the
    :class:`DirectionListing` fields as keywords (the registry builds its ``Direction`` directly). ``query``
    (``text``, matched case-insensitively against the name, the source and target concepts and the tags),
    ``order_by`` (SQL expressions), ``offset`` and ``limit`` page in SQL (:func:`page_directions`)."""
    d, e = m.Direction, m.Encoder
    # JSON columns come back as text and are parsed only when not empty.
    q, sb, tb = _listing_query(
        lambda sb, tb: (d.id, d.name, d.version, d.kind, d.scale, type_coerce(d.components, Text), d.content_sha256,
                        type_coerce(d.tags, Text), d.note, d.deprecated, type_coerce(d.created_at, Text),
                        e.fingerprint, e.model, e.hidden_size, sb.concept, sb.version, tb.concept, tb.version),
        lambda sb, tb: list(where) + _text_filter(query, sb, tb))
    if order_by is not None:
        q = q.order_by(*order_by)
    elif order:
        q = q.order_by(d.name, d.version)
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    out = []
    for (rid, name, version, kind, scale, comps, sha, tags, note, deprecated, created, fp, model, hidden,
         sc, sv, tc, tv) in s.connection().execute(q):
        if isinstance(created, str):
            created = dt.datetime.fromisoformat(created)
        out.append(make(
            id=rid, name=name, version=version, kind=kind, scale=scale, components=_json_list(comps) or None,
            content_sha256=sha, tags=_json_list(tags), note=note, deprecated=bool(deprecated), created_at=created,
            encoder=fp, encoder_model=model, hidden_size=hidden, source=f"{sc}@{sv}" if sc else None,
            target=f"{tc}@{tv}" if tc else None))
    return out


def _text_filter(query: str | None, sb, tb) -> list:
    if not query:
        return []
    like = _contains(query.lower())
    d = m.Direction
    return [or_(*(func.lower(col).like(like, escape="\\")
                  for col in (d.name, sb.concept, tb.concept, cast(d.tags, Text))))]


def _contains(value: str) -> str:
    """A LIKE pattern matching ``value`` anywhere, its wildcards escaped (escape character ``\\``)."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


SORTS = ("name", "date")  # besides every metric in METRICS


def page_directions(s: Session, *, query: str | None = None, tag: str | None = None,
                    include_deprecated: bool = False, sort: str = "name", offset: int = 0, limit: int = 24,
                    make=DirectionListing) -> tuple[int, list]:
    """One page of the directions listing → (total matching, records), filtered and ordered in SQL.

    ``sort``: ``name`` (then version), ``date`` (newest first) or a metric of :data:`METRICS`, best first (lowest
    for :data:`LOWER_IS_BETTER`), by each direction's most recent stored value of it; never-evaluated ones last."""
    d = m.Direction
    where = [] if include_deprecated else [d.deprecated.is_(False)]
    if tag:
        where.append(cast(d.tags, Text).like(_contains(json.dumps(tag)), escape="\\"))
    if sort == "name":
        order = [d.name, d.version]
    elif sort == "date":
        order = [d.created_at.desc(), d.id.desc()]
    elif sort in METRICS:
        ev = m.Evaluation
        value = (select(ev.value).where(ev.direction_id == d.id, ev.metric == sort)
                 .order_by(ev.created_at.desc(), ev.id.desc()).limit(1).correlate(d).scalar_subquery())
        order = [case((value.is_(None), 1), else_=0), value.asc() if sort in LOWER_IS_BETTER else value.desc(),
                 d.name, d.version]
    else:
        raise StoreError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS + METRICS)}")
    count_q, _, _ = _listing_query(lambda sb, tb: (func.count(d.id),),
                                   lambda sb, tb: list(where) + _text_filter(query, sb, tb))
    total = s.execute(count_q.select_from(d)).scalar_one()
    # past the end there is nothing to fetch: no query, so an absurd offset (> int64) is no database error
    rows = list_directions(s, *where, make=make, query=query, order_by=order, offset=offset, limit=limit) \
        if offset < total else []
    if tag:  # the LIKE above may over-match a tag that is a substring of a longer JSON string; check exactly
        rows = [r for r in rows if tag in r.tags]
    return total, rows


def direction_key_bytes(s: Session, direction_id: int) -> bytes:
    return s.scalar(select(m.DirectionKey.key).where(m.DirectionKey.direction_id == direction_id))


def direction_vector(s: Session, row: m.Direction, depth: int = 0) -> np.ndarray:
    """Δ [1, 77, D] float32, materialized from what the direction is made of.

    pair: scale · (mean(target) − mean(source)); combination: Σ wᵢ Δᵢ (docs/algorithm.md §1.3).
    """
    if depth > MAX_NESTING:
        raise StoreError(f"direction {row.name}@{row.version}: combination nested too deeply")
    dim = row.encoder.hidden_size
    if row.vector is not None:
        return from_bytes(row.vector, (1, None, dim)).astype(np.float32)
    if row.kind == "pair":
        src = from_bytes(s.get(m.Embedding, row.source_id).mean, (1, None, dim))
        tgt = from_bytes(s.get(m.Embedding, row.target_id).mean, (1, None, dim))
        delta = tgt - src  # [1, 77, D]
        return delta if row.scale == 1.0 else (np.float32(row.scale) * delta).astype(np.float32)
    if row.kind == "combination":
        total = None
        for comp in row.components:
            part = np.float32(comp["weight"]) * direction_vector(s, s.get(m.Direction, comp["id"]), depth + 1)
            total = part if total is None else total + part
        return total.astype(np.float32)
    raise StoreError(f"direction {row.name}@{row.version} has unknown kind {row.kind!r}")


def index_keys(s: Session, encoder_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N] int64, keys [N, D] float32) of the non-deprecated directions of one encoder."""
    rows = s.execute(select(m.Direction.id, m.DirectionKey.key).join(
        m.DirectionKey, m.DirectionKey.direction_id == m.Direction.id).where(
        m.Direction.encoder_id == encoder_id, m.Direction.deprecated.is_(False))).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    keys = np.stack([from_bytes(r[1], (dim,)) for r in rows]) if rows else np.zeros((0, dim), np.float32)
    return ids, keys


# --- evaluations ----------------------------------------------------------------------------------------------

METRICS = ("clip_acc", "clip_score", "clip_directional", "structure_distance", "bg_lpips", "bg_psnr", "bg_ssim",
           "bg_mse")  # the metric names evaluations store (editor.metrics computes them)
LOWER_IS_BETTER = {"structure_distance", "bg_lpips", "bg_mse"}


def insert_evaluation(s: Session, *, run_id: str, direction_id: int, scores: dict[str, float], n_images: int,
                      params: dict) -> list[m.Evaluation]:
    """One row per metric of one run of one direction version (add-only)."""
    rows = [m.Evaluation(run_id=run_id, direction_id=direction_id, metric=metric, value=float(value),
                         n_images=n_images, params=params) for metric, value in sorted(scores.items())]
    s.add_all(rows)
    s.flush()
    return rows


def latest_scores(s: Session, direction_ids) -> dict[int, dict]:
    """{direction id: {"run_id", "created_at", "n_images", "scores": {metric: value}}} of each direction's most
    recent evaluation run."""
    ids = list(direction_ids)
    if not ids:
        return {}
    rows = s.execute(select(m.Evaluation.direction_id, m.Evaluation.run_id, m.Evaluation.created_at,
                            m.Evaluation.metric, m.Evaluation.value, m.Evaluation.n_images, m.Evaluation.id)
                     .where(m.Evaluation.direction_id.in_(ids))
                     .order_by(m.Evaluation.direction_id, m.Evaluation.created_at, m.Evaluation.id)).all()
    out: dict[int, dict] = {}
    for did, run_id, created, metric, value, n_images, _ in rows:
        entry = out.get(did)
        if entry is None or entry["run_id"] != run_id:
            entry = out[did] = {"run_id": run_id, "created_at": created, "n_images": n_images, "scores": {}}
        entry["scores"][metric] = value
    return out


# --- students ---------------------------------------------------------------------------------------------------

def insert_student(s: Session, *, direction_id: int, config: dict, weights: bytes, weights_sha256: str,
                   dataset_sha256: str, params: dict, metrics: dict) -> tuple[m.Student, bool]:
    """Content-addressed (by weights), versioned per direction version → (row, created)."""
    lock(s, "student", direction_id)
    row = s.scalar(select(m.Student).where(m.Student.direction_id == direction_id,
                                           m.Student.weights_sha256 == weights_sha256))
    if row is not None:
        return row, False
    version = (s.scalar(select(func.max(m.Student.version)).where(m.Student.direction_id == direction_id)) or 0) + 1
    row = m.Student(direction_id=direction_id, version=version, config=config, weights=weights,
                    weights_sha256=weights_sha256, dataset_sha256=dataset_sha256, params=params, metrics=metrics)
    s.add(row)
    s.flush()
    return row, True


def student_row(s: Session, direction_id: int, version: int | None) -> m.Student:
    """Student ``version`` of a direction version, or (None) its latest non-deprecated one."""
    q = select(m.Student).where(m.Student.direction_id == direction_id)
    if version is not None:
        row = s.scalar(q.where(m.Student.version == version))
    else:
        row = s.scalar(q.where(m.Student.deprecated.is_(False)).order_by(m.Student.version.desc()).limit(1))
        if row is None and s.scalar(q.limit(1)) is not None:
            raise NotFoundError("every student of this direction version is deprecated; ask for one by version "
                                "(--version N, --student @N) or undeprecate it (p2pz student undeprecate)")
    if row is None:
        raise NotFoundError("this direction version has no student" + (f" version {version}" if version else "")
                            + "; distil one with p2pz distill pairs … and p2pz distill train …")
    return row


def students(s: Session, direction_ids=None) -> list[m.Student]:
    q = select(m.Student).order_by(m.Student.direction_id, m.Student.version)
    if direction_ids is not None:
        q = q.where(m.Student.direction_id.in_(list(direction_ids)))
    return list(s.scalars(q))


def student_weight_bytes(s: Session, student_ids) -> dict[int, int]:
    """{student id: size of its weights in bytes}, measured by the database (the weights are not read)."""
    ids = list(student_ids)
    if not ids:
        return {}
    rows = s.execute(select(m.Student.id, func.length(m.Student.weights)).where(m.Student.id.in_(ids)))
    return {sid: int(n or 0) for sid, n in rows}


# --- jobs (the web app's background work) -----------------------------------------------------------------------

JOB_STATES = ("queued", "running", "done", "failed")


def insert_job(s: Session, *, job_id: str, kind: str, params: dict) -> m.Job:
    row = m.Job(id=job_id, kind=kind, status="queued", progress=0.0, params=params, results=[])
    s.add(row)
    s.flush()
    return row


def job_row(s: Session, job_id: str) -> m.Job:
    row = s.get(m.Job, job_id)
    if row is None:
        raise NotFoundError(f"no job {job_id}; job ids come from POST /api/edits")
    return row


def jobs(s: Session, *, status: str | None = None, limit: int = 50) -> list[m.Job]:
    q = select(m.Job).order_by(m.Job.created_at.desc(), m.Job.id).limit(limit)
    return list(s.scalars(q.where(m.Job.status == status) if status else q))


def claim_next_job(s: Session, kinds: Iterable[str] | None = None, owner: str | None = None) -> m.Job | None:
    """The oldest queued job, marked running by ``owner`` (with a first heartbeat) — atomically, so two workers
    never take the same job."""
    q = select(m.Job.id).where(m.Job.status == "queued").order_by(m.Job.created_at, m.Job.id)
    if kinds is not None:
        q = q.where(m.Job.kind.in_(list(kinds)))
    for job_id in s.scalars(q.limit(5)).all():
        now = m.utcnow()
        taken = s.execute(update(m.Job).where(m.Job.id == job_id, m.Job.status == "queued")
                          .values(status="running", started_at=now, stage="starting", owner=owner,
                                  heartbeat_at=now, error=None)).rowcount
        if taken == 1:
            return s.get(m.Job, job_id)
    return None


def update_job(s: Session, job_id: str, **values) -> None:
    """Progress, stage, results, or the end of a job (``status`` done | failed, with ``finished_at``)."""
    if values.get("status") in ("done", "failed"):
        values.setdefault("finished_at", m.utcnow())
    s.execute(update(m.Job).where(m.Job.id == job_id).values(**values))


def heartbeat_job(s: Session, job_id: str, owner: str | None) -> bool:
    """``owner`` still runs ``job_id``: refresh its heartbeat → False when the job is no longer its running job."""
    return s.execute(update(m.Job).where(m.Job.id == job_id, m.Job.status == "running", m.Job.owner == owner)
                     .values(heartbeat_at=m.utcnow())).rowcount == 1


def fail_interrupted_jobs(s: Session, reason: str, stale_before: dt.datetime | None = None) -> int:
    """Mark running jobs failed whose server is gone → how many: every running job, or with ``stale_before``
    only those whose last heartbeat is older (or absent: a server from before revision 0007)."""
    q = update(m.Job).where(m.Job.status == "running")
    if stale_before is not None:
        q = q.where(or_(m.Job.heartbeat_at.is_(None), m.Job.heartbeat_at < stale_before))
    return s.execute(q.values(status="failed", error=reason, finished_at=m.utcnow())).rowcount
