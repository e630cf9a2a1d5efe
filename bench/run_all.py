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


def _key(result: dict) -> str:
    """Which entry of results.json a result replaces: the benchmark and the parameters that distinguish runs."""
    p = result.get("params", {})
    return json.dumps([result["benchmark"], p.get("mode"), p.get("size"), p.get("steps")])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--only", help="comma-separated benchmarks (encode,search,index,store,bulk,cli,web,web_load,inspect,edit,edit_sdxl,evaluate,ablation,student,ray) to run "
                    "again; their entries in --out are replaced, the others kept")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    want = (lambda name: only is None or name in only)  # noqa: E731
    previous = json.loads(args.out.read_text()) if only is not None and args.out.is_file() else []
    results: list[dict] = []

    def keep(result: dict) -> None:
        """Add a result and write the file at once, so a later failure loses nothing already measured."""
        results.append(result)
        fresh = {_key(r) for r in results}
        merged = [r for r in previous if _key(r) not in fresh] + results
        args.out.write_text(json.dumps(merged, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        if want("encode"):
            keep(run("encode.py"))
        if want("search"):
            keep(run("search.py"))
        if want("index"):
            keep(run("index_scale.py", "--n", "100000"))
            keep(run("index_scale.py", "--n", "1000000", "--exact-queries", "50"))
        if want("bulk"):
            keep(run("bulk_import.py"))
            keep(run("bulk_import.py", "--family", "sdxl"))
        if want("store") or want("cli") or want("web"):
            store = run("store.py", "--keep", tmp)
            if want("store"):
                keep(store)
        if want("cli"):
            keep(run("cli.py", "--registry", str(Path(tmp) / "registry.db")))
        if want("web"):
            keep(run("web.py", "--registry", str(Path(tmp) / "registry.db")))
        if want("web_load"):
            keep(run("web_load.py"))
        if want("ray"):
            keep(run("ray_overhead.py"))
        if want("inspect"):
            keep(run("inspect_direction.py"))
        if want("edit"):
            keep(run("edit.py"))
            if args.full:
                keep(run("edit.py", "--full"))
                keep(run("edit.py", "--full", "--size", "512", "--steps", "1", "--stages-only"))
        if want("edit_sdxl"):
            keep(run("edit_sdxl.py") if not args.full else run("edit_sdxl.py", "--full", "--size", "512", "--steps", "1"))
        if want("evaluate") and args.full:
            keep(run("evaluate_overhead.py"))
        if want("ablation"):
            keep(run("shapes_ablation.py"))
        if want("student"):
            keep(run("student.py"))
            if args.full:
                keep(run("student.py", "--check-steps", "50"))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
