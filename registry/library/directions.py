"""Directions in the registry: build, combine, read, annotate (docs/algorithm.md §1.3).

A pair direction is Δ = scale · (mean(target bank) − mean(source bank)) under one text encoder; a combination
is Σ wᵢ Δᵢ of stored directions. Neither stores Δ: it is materialized on read from the immutable embeddings
it is made of. Every write is one transaction, taken after the slow work (generating, encoding) is done, so
a failure leaves the database as it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import aliased

from p2pz.generators import BankDraft, BankOptions, LLMOptions, normalize_sentences
from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import from_bytes

from .banks import BankSource, resolve_bank
from .encoding import embed, encoder_facts, load_encoder, registry_model, store_embedding
from .naming import check_name, check_tag, check_tags, direction_name, parse_ref
from .records import Direction, NotFound, RegistryError, TokenDelta, direction_maker, user_errors


# --- reading ------------------------------------------------------------------------------------------

def materialize(db, direction_id: int) -> np.ndarray:
    """Δ of a stored direction (a combination nested past ``MAX_NESTING`` is a :class:`RegistryError`)."""
    with user_errors(), db.read() as s:
        return repo.direction_vector(s, s.get(m.Direction, direction_id))


def token_delta(db, direction_id: int) -> TokenDelta:
    """Δ_token of a stored direction with its source word, or why it has none (docs/algorithm.md §13)."""
    with user_errors(), db.read() as s:
        row = s.get(m.Direction, direction_id)
        vector, reason = repo.direction_token_vector(s, row)
        if row.kind != "pair":
            return TokenDelta(None, None, None, reason)
        src, tgt = row.source, row.target
        word = src.token_word or src.bank.concept
        return TokenDelta(vector, word, tgt.token_word or tgt.bank.concept, reason,
                          (src.token_count, tgt.token_count) if vector is not None else None,
                          kind=word_kind(word, src.bank.params))


def word_kind(word: str, bank_params: dict | None) -> str:
    """The kind of a direction's source word, which ``--delta-at auto`` places by (editor.config.AUTO): the
    template kind its bank was made with when it recorded one, else the kind the templates would choose for it."""
    from p2pz.generators.templates import choose_kind  # lazy: the generators are not needed to read directions

    recorded = (bank_params or {}).get("template_kind")
    return recorded if recorded and recorded != "auto" else choose_kind(word)


def key_bytes(db, direction_id: int) -> bytes:
    with db.read() as s:
        return repo.direction_key_bytes(s, direction_id)


def records(db, s, *where, order: bool = True) -> list[Direction]:
    """Directions matching ``where`` as records whose vector and key load lazily from ``db``."""
    make = direction_maker(lambda rid: materialize(db, rid), lambda rid: key_bytes(db, rid),
                           lambda rid: token_delta(db, rid))
    return repo.list_directions(s, *where, order=order, make=make)


def record_of(db, s, row: m.Direction) -> Direction:
    s.flush()
    return records(db, s, m.Direction.id == row.id, order=False)[0]


def get(db, ref: str, model: str | None = None) -> Direction:
    """``name@version``, or a bare name's latest version — of ``model``'s encoder when given (a name that exists
    for several encoders needs one or the other: :func:`store.repository.direction_row`)."""
    name, version = parse_ref(ref, "direction")
    with user_errors(), db.read() as s:
        return record_of(db, s, repo.direction_row(s, name, version, model=model))


def versions(db, name: str) -> list[Direction]:
    name, _ = parse_ref(name, "direction")
    with db.read() as s:
        found = records(db, s, m.Direction.name == name)
        if not found:
            repo.direction_row(s, name, None)  # raises the precise error
        return found


def listing(db, include_deprecated: bool = False, tag: str | None = None) -> list[Direction]:
    with db.read() as s:
        out = records(db, s, *([] if include_deprecated else [m.Direction.deprecated.is_(False)]))
    return [d for d in out if tag is None or tag in d.tags]


def page(db, *, query: str | None = None, tag: str | None = None, include_deprecated: bool = False,
         sort: str = "name", offset: int = 0, limit: int | None = 24) -> tuple[int, list[Direction]]:
    """One page of the listing, filtered and ordered in the database (:func:`store.repository.page_directions`)
    → (total matching, directions)."""
    make = direction_maker(lambda rid: materialize(db, rid), lambda rid: key_bytes(db, rid),
                           lambda rid: token_delta(db, rid))
    with db.read() as s:
        return repo.page_directions(s, query=query, tag=tag, include_deprecated=include_deprecated, sort=sort,
                                    offset=offset, limit=limit, make=make)


def siblings(db, d: Direction) -> list[Direction]:
    """Directions of the same two banks on other text encoders (one bank, many models: ``cat@1 → dog@1`` under SD
    1.5 and under SDXL), oldest first; none for a combination."""
    if d.kind != "pair" or d.id is None:
        return []
    se, te = aliased(m.Embedding), aliased(m.Embedding)
    with db.read() as s:
        row = s.get(m.Direction, d.id)
        ids = list(s.scalars(
            select(m.Direction.id).join(se, m.Direction.source_id == se.id).join(te, m.Direction.target_id == te.id)
            .where(se.bank_id == row.source.bank_id, te.bank_id == row.target.bank_id,
                   m.Direction.encoder_id != row.encoder_id)))
        return records(db, s, m.Direction.id.in_(ids)) if ids else []


# --- building -----------------------------------------------------------------------------------------

def _side(db, ref: str, sentences, options: BankOptions | None, n, seed, progress) -> BankSource:
    """One side of a build: the given sentences (exactly them, as a new or stored bank) or a bank ref."""
    if sentences is None:
        return resolve_bank(db, ref, options, n, seed, progress=progress)
    concept, version = parse_ref(ref, "bank")
    if version is not None:
        raise RegistryError(f"{ref} names a stored bank version; with sentences give the bare concept "
                            f"({concept})")
    if isinstance(sentences, BankDraft):
        draft, kind = sentences, sentences.params.get("generator", "file")
    else:
        clean, counts = normalize_sentences(list(sentences))
        draft, kind = BankDraft(clean, {"origin": "python", **counts}), "sentences"
    if not draft.sentences:
        raise RegistryError(f"no sentences given for {concept!r}")
    return BankSource.from_sentences(concept, draft.sentences, kind, draft.params)


def build(db, source: str, target: str, model: str | None = None, *, name: str | None = None,
          options: BankOptions | None = None, n: int = 1000, seed: int = 0, scale: float = 1.0,
          tags: Iterable[str] = (), note: str | None = None, device: str | None = None,
          source_sentences=None, target_sentences=None, progress: bool = False) -> Direction:
    """Δ = scale · (mean(target) − mean(source)) under ``model``'s text encoder (see ``Registry.build_direction``)."""
    if not np.isfinite(scale):
        raise RegistryError("scale must be a finite number")
    model = registry_model(db, model)
    if isinstance(options, LLMOptions) and options.tokenizer_model is None:
        options = replace(options, tokenizer_model=model)  # check lengths with this model's own tokenizer
    src = _side(db, source, source_sentences, options, n, seed, progress)
    tgt = _side(db, target, target_sentences, options, n, seed, progress)
    named = name is not None
    name = name or direction_name(src.concept, tgt.concept)
    if parse_ref(name, "direction")[1] is not None:
        raise RegistryError(f"a direction name carries no version: {name!r}")
    name, tags = check_name(name, "direction"), check_tags(tags)
    enc = load_encoder(model, device)
    if not named:
        name = family_name(db, name, enc.family)
    src_e = embed(db, src, enc, progress=progress)
    same = (tgt.concept, tgt.sha256) == (src.concept, src.sha256)
    tgt_e = src_e if same else embed(db, tgt, enc, progress=progress)
    key = (np.float32(scale) * (tgt_e.key - src_e.key)).astype(np.float32)  # [D]
    content = repo.direction_content("pair", enc.fingerprint, source=(src.concept, src.sha256),
                                     target=(tgt.concept, tgt.sha256), scale=scale)
    with db.write() as s:
        enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
        se = store_embedding(s, src_e, enc_row.id)
        te = store_embedding(s, tgt_e, enc_row.id)
        row, _ = repo.insert_direction(s, name=name, content=content, encoder_id=enc_row.id, key=key,
                                       source_id=se.id, target_id=te.id, scale=scale, tags=tags, note=note)
        return record_of(db, s, row)


