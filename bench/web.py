"""Web benchmark (issue #14): on a 10k-direction registry served by ``p2pz serve`` on 127.0.0.1 —

* server start (process launch → first answer of ``/api/health``) against a bare FastAPI app on uvicorn started
  the same way in the same run, and whether the server imported torch after answering listings, searches and the
  gallery;
* ``GET /api/directions`` (first page) and ``GET /api/search?direction=`` p50 over keep-alive HTTP, against a
  static file from the same server (the HTTP stack's floor);
* the gallery's first page fully loaded (the load event: HTML, CSS, JS and every preview thumbnail) in headless
  Chromium driven by Playwright, against a page holding only the sample image from the same server. The first
  page's directions get real previews (``p2pz preview build`` on the registry's tiny random model, 2 steps).

    python bench/web.py [--registry PATH/registry.db] [--directions 10000] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import REPO, build_registry, emit, percentiles

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
# Runs `p2pz serve` in-process and, at exit (SIGINT), writes whether torch was imported.
SERVE = ("import atexit, sys, runpy\n"
         "atexit.register(lambda: open({marker!r}, 'w').write(str('torch' in sys.modules)))\n"
         "sys.argv = {argv!r}\n"
         "runpy.run_module('p2pz', run_name='__main__')\n")
BARE = ("import atexit, sys\n"
        "atexit.register(lambda: open({marker!r}, 'w').write(str('torch' in sys.modules)))\n"
        "from fastapi import FastAPI\nimport uvicorn\napp = FastAPI()\n"
        "@app.get('/api/health')\ndef health():\n    return {{'ok': True}}\n"
        "uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(code: str, port: int, env: dict) -> tuple[subprocess.Popen, float]:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                return proc, time.perf_counter() - t
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read())
            if time.perf_counter() - t > 60:
                proc.kill()
                raise RuntimeError("server did not start in 60 s")
            time.sleep(0.01)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def timed_gets(client, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t = time.perf_counter()
        r = client.get(url)
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return out


def browser_load(url: str, repeat: int) -> float:
    """Median over ``repeat`` fresh pages (no HTTP cache) of navigation start → load event, in seconds."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(repeat + 1):  # the first warms the browser process up
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url, wait_until="load")
            times.append(page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd; })()")
                / 1000)
            context.close()
        browser.close()
    times = sorted(times[1:])
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", type=Path)
    ap.add_argument("--directions", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--page-loads", type=int, default=7)
    args = ap.parse_args()
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.registry:
            db = args.registry
        else:
            db = build_registry(tmp, args.directions)["db"]
        home = tmp / "home"
        env = {**os.environ, "P2PZ_HOME": str(home), "PYTHONPATH": str(REPO)}
        url_db = f"sqlite:///{db}"

        # previews for the gallery's first page (real renders with the registry's tiny model)
        page1 = json.loads(subprocess.run(
            [sys.executable, "-m", "p2pz", "--db", url_db, "direction", "list", "--json"], env=env,
            cwd=REPO, check=True, capture_output=True, text=True).stdout)
        names = [d["ref"] for d in page1]
        model = Path(page1[0]["encoder_model"])
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "p2pz", "--db", url_db, "-q", "preview", "build", *names[:24],
                        "--steps", "2", "--captioner", str(model / "captioner")], env=env, cwd=REPO, check=True,
                       capture_output=True, text=True)
        preview_s = time.perf_counter() - t

        # start-up: p2pz serve vs a bare FastAPI app, best of 3 each
        starts, bare_starts = [], []
        for _ in range(3):
            port = free_port()
            proc, s = start(BARE.format(marker=str(tmp / "bare"), port=port), port, env)
            bare_starts.append(s)
            stop(proc)
        marker = tmp / "torch-imported"
        for i in range(3):
            port = free_port()
            argv = ["p2pz", "--db", url_db, "-q", "serve", "--port", str(port), "--work-dir", str(tmp / "work")]
            proc, s = start(SERVE.format(marker=str(marker), argv=argv), port, env)
            starts.append(s)
            if i < 2:
                stop(proc)
        base = f"http://127.0.0.1:{port}"
        try:
            rng = random.Random(0)
            with httpx.Client(base_url=base, timeout=30) as client:
                t = time.perf_counter()
                client.get("/api/search", params={"direction": names[0]}).raise_for_status()
                first_search_s = time.perf_counter() - t  # loads the FAISS index from its cache
                timed_gets(client, ["/api/directions"] * 10 + ["/static/style.css"] * 10)  # warm-up
                floor = timed_gets(client, ["/static/style.css"] * args.requests)
                listing = timed_gets(client, ["/api/directions"] * args.requests)
                search = timed_gets(client, [f"/api/search?direction={rng.choice(names)}"
                                             for _ in range(args.requests)])
                total = client.get("/api/directions").json()["total"]
            gallery_s = browser_load(base + "/", args.page_loads)
            image_page_s = browser_load(base + "/api/samples/sample.png", args.page_loads)
        finally:
            stop(proc)
        torch_imported = marker.read_text() == "True"

    p_floor, p_list, p_search = (percentiles(x) for x in (floor, listing, search))
    start_s, bare_s = min(starts), min(bare_starts)
    emit("web", {
        "params": {"directions": total, "requests": args.requests, "page_loads": args.page_loads, "per_page": 24,
                   "previews_on_first_page": min(24, len(names)), "http": "httpx keep-alive, one at a time",
                   "browser": "Debian chromium headless via Playwright, fresh context per load"},
        "server_start_s": start_s, "bare_fastapi_start_s": bare_s, "start_ratio": start_s / bare_s,
        "torch_imported": torch_imported,
        "list_p50_ms": p_list["p50"] * 1e3, "list_p99_ms": p_list["p99"] * 1e3,
        "search_p50_ms": p_search["p50"] * 1e3, "search_p99_ms": p_search["p99"] * 1e3,
        "static_p50_ms": p_floor["p50"] * 1e3,
        "list_over_static": p_list["p50"] / p_floor["p50"], "search_over_static": p_search["p50"] / p_floor["p50"],
        "first_search_s": first_search_s,
        "gallery_load_s": gallery_s, "image_page_load_s": image_page_s,
        "gallery_over_image_page": gallery_s / image_page_s, "preview_build_s": preview_s,
        "targets": {"list_p50_ms": "<= 20", "search_p50_ms": "<= 20", "gallery_load_s": "<= 1",
                    "server_start_s": "<= 2", "torch_imported": False},
    })


if __name__ == "__main__":
    main()
