"""The HTTP API (registry.web) through FastAPI's TestClient, on the tiny model: every endpoint, bad input, auth,
uploads, path traversal, jobs (one that fails, a restart with a queued job) and previews."""

import datetime as dt
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.registry.web.jobs import INTERRUPTED, Jobs
from p2pz.registry.web import Settings, create_app
from p2pz.store import models as m
from p2pz.store import repository as repo

TOKEN = "correct-horse-battery"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def Client(app, **kw):
    """A TestClient addressing the server as a browser on this machine would (Host 127.0.0.1, not TestClient's
    "testserver", which the server refuses: it answers only for the hosts it serves)."""
    return TestClient(app, base_url="http://127.0.0.1:8000", **kw)


@pytest.fixture
def db(db_url, tiny_model):
    """Three directions, on SQLite and on PostgreSQL (listing, sorting and the job queue are SQL)."""
    url = db_url
    with Registry.open(url) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5)
        reg.build_direction("day", "night", str(tiny_model), n=5, tags=["scenes"])
        reg.build_direction("cat", "dog", str(tiny_model), n=5, name="kitten-to-puppy", scale=1.5)
    return url


def settings(db, tmp_path, tiny_model, **kw):
    base = dict(db_url=db, work_dir=tmp_path / "work", token=TOKEN, captioner=str(tiny_model / "captioner"),
                model=str(tiny_model))
    return Settings(**{**base, **kw})


@pytest.fixture
def client(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model))) as c:
        yield c


