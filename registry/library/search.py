"""Search: directions nearest to a direction, or to the direction two concepts would make.

Scores are cosine similarities of search keys [D] within one text encoder. The FAISS index per encoder
(:class:`store.index.DirectionIndex`) is a cache: kept in memory and on disk with the database generation it
reflects, and rebuilt from the database whenever that generation has moved on.
"""

from __future__ import annotations

import contextlib
import threading

import time
from pathlib import Path

from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.hashing import sha256_json
from p2pz.store.index import AUTO_THRESHOLD, DirectionIndex, KINDS
from p2pz.store.lazy import numpy as np
from p2pz.store.paths import data_home
from p2pz.store.vectors import from_bytes

from . import directions
from .banks import resolve_bank
from .encoding import embed, load_encoder, registry_model
from .records import RegistryError, SearchHit


def default_index_dir(engine) -> Path | None:
    """Beside a SQLite file (``registry.db.index/``); under ``$P2PZ_HOME/index/`` for a server database; none
    (memory only) for an in-memory database."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        db = url.database
        if db and db.startswith("file:") and url.query.get("mode") == "ro":  # a read-only registry file: its
            from urllib.parse import unquote  # index is read when current, else built in memory (never saved)

            db = unquote(db.removeprefix("file:"))
        elif not db or db == ":memory:" or db.startswith("file:"):
            return None
        return Path(db).expanduser().resolve().with_name(Path(db).name + ".index")
    return data_home() / "index" / sha256_json(url.render_as_string(hide_password=True))[:16]


class SearchIndexes:
    """The search indexes of one registry database, one per encoder fingerprint.

    Each is built with the kind last asked for (``p2pz index rebuild --kind``; recorded in the index's sidecar,
    or held here for an in-memory registry), ``auto`` by default: exact below ``auto_threshold`` keys, an
    approximate index with exact re-ranking above."""

    def __init__(self, db, folder: Path | None, auto_threshold: int = AUTO_THRESHOLD):
        self.db = db
        self.folder = folder
        self.auto_threshold = auto_threshold
        self._loaded: dict[str, DirectionIndex] = {}
        self._requested: dict[str, str] = {}
        # a stale index is rebuilt by one thread while the others wait for it; a current one is searched by any
        # number of threads at once (FAISS searches do not modify the index)
        self._build_lock = threading.Lock()

    def requested(self, fingerprint: str) -> str:
        if fingerprint in self._requested:
            return self._requested[fingerprint]
        return (DirectionIndex.requested_kind(self.folder, fingerprint) if self.folder else None) or "auto"

    def index(self, fingerprint: str) -> DirectionIndex:
        with self.db.read() as s:
            generation = repo.generation(s)
        cached = self._loaded.get(fingerprint)
        if cached is not None and cached.generation == generation:
            return cached
        with self._build_lock:
            cached = self._loaded.get(fingerprint)
            if cached is not None and cached.generation == generation:  # another thread just built it
                return cached
            return self._build(fingerprint, generation)

    def _build(self, fingerprint: str, generation: int) -> DirectionIndex:
        with self.db.read() as s:
            enc = repo.encoder_by_fingerprint(s, fingerprint)
            dim = enc.key_dim
            index = DirectionIndex.load(self.folder, fingerprint, dim, generation) if self.folder else None
            if index is None:
                ids, keys = repo.index_keys(s, enc.id, dim)
                index = DirectionIndex.build(fingerprint, dim, generation, ids, keys,
                                             kind=self.requested(fingerprint), threshold=self.auto_threshold)
                if self.folder:
                    try:
                        index.save(self.folder)
                    except OSError:  # a read-only place: the index stays in memory
                        pass
        self._loaded[fingerprint] = index
        return index

    def rebuild(self, kind: str | None = None) -> dict[str, dict]:
        """Drop and rebuild every index from the database (``p2pz index rebuild``), as ``kind`` when given (auto,
        exact, ivf-sq8, hnsw; remembered for later rebuilds) → {fingerprint: kind, parameters, size, …}."""
        if kind is not None and kind != "auto" and kind not in KINDS:
            raise RegistryError(f"unknown index kind {kind!r}; use auto, {', '.join(KINDS)}")
        self._loaded.clear()
        with self.db.read() as s:
            fingerprints = [e.fingerprint for e in repo.encoders(s)]
        out = {}
        for fp in fingerprints:
            requested = kind or self.requested(fp)
            self._requested[fp] = requested
            if self.folder:
                for p in DirectionIndex.paths(self.folder, fp) + DirectionIndex.key_paths(self.folder, fp):
                    p.unlink(missing_ok=True)
            out[fp] = self.index(fp).describe()
        return out

    def bench(self, queries: int = 200, k: int = 10, seed: int = 0) -> dict[str, dict]:
        """Recall@k of each index against exact search on the registry's own keys (queries: stored keys chosen
        at random, each searched for itself), and p50/p99 latency of both (``p2pz index bench``)."""
        out = {}
        with self.db.read() as s:
            encoders = [(e.fingerprint, e.id, e.key_dim) for e in repo.encoders(s)]
        for fp, enc_id, dim in encoders:
            index = self.index(fp)
            if index.size == 0:
                continue
            with self.db.read() as s:
                ids, keys = repo.index_keys(s, enc_id, dim)
            rng = np.random.default_rng(seed)
            qs = keys.reshape(len(ids), dim)[rng.integers(0, len(ids), queries)]
            exact = index if index.kind == "exact" else DirectionIndex.build(fp, dim, index.generation, ids, keys,
                                                                              kind="exact")

            def timed(ix):
                lat, found = [], []
                for q in qs:
                    t = time.perf_counter()
                    found.append({i for i, _ in ix.search(q, k)})
                    lat.append(time.perf_counter() - t)
                return np.asarray(lat), found

            lat_a, found_a = timed(index)
            lat_e, found_e = timed(exact)
            recall = float(np.mean([len(a & e) / max(1, len(e)) for a, e in zip(found_a, found_e)]))
            ms = lambda x, p: float(np.percentile(x, p) * 1000)  # noqa: E731
            out[fp] = {**index.describe(), "queries": queries, "k": k, "recall_at_k": recall,
                       "p50_ms": ms(lat_a, 50), "p99_ms": ms(lat_a, 99), "exact_p50_ms": ms(lat_e, 50),
                       "exact_p99_ms": ms(lat_e, 99)}
        return out

    def hits(self, fingerprint: str, key: np.ndarray, k: int) -> list[SearchHit]:
        if k < 1:
            raise RegistryError("k must be at least 1")
        pairs = self.index(fingerprint).search(key, k)
        with self.db.read() as s:
            found = {d.id: d for d in directions.records(self.db, s, m.Direction.id.in_([i for i, _ in pairs]),
                                                         order=False)}
        return [SearchHit(found[i], score) for i, score in pairs if i in found]


def search(indexes: SearchIndexes, ref: str, k: int = 10) -> list[SearchHit]:
    d = directions.get(indexes.db, ref)
    return indexes.hits(d.encoder, d.key, k)


def search_pair(indexes: SearchIndexes, source: str, target: str, k: int = 10, *, model: str | None = None,
                progress: bool = False, cache=None, encode_lock=None) -> list[SearchHit]:
    """Directions near the one ``source`` → ``target`` would make, without storing it (:func:`pair_key`, then
    the index)."""
    fingerprint, key = pair_key(indexes.db, source, target, model=model, progress=progress, cache=cache,
                                encode_lock=encode_lock)
    return indexes.hits(fingerprint, key, k)


def pair_key(db, source: str, target: str, *, model: str | None = None, progress: bool = False, cache=None,
             encode_lock=None, encode: bool = True, encode_in=None) -> tuple[str, np.ndarray] | None:
    """The search key a ``source`` → ``target`` direction would have → (encoder fingerprint, key).

    When both banks are already encoded under a common encoder (and no model is named), their stored keys are
    used and no model is loaded. Otherwise both banks are encoded (seconds): ``cache`` (``get``/``put``, keyed
    by both banks' sha256 and the model — banks are content-addressed, so an entry never goes stale) keeps the
    result, and ``encode_lock`` (a lock) serializes the encoding. With ``encode`` False, None instead of encoding
    (the cheap path of a server, which encodes only in one of its few heavy slots). ``encode_in`` (a callable
    ``(source, target, model)`` → (fingerprint, key)) does the encoding elsewhere, such as the server's worker
    process (``registry/web/pairs.py``); the result is cached here all the same."""
    src = resolve_bank(db, source, None, 1000, 0, progress=progress)
    tgt = resolve_bank(db, target, None, 1000, 0, progress=progress)
    if model is None and src.row_id is not None and tgt.row_id is not None:
        with db.read() as s:
            fingerprint = repo.shared_encoder(s, src.row_id, tgt.row_id)
            if fingerprint is not None:
                keys = [from_bytes(repo.find_embedding(s, b.concept, b.sha256, fingerprint).key, (None,))
                        for b in (src, tgt)]
                return fingerprint, keys[1] - keys[0]
    slot = (src.sha256, tgt.sha256, model)
    hit = cache.get(slot) if cache is not None else None
    if hit is not None or not encode:
        return hit
    with encode_lock if encode_lock is not None else contextlib.nullcontext():
        if encode_in is not None:
            fingerprint, key, banks = encode_in(source, target, model)
        else:
            fingerprint, key, banks = encode_pair(db, src, tgt, model, progress=progress)
    out = (fingerprint, key)
    if cache is not None:  # under the banks actually encoded (a new bank version may have landed meanwhile)
        cache.put((*banks, model), out)
    return out


def encode_pair(db, source, target, model: str | None = None, *,
                progress: bool = False) -> tuple[str, np.ndarray, tuple[str, str]]:
    """Encode both banks (refs, or banks already resolved) → (encoder fingerprint, target key − source key,
    (source bank sha256, target bank sha256)). What :func:`pair_key` does on a miss, and what the server's worker
    process runs."""
    src = resolve_bank(db, source, None, 1000, 0, progress=progress) if isinstance(source, str) else source
    tgt = resolve_bank(db, target, None, 1000, 0, progress=progress) if isinstance(target, str) else target
    enc = load_encoder(registry_model(db, model))
    se, te = embed(db, src, enc, progress=progress), embed(db, tgt, enc, progress=progress)
    return enc.fingerprint, (te.key - se.key).astype(np.float32), (src.sha256, tgt.sha256)
