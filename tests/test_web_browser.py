"""The web app in a real browser: Debian's Chromium driven by Playwright against ``p2pz serve`` on 127.0.0.1,
on the tiny model. Screenshots of every page are kept under the pytest temp folder (``web-screenshots/``)."""

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2pz.registry import Registry

CHROMIUM = os.environ.get("P2PZ_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
TOKEN = "browser-test-token"

pytestmark = [pytest.mark.slow,  # a real Chromium against a real server
              pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                                 reason="Chromium is not installed (.ci/run installs Debian's chromium with apt-get)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_model):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry.open(db) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5, tags=["animals"])
        reg.build_direction("day", "night", str(tiny_model), n=5, tags=["scenes"])
        reg.build_direction("summer", "winter", str(tiny_model), n=5, tags=["scenes"])
    p2pz = [sys.executable, "-m", "p2pz", "--db", db, "-q"]
    built = subprocess.run(p2pz + ["preview", "build", "cat-to-dog", "day-to-night", "--steps", "2", "--captioner",
                                   str(tiny_model / "captioner")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    with serving(tmp_path, db, tiny_model, token=TOKEN, directions=3) as url:
        yield url


@contextlib.contextmanager
def serving(tmp_path, db, tiny_model, token=None, directions=3):
    """``p2pz serve`` on 127.0.0.1 and a free port (the token, if any, from $P2PZ_TOKEN, the documented way)."""
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "P2PZ_TOKEN": token or ""}
    proc = subprocess.Popen([sys.executable, "-m", "p2pz", "--db", db, "-q", "serve", "--port", str(port),
                             "--model", str(tiny_model), "--captioner", str(tiny_model / "captioner"),
                             "--preview-steps", "2", "--work-dir", str(tmp_path / "work")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=1) as r:
                assert json.load(r)["directions"] == directions
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                proc.kill()
                raise AssertionError("p2pz serve did not start: " + (tmp_path / "serve.log").read_text())
            time.sleep(0.1)
    print(f"server ready in {time.monotonic() - t0:.2f} s")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web-screenshots")


def test_gallery_search_direction_apply_and_download(server, browser, shots, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # 1. the gallery: three cards, two with before/after previews, one with the render-preview action
    page.goto(server + "/")
    cards = page.locator("article.card")
    expect(cards).to_have_count(3)
    expect(page.locator("article.card[data-ref='cat-to-dog@1'] img")).to_have_count(2)
    expect(page.locator("article.card[data-ref='summer-to-winter@1'] .render-preview")).to_be_visible()
    loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert loaded, "a preview thumbnail did not load"
    page.screenshot(path=str(shots / "1-gallery.png"), full_page=True)

    # 2. search by name, then by similarity
    page.fill("#q", "night")
    page.click("#search-button")
    expect(cards).to_have_count(1)
    expect(page.locator("#count")).to_contain_text("1 direction")
    page.screenshot(path=str(shots / "2-search.png"), full_page=True)
    page.goto(server + "/")
    page.fill("#similar", "day-to-night")
    page.click("#search-button")
    expect(page.locator("#count")).to_contain_text("nearest to")
    expect(page.locator("article.card").first).to_have_attribute("data-ref", "day-to-night@1")

    # 3. a direction's page, with its diagnostics computed on demand
    page.goto(server + "/")
    page.click("article.card[data-ref='cat-to-dog@1'] h2 a")
    expect(page).to_have_url(server + "/d/cat-to-dog@1")
    expect(page.locator("h1")).to_contain_text("cat-to-dog")
    expect(page.locator(".bank")).to_have_count(2)
    page.click("#load-diagnostics")
    expect(page.locator("#diagnostics table")).to_contain_text("word-swap cosine", timeout=60_000)
    page.screenshot(path=str(shots / "3-direction.png"), full_page=True)

    # 4. apply it to an uploaded photo: the job's progress, then the result
    page.click("#apply-link")
    expect(page.locator("#directions")).to_have_value("cat-to-dog@1")
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)).save(photo)
    page.set_input_files("#image", str(photo))
    page.locator("#steps").fill("3")
    expect(page.locator("#steps + output")).to_have_text("3")
    page.fill("#token", TOKEN)
    page.screenshot(path=str(shots / "4-apply.png"), full_page=True)
    page.click("#submit")
    expect(page.locator("#job")).to_be_visible()
    result = page.locator("img.result-image")
    expect(result).to_be_visible(timeout=120_000)
    assert page.evaluate("document.querySelector('img.result-image').naturalWidth") > 0
    expect(page.locator("#job-status")).to_have_text("done")
    assert page.locator("#job-progress").evaluate("p => p.value") == 1
    page.screenshot(path=str(shots / "5-result.png"), full_page=True)

    # 5. download it: a PNG carrying its provenance
    with page.expect_download() as info:
        page.click("a.download")
    saved = tmp_path / "downloaded.png"
    info.value.save_as(saved)
    with Image.open(saved) as im:
        provenance = json.loads(im.text["p2pz"])
    assert provenance["direction"] == "cat-to-dog@1" and provenance["steps"] == 3
    assert errors == [], errors
    print("screenshots:", sorted(p.name for p in shots.iterdir()))


def test_a_refused_edit_shows_the_servers_error(server, browser, shots):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(server + "/apply")
    page.check("#use-sample")
    page.fill("#directions", "no-such-direction")
    page.fill("#token", TOKEN)
    page.click("#submit")
    expect(page.locator("#job-error")).to_contain_text("no direction named 'no-such-direction'")
    page.fill("#token", "wrong-token-1234")
    page.fill("#directions", "cat-to-dog")
    page.click("#submit")
    expect(page.locator("#job-error")).to_contain_text("Authorization: Bearer")
    page.screenshot(path=str(shots / "6-refused.png"), full_page=True)
    # the gallery's "render preview" action runs a preview job and shows the preview
    page.goto(server + "/d/summer-to-winter@1")
    page.evaluate(f"sessionStorage.setItem('p2pz-token', {TOKEN!r})")
    page.click(".render-preview")
    expect(page.locator(".previews img")).to_have_count(2, timeout=300_000)


def test_the_openapi_page_works_offline(server, browser, shots):
    """``/docs`` loads Swagger UI from the server itself (the browser cannot reach a CDN here)."""
    from playwright.sync_api import expect

    page = browser.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:")) else None)
    page.goto(server + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("p2pz", timeout=20_000)
    expect(page.locator(".opblock-summary-path", has_text="/api/edits")).to_have_count(1)
    page.screenshot(path=str(shots / "7-openapi.png"))
    assert outside == []


EVIL_PAGE = """<!doctype html><title>evil</title>
<form id="f" method="POST" action="TARGET/api/directions/cat-to-dog@1/deprecate"><input name="x" value="1"></form>
<script>
(async () => {
  try {
    const lib = await (await fetch("/lib.p2pz")).blob();
    const body = new FormData();
    body.append("file", lib, "lib.p2pz");
    await fetch("TARGET/api/import", { method: "POST", body: body, mode: "no-cors" });
    await fetch("TARGET/api/edits", { method: "POST", mode: "no-cors",
      body: new URLSearchParams({ directions: "cat-to-dog", sample: "true", steps: "2" }) });
    document.title = "fetched";
  } catch (e) { document.title = "fetch failed: " + e; }
  document.getElementById("f").submit();
})();
</script>"""


@contextlib.contextmanager
def evil_site(target: str, library: bytes):
    """Another origin (127.0.0.1 on another port: the same site, another origin) serving a page that tries to
    drive ``target``: a form post and fetches, as any page the user visits could."""
    page = EVIL_PAGE.replace("TARGET", target).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, kind = (library, "application/zip") if self.path == "/lib.p2pz" else (page, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_another_origin_cannot_drive_a_server_without_a_token(tmp_path, tiny_model, browser, shots):
    """A loopback server without a token is still reachable from every page in the browser: a page of another
    origin auto-submits a form post (deprecate) and fetches POST /api/import and /api/edits; all are refused and
    nothing changes, while the server's own apply page still submits a job. No page breaks its own CSP."""
    from playwright.sync_api import expect

    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry.open(db) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with Registry.open(other) as reg:
        reg.build_direction("sun", "moon", str(tiny_model), n=5)
        reg.export(["sun-to-moon"], tmp_path / "lib.p2pz")
    with serving(tmp_path, db, tiny_model, token=None, directions=1) as url, \
            evil_site(url, (tmp_path / "lib.p2pz").read_bytes()) as evil:
        page = browser.new_page()
        blocked = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(evil + "/")
        page.wait_for_url(url + "/api/directions/cat-to-dog@1/deprecate", timeout=20_000)  # the form went
        expect(page.locator("body")).to_contain_text("request refused")
        page.screenshot(path=str(shots / "8-evil-refused.png"))
        with urllib.request.urlopen(url + "/api/directions/cat-to-dog@1") as r:
            assert json.load(r)["direction"]["deprecated"] is False
        with urllib.request.urlopen(url + "/api/health") as r:
            assert json.load(r)["directions"] == 1  # sun-to-moon was not imported
        with urllib.request.urlopen(url + "/api/jobs") as r:
            assert json.load(r) == []  # and no edit was queued
        # the server's own pages: the apply page submits a job and shows its result; no CSP violation anywhere
        for path in ("/", "/d/cat-to-dog@1", "/docs"):
            page.goto(url + path)
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("p2pz", timeout=20_000)
        page.goto(url + "/apply?d=cat-to-dog")
        page.check("#use-sample")
        page.locator("#steps").fill("2")
        page.click("#submit")
        expect(page.locator("img.result-image")).to_be_visible(timeout=120_000)
        expect(page.locator("#job-status")).to_have_text("done")
        assert blocked == [], blocked
        with urllib.request.urlopen(url + "/api/jobs") as r:
            assert [j["status"] for j in json.load(r)] == ["done"]
