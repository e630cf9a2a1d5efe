"""Search: directions nearest to a direction, or to the direction two concepts would make.

Scores are cosine similarities of search keys [D] within one text encoder. The FAISS index per encoder
(:class:`store.index.DirectionIndex`) is a cache: kept in memory and on disk with the database generation it
reflects, and rebuilt from the database whenever that generation has moved on.
"""

from __future__ import annotations

from pathlib import Path

from store import models as m
from store import repository as repo
from store.hashing import sha256_json
from store.index import DirectionIndex
from store.lazy import numpy as np
from store.paths import data_home
from store.vectors import from_bytes

from . import directions
from .banks import resolve_bank
from .encoding import embed, load_encoder
from .records import RegistryError, SearchHit


def default_index_dir(engine) -> Path | None:
    """Beside a SQLite file (``registry.db.index/``); under ``$P2PZ_HOME/index/`` for a server database; none
    (memory only) for an in-memory database."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        db = url.database
        if not db or db == ":memory:" or db.startswith("file:"):
            return None
        return Path(db).expanduser().resolve().with_name(Path(db).name + ".index")
    return data_home() / "index" / sha256_json(url.render_as_string(hide_password=True))[:16]


class SearchIndexes:
    """The search indexes of one registry database, one per encoder fingerprint."""

    def __init__(self, db, folder: Path | None):
        self.db = db
        self.folder = folder
        self._loaded: dict[str, DirectionIndex] = {}

    def index(self, fingerprint: str) -> DirectionIndex:
        with self.db.read() as s:
            generation = repo.generation(s)
        cached = self._loaded.get(fingerprint)
        if cached is not None and cached.generation == generation:
            return cached
        with self.db.read() as s:
            enc = repo.encoder_by_fingerprint(s, fingerprint)
            dim = enc.hidden_size
            index = DirectionIndex.load(self.folder, fingerprint, dim, generation) if self.folder else None
            if index is None:
                ids, keys = repo.index_keys(s, enc.id, dim)
                index = DirectionIndex.build(fingerprint, dim, generation, ids, keys)
                if self.folder:
                    try:
                        index.save(self.folder)
                    except OSError:  # a read-only place: the index stays in memory
                        pass
        self._loaded[fingerprint] = index
        return index

    def rebuild(self) -> dict[str, int]:
        """Drop and rebuild every index from the database (``p2pz index rebuild``) → {fingerprint: size}."""
        self._loaded.clear()
        with self.db.read() as s:
            fingerprints = [e.fingerprint for e in repo.encoders(s)]
        out = {}
        for fp in fingerprints:
            if self.folder:
                for p in DirectionIndex.paths(self.folder, fp):
                    p.unlink(missing_ok=True)
            out[fp] = self.index(fp).size
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
                progress: bool = False) -> list[SearchHit]:
    """Directions near the one ``source`` → ``target`` would make, without storing it.

    When both banks are already encoded under a common encoder (and no model is named), their stored keys are
    used and no model is loaded."""
    db = indexes.db
    src = resolve_bank(db, source, None, 1000, 0, {}, progress=progress)
    tgt = resolve_bank(db, target, None, 1000, 0, {}, progress=progress)
    fingerprint = None
    if model is None and src.row_id is not None and tgt.row_id is not None:
        with db.read() as s:
            fingerprint = repo.shared_encoder(s, src.row_id, tgt.row_id)
            if fingerprint is not None:
                keys = [from_bytes(repo.find_embedding(s, b.concept, b.sha256, fingerprint).key, (None,))
                        for b in (src, tgt)]
    if fingerprint is not None:
        return indexes.hits(fingerprint, keys[1] - keys[0], k)
    enc = load_encoder(model)
    se, te = embed(db, src, enc, progress=progress), embed(db, tgt, enc, progress=progress)
    return indexes.hits(enc.fingerprint, (te.key - se.key).astype(np.float32), k)
