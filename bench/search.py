"""Search benchmark (issue #5 item 2): 100k directions with clustered synthetic keys (D = 768).

Index build time, single-query p50/p99 latency, batched throughput and recall@10 of p2pz's index
(:class:`store.index.DirectionIndex`, exact inner product over L2-normalized keys) against exact brute force
in numpy measured in the same run. Keys are clustered (2 000 centres, noise 0.3) because recall on uniform
random vectors says nothing (architecture §8).

    python bench/search.py [--n 100000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import time

from _common import emit, percentiles

import numpy as np


def clustered(n: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    from p2pz.store.index import DirectionIndex, normalize

    keys = clustered(args.n, args.dim, 2000, 0.3, 0)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    t = time.perf_counter()
    index = DirectionIndex.build("0" * 64, args.dim, 1, ids, keys)
    build_s = time.perf_counter() - t

    rng = np.random.default_rng(1)
    queries = keys[rng.integers(0, args.n, args.queries)] + 0.05 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    lat = []
    results = []
    for q in queries:
        t = time.perf_counter()
        results.append([i for i, _ in index.search(q, args.k)])
        lat.append(time.perf_counter() - t)

    t = time.perf_counter()
    _, batched_ids = index.index.search(normalize(queries), args.k)
    batched_s = time.perf_counter() - t

    norm = normalize(keys)
    t = time.perf_counter()
    exact = []
    for start in range(0, args.queries, 100):  # numpy brute force, the baseline
        scores = normalize(queries[start:start + 100]) @ norm.T
        top = np.argpartition(-scores, args.k, axis=1)[:, : args.k]
        exact += [set(ids[row]) for row in top]
    brute_s = time.perf_counter() - t
    recall = float(np.mean([len(set(r) & e) / args.k for r, e in zip(results, exact)]))
    recall_batched = float(np.mean([len(set(r) & e) / args.k for r, e in zip(batched_ids.tolist(), exact)]))
    single = percentiles(lat)
    emit("search", {
        "params": {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "index": "IndexFlatIP (exact)"},
        "build_s": build_s,
        "single_query_s": single,
        "batched_queries_per_s": args.queries / batched_s,
        "numpy_brute_force_queries_per_s": args.queries / brute_s,
        "ratio_batched_vs_numpy": (args.queries / batched_s) / (args.queries / brute_s),
        "recall_at_10": recall,
        "recall_at_10_batched": recall_batched,
        "targets": {"p50_s": "<= 0.005", "recall_at_10": 1.0},
    })


if __name__ == "__main__":
    main()
