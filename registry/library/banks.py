"""Sentence banks in the registry: drafting them with a generator, resolving refs, storing them.

A :class:`BankSource` is a bank that may not be stored yet: a fresh draft from a generator (sentences in
memory) or a stored row. Slow work (an LLM, a big template set) happens while drafting, outside any
transaction; :func:`store_bank` then writes it content-addressed inside the caller's transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from p2pz.editor.loader import ModelLoadError, load_tokenizer
from p2pz.generators import BankDraft, BankOptions, FileOptions, LLMOptions, TemplateOptions, bank_sha256, check_concept
from p2pz.generators import make_generator
from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.files import atomic_write
from p2pz.store.paths import cache_dir
from p2pz.store.progress import progress_bar

from .naming import check_name, parse_ref
from .records import RegistryError


def check_bank_concept(concept: str) -> str:
    """A new bank's concept: the generators' rule (no '@', line breaks, ≤ 100 characters) and the address rule
    (``bank show CONCEPT`` must find it: no '/', tabs, backslashes, invisible characters) → the cleaned concept."""
    clean = check_concept(concept)
    check_name(concept, "bank")
    return clean


@dataclass
class BankSource:
    """A bank that may or may not be stored yet (content-addressed on write)."""

    concept: str
    sha256: str
    generator: str = "templates"
    draft: BankDraft | None = None
    row_id: int | None = None

    @classmethod
    def from_row(cls, row) -> "BankSource":
        return cls(concept=row.concept, sha256=row.sha256, generator=row.generator, row_id=row.id)

    @classmethod
    def from_sentences(cls, concept: str, sentences: list[str], generator: str, params: dict) -> "BankSource":
        repo.check_bank_size(concept, len(sentences))  # before anything encodes them
        return cls(concept=check_bank_concept(concept), sha256=bank_sha256(sentences), generator=generator,
                   draft=BankDraft(list(sentences), dict(params)))


def bank_options(generator, options: dict | None = None) -> BankOptions | None:
    """The facade's edge: a generator (its name, or :class:`~generators.options.BankOptions` already built) and
    keyword options → typed options, validated once; None when no generator is asked for (stored banks, else
    templates)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if isinstance(generator, BankOptions):
        if options:
            raise RegistryError(f"give the generator's options in its {type(generator).__name__}, not as "
                                f"keywords: {', '.join(sorted(options))}")
        return generator
    if generator is None:
        if options:
            raise RegistryError(f"{', '.join(sorted(options))} need a generator: pass generator='templates', "
                                "'llm' or 'file'")
        return None
    return BankOptions.parse(generator, **options)


def draft_bank(concept: str, options: BankOptions, n: int, seed: int, *, progress: bool = False) -> BankSource:
    """Run the generator ``options`` describe for ``concept`` → an unsaved :class:`BankSource`."""
    concept = check_bank_concept(concept)
    bar, runtime = None, {}
    if isinstance(options, LLMOptions):
        bar = progress_bar(n, f"llm sentences for {concept}", enabled=progress, unit="sent")
        runtime = {**llm_runtime(options), "progress": bar.update}
    try:
        draft = make_generator(options, **runtime).generate(concept, n, seed=seed)
    finally:
        if bar is not None:
            bar.close()
    if not draft.sentences:
        raise RegistryError(f"the {options.generator} generator produced no sentences for {concept!r}")
    repo.check_bank_size(concept, len(draft.sentences))  # the store's cap, before anything encodes them
    return BankSource(concept=concept, sha256=bank_sha256(draft.sentences), generator=options.generator, draft=draft)


class LLMResponseCache:
    """The LLM generator's reply cache on disk: one JSON file per request hash under ``folder``."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def path(self, key: str):
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        atomic_write(self.path(key), json.dumps(value))


def llm_runtime(options: LLMOptions) -> dict:
    """The registry's side of the LLM generator: its reply cache folder, and a CLIP token counter from
    ``options.tokenizer_model`` (an SD model), or from the default model when it is already on disk."""
    tokenizer_model = options.tokenizer_model
    runtime = {"cache": LLMResponseCache(cache_dir() / "llm")}
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

        runtime["token_counter"] = count
        runtime["token_counter_name"] = f"tokenizer of {tokenizer_model or 'the default model'}"
    return runtime


def stored_bank(s, concept: str, version: int | None, options: BankOptions | None):
    """The stored bank a ref names, or None when a new one is to be drafted: ``cat@2`` exactly; a bare ``cat``
    with no generator asked for (``options`` None), its latest version *with sentences* (a bank imported from a
    ``.pt`` mean is only used when named); with a generator's options, None."""
    if version is not None:
        return repo.bank_row(s, concept, version)
    return repo.latest_bank(s, concept, with_sentences=True) if options is None else None


def resolve_bank(db, ref: str, options: BankOptions | None, n: int, seed: int, *,
                 progress: bool = False) -> BankSource:
    """A stored bank (:func:`stored_bank`) or a new draft (templates when ``options`` is None)."""
    concept, version = parse_ref(ref, "bank")
    with db.read() as s:
        row = stored_bank(s, concept, version, options)
        if row is not None:
            return BankSource.from_row(row)
    return draft_bank(concept, options or TemplateOptions(), n, seed, progress=progress)


def store_bank(s, source: BankSource, note: str | None = None):
    """Write a drafted bank (or find the stored one with the same sentences) → the row."""
    row = repo.bank_by_sha(s, source.concept, source.sha256)
    if row is None:
        if source.draft is None:
            raise RegistryError(f"bank {source.concept} ({source.sha256[:12]}) vanished from the database")
        row, _ = repo.insert_bank(s, concept=source.concept, sha256=source.sha256, generator=source.generator,
                                  params=source.draft.params, sentences=source.draft.sentences, note=note)
    source.row_id = row.id
    return row


def read_sentence_file(path, n: int | None = None) -> BankDraft:
    """A sentence file (one per line) as a bank draft, for ``build_direction(source_sentences=…)``."""
    return make_generator(FileOptions(path=str(path))).generate("file", n)


def bank_sentences(db, source: BankSource) -> list[str]:
    if source.draft is not None:
        return source.draft.sentences
    with db.read() as s:
        return list(s.get(m.Bank, source.row_id).sentences)
