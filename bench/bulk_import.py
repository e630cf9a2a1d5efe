"""Bulk writes (issue #15): importing a 100k-direction ``.p2pz`` library into a fresh SQLite registry.

The library is synthetic but complete and valid: 200 concepts with their banks and float32 embeddings
(D = 768, like SD 1.x), and 100k pair directions between them (names ``cA-to-cB`` with scale variants), written
with the exchange format's own models. Measured: the import's directions per second (``Registry.import_`` end to
end: reading, validating, writing), the database's bytes per direction, and ``Registry.get`` + Δ materialization
p50 afterwards (what ``direction show`` does). Baseline in the same run: the same directions inserted one at a
time (``store.repository.insert_direction``, the build path), timed on the first ``--baseline`` of them.

    python bench/bulk_import.py [--directions 100000] [--concepts 200] [--baseline 3000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
import zipfile
from pathlib import Path

from _common import checkpoint_size, emit, percentiles

import numpy as np


def write_library(path: Path, n_dirs: int, n_concepts: int, dim: int = 768, seed: int = 0,
                  family: str = "sd") -> None:
    from safetensors.numpy import save as st_save

    from p2pz.generators import bank_sha256
    from p2pz.registry.exchange.manifest import (FORMAT, FORMAT_VERSION, BankEntry, DirectionEntry, EmbeddingEntry,
                                   EncoderEntry, EncoderPart, Manifest)

    rng = np.random.default_rng(seed)
    fp = "e" * 64
    if family == "sdxl":  # SDXL's pair: Δ [1, 77, 768 + 1280], keys = the pooled embedding [1280]
        parts = [EncoderPart(subfolder="text_encoder", fingerprint="a" * 64, architecture="CLIPTextModel",
                             hidden_size=768),
                 EncoderPart(subfolder="text_encoder_2", fingerprint="b" * 64,
                             architecture="CLIPTextModelWithProjection", hidden_size=dim - 768)]
        enc = EncoderEntry(fingerprint=fp, model="synthetic/sdxl", subfolder="text_encoder,text_encoder_2",
                           architecture="CLIPTextModel+CLIPTextModelWithProjection", hidden_size=dim, max_length=77,
                           pad_id=0, family="sdxl", parts=parts, key_size=1280)
    else:
        enc = EncoderEntry(fingerprint=fp, model="synthetic/encoder-768", subfolder="text_encoder", revision=None,
                           architecture="CLIPTextModel", hidden_size=dim, max_length=77, pad_id=49407)
    key_kind = "pooled" if family == "sdxl" else "pooler"
    banks, embs, tensors = [], [], {}
    keys = rng.standard_normal((n_concepts, enc.key_dim)).astype(np.float32)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    for i in range(n_concepts):
        sentences = [f"a photo of a concept{i:03d}", f"a picture of the concept{i:03d}"]
        banks.append(BankEntry(index=i, concept=f"c{i:03d}", version=1, generator="templates", params={},
                               sentences=sentences, sha256=bank_sha256(sentences), note=None, created_at=now))
        embs.append(EmbeddingEntry(index=i, bank=i, encoder=fp, key_kind=key_kind))
        tensors[f"embedding/{i}/mean"] = rng.standard_normal((1, 77, dim)).astype(np.float32)
        tensors[f"embedding/{i}/key"] = keys[i]
    pairs = [(a, b) for a in range(n_concepts) for b in range(n_concepts) if a != b]
    random.Random(seed).shuffle(pairs)
    dirs = []
    for i in range(n_dirs):
        a, b = pairs[i % len(pairs)]
        variant = i // len(pairs)
        scale = 1.0 + 0.25 * variant
        dirs.append(DirectionEntry(index=i, name=f"c{a:03d}-to-c{b:03d}" + (f"-s{variant}" if variant else ""),
                                   version=1, kind="pair", encoder=fp, source=a, target=b, scale=scale, tags=[],
                                   note=None, deprecated=False, created_at=now))
        tensors[f"direction/{i}/key"] = (np.float32(scale) * (keys[b] - keys[a])).astype(np.float32)
    man = Manifest(format=FORMAT, format_version=FORMAT_VERSION, created_at=now, encoders=[enc], banks=banks,
                   embeddings=embs, directions=dirs, students=[])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", json.dumps(man.model_dump(mode="json")))
        zf.writestr("tensors.safetensors", st_save(tensors))


def baseline(tmp: Path, library: Path, n: int) -> float:
    """The first ``n`` directions inserted one at a time (insert_direction), after the same encoders, banks and
    embeddings → directions per second."""
    from p2pz.registry import Registry
    from p2pz.registry.exchange import read_archive
    from p2pz.store import repository as repo

    man, tensors = read_archive(library)
    reg = Registry.open(f"sqlite:///{tmp / 'baseline.db'}")
    with reg.db.write() as s:
        enc_row, _ = repo.encoder_row(s, man.encoders[0].model_dump())
        emb = []
        for i, (b, e) in enumerate(zip(man.banks, man.embeddings)):
            bank, _ = repo.insert_bank(s, concept=b.concept, sha256=b.sha256, generator=b.generator, params={},
                                       sentences=list(b.sentences), note=None)
            row, _ = repo.insert_embedding(s, bank_id=bank.id, encoder_id=enc_row.id,
                                           mean=tensors[f"embedding/{i}/mean"], key=tensors[f"embedding/{i}/key"],
                                           key_kind=e.key_kind)
            emb.append((row.id, (b.concept, b.sha256)))
    t = time.perf_counter()
    with reg.db.write() as s:
        for i, r in enumerate(man.directions[:n]):
            content = repo.direction_content("pair", r.encoder, source=emb[r.source][1], target=emb[r.target][1],
                                             scale=r.scale)
            repo.insert_direction(s, name=r.name, content=content, encoder_id=enc_row.id,
                                  key=tensors[f"direction/{i}/key"], source_id=emb[r.source][0],
                                  target_id=emb[r.target][0], scale=r.scale)
    rate = n / (time.perf_counter() - t)
    reg.close()
    return rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--directions", type=int, default=100_000)
    ap.add_argument("--concepts", type=int, default=200)
    ap.add_argument("--baseline", type=int, default=3000)
    ap.add_argument("--gets", type=int, default=500)
    ap.add_argument("--family", choices=["sd", "sdxl"], default="sd",
                    help="sdxl: SDXL's encoder pair (Δ [1, 77, 2048], 1280-wide keys)")
    args = ap.parse_args()
    dim = 2048 if args.family == "sdxl" else 768
    from p2pz.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import os

        os.environ.setdefault("P2PZ_HOME", str(tmp / "home"))
        library = tmp / "lib.p2pz"
        t = time.perf_counter()
        write_library(library, args.directions, args.concepts, dim=dim, family=args.family)
        write_s = time.perf_counter() - t
        db = tmp / "registry.db"
        reg = Registry.open(f"sqlite:///{db}")
        size_empty = checkpoint_size(db)
        t = time.perf_counter()
        result = reg.import_(library)
        import_s = time.perf_counter() - t
        reg.close()
        size = checkpoint_size(db)
        reg = Registry.open(f"sqlite:///{db}")
        t = time.perf_counter()
        again = reg.import_(library)
        reimport_s = time.perf_counter() - t
        refs = random.Random(1).sample(result["directions"], min(args.gets, len(result["directions"])))
        lat = []
        for ref in refs:
            t = time.perf_counter()
            d = reg.get(ref)
            d.vector_numpy()
            lat.append(time.perf_counter() - t)
        reg.close()
        base_rate = baseline(tmp, library, args.baseline)
    emb_bytes = args.concepts * (77 * dim * 4 + (1280 if args.family == "sdxl" else dim) * 4)
    emit("bulk_import", {
        "params": {"directions": args.directions, "concepts": args.concepts, "dim": dim, "backend": "sqlite",
                   "family": args.family, **({"mode": "sdxl"} if args.family == "sdxl" else {}),
                   "baseline_directions": args.baseline},
        "import_s": import_s, "directions_per_s": args.directions / import_s, "added": result["added"],
        "reimport_s": reimport_s, "reimport_added": again["added"]["directions"],
        "baseline_directions_per_s": base_rate, "speedup": args.directions / import_s / base_rate,
        "bytes_per_direction": (size - size_empty - emb_bytes) / args.directions,
        "bytes_total": size, "show_p50_ms": percentiles(lat)["p50"] * 1e3, "show_p99_ms": percentiles(lat)["p99"] * 1e3,
        "library_write_s": write_s,
        "targets": {"directions_per_s": ">= 2000", "bytes_per_direction": "<= 5000" if args.family == "sd" else "<= 8192",
                    "show_p50_ms": "<= 5"},
    })


if __name__ == "__main__":
    main()
