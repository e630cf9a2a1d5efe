"""The web server as a hostile web page, a hostile client and a second server would see it (issue 19, items 1–5
and 8's page bound): Host and Origin checks, security headers, auth before any body is read, byte caps while a
chunked body streams, private job reads, job ownership across two servers (issue 35 item 7: a second ``serve``
that cannot bind takes no job; a live server re-queues jobs whose lease expired), and no secrets on screen. Leases
run on an injected clock (:class:`FakeClock`), advanced instead of slept through."""

import contextlib
import datetime as dt
import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.registry.web.jobs import INTERRUPTED, MAX_REQUEUES, Jobs
from p2pz.registry.web import create_app
from p2pz.store import models as m
from p2pz.store import repository as repo

from .conftest import REPO
from .test_web_api import AUTH, TOKEN, Client, db, edit, png, settings, wait  # noqa: F401 — db is a fixture

EVIL = "http://evil.example"


@pytest.fixture
def open_client(db, tmp_path, tiny_model):
    """A server on loopback without a token: the case where any web page could drive it."""
    with Client(create_app(settings(db, tmp_path, tiny_model, token=None, worker=False))) as c:
        yield c


def _library(c) -> bytes:
    r = c.get("/api/export", params={"names": "cat-to-dog"})
    assert r.status_code == 200
    return r.content


# --- 1. cross-origin writes and DNS rebinding ------------------------------------------------------------------

def test_other_hosts_are_refused_and_loopback_names_answered(db, tmp_path, tiny_model, open_client):
    for path in ("/", "/api/directions", "/api/health", "/docs"):
        r = open_client.get(path, headers={"Host": "attacker.example"})
        assert r.status_code == 400 and set(r.json()) == {"error"}, (path, r.status_code)
        assert "attacker.example" in r.json()["error"] and "--allowed-host" in r.json()["error"]
    for host in ("localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:9", "[::1]:8000", "[::1]", "LOCALHOST."):
        assert open_client.get("/api/health", headers={"Host": host}).status_code == 200, host
    assert open_client.get("/api/health", headers={"Host": "gallery.example.org"}).status_code == 400
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False,
                                    allowed_hosts=("gallery.example.org",)))) as c:
        assert c.get("/api/health", headers={"Host": "gallery.example.org:443"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "other.example.org"}).status_code == 400
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False, host="10.1.2.3"))) as c:
        assert c.get("/api/health", headers={"Host": "10.1.2.3:8000"}).status_code == 200  # its --host
        assert c.get("/api/health", headers={"Host": "attacker.example"}).status_code == 400
    with pytest.raises(Exception, match="--allowed-host"):
        settings(db, tmp_path, tiny_model, allowed_hosts=("http://x.example/",))