def family_name(db, name: str, family: str) -> str:
    """A build's default name for an encoder of ``family``: ``name`` itself unless its versions are all of another
    family, then ``name-<family>`` (``cat-to-dog-sdxl`` beside an SD ``cat-to-dog``), so a default never
    shadows the other family's direction (algorithm §12). An explicit name is the user's choice and kept."""
    with db.read() as s:
        families = set(s.scalars(select(m.Encoder.family).join(m.Direction, m.Direction.encoder_id == m.Encoder.id)
                                 .where(m.Direction.name == name)))
    return name if not families or family in families else f"{name}-{family}"


def _encoder_mismatch(a: m.Direction, b: m.Direction) -> str:
    return (f"directions from different text encoders cannot be mixed: {a.name}@{a.version} uses "
            f"{a.encoder.model} ({a.encoder.fingerprint[:12]}, D={a.encoder.hidden_size}) but "
            f"{b.name}@{b.version} uses {b.encoder.model} ({b.encoder.fingerprint[:12]}, D={b.encoder.hidden_size})")


def combine(db, weights: dict[str, float], name: str, *, tags: Iterable[str] = (),
            note: str | None = None) -> Direction:
    """A weighted sum Σ wᵢ Δᵢ of stored directions, recorded as such (materialized on read)."""
    if not weights:
        raise RegistryError("combine needs at least one NAME=WEIGHT")
    name, tags = check_name(name, "direction"), check_tags(tags)
    with db.write() as s:
        rows = []
        for ref, w in weights.items():
            if not np.isfinite(w):
                raise RegistryError(f"weight of {ref} must be a finite number")
            rows.append((repo.direction_row(s, *parse_ref(ref, "direction")), float(w)))
        first = rows[0][0]
        for row, _ in rows[1:]:
            if row.encoder_id != first.encoder_id:
                raise RegistryError(_encoder_mismatch(first, row))
        key = sum(np.float32(w) * from_bytes(r.key, (r.encoder.key_dim,)) for r, w in rows)
        content = repo.direction_content("combination", first.encoder.fingerprint,
                                         components=[(r.content_sha256, w) for r, w in rows])
        components = [{"id": r.id, "name": r.name, "version": r.version, "weight": w} for r, w in rows]
        row, _ = repo.insert_direction(s, name=name, content=content, encoder_id=first.encoder_id, key=key,
                                       components=components, tags=tags, note=note)
        return record_of(db, s, row)


