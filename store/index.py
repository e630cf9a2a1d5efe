"""FAISS search index: a rebuildable cache of direction keys (docs/architecture.md §3).

One exact inner-product index per encoder fingerprint over L2-normalized keys (so scores are cosine
similarities), ids = direction row ids. Persisted as ``<folder>/<fingerprint>.faiss`` with a JSON sidecar
recording the registry generation it reflects; a missing, unreadable or stale file is simply rebuilt from
the database, which stays the source of truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from store.files import atomic_write
from store.lazy import numpy as np


def _faiss():
    import faiss

    # Flat search on many vectors is several times faster through BLAS with a low threshold (architecture §8).
    faiss.cvar.distance_compute_blas_threshold = 20
    return faiss


def normalize(keys: np.ndarray) -> np.ndarray:
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    norms = np.linalg.norm(keys, axis=1, keepdims=True)
    return keys / np.maximum(norms, 1e-12)


@dataclass
class DirectionIndex:
    fingerprint: str
    dim: int
    generation: int
    index: object  # faiss.IndexIDMap2

    @classmethod
    def build(cls, fingerprint: str, dim: int, generation: int, ids: np.ndarray, keys: np.ndarray) -> "DirectionIndex":
        faiss = _faiss()
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(normalize(keys.reshape(len(ids), dim)), np.asarray(ids, dtype=np.int64))
        return cls(fingerprint, dim, generation, index)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one query key [D]."""
        if self.size == 0 or k <= 0:
            return []
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, self.dim))
        scores, ids = self.index.search(q, min(k, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    # persistence ---------------------------------------------------------------------------------
    @staticmethod
    def paths(folder: Path, fingerprint: str) -> tuple[Path, Path]:
        return folder / f"{fingerprint}.faiss", folder / f"{fingerprint}.json"

    def save(self, folder: Path) -> None:
        """Write atomically, sidecar last (a reader seeing the sidecar sees the matching index)."""
        faiss = _faiss()
        index_path, meta_path = self.paths(folder, self.fingerprint)
        atomic_write(index_path, writer=lambda tmp: faiss.write_index(self.index, str(tmp)))
        meta = {"fingerprint": self.fingerprint, "dim": self.dim, "generation": self.generation, "size": self.size}
        atomic_write(meta_path, json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, fingerprint: str, dim: int, generation: int) -> "DirectionIndex | None":
        """The persisted index if it exists, reads cleanly and reflects ``generation``; else None."""
        index_path, meta_path = cls.paths(folder, fingerprint)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") != generation or meta.get("dim") != dim:
                return None
            index = _faiss().read_index(str(index_path))
        except Exception:  # missing, truncated or corrupt: a cache miss, rebuilt by the caller
            return None
        if index.d != dim or index.ntotal != meta.get("size"):
            return None
        return cls(fingerprint, dim, generation, index)