def test_writes_from_another_origin_are_refused(open_client, db):
    c = open_client
    lib = _library(c)
    cross = [{"Origin": EVIL}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},  # same site, other port
             {"Origin": "https://127.0.0.1:8000.evil.example"}, {"Referer": EVIL + "/page.html"},
             {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]
    for headers in cross:
        dep = c.post("/api/directions/cat-to-dog@1/deprecate", data={"x": "1"}, headers=headers)  # a form post
        assert dep.status_code == 403 and "refused" in dep.json()["error"], (headers, dep.status_code)
        imp = c.post("/api/import", files={"file": ("lib.p2pz", lib, "application/zip")}, headers=headers)
        assert imp.status_code == 403, headers
        job = edit(c, headers=headers)
        assert job.status_code == 403, headers
        tag = c.post("/api/directions/cat-to-dog@1/tags", json={"tag": "pwned"}, headers=headers)
        assert tag.status_code == 403, headers
    assert c.get("/api/directions/cat-to-dog@1").json()["direction"]["deprecated"] is False
    assert c.get("/api/directions/cat-to-dog@1").json()["direction"]["tags"] == []
    assert c.get("/api/jobs").json() == []
    # the server's own pages (same origin) and clients that send no Origin (curl, scripts) still write
    own = c.post("/api/directions/cat-to-dog@1/tags", json={"tag": "mine"},
                 headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own.json()["tags"] == ["mine"]
    assert c.post("/api/directions/cat-to-dog@1/tags", json={"tag": "curl"},
                  headers={"Referer": "http://127.0.0.1:8000/d/cat-to-dog@1"}).status_code == 200
    assert edit(c, headers={}).status_code == 202
    assert c.post("/api/directions/cat-to-dog@1/deprecate").json()["deprecated"] is True


def test_security_headers_and_a_content_security_policy_on_pages(open_client):
    for path in ("/", "/d/cat-to-dog@1", "/apply", "/docs", "/api/directions", "/static/app.js"):
        r = open_client.get(path)
        assert r.status_code == 200, path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", path
        if r.headers["content-type"].startswith("text/html"):
            csp = r.headers["content-security-policy"]
            for rule in ("default-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'",
                         "form-action 'self'"):
                assert rule in csp, (path, rule)
            script = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
            assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, path
            if path == "/docs":  # Swagger UI's one inline start-up script, by its hash
                assert "'sha256-" in script
            else:
                assert script.split() == ["script-src", "'self'"], path
        else:
            assert "content-security-policy" not in r.headers, path
    assert open_client.get("/", headers={"Host": "attacker.example"}).headers["x-frame-options"] == "DENY"


# --- 2. auth before the body, and byte caps while it streams ----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live(app):
    """The app under a real uvicorn on 127.0.0.1 (a thread), so bodies really stream over a socket."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 30, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _chunked_post(port, path, headers: dict, total: int, chunk: int = 1 << 16, wait_first: float = 0.0):
    """POST a chunked body of up to ``total`` bytes, stopping as soon as the server answers → (status, bytes
    sent). With ``wait_first``, wait that long for an answer before sending any body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked",
            "Content-Type: multipart/form-data; boundary=XyZ"] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent, data = 0, b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
    data += b"\0" * (chunk - len(data))
    answered = bool(select.select([sock], [], [], wait_first)[0]) if wait_first else False
    try:
        while not answered and sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
            sent += len(data)
            data = b"\0" * chunk
        reply = b""
        sock.settimeout(15)
        while b"\r\n" not in reply:
            more = sock.recv(4096)
            if not more:
                break
            reply += more
    except (BrokenPipeError, ConnectionResetError):
        reply = reply if "reply" in locals() else b""
    finally:
        sock.close()
    status = int(reply.split(b" ")[1]) if reply.startswith(b"HTTP/1.1 ") else None
    return status, sent


def test_a_chunked_upload_is_refused_before_it_is_read(db, tmp_path, tiny_model):
    total = 64 * 2**20
    app = create_app(settings(db, tmp_path, tiny_model, worker=False, max_upload_bytes=2**20,
                              max_library_bytes=2**20))
    with live(app) as port:
        # no token: 401 as soon as the headers are in, before any of the body is sent
        status, sent = _chunked_post(port, "/api/edits", {}, total, wait_first=5.0)
        assert (status, sent) == (401, 0)
        status, sent = _chunked_post(port, "/api/import", {}, total, wait_first=5.0)
        assert (status, sent) == (401, 0)
        # with the token: 413 once the body passes the endpoint's cap, long before all of it was sent
        for path in ("/api/edits", "/api/import"):
            status, sent = _chunked_post(port, path, AUTH, total)
            assert status == 413 and sent < total // 4, (path, status, sent)
        # a cross-origin write is refused before its body, too
        status, sent = _chunked_post(port, "/api/edits", {**AUTH, "Origin": EVIL}, total, wait_first=5.0)
        assert (status, sent) == (403, 0)


