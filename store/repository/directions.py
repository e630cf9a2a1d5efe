"""Direction rows: content-addressed by (name, :func:`direction_content`'s hash), versioned per name, inserted one
by one or in batches; Δ materialized from the embeddings (or a combination's components) on read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from sqlalchemy import insert

from p2pz.store import models as m
from p2pz.store.db import StoreError
from p2pz.store.hashing import sha256_json
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import VectorError, from_bytes, to_bytes

from .core import MAX_NESTING, NotFoundError, bump_generation, lock
from .encoders import check_shape


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
    key = np.asarray(key, dtype=np.float32)
    enc = s.get(m.Encoder, encoder_id)
    if enc is not None:
        check_shape(enc, "key", key, f"direction {name}")
    try:
        key_bytes = to_bytes(key)
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
    wanted: int | None = None  # the version the item asked for (an import's origin version), when it did

    @property
    def renumbered(self) -> bool:
        """The item asked for a version and is stored under another (taken by other content, or the same
        content already stored under another version)."""
        return self.wanted is not None and self.wanted != self.version


def insert_directions(s: Session, items: list[dict]) -> list[InsertedDirection]:
    """Many content-addressed, versioned inserts at once (a library import): the same rules as
    :func:`insert_direction` — the same (name, content) returns the stored version, new content gets the next
    version of its name — in a handful of statements instead of several per direction.

    Each item holds :func:`insert_direction`'s keywords (``name``, ``content``, ``encoder_id``, ``key``, …), and
    optionally ``version`` — the number it has where it came from (an import): new content takes that number when
    the name does not use it yet, else the next free one (:attr:`InsertedDirection.renumbered` says so) — and
    ``origin`` (JSON, stored with a new row). Writers are serialized by the database write lock (SQLite) or a lock on the directions table
    (PostgreSQL; per-name advisory locks would overflow its lock table at library sizes)."""
    if not items:
        return []
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE directions IN SHARE ROW EXCLUSIVE MODE"))
    shas = [sha256_json(it["content"]) for it in items]
    names = sorted({it["name"] for it in items})
    stored: dict[tuple[str, str], tuple[int, int]] = {}
    used: dict[str, set[int]] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        for rid, name, version, sha in s.execute(select(m.Direction.id, m.Direction.name, m.Direction.version,
                                                        m.Direction.content_sha256)
                                                 .where(m.Direction.name.in_(chunk))):
            stored[(name, sha)] = (rid, version)
            used.setdefault(name, set()).add(version)
    out: list[InsertedDirection | None] = [None] * len(items)
    rows, keys, pending = [], [], {}
    encs: dict[int, m.Encoder | None] = {}  # each item's key is checked against its encoder's key width
    for i, (it, sha) in enumerate(zip(items, shas)):
        name, wanted = it["name"], it.get("version")
        if (name, sha) in stored:
            rid, version = stored[(name, sha)]
            out[i] = InsertedDirection(rid, name, version, sha, False, wanted)
            continue
        if (name, sha) in pending:  # the same content twice in one batch: one version
            out[i] = pending[(name, sha)]
            continue
        key = np.asarray(it["key"], dtype=np.float32)
        if it["encoder_id"] not in encs:
            encs[it["encoder_id"]] = s.get(m.Encoder, it["encoder_id"])
        if encs[it["encoder_id"]] is not None:
            check_shape(encs[it["encoder_id"]], "key", key, f"direction {name}")
        try:
            key_bytes = to_bytes(key)
        except VectorError as exc:
            raise StoreError(f"direction {name}: {exc}") from None
        taken = used.setdefault(name, set())
        version = wanted if wanted is not None and wanted not in taken else max(taken, default=0) + 1
        taken.add(version)
        rows.append({"name": name, "version": version, "kind": it["content"]["kind"], "encoder_id": it["encoder_id"],
                     "source_id": it.get("source_id"), "target_id": it.get("target_id"),
                     "scale": float(it.get("scale", 1.0)), "components": it.get("components"),
                     "content_sha256": sha, "tags": sorted(set(it.get("tags") or ())), "note": it.get("note"),
                     "deprecated": bool(it.get("deprecated", False)), "created_at": m.utcnow(),
                     "origin": it.get("origin")})
        keys.append(key_bytes)
        pending[(name, sha)] = out[i] = InsertedDirection(0, name, version, sha, True, wanted)
    if rows:
        ids = s.execute(insert(m.Direction).returning(m.Direction.id, sort_by_parameter_order=True), rows).scalars().all()
        s.execute(insert(m.DirectionKey), [{"direction_id": i, "key": k} for i, k in zip(ids, keys)])
        by_ref = {(r["name"], r["version"]): i for r, i in zip(rows, ids)}
        for rec in pending.values():
            rec.id = by_ref[(rec.name, rec.version)]
        bump_generation(s)
    return out


def direction_row(s: Session, name: str, version: int | None, include_deprecated: bool = False,
                  model: str | None = None) -> m.Direction:
    """``name@version`` (any encoder's), or for a bare name (``version`` None) the latest non-deprecated version — of the encoder
    of ``model`` (the model in use, as its encoders record it) when given. A bare name whose versions belong to
    several encoders and no ``model`` to choose by is ambiguous: the error lists them (algorithm §12, "names across
    families"); an SDXL version never silently takes the place of an SD one."""
    if name.startswith(CONTENT_PREFIX):
        return direction_by_hash(s, name[len(CONTENT_PREFIX):])
    q = select(m.Direction).where(m.Direction.name == name)
    if version is not None:
        q = q.where(m.Direction.version == version)
    else:
        if not include_deprecated:
            q = q.where(m.Direction.deprecated.is_(False))
        return _latest_for(s, name, q.order_by(m.Direction.version.desc()), model)
    row = s.scalar(q)
    if row is None:
        _missing(s, name, version)
    return row


CONTENT_PREFIX = "sha256:"


def direction_by_hash(s: Session, prefix: str) -> m.Direction:
    """The direction whose content hash is (or starts with) ``prefix`` (≥ 12 hex digits): the identity a direction
    keeps across registries. Several names for one content are one vector; the oldest row answers."""
    prefix = prefix.lower()
    rows = list(s.scalars(select(m.Direction).where(m.Direction.content_sha256.startswith(prefix, autoescape=True))
                          .order_by(m.Direction.id).limit(50)))
    if not rows:
        raise NotFoundError(f"no direction has content hash {prefix}…; `p2pz direction show NAME --json` prints "
                            "a direction's content_sha256")
    contents = {r.content_sha256 for r in rows}
    if len(contents) > 1:
        raise StoreError(f"content hash prefix {prefix} matches {len(contents)} directions "
                         f"({', '.join(sorted(c[:16] for c in contents))}…); give more digits")
    return rows[0]


def _latest_for(s: Session, name: str, q, model: str | None) -> m.Direction:
    rows = list(s.scalars(q))
    by_encoder: dict[int, list[m.Direction]] = {}
    for row in rows:
        by_encoder.setdefault(row.encoder_id, []).append(row)
    if model is not None and len(by_encoder) > 1:
        mine = [r for r in rows if r.encoder.model == model]
        if not mine:
            raise NotFoundError(f"direction {name!r} has no version for model {model} ({_encoder_list(by_encoder)})")
        return mine[0]
    if len(by_encoder) > 1:
        raise StoreError(f"direction {name!r} exists for {len(by_encoder)} text encoders ({_encoder_list(by_encoder)})"
                         f"; name a version ({name}@N) or the model in use")
    if not rows:
        _missing(s, name, None)
    return rows[0]


def _encoder_list(by_encoder: dict) -> str:
    return "; ".join(f"{rows[0].encoder.model} [{rows[0].encoder.family}]: "
                     + ", ".join(f"@{r.version}" for r in rows) for rows in by_encoder.values())


def _missing(s: Session, name: str, version: int | None):
    versions = s.scalars(select(m.Direction.version).where(m.Direction.name == name)).all()
    if versions and version is not None:
        raise NotFoundError(f"direction {name}@{version} does not exist; versions: {sorted(versions)}")
    if versions:
        raise NotFoundError(f"every version of direction {name!r} is deprecated; ask for one as {name}@N")
    raise NotFoundError(f"no direction named {name!r}", fix="direction", name=name)


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


def direction_token_vector(s: Session, row: m.Direction) -> tuple[np.ndarray | None, str]:
    """(Δ_token [D] float32 or None, why) — the token-aligned direction (docs/algorithm.md §13): for a pair,
    scale · (target token_mean − source token_mean). None, with the reason, for a combination, an embedding made
    before revision 0010, or a bank whose sentences never contain its concept word."""
    if row.kind != "pair" or row.source_id is None or row.target_id is None:
        return None, "a combination has no single source word"
    dim = row.encoder.hidden_size
    src, tgt = s.get(m.Embedding, row.source_id), s.get(m.Embedding, row.target_id)
    missing = [e.bank.concept for e in (src, tgt) if e.token_mean is None]
    if missing:
        return None, (f"no token-aligned mean for {', '.join(missing)} (made before schema revision 0010, or "
                      "its bank never contains the word); rebuild the direction to add one")
    delta = from_bytes(tgt.token_mean, (dim,)) - from_bytes(src.token_mean, (dim,))  # [D]
    return (delta if row.scale == 1.0 else np.float32(row.scale) * delta).astype(np.float32), ""


def index_keys(s: Session, encoder_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N] int64, keys [N, D] float32) of the non-deprecated directions of one encoder."""
    rows = s.execute(select(m.Direction.id, m.DirectionKey.key).join(
        m.DirectionKey, m.DirectionKey.direction_id == m.Direction.id).where(
        m.Direction.encoder_id == encoder_id, m.Direction.deprecated.is_(False))).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    keys = np.stack([from_bytes(r[1], (dim,)) for r in rows]) if rows else np.zeros((0, dim), np.float32)
    return ids, keys
