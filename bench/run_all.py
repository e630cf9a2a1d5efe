"""Run the benchmarks and write bench/results.json (``make bench``; ``--full`` adds the long ones)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE / script), *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout[out.stdout.index("{"):])
    result["bench_wall_s"] = time.perf_counter() - t
    print(f"{script} {' '.join(args)}: {result['bench_wall_s']:.0f} s", file=sys.stderr)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run("encode.py"))
        results.append(run("search.py"))
        results.append(run("store.py", "--keep", tmp))
        results.append(run("cli.py", "--registry", str(Path(tmp) / "registry.db")))
        results.append(run("edit.py"))
        if args.full:
            results.append(run("edit.py", "--full"))
            results.append(run("edit.py", "--full", "--size", "512", "--steps", "1", "--stages-only"))
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
