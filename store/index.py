"""FAISS search index: a rebuildable cache of direction keys (docs/architecture.md §3).

One inner-product index per encoder fingerprint over L2-normalized keys (so scores are cosine similarities),
ids = direction row ids. Three kinds:

* ``exact`` — a flat scan (every key compared); scores exact;
* ``ivf-sq8`` — an inverted file of k-means cells with 8-bit scalar-quantized keys, searching ``nprobe`` cells;
* ``hnsw`` — a graph of 8-bit quantized keys (HNSW, ``efSearch`` candidates).

The approximate kinds return their top ``rerank`` candidates, which are then re-ranked exactly against the
float32 keys (kept beside the index, memory-mapped), so every score returned is an exact cosine and only
membership in the top k can differ from exact search. ``auto`` picks exact below :data:`AUTO_THRESHOLD` keys and
``ivf-sq8`` above. Persisted as ``<folder>/<fingerprint>.faiss`` (+ ``.keys.npy``/``.ids.npy`` for the approximate
kinds) with a JSON sidecar recording the registry generation it reflects, the kind asked for, the kind built and
its parameters; a missing, unreadable or stale file is rebuilt from the database, which stays the source of truth,
with the kind asked for last time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from p2pz.store.files import atomic_write
from p2pz.store.lazy import numpy as np

KINDS = ("exact", "ivf-sq8", "hnsw")
AUTO_THRESHOLD = 50_000  # keys; below it an exact scan is fast enough (≈ 7 ms at 50k × 768 here)


def _faiss():
    import faiss  # lazy: faiss

    # Flat search on many vectors is several times faster through BLAS with a low threshold (architecture §8).
    faiss.cvar.distance_compute_blas_threshold = 20
    return faiss


def normalize(keys: np.ndarray) -> np.ndarray:
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    norms = np.linalg.norm(keys, axis=1, keepdims=True)
    return keys / np.maximum(norms, 1e-12)


def resolve_kind(requested: str, n: int, threshold: int = AUTO_THRESHOLD) -> str:
    if requested == "auto":
        return "exact" if n < threshold else "ivf-sq8"
    if requested not in KINDS:
        raise ValueError(f"unknown index kind {requested!r}; use auto, {', '.join(KINDS)}")
    return requested


def default_params(kind: str, n: int) -> dict:
    """Parameters of an index over ``n`` keys: ivf-sq8 has ≈ 2·√n cells (at least 1, at most n/39 so each
    trains on ≥ 39 points), 1/64 of them probed (8 … 64); hnsw has 32 links per node; both re-rank 64."""
    if kind == "ivf-sq8":
        nlist = max(1, min(int(2 * math.sqrt(max(n, 1))), max(1, n // 39)))
        return {"nlist": nlist, "nprobe": min(nlist, max(8, min(64, nlist // 64))), "rerank": 64}
    if kind == "hnsw":
        return {"M": 32, "efConstruction": 80, "efSearch": 128, "rerank": 64}
    return {}


def _save_npy(path, array) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


@dataclass
class DirectionIndex:
    fingerprint: str
    dim: int
    generation: int
    index: object  # a faiss index with ids (IndexIDMap2 or an IVF index)
    kind: str = "exact"
    params: dict = field(default_factory=dict)
    requested: str = "auto"
    ids: np.ndarray | None = None  # [N] int64, sorted (approximate kinds: the rows of ``keys``)
    keys: np.ndarray | None = None  # [N, D] float32 L2-normalized, memory-mapped once saved

    @classmethod
    def build(cls, fingerprint: str, dim: int, generation: int, ids: np.ndarray, keys: np.ndarray, *,
              kind: str = "auto", threshold: int = AUTO_THRESHOLD, params: dict | None = None,
              seed: int = 0) -> "DirectionIndex":
        faiss = _faiss()
        ids = np.asarray(ids, dtype=np.int64)
        keys = normalize(keys.reshape(len(ids), dim)) if len(ids) else np.zeros((0, dim), np.float32)
        order = np.argsort(ids, kind="stable")
        ids, keys = ids[order], keys[order]
        built = resolve_kind(kind, len(ids), threshold)
        if len(ids) == 0:
            built = "exact"  # nothing to train on; rebuilt as asked once keys exist
        p = {**default_params(built, len(ids)), **(params or {})}
        if built == "exact":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            if len(ids):
                index.add_with_ids(keys, ids)
            return cls(fingerprint, dim, generation, index, built, p, kind)
        rng = np.random.default_rng(seed)
        if built == "ivf-sq8":
            index = faiss.index_factory(dim, f"IVF{p['nlist']},SQ8", faiss.METRIC_INNER_PRODUCT)
            sample = keys if len(keys) <= 64 * p["nlist"] else keys[rng.choice(len(keys), 64 * p["nlist"],
                                                                                replace=False)]
            if len(sample) < 39 * p["nlist"]:  # k-means wants ≥ 39 points per cell: repeat a small registry's keys
                sample = np.tile(sample, (math.ceil(39 * p["nlist"] / len(sample)), 1))
            index.train(sample)
            index.add_with_ids(keys, ids)
        else:
            inner = faiss.index_factory(dim, f"HNSW{p['M']},SQ8", faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = p["efConstruction"]
            sample = keys if len(keys) <= 100_000 else keys[rng.choice(len(keys), 100_000, replace=False)]
            inner.train(sample)
            index = faiss.IndexIDMap2(inner)
            index.add_with_ids(keys, ids)
        out = cls(fingerprint, dim, generation, index, built, p, kind, ids, keys)
        out._apply_params()
        return out

    def _apply_params(self) -> None:
        faiss = _faiss()
        if self.kind == "ivf-sq8":
            faiss.extract_index_ivf(self.index).nprobe = self.params["nprobe"]
        elif self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.params["efSearch"]

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one query key [D]; approximate kinds re-rank their candidates exactly."""
        if self.size == 0 or k <= 0:
            return []
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, self.dim))
        if self.kind == "exact":
            scores, ids = self.index.search(q, min(k, self.size))
            return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        wanted = min(self.size, max(self.params.get("rerank", 64), 4 * k))
        _, cand = self.index.search(q, wanted)
        cand = cand[0][cand[0] >= 0]
        rows = np.searchsorted(self.ids, cand)
        exact = self.keys[rows] @ q[0]  # [C] exact cosines from the float32 keys
        top = np.argsort(-exact, kind="stable")[:k]
        return [(int(cand[i]), float(exact[i])) for i in top]

    def describe(self) -> dict:
        return {"kind": self.kind, "requested": self.requested, "params": self.params, "size": self.size,
                "dim": self.dim, "generation": self.generation}

    # persistence ---------------------------------------------------------------------------------
    @staticmethod
    def paths(folder: Path, fingerprint: str) -> tuple[Path, Path]:
        return folder / f"{fingerprint}.faiss", folder / f"{fingerprint}.json"

    @staticmethod
    def key_paths(folder: Path, fingerprint: str) -> tuple[Path, Path]:
        return folder / f"{fingerprint}.ids.npy", folder / f"{fingerprint}.keys.npy"

    def save(self, folder: Path) -> None:
        """Write atomically, sidecar last (a reader seeing the sidecar sees the matching index and keys)."""
        faiss = _faiss()
        index_path, meta_path = self.paths(folder, self.fingerprint)
        atomic_write(index_path, writer=lambda tmp: faiss.write_index(self.index, str(tmp)))
        if self.kind != "exact":
            ids_path, keys_path = self.key_paths(folder, self.fingerprint)
            atomic_write(ids_path, writer=lambda tmp: _save_npy(tmp, self.ids))
            atomic_write(keys_path, writer=lambda tmp: _save_npy(tmp, self.keys))
            self.keys = np.load(keys_path, mmap_mode="r")  # the page cache holds them, not this process
        meta = {"fingerprint": self.fingerprint, "dim": self.dim, "generation": self.generation,
                "size": self.size, "kind": self.kind, "requested": self.requested, "params": self.params}
        atomic_write(meta_path, json.dumps(meta))

    @staticmethod
    def requested_kind(folder: Path, fingerprint: str) -> str | None:
        """The kind last asked for (``index rebuild --kind``), even when that index is stale."""
        try:
            return json.loads(DirectionIndex.paths(folder, fingerprint)[1].read_text()).get("requested")
        except (OSError, ValueError, AttributeError):
            return None

    @classmethod
    def load(cls, folder: Path, fingerprint: str, dim: int, generation: int) -> "DirectionIndex | None":
        """The persisted index if it exists, reads cleanly and reflects ``generation``; else None."""
        index_path, meta_path = cls.paths(folder, fingerprint)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") != generation or meta.get("dim") != dim:
                return None
            index = _faiss().read_index(str(index_path))
            kind = meta.get("kind", "exact")
            ids = keys = None
            if kind != "exact":
                ids_path, keys_path = cls.key_paths(folder, fingerprint)
                ids, keys = np.load(ids_path), np.load(keys_path, mmap_mode="r")
                if ids.shape != (index.ntotal,) or keys.shape != (index.ntotal, dim):
                    return None
        except Exception:  # missing, truncated or corrupt: a cache miss, rebuilt by the caller
            return None
        if index.d != dim or index.ntotal != meta.get("size"):
            return None
        out = cls(fingerprint, dim, generation, index, kind, meta.get("params", {}), meta.get("requested", "auto"),
                  ids, keys)
        out._apply_params()
        return out