def test_each_endpoint_has_its_own_body_cap(db, tmp_path, tiny_model):
    s = settings(db, tmp_path, tiny_model, worker=False, max_upload_bytes=3 * 2**20, max_library_bytes=1000)
    with Client(create_app(s)) as c:
        big_json = {"tag": "x" * (2 * 2**20)}  # a JSON endpoint takes 1 MiB at most
        r = c.post("/api/directions/cat-to-dog@1/tags", json=big_json, headers=AUTH)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        # an image of 2.5 MiB fits /api/edits (3 MiB) but not /api/import's cap (1000 B + form overhead)
        blob = os.urandom(5 * 2**19)
        assert edit(c, image=blob).status_code == 400  # read, then refused as "not an image": under the cap
        r = c.post("/api/import", files={"file": ("lib.p2pz", blob, "application/zip")}, headers=AUTH)
        assert r.status_code == 413
        # a generator body (no Content-Length: chunked) is capped while it streams
        def body():
            for _ in range(64):
                yield b"\0" * 2**16
        r = c.post("/api/directions/cat-to-dog@1/tags", content=body(),
                   headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.get("/api/directions/cat-to-dog@1").json()["direction"]["tags"] == []


# --- 4. a job's input and results are its submitter's ----------------------------------------------------------

def test_job_reads_need_the_token_when_one_is_set(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model))) as c:
        job = wait(c, edit(c).json()["id"])
        assert job["status"] == "done", job["error"]
        private = ["/api/jobs", "/api/jobs?limit=500", f"/api/jobs/{job['id']}", job["input_url"],
                   job["results"][0]["url"]]
        for path in private:
            r = c.get(path)
            assert r.status_code == 401 and set(r.json()) == {"error"}, path
            assert c.get(path, headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401, path
            assert c.get(path, headers=AUTH).status_code == 200, path
        assert c.get(job["input_url"], headers=AUTH).content == png()
        for path in ("/api/directions", "/api/directions/cat-to-dog", "/api/banks/cat", "/api/export?names=cat-to-dog",
                     "/", "/d/cat-to-dog@1"):
            assert c.get(path).status_code == 200, path  # the library stays public
    with Client(create_app(settings(db, tmp_path, tiny_model, token=None, worker=False))) as c:
        assert c.get("/api/jobs").status_code == 200  # no token: nothing to check it against (loopback only)


# --- 3. a second server on the same registry -------------------------------------------------------------------

class FakeClock:
    """The job runner's clock (naive UTC, like the database's times), moved only by :meth:`advance`."""

    def __init__(self):
        self.now = m.utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _wait_for_beat(db, job_id, at: dt.datetime, timeout=30.0) -> None:
    """Until the job's heartbeat reads ``at`` or later (a beat after the clock moved) — waiting for an event,
    not for a lease to pass."""
    t0 = time.monotonic()
    with Registry.open(db) as reg:
        while True:
            with reg.db.read() as s:
                beat = repo.job_row(s, job_id).heartbeat_at
            if beat is not None and beat >= at:
                return
            assert time.monotonic() - t0 < timeout, f"no heartbeat at {at} or later (last: {beat})"
            time.sleep(0.02)


def test_a_second_server_does_not_fail_the_first_servers_running_job(db, tmp_path, tiny_model, monkeypatch):
    import p2pz.registry.web.jobs as jobs_module

    release, started = threading.Event(), threading.Event()
    real = jobs_module.edit_files

    def held(*args, **kwargs):  # the real edit, held until the test lets it go
        started.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "edit_files", held)  # what the job runner calls
    clock = FakeClock()  # both servers' clock: leases expire when the test advances it, never by sleeping
    lease = 0.3  # beats every 0.1 s of real time; whether a lease expired reads the fake clock only
    with Client(create_app(settings(db, tmp_path, tiny_model, job_lease_s=lease), clock=clock)) as first:
        job_id = edit(first).json()["id"]
        assert started.wait(60)
        clock.advance(2 * lease)  # longer than the lease: only the first server's heartbeat keeps the job alive
        _wait_for_beat(db, job_id, clock())
        with Client(create_app(settings(db, tmp_path / "second", tiny_model, job_lease_s=lease),
                               clock=clock)) as second:  # its start-up recovery and its live re-queueing
            seen = second.get(f"/api/jobs/{job_id}", headers=AUTH).json()
            assert seen["status"] == "running" and seen["error"] is None, seen
        with Registry.open(db) as reg, reg.db.read() as s:
            row = repo.job_row(s, job_id)
            assert row.owner and row.heartbeat_at > clock() - dt.timedelta(seconds=lease)
        release.set()
        done = wait(first, job_id)
        assert done["status"] == "done" and done["error"] is None, done


