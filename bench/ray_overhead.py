"""Ray engine overhead (issue #15): ``p2pz edit`` of 8 images on the tiny model with ``--engine ray --workers 1``
against the same command with the local engine, measured in the same run as whole-process wall time (each
command a fresh process, as a user runs it: the Ray run starts its local Ray, its actor and the actor's model).
Outputs of both runs are compared byte for byte.

    python bench/ray_overhead.py [--images 8] [--steps 50] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit

import numpy as np


def run(cmd: list[str], env: dict) -> None:
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:6])}…: {out.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    from PIL import Image

    from p2pz.editor.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "P2PZ_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
        model = tmp / "tiny"
        build_tiny_model(model, overwrite=True)
        db = f"sqlite:///{tmp / 'r.db'}"
        p2pz = [sys.executable, "-m", "p2pz", "--db", db, "-q"]
        run(p2pz + ["direction", "build", "cat", "dog", "--model", str(model), "-n", "20"], env)
        photos = tmp / "photos"
        photos.mkdir()
        for i in range(args.images):
            Image.fromarray((np.random.RandomState(i).rand(args.size, args.size, 3) * 255).astype(np.uint8)).save(
                photos / f"p{i}.png")
        edit = p2pz + ["edit", str(photos), "--direction", "cat-to-dog", "--steps", str(args.steps), "--no-cache",
                       "--captioner", str(model / "captioner")]
        times = {}
        for label, extra in (("local", []), ("ray", ["--engine", "ray", "--workers", "1"])):
            t = time.perf_counter()
            run(edit + ["--out", str(tmp / label)] + extra, env)
            times[label] = time.perf_counter() - t
        same = all((tmp / "local" / p.name).read_bytes() == p.read_bytes() for p in (tmp / "ray").iterdir())
        n_out = len(list((tmp / "ray").iterdir()))
    emit("ray", {
        "params": {"images": args.images, "steps": args.steps, "size": args.size, "workers": 1,
                   "model": "tiny random-weight SD (editor.tiny)", "timing": "whole process, one run each"},
        "local_s": times["local"], "ray_s": times["ray"], "ratio": times["ray"] / times["local"],
        "outputs": n_out, "identical_outputs": same, "targets": {"ratio": "<= 1.15"},
    })


if __name__ == "__main__":
    main()
