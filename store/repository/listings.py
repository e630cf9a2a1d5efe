"""Listing directions without reading blobs: every version with its encoder and banks, and paged listings with
text filters and sorting by name, date or a stored metric."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Text, case, cast, func, or_, select, type_coerce
from sqlalchemy.orm import Session, aliased

from p2pz.store import models as m
from p2pz.store.db import StoreError

from .evaluations import LOWER_IS_BETTER, METRICS


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
    family: str = "sd"  # the encoder's (revision 0008)
    key_size: int | None = None
    origin: dict | None = None  # where an imported direction came from (revision 0009)


def _json_list(value) -> list:
    """A JSON list column as fetched raw: text on SQLite, already parsed on PostgreSQL."""
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value) if value not in ("[]", "null") else []
    return list(value)


def _json_dict(value) -> dict | None:
    """A JSON object column as fetched raw (text on SQLite, parsed on PostgreSQL); NULL → None."""
    if value is None or value == "null":
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


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
                        e.fingerprint, e.model, e.hidden_size, e.family, e.key_size, sb.concept, sb.version, tb.concept, tb.version,
                        type_coerce(d.origin, Text)),
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
    for (rid, name, version, kind, scale, comps, sha, tags, note, deprecated, created, fp, model, hidden, family,
         key_size, sc, sv, tc, tv, origin) in s.connection().execute(q):
        if isinstance(created, str):
            created = dt.datetime.fromisoformat(created)
        out.append(make(
            id=rid, name=name, version=version, kind=kind, scale=scale, components=_json_list(comps) or None,
            content_sha256=sha, tags=_json_list(tags), note=note, deprecated=bool(deprecated), created_at=created,
            encoder=fp, encoder_model=model, hidden_size=hidden, family=family, key_size=key_size, source=f"{sc}@{sv}" if sc else None,
            target=f"{tc}@{tv}" if tc else None, origin=_json_dict(origin)))
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
