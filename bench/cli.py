"""CLI benchmark (issue #5 item 4): whole-process time of ``p2pz --help`` and ``p2pz direction list --json`` on a
10k-direction registry, against bare ``python -c pass`` measured in the same run, and whether torch was imported.

    python bench/cli.py [--registry PATH/registry.db] [--directions 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, build_registry, emit

PROBE = ("import sys, runpy\nsys.argv = {argv!r}\ntry:\n    runpy.run_module('p2pz', run_name='__main__')\n"
         "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
         "sys.stderr.write('\\nTORCH_IMPORTED=%s\\n' % ('torch' in sys.modules))\nsys.exit(code or 0)\n")


def timed(cmd: list[str], env: dict, repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    best, last = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        last = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        best = min(best, time.perf_counter() - t)
        if last.returncode != 0:
            raise RuntimeError(last.stderr)
    return best, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", type=Path)
    ap.add_argument("--directions", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.registry or build_registry(Path(tmp), args.directions)["db"]
        env = {**os.environ, "P2PZ_HOME": str(Path(tmp) / "home"), "P2PZ_DB_URL": f"sqlite:///{db}",
               "PYTHONPATH": str(REPO)}
        bare, _ = timed([sys.executable, "-c", "pass"], env, args.repeat)
        help_s, help_run = timed([sys.executable, "-c", PROBE.format(argv=["p2pz", "--help"])], env, args.repeat)
        exe = Path(sys.executable).with_name("p2pz")
        entry = [str(exe)] if exe.exists() else [sys.executable, "-m", "p2pz"]
        help_entry_s, _ = timed(entry + ["--help"], env, args.repeat)
        list_s, list_run = timed([sys.executable, "-c", PROBE.format(argv=["p2pz", "direction", "list", "--json"])],
                                 env, args.repeat)
        list_entry_s, _ = timed(entry + ["direction", "list", "--json"], env, args.repeat)
        listed = len(json.loads(list_run.stdout))
    emit("cli", {
        "params": {"directions": listed, "repeat": args.repeat, "timing": "best of repeat, whole process"},
        "python_c_pass_s": bare,
        "help_s": help_s, "help_console_script_s": help_entry_s, "help_over_bare_s": help_entry_s - bare,
        "list_json_s": list_s, "list_console_script_s": list_entry_s, "list_over_bare_s": list_entry_s - bare,
        "torch_imported_help": "TORCH_IMPORTED=True" in help_run.stderr,
        "torch_imported_list": "TORCH_IMPORTED=True" in list_run.stderr,
        "targets": {"over_bare_s": "<= 0.5", "torch_imported": False},
    })


if __name__ == "__main__":
    main()
