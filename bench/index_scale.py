"""Approximate search benchmark (issue #15): ``n`` clustered synthetic keys (D = 768), one query at a time.

Builds the index ``p2pz index rebuild --kind KIND`` would build (:class:`store.index.DirectionIndex`; ``auto``:
exact below 50k keys, ivf-sq8 above, exact re-ranking of the candidates), saves it and loads it back as the
registry does (float32 keys memory-mapped), then measures single-query p50/p99 and recall@10 against exact
search (a flat scan over the same keys, the baseline, timed in the same run on fewer queries at 1M). Index RAM is
the growth of the process's anonymous resident memory from loading the saved index and running every query; the
float32 keys the re-ranking reads are a memory-mapped file, whose resident pages (page cache, shared and
reclaimable, mapped in by the kernel's fault-around) are reported separately.

    python bench/index_scale.py [--n 100000] [--kind auto] [--queries 500] [--exact-queries 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

from _common import emit, percentiles

import numpy as np


def clustered(n: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    """Keys around ``centres`` random centres, built in chunks (1M × 768 float32 is 3 GB)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start:start + m] = c[rng.integers(0, centres, m)] + noise * rng.standard_normal((m, d), np.float32)
    return out


def rss() -> dict[str, int]:
    """Anonymous and file-backed resident bytes of this process (/proc/self/status)."""
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon:", "RssFile:")):
            name, kb, _ = line.split()
            out[name[:-1]] = int(kb) * 1024
    return out


def timed(index, queries, k) -> tuple[list[float], list[set]]:
    lat, found = [], []
    for q in queries:
        t = time.perf_counter()
        found.append({i for i, _ in index.search(q, k)})
        lat.append(time.perf_counter() - t)
    return lat, found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--exact-queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    from p2pz.store.index import DirectionIndex

    keys = clustered(args.n, args.dim, max(200, args.n // 50), 0.3, 0)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    rng = np.random.default_rng(1)
    queries = keys[rng.integers(0, args.n, args.queries)] + \
        0.05 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        built = DirectionIndex.build("f" * 64, args.dim, 1, ids, keys, kind=args.kind)
        build_s = time.perf_counter() - t
        built.save(Path(tmp))
        kind, params = built.kind, built.params
        file_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.suffix == ".faiss")
        keys_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.endswith(".npy"))
        del built
        gc.collect()
        before = rss()
        index = DirectionIndex.load(Path(tmp), "f" * 64, args.dim, 1)
        lat, found = timed(index, queries, args.k)
        after = rss()
        del index
        gc.collect()
    exact = DirectionIndex.build("f" * 64, args.dim, 1, ids, keys, kind="exact")
    n_exact = min(args.exact_queries, args.queries)
    lat_e, found_e = timed(exact, queries[:n_exact], args.k)
    if n_exact < args.queries:  # the rest only for recall, untimed
        found_e += [{i for i, _ in exact.search(q, args.k)} for q in queries[n_exact:]]
    recall = float(np.mean([len(a & e) / args.k for a, e in zip(found, found_e)]))
    p, pe = percentiles(lat), percentiles(lat_e)
    emit("index", {
        "params": {"mode": kind, "size": args.n, "dim": args.dim, "requested": args.kind, "queries": args.queries,
                   "exact_queries": n_exact, "k": args.k, "index_params": params,
                   "keys": f"clustered, {max(200, args.n // 50)} centres, noise 0.3",
                   "threads": os.environ.get("OMP_NUM_THREADS", "default")},
        "kind": kind, "build_s": build_s, "p50_ms": p["p50"] * 1e3, "p99_ms": p["p99"] * 1e3,
        "exact_p50_ms": pe["p50"] * 1e3, "exact_p99_ms": pe["p99"] * 1e3, "speedup_p50": pe["p50"] / p["p50"],
        "recall_at_10": recall, "index_file_bytes": file_bytes, "keys_file_bytes": keys_bytes,
        "index_ram_bytes": after["RssAnon"] - before["RssAnon"],
        "mapped_keys_resident_bytes": after["RssFile"] - before["RssFile"],
        "targets": {"100k": "p50 <= 1 ms, recall >= 0.999", "1M": "p50 <= 5 ms, recall >= 0.99, build <= 120 s, "
                    "index RAM <= 4 GB"},
    })


if __name__ == "__main__":
    main()