def png(w=48, h=48, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def wait(client, job_id, timeout=120):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        job = client.get(f"/api/jobs/{job_id}", headers=AUTH).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def edit(client, directions=("cat-to-dog",), image=None, headers=AUTH, **form):
    files = {"image": ("photo.png", image if image is not None else png(), "image/png")}
    data = {"directions": list(directions), "steps": "2", **form}
    return client.post("/api/edits", files=files, data=data, headers=headers)


# --- reading ---------------------------------------------------------------------------------------------------

def test_list_paginates_filters_and_sorts(client, db):
    r = client.get("/api/directions")
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 3 and body["pages"] == 1
    assert [d["ref"] for d in body["items"]] == ["cat-to-dog@1", "day-to-night@1", "kitten-to-puppy@1"]
    assert body["items"][0]["url"] == "/d/cat-to-dog@1" and body["items"][0]["preview"] is None
    page2 = client.get("/api/directions", params={"per_page": 2, "page": 2}).json()
    assert page2["pages"] == 2 and [d["ref"] for d in page2["items"]] == ["kitten-to-puppy@1"]
    assert [d["ref"] for d in client.get("/api/directions", params={"q": "NIGHT"}).json()["items"]] == \
        ["day-to-night@1"]  # matches concepts, case-insensitively
    assert [d["ref"] for d in client.get("/api/directions", params={"q": "scenes"}).json()["items"]] == \
        ["day-to-night@1"]  # and tags
    assert client.get("/api/directions", params={"q": "100%_"}).json()["total"] == 0  # wildcards are literal
    assert [d["ref"] for d in client.get("/api/directions", params={"sort": "date"}).json()["items"]][0] == \
        "kitten-to-puppy@1"
    # metric sort: best first, never-evaluated last (the same rule as `p2pz direction list --sort`)
    with Registry.open(db) as reg:
        with reg.db.write() as s:
            for ref, value in (("day-to-night", 0.9), ("kitten-to-puppy", 0.4)):
                d = reg.get(ref)
                repo.insert_evaluation(s, run_id=f"run-{ref}", direction_id=d.id, scores={"clip_acc": value,
                                       "bg_lpips": value}, n_images=2, params={})
    items = client.get("/api/directions", params={"sort": "clip_acc"}).json()["items"]
    assert [d["ref"] for d in items] == ["day-to-night@1", "kitten-to-puppy@1", "cat-to-dog@1"]
    assert items[0]["scores"]["clip_acc"] == 0.9 and items[2]["scores"] == {}
    lower = client.get("/api/directions", params={"sort": "bg_lpips"}).json()["items"]
    assert [d["ref"] for d in lower][:2] == ["kitten-to-puppy@1", "day-to-night@1"]
    cli = CliRunner().invoke(main, ["--db", db, "direction", "list", "--sort", "clip_acc", "--json"])
    assert [d["ref"] for d in json.loads(cli.stdout)] == [d["ref"] for d in items]
    bad = client.get("/api/directions", params={"sort": "bogus"})
    assert bad.status_code == 400 and "unknown sort 'bogus'" in bad.json()["error"]
    assert client.get("/api/directions", params={"page": 0}).status_code == 422


def test_show_a_direction_with_banks_versions_and_diagnostics(client):
    r = client.get("/api/directions/cat-to-dog")
    assert r.status_code == 200
    info = r.json()
    assert info["direction"]["ref"] == "cat-to-dog@1" and info["vector"]["shape"][1:] == [77, 32]
    assert info["banks"]["source"]["ref"] == "cat@1" and len(info["banks"]["target"]["sample"]) == 5
    assert all("dog" in s.lower() for s in info["banks"]["target"]["sample"])
    assert [v["ref"] for v in info["versions"]] == ["cat-to-dog@1"] and info["students"] == []
    assert client.get("/api/directions/cat-to-dog@1").json()["direction"]["ref"] == "cat-to-dog@1"
    missing = client.get("/api/directions/cat-to-dog@7")
    assert missing.status_code == 404 and "versions: [1]" in missing.json()["error"]
    assert client.get("/api/directions/nope").status_code == 404
    assert client.get("/api/directions/cat@x").status_code == 400
    diag = client.get(info["diagnostics_url"])
    assert diag.status_code == 200
    assert {"stability", "word_swap_cosine", "token_profile", "checks"} <= set(diag.json())


def test_search_by_direction_and_by_word_pair(client):
    r = client.get("/api/search", params={"direction": "cat-to-dog", "k": 3})
    assert r.status_code == 200
    hits = r.json()["items"]
    # kitten-to-puppy is 1.5 × the same Δ: cosine 1 (a tie with the direction itself), above day-to-night
    assert {h["direction"]["ref"] for h in hits[:2]} == {"cat-to-dog@1", "kitten-to-puppy@1"}
    assert [h["score"] for h in hits[:2]] == pytest.approx([1.0, 1.0], abs=1e-5) and hits[2]["score"] < 0.999
    pair = client.get("/api/search", params={"source": "cat", "target": "dog"}).json()["items"]
    assert pair[0]["direction"]["ref"] in ("cat-to-dog@1", "kitten-to-puppy@1")
    assert client.get("/api/search").status_code == 400
    assert client.get("/api/search", params={"direction": "cat-to-dog", "source": "x"}).status_code == 400
    assert client.get("/api/search", params={"direction": "nothing"}).status_code == 404


def test_a_server_without_a_model_uses_the_registry_s_own(db, tmp_path, tiny_model, monkeypatch):
    """``p2pz serve`` without --model: word-pair search of new concepts and builds use the model the directions
    were built with (offline, CompVis cannot be fetched)."""
    monkeypatch.delenv("P2PZ_MODEL", raising=False)
    app = create_app(settings(db, tmp_path, tiny_model, model=None))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        r = c.get("/api/search", params={"source": "kitten", "target": "lion", "k": 2})
        assert r.status_code == 200, r.text
        built = c.post("/api/directions", json={"source": "cow", "target": "sheep", "n": 5}, headers=AUTH)
        assert built.status_code == 201, built.text
        assert built.json()["encoder_model"] == str(tiny_model)


def test_banks(client):
    versions = client.get("/api/banks/cat").json()
    assert [b["ref"] for b in versions] == ["cat@1"]
    assert versions[0]["sentences"] is None and versions[0]["n_sentences"] == 5  # the listing leaves them out
    one = client.get("/api/banks/cat@1").json()
    assert len(one) == 1 and len(one[0]["sentences"]) == 5
    assert client.get("/api/banks/unicorn").status_code == 404


def test_openapi_health_and_errors_are_json(client):
    assert client.get("/openapi.json").json()["info"]["title"] == "p2pz"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    sample = client.get("/api/samples/sample.png")
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/png"
    assert client.get("/api/samples/other.png").status_code == 404
    health = client.get("/api/health").json()
    assert health == {**health, "ok": True, "auth": True, "read_only": False, "directions": 3}
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = client.delete("/api/directions")
    assert r.status_code == 405 and set(r.json()) == {"error"}


def test_versions_are_ascii_digits_within_bounds(client):
    """A superscript, an overflowing or an Arabic-Indic version is a 400 naming the rule, never a 500 and never
    read as another version (int("\u0662") is 2)."""
    for ref in ("cat-to-dog@\u00b2", "cat-to-dog@99999999999999999999", "cat-to-dog@\u0662", "cat-to-dog@0"):
        for url in (f"/api/directions/{ref}", f"/api/search?direction={ref}"):
            r = client.get(url)
            assert r.status_code == 400, (url, r.status_code, r.text)
            assert "ASCII digits" in r.json()["error"]
    assert client.get("/api/banks/cat@4611686018427387904").status_code == 400
    assert client.get("/api/directions/cat-to-dog@1").status_code == 200


# --- writing and auth ------------------------------------------------------------------------------------------

def test_writes_need_the_token_and_reads_do_not(client):
    assert client.post("/api/directions/cat-to-dog/tags", json={"tag": "animals"}).status_code == 401
    wrong = client.post("/api/directions/cat-to-dog/tags", json={"tag": "animals"},
                        headers={"Authorization": "Bearer wrong-token-123"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in wrong.json()["error"]
    ok = client.post("/api/directions/cat-to-dog/tags", json={"tag": "animals"}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["tags"] == ["animals"]
    assert client.get("/api/directions", params={"tag": "animals"}).json()["total"] == 1
    built = client.post("/api/directions", json={"source": "dog", "target": "cat", "n": 5}, headers=AUTH)
    assert built.status_code == 201 and built.json()["ref"] == "dog-to-cat@1"
    again = client.post("/api/directions", json={"source": "dog", "target": "cat", "n": 5}, headers=AUTH)
    assert again.json()["ref"] == "dog-to-cat@1"  # content-addressed: the same build is the same version
    assert client.post("/api/directions", json={"source": "dog", "target": "cat", "bogus": 1},
                       headers=AUTH).status_code == 422
    vague = client.post("/api/directions/dog-to-cat/deprecate", headers=AUTH)
    assert vague.status_code == 400 and "dog-to-cat@1" in vague.json()["error"]
    dep = client.post("/api/directions/dog-to-cat@1/deprecate", headers=AUTH)
    assert dep.status_code == 200 and dep.json()["deprecated"] is True
    assert client.get("/api/directions").json()["total"] == 3
    assert client.get("/api/directions", params={"deprecated": True}).json()["total"] == 4
    for path in ("/api/directions/cat-to-dog/deprecate", "/api/directions/cat-to-dog/preview"):
        assert client.post(path).status_code == 401


def test_tags_and_deprecation_are_reversible_through_the_api(client):
    assert client.post("/api/directions/day-to-night@1/untag", json={"tag": "scenes"}).status_code == 401
    r = client.post("/api/directions/day-to-night@1/untag", json={"tag": "scenes"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["tags"] == []
    assert client.get("/api/directions", params={"tag": "scenes"}).json()["total"] == 0
    missing = client.post("/api/directions/day-to-night@1/untag", json={"tag": "scenes"}, headers=AUTH)
    assert missing.status_code == 404 and "no tag 'scenes'" in missing.json()["error"]
    assert client.post("/api/directions/kitten-to-puppy@1/deprecate", headers=AUTH).json()["deprecated"] is True
    hits = client.get("/api/search", params={"direction": "cat-to-dog"}).json()
    assert "kitten-to-puppy@1" not in [h["direction"]["ref"] for h in hits["items"]]
    assert client.post("/api/directions/kitten-to-puppy@1/undeprecate").status_code == 401
    back = client.post("/api/directions/kitten-to-puppy@1/undeprecate", headers=AUTH)
    assert back.status_code == 200 and back.json()["deprecated"] is False
    hits = client.get("/api/search", params={"direction": "cat-to-dog"}).json()
    assert "kitten-to-puppy@1" in [h["direction"]["ref"] for h in hits["items"]]
    assert client.post("/api/directions/kitten-to-puppy/undeprecate", headers=AUTH).status_code == 400


def test_read_only_server_refuses_writes_and_binding_rules(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, token=None, read_only=True))) as c:
        assert c.get("/api/directions").status_code == 200
        r = c.post("/api/directions/cat-to-dog/tags", json={"tag": "x"})
        assert r.status_code == 403 and "read-only" in r.json()["error"]
        assert edit(c, headers={}).status_code == 403
        assert c.app.state.worker is None  # no worker on a read-only server
    with Client(create_app(settings(db, tmp_path, tiny_model, token=None))) as c:  # loopback, no token
        assert c.post("/api/directions/cat-to-dog/tags", json={"tag": "x"}).status_code == 200
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db, "serve", "--host", "0.0.0.0"], env={"P2PZ_TOKEN": ""})
    assert res.exit_code == 1 and "--token" in res.stderr and "--read-only" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(main, ["--db", db, "serve", "--token", "short"])
    assert res.exit_code == 1 and "at least 8 characters" in res.stderr


def test_export_download_and_import_upload(client, tmp_path, tiny_model):
    r = client.get("/api/export", params={"names": "cat-to-dog,day-to-night@1"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert 'filename="library.p2pz"' in r.headers["content-disposition"]
    assert client.get("/api/export", params={"names": "nope"}).status_code == 404
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with Client(create_app(settings(other, tmp_path / "o", tiny_model))) as c2:
        files = {"file": ("lib.p2pz", r.content, "application/zip")}
        assert c2.post("/api/import", files=files).status_code == 401
        done = c2.post("/api/import", files=files, headers=AUTH)
        assert done.status_code == 200 and done.json()["added"]["directions"] == 2 and "path" not in done.json()
        assert c2.post("/api/import", files=files, headers=AUTH).json()["added"]["directions"] == 0
        assert c2.get("/api/directions").json()["total"] == 2
        bad = c2.post("/api/import", files={"file": ("x.p2pz", b"not a zip", "application/zip")}, headers=AUTH)
        assert bad.status_code == 400 and set(bad.json()) == {"error"}
        assert c2.get("/api/directions").json()["total"] == 2  # nothing lost


def test_jobs_are_listed_by_status(db, tmp_path, tiny_model):
    """``GET /api/jobs?status=``: with no worker every job stays queued; a status outside the four is a 422."""
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        ids = [edit(c).json()["id"] for _ in range(2)]
        assert sorted(j["id"] for j in c.get("/api/jobs", params={"status": "queued"}, headers=AUTH).json()) == \
            sorted(ids)
        for status in ("running", "done", "failed"):
            assert c.get("/api/jobs", params={"status": status}, headers=AUTH).json() == []
        assert c.get("/api/jobs", params={"status": "lost"}, headers=AUTH).status_code == 422


def test_import_over_the_size_cap_is_413(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, max_library_bytes=1000))) as c:
        r = c.post("/api/import", files={"file": ("lib.p2pz", b"x" * 5000, "application/zip")}, headers=AUTH)
        assert r.status_code == 413 and "limit" in r.json()["error"]


# --- edits and jobs ----------------------------------------------------------------------------------------------

def test_an_edit_job_runs_and_its_results_download_with_provenance(client):
    r = edit(client, directions=["cat-to-dog", "day-to-night@1"], scale="1.2", seed="3")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["params"]["directions"] == ["cat-to-dog@1",
                                                                                      "day-to-night@1"]
    done = wait(client, job["id"])
    assert done["status"] == "done" and done["progress"] == 1.0 and done["error"] is None
    assert [x["direction"] for x in done["results"]] == ["cat-to-dog@1", "day-to-night@1"]
    first = done["results"][0]
    assert first["provenance"]["scale"] == 1.2 and first["provenance"]["seed"] == 3
    assert first["provenance"]["steps"] == 2 and "source_path" not in first["provenance"]
    img = client.get(first["url"], headers=AUTH)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(img.content)) as im:
        assert json.loads(im.text["p2pz"])["direction"] == "cat-to-dog@1"
    assert client.get(done["input_url"], headers=AUTH).content == png()
    assert client.get(f"/api/jobs/{job['id']}/results/2", headers=AUTH).status_code == 404
    assert [j["id"] for j in client.get("/api/jobs", headers=AUTH).json()] == [job["id"]]
    sample = client.post("/api/edits", data={"directions": "cat-to-dog", "sample": "true", "steps": "2"},
                         headers=AUTH)
    assert sample.status_code == 202 and wait(client, sample.json()["id"])["status"] == "done"


def test_progress_is_reported_while_a_job_runs(client, monkeypatch):
    import p2pz.registry.web.jobs as jobs_mod

    seen = []
    plain = jobs_mod.JobRunner._update

    def spy(self, job_id, **values):
        seen.append(values)
        return plain(self, job_id, **values)

    monkeypatch.setattr(jobs_mod.JobRunner, "_update", spy)
    done = wait(client, edit(client, steps="4").json()["id"])
    assert done["status"] == "done"
    progress = [v["progress"] for v in seen if "progress" in v]
    assert progress == sorted(progress) and progress[-1] == 1.0 and any(0 < p < 1 for p in progress)
    assert {"inversion", "edit"} <= {v.get("stage") for v in seen}


def test_bad_edit_requests(client, db, tmp_path, tiny_model):
    assert edit(client, headers={}).status_code == 401
    unknown = edit(client, directions=["nope"])
    assert unknown.status_code == 404 and "no direction named 'nope'" in unknown.json()["error"]
    assert edit(client, directions=[""]).status_code == 400
    assert edit(client, directions=[f"d{i}" for i in range(9)]).status_code == 400
    cfg = edit(client, guidance_scale="1")
    assert cfg.status_code == 400 and "guidance_scale must be > 1" in cfg.json()["error"]
    assert edit(client, steps="0").status_code == 422
    corrupt = edit(client, image=b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    assert corrupt.status_code == 400 and "not a readable image" in corrupt.json()["error"]
    assert edit(client, image=b"").status_code == 400
    text = edit(client, image=b"hello, this is text")
    assert text.status_code == 400
    none = client.post("/api/edits", data={"directions": "cat-to-dog"}, headers=AUTH)
    assert none.status_code == 400 and "attach an image" in none.json()["error"]
    assert client.get("/api/jobs", headers=AUTH).json() == []  # nothing was queued by any of them
    with Client(create_app(settings(db, tmp_path, tiny_model, max_upload_bytes=2000, max_pixels=50 * 50,
                                        worker=False))) as c:
        big = edit(c, image=png(100, 100))
        assert big.status_code == 413 and "limit of 2000" in big.json()["error"]
        wide = edit(c, image=_png_header_only(60, 60))
        assert wide.status_code == 413 and "60×60 pixels" in wide.json()["error"]
        # a decompression bomb: a tiny file declaring 100k × 100k pixels is refused from its header
        bomb = edit(c, image=_png_header_only(100_000, 100_000))
        assert bomb.status_code == 413
        assert c.get("/api/jobs", headers=AUTH).json() == []
    huge = client.post("/api/edits", content=b"x", headers={**AUTH, "Content-Length": str(10**12)})
    assert huge.status_code == 413


def _png_header_only(w, h) -> bytes:
    """A PNG whose header claims ``w`` × ``h`` pixels, followed by a tiny (wrong) IDAT: readable to the header."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def test_a_job_that_fails_records_the_reason(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, model=str(tmp_path / "no-such-model")))) as c:
        job = wait(c, edit(c).json()["id"])
        assert job["status"] == "failed" and job["results"] == []
        assert "no-such-model" in job["error"] and "\n" not in job["error"]
        # the worker goes on: the next job fails on its own, with the same reason, and does not hang
        assert wait(c, edit(c).json()["id"])["status"] == "failed"


def test_a_restart_loses_nothing(db, tmp_path, tiny_model):
    s = settings(db, tmp_path, tiny_model, worker=False)
    with Client(create_app(s)) as c:  # a server whose worker never ran
        first = edit(c).json()["id"]
        second = edit(c, directions=["day-to-night"]).json()["id"]
    jobs = Jobs(Registry.open(db), tmp_path / "work")
    with jobs.db.write() as session:  # the first was running when that server was killed, a minute ago
        assert repo.claim_next_job(session, owner="killed-server").id == first
        repo.update_job(session, first, heartbeat_at=m.utcnow() - dt.timedelta(minutes=1))
    assert jobs.get(first).status == "running" and jobs.get(second).status == "queued"
    with Client(create_app(settings(db, tmp_path, tiny_model))) as c:  # restart
        assert c.get(f"/api/jobs/{first}", headers=AUTH).json()["status"] in ("failed",)
        assert c.get(f"/api/jobs/{first}", headers=AUTH).json()["error"] == INTERRUPTED
        assert wait(c, second)["status"] == "done"


def test_path_traversal_in_every_path_parameter_is_refused(client, tmp_path):
    secret = tmp_path / "work" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("root:x:0:0")
    job = wait(client, edit(client).json()["id"])
    evil = ["..%2F..%2F..%2Fetc%2Fpasswd", "..%2Fsecret.txt", "%2e%2e%2f%2e%2e%2fsecret.txt", "..", "....%2F%2F",
            "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt", "%00", "secret.txt%00.png"]
    templates = ["/api/directions/{x}", "/api/directions/{x}/diagnostics", "/api/banks/{x}", "/api/jobs/{x}",
                 "/api/jobs/{x}/input", "/api/jobs/{x}/results/0", f"/api/jobs/{job['id']}/results/{{x}}",
                 "/api/previews/{x}/edit", "/api/previews/" + "a" * 64 + "/{x}", "/api/samples/{x}", "/d/{x}",
                 "/static/{x}"]
    for template in templates:
        for x in evil:
            r = client.get(template.format(x=x), headers=AUTH)
            if x == ".." and r.status_code == 200:  # the client resolved the dot segment: another, legitimate URL
                assert ".." not in r.url.path and template.endswith("{x}"), (template, r.url)
                continue
            assert r.status_code in (400, 404, 405, 422), (template, x, r.status_code)
            assert b"root:x" not in r.content and b"root:" not in r.content, (template, x)
            if template.startswith("/api"):
                assert set(r.json()) == {"error"}, (template, x, r.text)
    for x in evil:
        r = client.post(f"/api/directions/{x}/tags", json={"tag": "t"}, headers=AUTH)
        assert r.status_code in (400, 404, 405, 422), (x, r.status_code)


# --- previews ---------------------------------------------------------------------------------------------------

def test_previews_are_built_cached_shared_and_served(client, db, tiny_model):
    runner = CliRunner()
    args = ["--db", db, "preview", "build", "cat-to-dog", "--steps", "2", "--captioner",
            str(tiny_model / "captioner"), "--json"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert [r["status"] for r in json.loads(first.stdout)] == ["rendered"]
    assert [r["status"] for r in json.loads(runner.invoke(main, args).stdout)] == ["cached"]
    card = client.get("/api/directions", params={"q": "cat"}).json()["items"][0]
    assert card["ref"] == "cat-to-dog@1" and card["preview"]["edit"].endswith("/edit_thumb")
    thumb = client.get(card["preview"]["edit"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    full = client.get(card["preview"]["edit_full"])
    assert json.loads(Image.open(io.BytesIO(full.content)).text["p2pz"])["direction"] == "cat-to-dog@1"
    # the "render preview" action: a job that renders one direction, then the gallery shows it
    assert client.get("/api/directions/day-to-night").json()["previews"] == []
    client.app.state.p2pz.settings.preview_steps = 2
    r = client.post("/api/directions/day-to-night/preview", headers=AUTH)
    assert r.status_code == 202 and r.json()["kind"] == "preview"
    done = wait(client, r.json()["id"])
    assert done["status"] == "done", done["error"]
    assert len(client.get("/api/directions/day-to-night").json()["previews"]) == 1
    bad = runner.invoke(main, ["--db", db, "preview", "build", "nope"])
    assert bad.exit_code == 1 and "no direction named 'nope'" in bad.stderr


def test_pages_render_and_unknown_directions_are_404_pages(client, db):
    gallery = client.get("/")
    assert gallery.status_code == 200 and gallery.headers["content-type"].startswith("text/html")
    assert gallery.text.count('class="card"') == 3 and "no preview yet" in gallery.text
    found = client.get("/", params={"q": "night"})
    assert found.text.count('class="card"') == 1
    similar = client.get("/", params={"similar": "cat-to-dog"})
    assert "nearest to" in similar.text and "similarity" in similar.text
    page = client.get("/d/cat-to-dog@1")
    assert page.status_code == 200 and "cat@1 → dog@1" in page.text and "Sentence banks" in page.text
    missing = client.get("/d/nope")
    assert missing.status_code == 404 and "no direction named" in missing.text
    with Registry.open(db) as reg, reg.db.write() as s:
        repo.insert_evaluation(s, run_id="r1", direction_id=reg.get("cat-to-dog").id, n_images=1, params={},
                               scores={"bg_lpips": 0.2, "clip_acc": 0.5, "clip_score": 0.3, "structure_distance": 0.1})
    card = client.get("/", params={"sort": "structure_distance"}).text
    shown = card[card.index('data-ref="cat-to-dog@1"'):].split("</dl>")[0]
    # the sort metric first, then the others alphabetically, three at most
    assert [shown.index(m) for m in ("structure_distance", "bg_lpips", "clip_acc")] == sorted(
        shown.index(m) for m in ("structure_distance", "bg_lpips", "clip_acc")) and "clip_score" not in shown
    apply = client.get("/apply", params={"d": "cat-to-dog"})
    assert apply.status_code == 200 and 'value="cat-to-dog@1"' in apply.text
    assert client.get("/static/app.js").status_code == 200


def test_the_app_starts_without_importing_torch(db, tmp_path):
    code = ("import sys, time; t = time.perf_counter()\n"
            "from fastapi.testclient import TestClient\n"
            "from registry.web import Settings, create_app\n"
            f"app = create_app(Settings(db_url={db!r}, work_dir={str(tmp_path / 'w')!r}))\n"
            "with TestClient(app, base_url='http://127.0.0.1') as c:\n"
            "    assert c.get('/api/directions').status_code == 200\n"
            "    assert c.get('/api/search', params={'direction': 'cat-to-dog'}).status_code == 200\n"
            "    assert c.get('/').status_code == 200\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_built_banks_take_the_automatic_template_kind_and_a_given_one(client):
    """The API builds missing banks like the CLI: no kind → chosen from the concept (day, night → scene); a
    given kind is the generator's template kind (it used to be dropped on the way)."""
    for concept in ("day", "night"):
        params = client.get(f"/api/banks/{concept}").json()[0]["params"]
        assert params["template_kind"] == "scene" and params["template_kind_source"] == "auto"
    built = client.post("/api/directions", json={"source": "pencil", "target": "ink", "n": 5, "kind": "object"},
                        headers=AUTH)
    assert built.status_code == 201, built.text
    params = client.get("/api/banks/ink").json()[0]["params"]
    assert params["template_kind"] == "object" and params["template_kind_source"] == "given"
    assert client.post("/api/directions", json={"source": "a", "target": "b", "kind": "weather"},
                       headers=AUTH).status_code == 422


def test_sdxl_directions_are_listed_searched_and_applied(db, tmp_path, tiny_model, tiny_sdxl, monkeypatch):
    """A registry holding SD and SDXL directions of the same banks: both listed with their family, search stays
    within one text encoder, an SDXL edit job runs on the direction's own model, a mixed job is refused."""
    monkeypatch.delenv("P2PZ_MODEL", raising=False)
    with Registry.open(db) as reg:
        assert reg.build_direction("cat@1", "dog@1", str(tiny_sdxl)).ref == "cat-to-dog-sdxl@1"
    with Client(create_app(settings(db, tmp_path, tiny_model, model=None))) as c:
        listed = {d["ref"]: d["family"] for d in c.get("/api/directions", params={"q": "cat"}).json()["items"]}
        assert listed["cat-to-dog-sdxl@1"] == "sdxl" and listed["cat-to-dog@1"] == "sd"
        hits = c.get("/api/search", params={"direction": "cat-to-dog-sdxl", "k": 5}).json()["items"]
        assert [h["direction"]["ref"] for h in hits] == ["cat-to-dog-sdxl@1"]  # only the SDXL encoder's keys
        r = edit(c, directions=["cat-to-dog-sdxl"], caption="a photo of a cat")
        assert r.status_code == 202, r.text
        done = wait(c, r.json()["id"])
        assert done["status"] == "done", done["error"]
        prov = done["results"][0]["provenance"]
        assert prov["family"] == "sdxl" and prov["direction"] == "cat-to-dog-sdxl@1"
        mixed = edit(c, directions=["cat-to-dog", "cat-to-dog-sdxl"])
        assert mixed.status_code == 400 and "different text encoders" in mixed.json()["error"]


def test_head_answers_as_get_and_if_none_match_follows_rfc_9110(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'head.db'}"
    with Registry.open(url) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5)
    with Client(create_app(settings(url, tmp_path, tiny_model, worker=False))) as c:
        for path in ("/api/directions", "/api/directions/cat-to-dog", "/api/banks/cat", "/api/health", "/",
                     "/d/cat-to-dog", "/api/export?names=cat-to-dog", "/api/directions/nope"):
            got, head = c.get(path), c.head(path)
            assert head.status_code == got.status_code and head.content == b"", (path, head.status_code)
            assert head.headers["content-type"] == got.headers["content-type"], path
            if path.startswith("/api/export"):
                assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert c.head("/api/import").status_code == 405  # only where GET answers
        etag = c.get("/api/export", params={"names": "cat-to-dog"}).headers["ETag"]
        assert etag.startswith('W/"')
        for header in ("*", etag, etag[2:], f'"other", {etag[2:]}', f'W/"other",{etag}'):
            r = c.get("/api/export", params={"names": "cat-to-dog"}, headers={"If-None-Match": header})
            assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag, header
        for header in ('"other"', 'W/"other"', ""):
            r = c.get("/api/export", params={"names": "cat-to-dog"}, headers={"If-None-Match": header})
            assert r.status_code == 200 and r.content, header
