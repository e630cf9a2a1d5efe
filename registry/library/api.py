"""The public Python API of p2pz: :class:`Registry`, a thin facade over the registry's modules.

A registry is a database (a SQLite file by default, any SQLAlchemy URL) plus a search-index cache beside it.
Every method is one transaction: slow work (generating sentences, loading a model, encoding) happens first,
outside any write lock, then everything it produced is written at once, so a failure or an interrupt leaves the
database as it was. Returned objects are plain records (:mod:`registry.library.records`) holding no session. Errors
from every layer below reach the caller as :class:`RegistryError`, one line naming the fix.

Where things live: banks → :mod:`registry.library.banks`, encoding → :mod:`registry.library.encoding`, directions →
:mod:`registry.library.directions`, search → :mod:`registry.library.search`, libraries and ``.pt`` files →
:mod:`registry.exchange`, rows and inserts → :mod:`store.repository`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from p2pz.generators import BankOptions
from p2pz.store import repository as repo
from p2pz.store.db import Database, StoreError

from . import banks as _banks
from . import directions as _directions
from .records import Bank, Direction, RegistryError, SearchHit, bank_record, user_errors
from .naming import parse_ref

__all__ = ["Registry", "RegistryError", "Bank", "Direction", "SearchHit"]


def _translated(method):
    """Public methods raise :class:`RegistryError` for every user-facing error of the layers below."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with user_errors():
            return method(*args, **kwargs)
    return wrapper


