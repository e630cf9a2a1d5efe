"""Diagnostics benchmark (issue #12): ``Registry.inspect`` on a direction between two 1000-sentence banks whose
sentences are already encoded — the stability part must make zero encoder calls — against the same inspection
after the banks' statistics were dropped from the cache (which encodes both banks again), in the same run.

Encoder: a random CLIP text model of width D = 768 (the SD 1.x width, so the statistics have their real size) with
2 layers, so that the cold baseline stays quick on a CPU.

    python bench/inspect_direction.py [--sentences 1000] [--splits 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import emit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["P2PZ_HOME"] = str(Path(tmp) / "home")
        from p2pz.editor.tiny import build_tiny_model
        from p2pz.registry import Registry
        from p2pz.registry.library.encoding import stats_path

        model = build_tiny_model(Path(tmp) / "model", hidden_size=768, text_layers=2, vocab="auto")["path"]
        reg = Registry.open(f"sqlite:///{Path(tmp) / 'r.db'}")
        t = time.perf_counter()
        d = reg.build_direction("cat", "dog", str(model), n=args.sentences)
        build_s = time.perf_counter() - t
        reg.inspect(d.ref, splits=args.splits)  # load the model once (the word swap), outside the timings
        t = time.perf_counter()
        warm = reg.inspect(d.ref, splits=args.splits)
        warm_s = time.perf_counter() - t
        for concept in ("cat", "dog"):
            stats_path(reg.bank(concept).sha256, d.encoder).unlink()
        t = time.perf_counter()
        cold = reg.inspect(d.ref, splits=args.splits)
        cold_s = time.perf_counter() - t
        assert warm.stability == cold.stability
        emit("inspect", {
            "params": {"sentences_per_bank": args.sentences, "splits": args.splits,
                       "encoder": "random CLIP text model, D=768, 2 layers"},
            "build_direction_s": build_s,
            "inspect_s": warm_s, "inspect_stability_encoder_calls": warm.encoder_calls,
            "inspect_uncached_s": cold_s, "inspect_uncached_encoder_calls": cold.encoder_calls,
            "ratio_to_uncached": warm_s / cold_s,
            "targets": {"inspect_stability_encoder_calls": 0},
        })


if __name__ == "__main__":
    main()