# --- annotations (the only mutable fields; each reversible) ------------------------------------------------------------

def tag(db, ref: str, label: str) -> Direction:
    label = check_tag(label)
    with db.write() as s:
        row = repo.direction_row(s, *parse_ref(ref, "direction"))
        if label not in (row.tags or []):
            row.tags = sorted(set(row.tags or []) | {label})
        return record_of(db, s, row)


def untag(db, ref: str, label: str) -> Direction:
    """Remove a tag (the reverse of :func:`tag`); a tag the direction does not carry is a :class:`NotFound`."""
    label = (label or "").strip()
    with db.write() as s:
        row = repo.direction_row(s, *parse_ref(ref, "direction"))
        if label not in (row.tags or []):
            raise NotFound(f"{row.name}@{row.version} has no tag {label!r}; its tags: "
                           f"{', '.join(row.tags) if row.tags else 'none'}")
        row.tags = sorted(set(row.tags) - {label})
        return record_of(db, s, row)


def set_deprecated(db, ref: str, deprecated: bool) -> Direction:
    """Deprecate (hide from listings, search and bare-name lookups) or undeprecate one version. Search depends
    on it, so a change moves the generation on (the indexes rebuild)."""
    name, version = parse_ref(ref, "direction")
    if version is None:
        verb = "deprecate" if deprecated else "undeprecate"
        raise RegistryError(f"{verb} needs an explicit version, e.g. {name}@1")
    with db.write() as s:
        row = repo.direction_row(s, name, version)
        if bool(row.deprecated) != deprecated:
            row.deprecated = deprecated
            repo.bump_generation(s)
        return record_of(db, s, row)


def deprecate(db, ref: str) -> Direction:
    return set_deprecated(db, ref, True)


def undeprecate(db, ref: str) -> Direction:
    return set_deprecated(db, ref, False)
