"""The web server under load and after a crash: heavy reads bounded (429 + Retry-After) and kept off the cheap
ones' locks, repeated pair searches served from the cache, a bounded job queue, ``kill -9`` during a job, and
the cleaning rule for finished jobs' files."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from p2pz.registry import Registry
from p2pz.registry.web import create_app
from p2pz.registry.web.jobs import INTERRUPTED, Jobs

from .conftest import REPO
from .test_web_api import AUTH, TOKEN, Client, db, edit, png, settings  # noqa: F401 (db is a fixture)
from .test_web_security import _free_port

pytestmark = pytest.mark.slow  # real server processes, kill -9 and restarts, a worker process


def test_heavy_reads_get_429_when_busy_and_cheap_reads_do_not_wait(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False, heavy_requests=1,
                                    retry_after_s=7))) as c:
        st = c.app.state.p2pz
        assert st.heavy["pair"].acquire(blocking=False)  # a pair is being encoded
        try:
            r = c.get("/api/search", params={"source": "zebra", "target": "giraffe"})
            assert r.status_code == 429 and r.headers["Retry-After"] == "7" and "retry in 7 s" in r.json()["error"]
            assert c.get("/api/export", params={"names": "cat-to-dog"}).status_code == 200  # its own slots
            assert c.get("/api/search", params={"direction": "cat-to-dog"}).status_code == 200  # cheap: no slot
            assert c.get("/api/directions").status_code == 200
        finally:
            st.heavy["pair"].release()
        assert st.heavy["export"].acquire(blocking=False)  # heavy_requests=1: the one export slot is taken
        try:
            r = c.get("/api/export", params={"names": "day-to-night"})  # not built yet: needs the slot
            assert r.status_code == 429 and r.headers["Retry-After"] == "7"
            again = c.get("/api/export", params={"names": "cat-to-dog"})  # built above: a cache hit, no slot
            assert again.status_code == 200 and again.headers["X-P2PZ-Cache"] == "hit"
        finally:
            st.heavy["export"].release()
        first = c.get("/api/search", params={"source": "zebra", "target": "giraffe"})
        assert first.status_code == 200
        assert st.heavy["pair"].acquire(blocking=False)
        try:  # the same pair again: its key is cached, no encoding, no slot needed
            again = c.get("/api/search", params={"source": "zebra", "target": "giraffe"})
            assert again.status_code == 200 and again.json() == first.json()
        finally:
            st.heavy["pair"].release()
        # no lock of the direction search is held while a pair is encoded: it goes through meanwhile
        with st.encode_lock:
            assert c.get("/api/search", params={"direction": "cat-to-dog"}).status_code == 200


def test_word_pairs_are_encoded_in_a_worker_process_like_in_the_server(db, tmp_path, tiny_model):
    query = {"source": "zebra", "target": "giraffe", "k": 5}
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False, pair_process=False))) as c:
        here = c.get("/api/search", params=query)
        assert c.app.state.p2pz.pair_encoder is None
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        st = c.app.state.p2pz
        there = c.get("/api/search", params=query)
        assert there.status_code == 200 and there.json() == here.json()  # the same key, encoded elsewhere
        (pid,) = st.pair_encoder._pool._processes  # one worker process, not this one
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)  # the worker dies: one 503 with Retry-After, then a new worker
        r = c.get("/api/search", params={"source": "owl", "target": "hawk"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "retry" in r.json()["error"]
        again = c.get("/api/search", params={"source": "owl", "target": "hawk"})
        assert again.status_code == 200 and st.pair_encoder._pool._processes.keys() != {pid}
        assert c.get("/api/search", params=query).json() == here.json()  # cached in the server meanwhile
    assert st.pair_encoder._pool is None  # stopped with the app


def test_exports_are_cached_by_content(db, tmp_path, tiny_model, monkeypatch):
    from p2pz.store import cache as store_cache
    from p2pz.store.paths import cache_dir

    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        first = c.get("/api/export", params={"names": "cat-to-dog,day-to-night@1"})
        assert first.status_code == 200 and first.headers["X-P2PZ-Cache"] == "miss"
        assert int(first.headers["Content-Length"]) == len(first.content)
        again = c.get("/api/export", params={"names": "cat-to-dog,day-to-night@1"})
        assert again.headers["X-P2PZ-Cache"] == "hit" and again.content == first.content
        assert again.headers["ETag"] == first.headers["ETag"] and again.headers["ETag"].startswith('W/"')
        same = c.get("/api/export", params={"names": "cat-to-dog,day-to-night@1"},
                     headers={"If-None-Match": first.headers["ETag"]})
        assert same.status_code == 304 and same.content == b""
        assert store_cache.usage(cache_dir())["exports"] == {"entries": 1, "bytes": len(first.content)}
        # the same directions named another way (by content hash) are the same library
        sha = c.get("/api/directions/cat-to-dog@1").json()["direction"]["content_sha256"]
        by_hash = c.get("/api/export", params={"names": f"sha256:{sha},day-to-night@1"})
        assert by_hash.headers["X-P2PZ-Cache"] == "hit" and by_hash.content == first.content
        # metadata is content too: a new tag is a new library, which carries it
        assert c.post("/api/directions/cat-to-dog@1/tags", json={"tag": "pets"}, headers=AUTH).status_code == 200
        tagged = c.get("/api/export", params={"names": "cat-to-dog,day-to-night@1"})
        assert tagged.headers["X-P2PZ-Cache"] == "miss" and tagged.headers["ETag"] != first.headers["ETag"]
        target = Registry.open(f"sqlite:///{tmp_path / 'target.db'}")
        lib = tmp_path / "tagged.p2pz"
        lib.write_bytes(tagged.content)
        target.import_(lib)
        assert "pets" in target.get("cat-to-dog").tags
        target.close()
        # a cache capped at nothing still serves the download (the file is open before it is evicted)
        monkeypatch.setenv("P2PZ_CACHE_MAX_GB", "0")
        r = c.get("/api/export", params={"names": "day-to-night"})
        assert r.status_code == 200 and r.headers["X-P2PZ-Cache"] == "miss" and r.content[:2] == b"PK"
        assert store_cache.usage(cache_dir())["exports"]["entries"] == 0


def test_the_job_queue_is_bounded(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False, max_queued=2))) as c:
        assert edit(c).status_code == 202 and edit(c).status_code == 202
        r = edit(c)
        assert r.status_code == 429 and "Retry-After" in r.headers and "2 jobs are waiting" in r.json()["error"]


def test_finished_jobs_files_are_cleaned_by_count_and_age(db, tmp_path, tiny_model):
    import datetime as dt

    from p2pz.store import repository as repo

    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        ids = [edit(c).json()["id"] for _ in range(4)]
    jobs = Jobs(Registry.open(db), tmp_path / "work", keep_jobs=2, keep_jobs_days=1)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with jobs.db.write() as s:  # three finished (oldest first), one still queued
        for n, job_id in enumerate(ids[:3]):
            repo.update_job(s, job_id, status="done", finished_at=now - dt.timedelta(minutes=10 - n))
    assert jobs.clean() == 1  # the oldest finished job beyond the newest two
    left = {j: (tmp_path / "work" / "jobs" / j).is_dir() for j in ids}
    assert left == {ids[0]: False, ids[1]: True, ids[2]: True, ids[3]: True}
    with jobs.db.write() as s:
        repo.update_job(s, ids[1], finished_at=now - dt.timedelta(days=2))
    assert jobs.clean() == 1 and not (tmp_path / "work" / "jobs" / ids[1]).is_dir()
    assert (tmp_path / "work" / "jobs" / ids[3]).is_dir()  # queued: never cleaned
    with pytest.raises(Exception, match="were cleaned"):
        with jobs.db.write() as s:
            repo.update_job(s, ids[0], results=[{"file": "x.png"}])
        jobs.result_file(ids[0], 0)


SERVE = """
import datetime as dt, sys, uvicorn
from p2pz.registry.web import create_app
from p2pz.registry.web.jobs import utcnow
from p2pz.registry.web.settings import Settings
db, work, model, port, ahead = sys.argv[1:6]
clock = lambda: utcnow() + dt.timedelta(seconds=float(ahead))  # the job runner's clock, set ahead by the test
app = create_app(Settings(db_url=db, work_dir=work, token={token!r}, captioner=model + "/captioner", model=model,
                          job_lease_s={lease!r}), clock=clock)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
