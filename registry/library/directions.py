"""Directions in the registry: build, combine, read, annotate (docs/algorithm.md §1.3).

A pair direction is Δ = scale · (mean(target bank) − mean(source bank)) under one text encoder; a combination
is Σ wᵢ Δᵢ of stored directions. Neither stores Δ: it is materialized on read from the immutable embeddings
it is made of. Every write is one transaction, taken after the slow work (generating, encoding) is done, so
a failure leaves the database as it was.
"""

from __future__ import annotations

import json
from typing import Iterable

from generators import BankDraft, normalize_sentences
from store import models as m
from store import repository as repo
from store.lazy import numpy as np
from store.vectors import from_bytes

from .banks import BankSource, resolve_bank
from .encoding import embed, encoder_facts, load_encoder, registry_model, store_embedding
from .naming import check_name, check_tag, check_tags, direction_name, parse_ref
from .records import Direction, NotFound, RegistryError, direction_maker, user_errors


# --- reading ------------------------------------------------------------------------------------------

def materialize(db, direction_id: int) -> np.ndarray:
    with db.read() as s:
        return repo.direction_vector(s, s.get(m.Direction, direction_id))


def key_bytes(db, direction_id: int) -> bytes:
    with db.read() as s:
        return repo.direction_key_bytes(s, direction_id)


def records(db, s, *where, order: bool = True) -> list[Direction]:
    """Directions matching ``where`` as records whose vector and key load lazily from ``db``."""
    make = direction_maker(lambda rid: materialize(db, rid), lambda rid: key_bytes(db, rid))
    return repo.list_directions(s, *where, order=order, make=make)


def record_of(db, s, row: m.Direction) -> Direction:
    s.flush()
    return records(db, s, m.Direction.id == row.id, order=False)[0]


def get(db, ref: str) -> Direction:
    name, version = parse_ref(ref, "direction")
    with db.read() as s:
        return record_of(db, s, repo.direction_row(s, name, version))


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
    make = direction_maker(lambda rid: materialize(db, rid), lambda rid: key_bytes(db, rid))
    with db.read() as s:
        return repo.page_directions(s, query=query, tag=tag, include_deprecated=include_deprecated, sort=sort,
                                    offset=offset, limit=limit, make=make)


# --- building -----------------------------------------------------------------------------------------

def _side(db, ref: str, sentences, generator, n, seed, options, progress) -> BankSource:
    """One side of a build: the given sentences (exactly them, as a new or stored bank) or a bank ref."""
    if sentences is None:
        return resolve_bank(db, ref, generator, n, seed, options, progress=progress)
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
          generator: str | None = None, n: int = 1000, seed: int = 0, scale: float = 1.0,
          tags: Iterable[str] = (), note: str | None = None, device: str | None = None,
          source_sentences=None, target_sentences=None, progress: bool = False, **options) -> Direction:
    """Δ = scale · (mean(target) − mean(source)) under ``model``'s text encoder (see ``Registry.build_direction``)."""
    if not np.isfinite(scale):
        raise RegistryError("scale must be a finite number")
    model = registry_model(db, model)
    if generator == "llm":  # check lengths with this model's own tokenizer (before spending tokens)
        options.setdefault("tokenizer_model", model)
    src = _side(db, source, source_sentences, generator, n, seed, options, progress)
    tgt = _side(db, target, target_sentences, generator, n, seed, options, progress)
    name = name or direction_name(src.concept, tgt.concept)
    if parse_ref(name, "direction")[1] is not None:
        raise RegistryError(f"a direction name carries no version: {name!r}")
    name, tags = check_name(name, "direction"), check_tags(tags)
    enc = load_encoder(model, device)
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


def read_pairs(path) -> list[tuple[str, str, str | None]]:
    """``source,target[,name]`` per line (CSV; blank lines, ``#`` comments and a ``source,target`` header
    skipped) → the pairs, or a :class:`RegistryError` naming the line."""
    import csv

    pairs = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), 1):
                cells = [c.strip() for c in row]
                if not cells or not any(cells) or cells[0].startswith("#"):
                    continue
                if number == 1 and [c.lower() for c in cells[:2]] == ["source", "target"]:
                    continue
                if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                    raise RegistryError(f"{path}, line {number}: write source,target or source,target,name "
                                        f"(got {','.join(row)!r})")
                pairs.append((cells[0], cells[1], cells[2] if len(cells) == 3 and cells[2] else None))
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    if not pairs:
        raise RegistryError(f"{path} holds no pairs; write one source,target[,name] per line")
    return pairs