def test_a_second_serve_on_a_port_in_use_exits_at_once_and_takes_no_job(db, tmp_path, tiny_model):
    """Issue 35 item 7: ``p2pz serve`` on a port another server listens on used to claim a job (its worker
    started before uvicorn bound), exit 3, and leave the job running for the live server to find stale later."""
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        ids = [edit(c).json()["id"] for _ in range(3)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "P2PZ_TOKEN": ""}
    with socket.socket() as first:  # the first server's port
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        for _ in range(2):  # a second try used to take the next job
            r = subprocess.run([sys.executable, "-m", "p2pz", "--db", db, "serve", "--port", str(port),
                                "--work-dir", str(tmp_path / "work"), "--model", str(tiny_model),
                                "--captioner", str(tiny_model / "captioner")],
                               env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and len(lines) == 1, (r.returncode, r.stderr[-3000:])
            assert lines[0].startswith("error: address already in use: 127.0.0.1:") and f":{port} " in lines[0]
            assert "--port" in lines[0]
    with Registry.open(db) as reg, reg.db.read() as s:
        for job_id in ids:
            row = repo.job_row(s, job_id)
            assert (row.status, row.owner, row.started_at, row.heartbeat_at) == ("queued", None, None, None), job_id


def test_a_live_server_requeues_the_jobs_whose_owners_lease_expired(db, tmp_path, tiny_model):
    """Issue 35 item 7: a job its server claimed and then left (it died, or never served) is re-queued by a live
    server once the owner's lease has expired — not only at the next start — and runs; one re-queued
    ``MAX_REQUEUES`` times already is failed with the reason instead of being retried forever."""
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        lost, spent = edit(c).json()["id"], edit(c, directions=["day-to-night"]).json()["id"]
    clock, lease = FakeClock(), 30.0
    with Registry.open(db) as reg, reg.db.write() as s:  # another server claimed both, then went away
        assert repo.claim_next_job(s, owner="gone-server", now=clock()).id == lost
        assert repo.claim_next_job(s, owner="gone-server", now=clock()).id == spent
        params = repo.job_row(s, spent).params
        repo.update_job(s, spent, params={**params, "requeued": MAX_REQUEUES})
    with Client(create_app(settings(db, tmp_path, tiny_model, job_lease_s=lease), clock=clock)) as c:
        for job_id in (lost, spent):  # within the lease at start: still the other server's
            assert c.get(f"/api/jobs/{job_id}", headers=AUTH).json()["status"] == "running"
        clock.advance(lease + 1)  # the owner's lease runs out while this server runs
        c.app.state.p2pz.jobs.wakeup.set()
        done = wait(c, lost, timeout=60)
        assert done["status"] == "done" and done["error"] is None and done["params"]["requeued"] == 1, done
        assert len(done["results"]) == 1
        failed = c.get(f"/api/jobs/{spent}", headers=AUTH).json()
        assert failed["status"] == "failed" and failed["error"] == INTERRUPTED and failed["results"] == []
    with Registry.open(db) as reg, reg.db.read() as s:
        assert repo.job_row(s, lost).owner not in (None, "gone-server")  # this server ran it


def test_a_stale_job_is_still_recovered_and_a_finished_job_carries_no_error(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        stale, legacy = edit(c).json()["id"], edit(c, directions=["day-to-night"]).json()["id"]
    jobs = Jobs(Registry.open(db), tmp_path / "work")
    with jobs.db.write() as s:  # one server died a minute ago; one from before owners left a job with no heartbeat
        assert repo.claim_next_job(s, owner="gone").id == stale
        repo.update_job(s, stale, heartbeat_at=m.utcnow() - dt.timedelta(minutes=1))
        assert repo.claim_next_job(s).id == legacy
        repo.update_job(s, legacy, heartbeat_at=None)
    with Client(create_app(settings(db, tmp_path, tiny_model, job_lease_s=30))) as c:  # its start recovers
        for job_id in (stale, legacy):
            got = c.get(f"/api/jobs/{job_id}", headers=AUTH).json()
            assert got["status"] == "failed" and got["error"] == INTERRUPTED
    # a job wrongly failed while it ran: finishing it clears the error
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        job_id = edit(c).json()["id"]
    from p2pz.registry.web.jobs import JobRunner

    runner = JobRunner(jobs, model=str(tiny_model), captioner=str(tiny_model / "captioner"))
    plain = runner._run_edit

    def run_and_be_failed(job):
        with jobs.db.write() as s:
            repo.update_job(s, job.id, status="failed", error=INTERRUPTED)
        return plain(job)

    runner._run_edit = run_and_be_failed
    done = runner.run_next()
    assert done.id == job_id and done.status == "done" and done.error is None


# --- 5 and 8. no secrets on screen; pages within bounds ---------------------------------------------------------

def test_bad_pages_are_422_without_server_details(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        for page in ("4611686018427387904", "99999999999999999999", "1000001", "٢", "²", "-1", "0"):
            for path in ("/api/directions", "/"):
                r = c.get(path, params={"page": page})
                assert r.status_code == 422, (path, page, r.status_code)
                assert set(r.json()) == {"error"} and "postgres" not in r.text.lower() and "sql" not in r.text.lower()
        last = c.get("/api/directions", params={"page": 1_000_000}).json()
        assert last["total"] == 3 and last["items"] == []
    with Registry.open(db) as reg:  # the query layer: past the end is no query at all, whatever the offset
        assert reg.page(offset=2**80, limit=24) == (3, [])


def test_database_errors_reach_the_client_as_one_generic_line(db, tmp_path, tiny_model):
    from sqlalchemy import text

    from p2pz.store.db import make_engine

    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        engine = make_engine(db)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE evaluations"))
        engine.dispose()
        r = c.get("/api/directions", params={"sort": "clip_acc"})
        assert r.status_code == 500 and set(r.json()) == {"error"}
        assert "database failed" in r.json()["error"] and "server log" in r.json()["error"]
        page = c.get("/", params={"sort": "clip_acc"})  # the gallery's error page says as little
        assert page.status_code == 500 and "database failed" in page.text
        url = engine.url
        for secret in filter(None, (url.host, str(url.port or ""), url.username, url.database, "evaluations")):
            assert secret not in r.text and secret not in page.text, secret


@pytest.fixture
def no_serving(monkeypatch):
    """``p2pz serve`` up to the point it would listen: the app it would build and the line it prints."""
    import p2pz.registry.cli.web as web_cli
    import p2pz.registry.web as web_pkg

    seen = {}

    def build(s):
        seen["settings"] = s
        return object()

    monkeypatch.setattr(web_cli, "_listen", lambda host, port: [])  # binds nothing
    monkeypatch.setattr(web_cli, "_run", lambda app, sockets, **kw: seen.update(run=kw))
    monkeypatch.setattr(web_pkg, "create_app", build)
    return seen


def test_serve_masks_the_database_password_and_reads_the_token_safely(no_serving, tmp_path, monkeypatch):
    runner = CliRunner()
    url = "postgresql+psycopg://alice:s3cret-pw@db.example:5432/registry"
    res = runner.invoke(main, ["--db", url, "serve"], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 0, res.output
    assert "s3cret-pw" not in res.output and "alice:***@db.example:5432/registry" in res.stderr
    # --token on the command line works, with a warning that it shows in ps (and never the token itself)
    res = runner.invoke(main, ["serve", "--token", "flag-token-123"], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 0 and no_serving["settings"].token == "flag-token-123"
    assert "warning: --token" in res.stderr and "ps" in res.stderr and "flag-token-123" not in res.output
    # the environment variable and the token file: no warning
    res = runner.invoke(main, ["serve"], env={"P2PZ_TOKEN": "env-token-1234"})
    assert res.exit_code == 0 and no_serving["settings"].token == "env-token-1234"
    assert "warning" not in res.stderr
    path = tmp_path / "token"
    path.write_text("file-token-1234\n")
    path.chmod(0o600)
    res = runner.invoke(main, ["serve", "--token-file", str(path)], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 0 and no_serving["settings"].token == "file-token-1234"
    assert "warning" not in res.stderr and "file-token-1234" not in res.output
    path.chmod(0o644)
    res = runner.invoke(main, ["serve", "--token-file", str(path)], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 1 and "chmod 600" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    path.chmod(0o600)
    res = runner.invoke(main, ["serve", "--token-file", str(path), "--token", "flag-token-123"])
    assert res.exit_code == 1 and "not both" in res.stderr
    res = runner.invoke(main, ["serve", "--allowed-host", "gallery.example.org", "--allowed-host", "x.example"],
                        env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 0 and no_serving["settings"].allowed_hosts == ("gallery.example.org", "x.example")
    res = runner.invoke(main, ["serve", "--export-budget", "3", "--export-budget-window", "10"], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 0 and (no_serving["settings"].export_budget, no_serving["settings"].export_budget_window_s) \
        == (3, 10.0)
