"""Shared helpers for the benchmarks: machine facts, timers, peak memory, one JSON object per script."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The repository root goes first: bench/store.py must never shadow the ``store`` package.
sys.path[:] = [str(REPO)] + [p for p in sys.path if p != str(REPO)]


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    for mod in ("diffusers", "transformers", "faiss", "sqlalchemy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    return info


def emit(name: str, result: dict) -> dict:
    out = {"benchmark": name, **result, "machine": machine()}
    print(json.dumps(out, indent=1, default=float))
    return out


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"p50": statistics.median(s), "p99": s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))],
            "mean": statistics.fmean(s)}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms in a thread (``.peak`` bytes)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() - self.base)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_registry(folder: Path, n_directions: int = 10_000, n_concepts: int = 200, hidden: int = 768,
                   sentences: int = 5, progress: bool = False) -> dict:
    """A registry of ``n_directions`` directions over ``n_concepts`` template banks, encoded with a tiny
    random text encoder of width ``hidden`` (D = 768 like SD 1.x, so keys have their real size).
    Returns timings and paths."""
    import random

    from p2pz.registry import Registry
    from p2pz.editor.tiny import build_tiny_model

    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("P2PZ_HOME", str(folder / "home"))
    model = folder / "encoder-768"
    if not (model / "model_index.json").is_file():
        build_tiny_model(model, hidden_size=hidden, text_layers=1, overwrite=True)
    db = folder / "registry.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    reg = Registry.open(f"sqlite:///{db}")
    concepts = [f"concept{i:03d}" for i in range(n_concepts)]
    t = time.perf_counter()
    for c in concepts:
        reg.embedding(reg.make_bank(c, n=sentences).ref, str(model))
    t_embed = time.perf_counter() - t
    size_embeddings = checkpoint_size(db)
    pairs = [(a, b) for a in concepts for b in concepts if a != b]
    random.Random(0).shuffle(pairs)
    t = time.perf_counter()
    for i, (a, b) in enumerate(pairs[:n_directions]):
        reg.build_direction(a, b, str(model))
        if progress and i % 1000 == 999:
            print(f"  {i + 1} directions", file=sys.stderr)
    t_insert = time.perf_counter() - t
    size_all = checkpoint_size(db)
    reg.close()
    return {"db": db, "model": model, "embed_s": t_embed, "insert_s": t_insert,
            "bytes_embeddings": size_embeddings, "bytes_total": size_all, "n_directions": n_directions,
            "n_concepts": n_concepts}


def checkpoint_size(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db.stat().st_size