def prepare_banks(db, refs: list[str], model: str | None, engine, *, generator: str | None, n: int, seed: int,
                  device: str | None, progress: bool, options: dict) -> dict[str, str]:
    """Make and encode, on ``engine``'s workers, every bank of ``refs`` not yet encoded under ``model``'s text
    encoder, and store them through this process (one writer) → {ref: error} for the ones that failed."""
    import base64

    import torch

    from . import engines
    from .banks import BankSource
    from .encoding import EmbeddingSource

    enc = load_encoder(model, device)
    items, errors = [], {}
    for ref in dict.fromkeys(refs):
        try:
            concept, version = parse_ref(ref, "bank")
            row = None
            if version is not None or generator is None:
                with db.read() as s:
                    row = (repo.bank_row(s, concept, version) if version is not None
                           else repo.latest_bank(s, concept, with_sentences=True))
                    if row is not None and repo.find_embedding(s, row.concept, row.sha256, enc.fingerprint):
                        continue  # already encoded under this encoder
                    sentences = list(row.sentences) if row is not None else None
            if row is not None:
                items.append({"ref": ref, "concept": row.concept, "sentences": sentences,
                              "generator": row.generator, "params": dict(row.params or {})})
            else:
                items.append({"ref": ref, "concept": concept, "generator": generator or "templates", "n": n,
                              "seed": seed, "options": options})
        except RegistryError as exc:
            errors[ref] = str(exc)
    if not items:
        return errors
    spec = {"model": model, "device": device, "threads": torch.get_num_threads()}
    rows = engines.ray_map(engine, [{"item": json.dumps(i)} for i in items], engines.EncodeWorker, (spec,),
                           desc="encoding banks (ray)", progress=progress)
    with db.write() as s:  # the one writer
        enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
        for r in rows:
            if "error" in r:
                errors[r["ref"]] = r["error"]
                continue
            sentences = r["sentences"]
            if sentences is None:
                bank = BankSource(concept=r["concept"], sha256=r["sha256"], generator=r["generator"])
                with db.read() as rs:
                    bank.row_id = repo.bank_by_sha(rs, r["concept"], r["sha256"]).id
            else:
                bank = BankSource.from_sentences(r["concept"], sentences, r["generator"], r["params"])
            mean = from_bytes(base64.b64decode(r["mean"]), (1, None, enc.hidden_size))
            key = from_bytes(base64.b64decode(r["key"]), (enc.hidden_size,))
            store_embedding(s, EmbeddingSource(bank=bank, mean=mean, key=key, key_kind=r["key_kind"]), enc_row.id)
    return errors


def build_many(db, pairs: list[tuple[str, str, str | None]], model: str | None, engine, *,
               generator: str | None = None, n: int = 1000, seed: int = 0, tags: Iterable[str] = (),
               device: str | None = None, progress: bool = False, report=None, **options) -> list[dict]:
    """Build every pair (``build``), with the banks made and encoded on ``engine`` first (Ray: in parallel
    workers; local: as each build needs them) → one ``{"source", "target", "name", "ref" | "error"}`` per pair.
    A failing pair is reported and the others are built; building what exists returns the stored version."""
    bank_errors = {}
    model = registry_model(db, model)
    if engine.kind == "ray":
        bank_errors = prepare_banks(db, [r for p in pairs for r in p[:2]], model, engine, generator=generator,
                                    n=n, seed=seed, device=device, progress=progress, options=options)
    out = []
    for source, target, name in pairs:
        result = {"source": source, "target": target, "name": name}
        failed = bank_errors.get(source) or bank_errors.get(target)
        if failed:
            result["error"] = failed
        else:
            try:
                with user_errors():
                    d = build(db, source, target, model, name=name, generator=generator, n=n, seed=seed,
                              tags=tags, device=device, progress=False, **dict(options))
                result.update(name=d.name, ref=d.ref)
            except RegistryError as exc:
                result["error"] = str(exc)
        out.append(result)
        if report:
            report(result)
    return out


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
        key = sum(np.float32(w) * from_bytes(r.key, (r.encoder.hidden_size,)) for r, w in rows)
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
