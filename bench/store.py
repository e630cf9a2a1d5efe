"""Store benchmark (issue #5 item 3): 10k directions over 200 concepts.

Bytes on disk per direction beyond the embeddings it references (target ≤ 8 KB), insert throughput, ``get``
latency, and the time to open a registry and list every direction. Baseline, measured in the same run: the
bytes a direction would take if Δ [1, 77, 768] were stored with it (what architecture §3 warns against).

    python bench/store.py [--directions 10000] [--concepts 200]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from _common import build_registry, emit, percentiles


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--directions", type=int, default=10_000)
    ap.add_argument("--concepts", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="Build the registry in this folder and keep it (bench/cli.py reuses it).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        info = build_registry(args.keep or Path(tmp), args.directions, args.concepts)
        from p2pz.registry import Registry
        from p2pz.store.vectors import to_bytes

        import numpy as np

        t = time.perf_counter()
        reg = Registry.open(f"sqlite:///{info['db']}")
        listed = reg.directions()
        t_open_list = time.perf_counter() - t
        names = [d.ref for d in listed]
        rng = random.Random(1)
        lat = []
        for ref in rng.sample(names, 300):
            t = time.perf_counter()
            reg.get(ref)
            lat.append(time.perf_counter() - t)
        vec = []
        for ref in rng.sample(names, 100):
            d = reg.get(ref)
            t = time.perf_counter()
            d.vector_numpy()
            vec.append(time.perf_counter() - t)
        reg.close()
        per_direction = (info["bytes_total"] - info["bytes_embeddings"]) / args.directions
        naive = len(to_bytes(np.zeros((1, 77, 768), np.float32)))
    emit("store", {
        "params": {"directions": args.directions, "concepts": args.concepts, "D": 768},
        "bytes_per_direction": per_direction,
        "baseline_bytes_if_delta_stored": per_direction + naive,
        "ratio_to_baseline": per_direction / (per_direction + naive),
        "insert_per_s": args.directions / info["insert_s"],
        "get_latency_s": percentiles(lat),
        "materialize_vector_s": percentiles(vec),
        "open_and_list_s": t_open_list,
        "listed": len(listed),
        "targets": {"bytes_per_direction": "<= 8192"},
    })


if __name__ == "__main__":
    main()