"""
LEASE_S = 30.0


def _start(db, work, model, port, ahead_s: float = 0.0):
    """A server process on ``port``; its job runner's clock runs ``ahead_s`` seconds ahead of the real one."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = SERVE.format(token=TOKEN, lease=LEASE_S)
    proc = subprocess.Popen([sys.executable, "-c", code, db, str(work), str(model), str(port), str(ahead_s)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (dead) parent's reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_during_a_job_then_restart_fails_it_and_runs_the_queue(db, tmp_path, tiny_model):
    port, work = _free_port(), tmp_path / "work"
    base = f"http://127.0.0.1:{port}"
    proc = _start(db, work, tiny_model, port)
    try:
        def submit(steps):
            r = httpx.post(f"{base}/api/edits", headers=AUTH, timeout=30,
                           files={"image": ("photo.png", png(), "image/png")},
                           data={"directions": ["cat-to-dog"], "steps": str(steps), "caption": "a cat"})
            assert r.status_code == 202, r.text
            return r.json()["id"]
        pair = httpx.get(f"{base}/api/search", params={"source": "zebra", "target": "giraffe"}, timeout=120)
        assert pair.status_code == 200, pair.text  # the pair worker process is running now
        workers = _children(proc.pid)
        assert workers, "no worker process"
        running = submit(400)
        queued = [submit(2), submit(2)]
        t0 = time.monotonic()
        while httpx.get(f"{base}/api/jobs/{running}", headers=AUTH).json()["status"] != "running":
            assert time.monotonic() - t0 < 60
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    t0 = time.monotonic()  # the server's worker processes end by themselves (no orphan keeps the encoder)
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() - t0 < 30, [pid for pid in workers if _alive(pid)]
        time.sleep(0.1)
    # restarted with its clock past the job's lease (instead of sleeping through it): its heartbeat is old
    proc = _start(db, work, tiny_model, port, ahead_s=2 * LEASE_S)
    try:
        got = httpx.get(f"{base}/api/jobs/{running}", headers=AUTH).json()
        assert got["status"] == "failed" and got["error"] == INTERRUPTED
        assert (work / "jobs" / running / got["params"]["input"]).is_file()  # its upload is where the record says
        t0 = time.monotonic()
        for job_id in queued:
            while (job := httpx.get(f"{base}/api/jobs/{job_id}", headers=AUTH).json())["status"] in ("queued",
                                                                                                  "running"):
                assert time.monotonic() - t0 < 180
                time.sleep(0.2)
            assert job["status"] == "done", job
            for i, res in enumerate(job["results"]):
                assert (work / "jobs" / job_id / res["file"]).is_file()
                r = httpx.get(f"{base}/api/jobs/{job_id}/results/{i}", headers=AUTH)
                assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
