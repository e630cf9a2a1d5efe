"""Building many directions at once (``p2pz direction build-many``): every bank the pairs need is made (from its
generator, when new) and encoded on an engine's workers first, stored by this process (one writer), then each
pair is built from the stored embeddings; a failing pair is reported and the others are built."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from typing import Iterable

from p2pz.generators import BankOptions, LLMOptions, TemplateOptions, bank_sha256
from p2pz.store import repository as repo
from p2pz.store.vectors import from_bytes, to_bytes

from .banks import BankSource, draft_bank, stored_bank
from .directions import build
from .encoding import EmbeddingSource, encode_bank, encoder_facts, load_encoder, registry_model, save_stats, \
    store_embedding
from .naming import parse_ref
from .records import RegistryError, user_errors


def read_pairs(path) -> list[tuple[str, str, str | None]]:
    """``source,target[,name]`` per line (CSV; blank lines, ``#`` comments and a ``source,target`` header
    skipped) → the pairs, or a :class:`RegistryError` naming the line."""
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


# --- encoding banks on an engine ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodeSetup:
    model: str | None
    device: str | None = None


@dataclass
class BankItem:
    """One bank to encode: a stored one (its sentences given) or a new one to draft with its generator."""

    ref: str
    concept: str
    generator: str
    sentences: list[str] | None = None
    params: dict | None = None
    n: int = 1000
    seed: int = 0
    options: BankOptions | None = None  # a new bank's generator


@dataclass
class EncodedBank:
    ref: str
    concept: str = ""
    sha256: str = ""
    generator: str = ""
    params: dict | None = None
    sentences: list[str] | None = None  # set when the worker drafted them (a new bank)
    mean: bytes = b""  # safetensors [1, 77, D] float32
    key: bytes = b""  # safetensors [D]
    key_kind: str = ""
    token: bytes | None = None  # safetensors [D]: the token-aligned mean (algorithm §13), when the bank has the word
    token_count: int = 0
    error: str | None = None


class EncodeWorker:
    """A text encoder loaded once, then one bank per call: drafted from its generator when it is new (templates,
    an LLM) and encoded. Returns plain data; the caller writes the records."""

    Item, Result = BankItem, EncodedBank
    fatal = ()

    def __init__(self, setup: EncodeSetup):
        self.encoder = load_encoder(setup.model, setup.device)

    def __call__(self, item: BankItem) -> EncodedBank:
        try:
            with user_errors():
                return self._encode(item)
        except RegistryError as exc:  # this concept's bank cannot be made; the others go on
            return self.failed(item, str(exc))

    def _encode(self, item: BankItem) -> EncodedBank:
        sentences, generator, params, drafted = item.sentences, item.generator, item.params, False
        if sentences is None:
            src = draft_bank(item.concept, item.options or TemplateOptions(), item.n, item.seed)
            sentences, generator, params, drafted = src.draft.sentences, src.generator, src.draft.params, True
        encoded = encode_bank(self.encoder, sentences, word=item.concept)
        sha = bank_sha256(sentences)
        try:
            save_stats(sha, self.encoder.fingerprint, encoded.stats)
        except OSError:
            pass  # the statistics cache is an optimisation for inspect
        return EncodedBank(ref=item.ref, concept=item.concept, sha256=sha, generator=generator, params=params,
                           sentences=sentences if drafted else None, mean=to_bytes(encoded.mean),
                           key=to_bytes(encoded.key), key_kind=encoded.key_kind,
                           token=None if encoded.token is None else to_bytes(encoded.token),
                           token_count=encoded.token_count)

    @classmethod
    def failed(cls, item: BankItem, error: str) -> EncodedBank:
        return EncodedBank(ref=item.ref, error=error)


def _bank_item(db, ref: str, fingerprint: str, options: BankOptions | None, n: int,
               seed: int) -> BankItem | None:
    """What to encode for ``ref``: its stored bank (None when already encoded under the encoder ``fingerprint``)
    or a new one to draft with ``options``' generator (templates when None)."""
    concept, version = parse_ref(ref, "bank")
    with db.read() as s:
        row = stored_bank(s, concept, version, options)
        if row is not None:
            if repo.find_embedding(s, row.concept, row.sha256, fingerprint):
                return None
            return BankItem(ref=ref, concept=row.concept, generator=row.generator, sentences=list(row.sentences),
                            params=dict(row.params or {}))
    options = options or TemplateOptions()
    return BankItem(ref=ref, concept=concept, generator=options.generator, n=n, seed=seed, options=options)