class Registry:
    """Banks, embeddings and directions in one database.

    >>> reg = Registry.open("sqlite:///:memory:")          # or Registry.open() for $P2PZ_HOME/registry.db
    >>> bank = reg.make_bank("cat", n=1000, seed=0)
    >>> d = reg.build_direction("cat", "dog", model="CompVis/stable-diffusion-v1-4")   # doctest: +SKIP
    """

    def __init__(self, url: str | None = None, *, progress: bool = False, index_dir: str | Path | None = None):
        from p2pz.migrations import ensure_schema  # lazy: start-up
        from p2pz.store.paths import default_db_url  # lazy: start-up

        from .search import SearchIndexes, default_index_dir  # lazy: start-up

        self.url = url or default_db_url()
        self.progress = progress
        try:
            self.db = Database(self.url)
            ensure_schema(self.db.engine)
        except StoreError as exc:
            raise RegistryError(str(exc)) from None
        self.engine = self.db.engine
        self.indexes = SearchIndexes(self.db, Path(index_dir) if index_dir else default_index_dir(self.engine))

    @classmethod
    def open(cls, url: str | None = None, **kwargs) -> "Registry":
        """Open (and create or upgrade when needed) the registry at ``url`` (default: ``$P2PZ_DB_URL`` or
        ``$P2PZ_HOME/registry.db``)."""
        return cls(url, **kwargs)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @_translated
    def generation(self) -> int:
        """The change counter of everything search depends on (grows with every new or deprecated direction)."""
        with self.db.read() as s:
            return repo.generation(s)

    # --- encoders and banks ---------------------------------------------------------------------------
    @_translated
    def encoders(self) -> list[dict]:
        with self.db.read() as s:
            return [{"fingerprint": r.fingerprint, "model": r.model, "architecture": r.architecture,
                     "hidden_size": r.hidden_size, "max_length": r.max_length, "family": r.family,
                     "parts": r.parts, "key_size": r.key_dim} for r in repo.encoders(s)]

    @_translated
    def make_bank(self, concept: str, generator: str | BankOptions = "templates", n: int = 1000, seed: int = 0, *,
                  note: str | None = None, **options) -> Bank:
        """Generate and store a bank; the same sentences for the same concept return the stored version.
        ``generator``: a kind name with its options as keywords (``template_kind=``, ``path=``, the
        :class:`~generators.options.LLMOptions` fields), or the typed options themselves."""
        opts = _banks.bank_options(generator, options) or _banks.TemplateOptions()
        source = _banks.draft_bank(concept, opts, n, seed, progress=self.progress)
        with self.db.write() as s:
            return bank_record(_banks.store_bank(s, source, note))

    @_translated
    def bank(self, ref: str, *, offset: int = 0, limit: int | None = None) -> Bank:
        """``cat`` (latest version) or ``cat@2``, with all its sentences; with ``limit``, only sentences
        ``offset`` … ``offset + limit`` (cut out by the database: a page of a big bank costs the page, and
        ``limit=0`` reads none)."""
        with self.db.read() as s:
            row = repo.bank_row(s, *parse_ref(ref, "bank"))
            if limit is None:
                return bank_record(row)
            bank = bank_record(row, with_sentences=False)
            bank.sentences = repo.bank_sentence_page(s, row.id, offset, limit)
            return bank

    @_translated
    def banks(self, concept: str | None = None) -> list[Bank]:
        with self.db.read() as s:
            return [bank_record(r, with_sentences=False) for r in repo.banks(s, concept)]

    @_translated
    def embedding(self, ref: str, model: str | None = None):
        """The mean embedding [1, 77, D] of a bank under a model (encoding and storing it when missing)."""
        from p2pz.store.vectors import from_bytes  # lazy: start-up

        from .encoding import embed, encoder_facts, load_encoder, registry_model, store_embedding  # lazy: start-up

        enc = load_encoder(registry_model(self.db, model))
        source = embed(self.db, _banks.resolve_bank(self.db, ref, None, 0, 0), enc, progress=self.progress)
        with self.db.write() as s:
            enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
            return from_bytes(store_embedding(s, source, enc_row.id).mean, (1, None, enc.hidden_size))

    # --- directions -----------------------------------------------------------------------------------
    @_translated
    def get(self, ref: str, model: str | None = None) -> Direction:
        """``cat-to-dog@2``, or ``cat-to-dog`` for the latest non-deprecated version — of ``model``'s text encoder
        when given; a bare name that exists for several encoders (an SD and an SDXL version) needs ``model`` or
        a version."""
        return _directions.get(self.db, ref, model)

    @_translated
    def siblings(self, d: Direction) -> list[Direction]:
        """The directions of ``d``'s two banks on other text encoders (SD 1.x, 2.x, SDXL: one bank, many models)."""
        return _directions.siblings(self.db, d)

    @_translated
    def versions(self, name: str) -> list[Direction]:
        return _directions.versions(self.db, name)

    @_translated
    def directions(self, include_deprecated: bool = False, tag: str | None = None) -> list[Direction]:
        return _directions.listing(self.db, include_deprecated, tag)

    @_translated
    def page(self, *, query: str | None = None, tag: str | None = None, include_deprecated: bool = False,
             sort: str = "name", offset: int = 0, limit: int | None = 24) -> tuple[int, list[Direction]]:
        """One page of directions → (total matching, page). ``query`` matches name, concepts and tags
        (case-insensitive); ``sort`` is ``name``, ``date`` (newest first) or a metric (best first, by each
        direction's most recent value of it; never-evaluated directions last)."""
        return _directions.page(self.db, query=query, tag=tag, include_deprecated=include_deprecated, sort=sort,
                                offset=offset, limit=limit)

    @_translated
    def build_direction(self, source: str, target: str, model: str | None = None, *, name: str | None = None,
                        generator: str | BankOptions | None = None, n: int = 1000, seed: int = 0, scale: float = 1.0,
                        tags: Iterable[str] = (), note: str | None = None, device: str | None = None,
                        source_sentences=None, target_sentences=None, **options) -> Direction:
        """Δ = scale · (mean(target) − mean(source)) under ``model``'s text encoder, in one transaction.

        ``source``/``target`` are concepts (latest bank, made from templates when the concept has none) or bank
        refs (``cat@2``). With ``generator`` set, banks are (re)generated with it — content addressing returns the
        stored bank when the sentences are the same (its options as keywords, as in :meth:`make_bank`, with
        ``llm_model`` for the LLM's model). ``source_sentences``/``target_sentences`` (a list of
        sentences or a generator's ``BankDraft``) use exactly those sentences for that side. Re-running the same
        build returns the stored direction version.
        """
        return _directions.build(self.db, source, target, model, name=name,
                                 options=_banks.bank_options(generator, options), n=n, seed=seed, scale=scale,
                                 tags=tags, note=note, device=device, source_sentences=source_sentences,
                                 target_sentences=target_sentences, progress=self.progress)

    @_translated
    def build_many(self, pairs, model: str | None = None, *, engine=None, generator: str | BankOptions | None = None,
                   n: int = 1000, seed: int = 0, tags: Iterable[str] = (), device: str | None = None, report=None,
                   **options) -> list[dict]:
        """Build many directions from (source, target, name | None) pairs (``p2pz direction build-many``): the
        banks are made and encoded on ``engine``'s workers first (:mod:`registry.engine`; default here), records
        are written here. One ``{"source", "target", "name", "ref" | "error"}`` per pair; failures don't stop
        the rest (and don't undo it)."""
        from p2pz.registry.engine import LocalEngine  # lazy: start-up

        from .build_many import build_many  # lazy: start-up

        return build_many(self.db, list(pairs), model, engine or LocalEngine(),
                          options=_banks.bank_options(generator, options), n=n, seed=seed, tags=tags, device=device,
                          progress=self.progress, report=report)

    @_translated
    def combine(self, weights: dict[str, float], name: str, *, tags: Iterable[str] = (),
                note: str | None = None) -> Direction:
        """A weighted sum Σ wᵢ Δᵢ of stored directions, recorded as such (materialized on read)."""
        return _directions.combine(self.db, weights, name, tags=tags, note=note)

    @_translated
    def tag(self, ref: str, tag: str) -> Direction:
        return _directions.tag(self.db, ref, tag)

    @_translated
    def untag(self, ref: str, tag: str) -> Direction:
        """Remove ``tag`` from a direction version (:class:`~registry.library.records.NotFound` when it lacks it)."""
        return _directions.untag(self.db, ref, tag)

    @_translated
    def deprecate(self, ref: str) -> Direction:
        """Hide ``NAME@V`` from listings, search and bare-name lookups (still addressable); reversible."""
        return _directions.deprecate(self.db, ref)

    @_translated
    def undeprecate(self, ref: str) -> Direction:
        """Undo :meth:`deprecate`: ``NAME@V`` is listed, searchable and a bare-name candidate again."""
        return _directions.undeprecate(self.db, ref)

    @_translated
    def inspect(self, ref: str, *, splits: int = 20, seed: int = 0):
        """Diagnostics of a direction without images (:mod:`registry.analysis.diagnostics`): stability, word-swap baseline,
        token profile, bank health, entanglement and checks."""
        from p2pz.registry.analysis.diagnostics import inspect  # lazy: start-up

        return inspect(self.db, self.indexes, ref, splits=splits, seed=seed)

    @_translated
    def bank_advice(self, ref: str) -> dict | None:
        """Which banks a pair direction uses (``{"source": {"bank", "size"}, "target": …}``) and a ``warning``
        when they are far below the size :meth:`inspect` asks for (from stored statistics: no encoder call)."""
        from p2pz.registry.analysis.diagnostics import bank_advice  # lazy: start-up

        return bank_advice(self.db, ref)

    @_translated
    def scores(self, directions: list[Direction]) -> dict[str, dict]:
        """The latest evaluation run of each direction that has one: {ref: {"run_id", "created_at", "n_images",
        "scores": {metric: value}}} (``p2pz eval``)."""
        from p2pz.registry.analysis.evaluations import latest  # lazy: start-up

        return latest(self.db, directions)

    # --- students -------------------------------------------------------------------------------------
    @_translated
    def student(self, ref: str, version: int | None = None, with_weights: bool = True):
        """The latest non-deprecated (or ``version``) student of a direction version (``p2pz student show``)."""
        from .students import get  # lazy: start-up

        return get(self.db, ref, version, with_weights)

    @_translated
    def students(self):
        from .students import listing  # lazy: start-up

        return listing(self.db)

    @_translated
    def deprecate_student(self, ref: str, version: int):
        """Deprecate student ``version`` of a direction version: ``student``/``Student.load`` without a version
        then pick the latest other one (``p2pz student deprecate``); reversible."""
        from .students import set_deprecated  # lazy: start-up

        return set_deprecated(self.db, ref, version, True)

    @_translated
    def undeprecate_student(self, ref: str, version: int):
        """Undo :meth:`deprecate_student` (``p2pz student undeprecate``)."""
        from .students import set_deprecated  # lazy: start-up

        return set_deprecated(self.db, ref, version, False)

    @_translated
    def store_student(self, ref: str, **fields):
        """Store a trained student for a direction version (content-addressed by its weights)."""
        from .students import store  # lazy: start-up

        return store(self.db, ref, **fields)

    # --- search ---------------------------------------------------------------------------------------
    @_translated
    def search(self, ref: str, k: int = 10) -> list[SearchHit]:
        """Directions most similar (cosine of search keys) to a stored one, itself included, same encoder."""
        from .search import search  # lazy: start-up

        return search(self.indexes, ref, k)

    @_translated
    def search_pair(self, source: str, target: str, k: int = 10, *, model: str | None = None,
                    save: bool = False, name: str | None = None) -> list[SearchHit]:
        """Directions similar to the one the two concepts would make, without storing it (unless ``save``); see
        :meth:`pair_key` for a server that keeps the encoded pairs."""
        from .search import search_pair  # lazy: start-up

        if save:
            d = self.build_direction(source, target, model, name=name)
            return self.indexes.hits(d.encoder, d.key, k)
        return search_pair(self.indexes, source, target, k, model=model, progress=self.progress)

    @_translated
    def pair_key(self, source: str, target: str, *, model: str | None = None, cache=None, encode_lock=None,
                 encode: bool = True, encode_in=None):
        """The search key of the direction ``source`` → ``target`` would make → (encoder fingerprint, key [K]);
        ``cache`` keeps encoded pairs, ``encode_lock`` serializes encoding, ``encode`` False answers None
        rather than encode, ``encode_in`` encodes elsewhere (:func:`registry.library.search.pair_key`; the web
        server uses all four)."""
        from .search import pair_key  # lazy: start-up

        return pair_key(self.db, source, target, model=model, progress=self.progress, cache=cache,
                        encode_lock=encode_lock, encode=encode, encode_in=encode_in)

    @_translated
    def hits(self, encoder: str, key, k: int = 10) -> list[SearchHit]:
        """The ``k`` directions of ``encoder`` nearest to ``key``."""
        return self.indexes.hits(encoder, key, k)

    @_translated
    def rebuild_index(self, kind: str | None = None) -> dict[str, dict]:
        """Drop and rebuild every FAISS index from the database (``p2pz index rebuild``), as ``kind`` (auto,
        exact, ivf-sq8, hnsw) when given → {encoder fingerprint: {"kind", "requested", "params", "size", …}}."""
        return self.indexes.rebuild(kind)

    @_translated
    def index_bench(self, queries: int = 200, k: int = 10) -> dict[str, dict]:
        """Recall@k of each search index against exact search on this registry's own keys, and the latency of
        both (``p2pz index bench``)."""
        return self.indexes.bench(queries, k)

    @_translated
    def check(self, repair: bool = False) -> dict:
        """Embeddings and directions whose stored tensors disagree with their encoder (``p2pz db check``: a
        wrong key width or Δ shape, a combination of such a direction), and with ``repair`` their removal, with
        their students and evaluations, in one transaction; banks and every other record stay → {"problems":
        [...], "removed": counts or None}."""
        from p2pz.store.repository import integrity  # lazy: start-up

        if not repair:
            with self.db.read() as s:
                return {"problems": [p.as_dict() for p in integrity.find_problems(s)], "removed": None}
        with self.db.write() as s:
            problems = integrity.find_problems(s)
            removed = integrity.repair(s, problems)
        return {"problems": [p.as_dict() for p in problems], "removed": removed}

    # --- exchange -------------------------------------------------------------------------------------
    @_translated
    def export(self, refs: Iterable[str], path: str | Path) -> dict:
        """Write a ``.p2pz`` library (zip: manifest.json + tensors.safetensors) with full provenance."""
        from p2pz.registry.exchange import export_library  # lazy: pydantic

        return export_library(self.db, list(refs), Path(path))

    @_translated
    def export_cached(self, refs: Iterable[str], build=None, keep=None) -> tuple[Path, bool]:
        """The ``.p2pz`` library of ``refs`` from the export cache (``<cache>/exports``, content-addressed: a
        change of any direction, bank or student makes a new key; the refs' order and repeats do not), built on a
        miss → (path, hit). What a server hands out: repeated downloads cost one small read. ``build`` is a
        context manager wrapped around a miss; ``keep()``, asked on a miss, False builds the zip outside the cache
        in a temporary folder the caller deletes. The entry counts toward ``$P2PZ_CACHE_MAX_GB`` (the exports'
        share of it); open the file before calling :meth:`evict_exports`."""
        from p2pz.registry.exchange import cached_export  # lazy: pydantic
        from p2pz.store.paths import cache_dir

        return cached_export(self.db, list(refs), cache_dir() / "exports", build, keep)

    @_translated
    def evict_exports(self, keep: Path) -> None:
        """Trim the cache to ``$P2PZ_CACHE_MAX_GB`` after an export was written (``keep`` goes last)."""
        from p2pz.store import cache as store_cache
        from p2pz.store.paths import cache_dir

        store_cache.evict(cache_dir(), keep=keep)

    @_translated
    def import_(self, path: str | Path, source: str | None = None, renumber: bool = True) -> dict:
        """Import a ``.p2pz`` library (idempotent: importing twice adds nothing). Directions keep their version
        numbers where free (``renumbered`` lists the others) and record ``source`` (default: the file's name) as
        their origin."""
        from p2pz.registry.exchange import import_library  # lazy: pydantic

        return import_library(self.db, Path(path), source, renumber)

    @_translated
    def push(self, url: str, refs: Iterable[str] = (), *, private: bool = False, message: str | None = None,
             students: bool = False, renumber: bool = False) -> dict:
        """Share directions: ``hf://OWNER/REPO`` (the Hugging Face Hub; default: every version) or
        ``http(s)://HOST[:PORT]`` (another registry's ``p2pz serve``; name them). Incremental, idempotent; a
        version the other side holds with other content is refused (docs/architecture.md "Sharing")."""
        from p2pz.registry.exchange import hub, remote  # lazy: huggingface_hub, httpx

        if url.startswith("hf://"):
            return hub.push(self, url, list(refs), private=private, message=message, students=students)
        return remote.push(self, url, list(refs), renumber=renumber)

    @_translated
    def pull(self, url: str, refs: Iterable[str] = (), *, renumber: bool = False) -> dict:
        """Import directions (default: all) from ``hf://OWNER/REPO[@REVISION]`` or another registry
        (``http(s)://HOST[:PORT]``): every hash checked, all or nothing, versions kept; a version taken here by
        other content is refused unless ``renumber``."""
        from p2pz.registry.exchange import hub, remote  # lazy: huggingface_hub, httpx

        if url.startswith("hf://"):
            return hub.pull(self, url, list(refs), renumber=renumber, progress=self.progress)
        return remote.pull(self, url, list(refs), renumber=renumber, progress=self.progress)

    @_translated
    def import_pt(self, source_pt: str | Path, target_pt: str | Path, name: str | None = None,
                  model: str | None = None) -> Direction:
        """A direction from the official pix2pix-zero per-concept ``.pt`` means (``torch.load(weights_only=True)``)."""
        from p2pz.registry.exchange import import_pt  # lazy: pydantic

        return import_pt(self.db, Path(source_pt), Path(target_pt), name=name, model=model)