def _bank_items(db, refs: list[str], fingerprint: str, *, options: BankOptions | None, n: int,
                seed: int) -> tuple[list[BankItem], dict[str, str]]:
    """The banks of ``refs`` still to encode → (items, {ref: error}): a missing bank version is that ref's
    error, not the run's."""
    items, errors = [], {}
    for ref in dict.fromkeys(refs):
        try:
            with user_errors():
                item = _bank_item(db, ref, fingerprint, options, n, seed)
        except RegistryError as exc:
            errors[ref] = str(exc)
            continue
        if item is not None:
            items.append(item)
    return items, errors


def prepare_banks(db, refs: list[str], model: str | None, engine, *, options: BankOptions | None, n: int,
                  seed: int, device: str | None, progress: bool) -> dict[str, str]:
    """Make and encode, on ``engine``'s workers, every bank of ``refs`` not yet encoded under ``model``'s text
    encoder, and store them through this process (one writer) → {ref: error} for the ones that failed."""
    enc = load_encoder(model, device)
    items, errors = _bank_items(db, refs, enc.fingerprint, options=options, n=n, seed=seed)
    results = engine.map(EncodeWorker, EncodeSetup(model, device), items, desc="encoding banks", progress=progress)
    if not results:
        return errors
    with db.write() as s:  # the one writer
        enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
        for r in results:
            if r.error is not None:
                errors[r.ref] = r.error
                continue
            if r.sentences is None:
                bank = BankSource(concept=r.concept, sha256=r.sha256, generator=r.generator)
                with db.read() as rs:
                    bank.row_id = repo.bank_by_sha(rs, r.concept, r.sha256).id
            else:
                bank = BankSource.from_sentences(r.concept, r.sentences, r.generator, r.params)
            mean = from_bytes(r.mean, (1, None, enc.hidden_size))
            key = from_bytes(r.key, (enc.key_dim,))
            token = None if r.token is None else from_bytes(r.token, (enc.hidden_size,))
            store_embedding(s, EmbeddingSource(bank=bank, mean=mean, key=key, key_kind=r.key_kind, token=token,
                                               token_word=r.concept, token_count=r.token_count), enc_row.id)
    return errors


def build_many(db, pairs: list[tuple[str, str, str | None]], model: str | None, engine, *,
               options: BankOptions | None = None, n: int = 1000, seed: int = 0, tags: Iterable[str] = (),
               device: str | None = None, progress: bool = False, report=None) -> list[dict]:
    """Build every pair (:func:`registry.library.directions.build`), with the banks made and encoded on ``engine``
    first → one ``{"source", "target", "name", "ref" | "error"}`` per pair. A failing pair is reported and the
    others are built (and kept: a failed pair does not undo the good ones); building what exists returns the
    stored version."""
    model = registry_model(db, model)
    if isinstance(options, LLMOptions) and options.tokenizer_model is None:
        options = replace(options, tokenizer_model=model)  # check lengths with this model's own tokenizer
    bank_errors = prepare_banks(db, [r for p in pairs for r in p[:2]], model, engine, options=options, n=n,
                                seed=seed, device=device, progress=progress)
    out = []
    for source, target, name in pairs:
        result = {"source": source, "target": target, "name": name}
        failed = bank_errors.get(source) or bank_errors.get(target)
        if failed:
            result["error"] = failed
        else:
            try:
                with user_errors():
                    d = build(db, source, target, model, name=name, options=options, n=n, seed=seed,
                              tags=tags, device=device, progress=False)
                result.update(name=d.name, ref=d.ref)
            except RegistryError as exc:
                result["error"] = str(exc)
        out.append(result)
        if report:
            report(result)
    return out
