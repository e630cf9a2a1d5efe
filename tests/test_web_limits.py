"""What a server hands out stays bounded whatever it holds: banks come in only up to one cap and are shown a page
at a time, exports keep to their share of the cache (anonymous callers past a budget get uncached builds), and a
job's input that is gone is a 404, not a 500."""

import importlib
import json
import os
import re
import shutil
import tempfile
import zipfile

import pytest
from sqlalchemy import event

from p2pz.generators import bank_sha256
from p2pz.registry import Registry
from p2pz.registry.library.records import RegistryError
from p2pz.registry.web import create_app
from p2pz.store import cache as store_cache
from p2pz.store import repository as repo
from p2pz.store.paths import cache_dir
from p2pz.store.db import StoreError

from .test_web_api import AUTH, Client, db, edit, settings  # noqa: F401 (db is a fixture)


# --- a job's input: cleaned, or a preview job that never had one ---------------------------------------------

def test_the_input_of_a_cleaned_or_preview_job_is_a_404(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False)), raise_server_exceptions=False) as c:
        job = edit(c).json()
        assert c.get(job["input_url"], headers=AUTH).status_code == 200
        shutil.rmtree(tmp_path / "work" / "jobs" / job["id"])  # what Jobs.clean does to a finished job's files
        r = c.get(job["input_url"], headers=AUTH)
        assert r.status_code == 404 and set(r.json()) == {"error"} and "was cleaned" in r.json()["error"]
        assert "\n" not in r.json()["error"]
        preview = c.post("/api/directions/cat-to-dog/preview", headers=AUTH)
        assert preview.status_code == 202 and preview.json()["input_url"] is None
        r = c.get(f"/api/jobs/{preview.json()['id']}/input", headers=AUTH)
        assert r.status_code == 404 and set(r.json()) == {"error"} and "no uploaded image" in r.json()["error"]


# --- one cap on a bank's sentences, however it comes in ----------------------------------------------------

def _oversized_library(tmp_path, tiny_model, n: int):
    """A library written by the project's own export code, then its one bank given ``n`` sentences (its sha256
    and the direction's content hash made consistent again, so that nothing but the size is wrong)."""
    source = Registry.open(f"sqlite:///{tmp_path / 'source.db'}")
    source.build_direction("cat", "dog", str(tiny_model), n=5)
    lib = tmp_path / "lib.p2pz"
    source.export(["cat-to-dog"], lib)
    source.close()
    with zipfile.ZipFile(lib) as zf:
        manifest, tensors = json.loads(zf.read("manifest.json")), zf.read("tensors.safetensors")
    bank = next(b for b in manifest["banks"] if b["concept"] == "cat")
    bank["sentences"] = [f"a photo of cat number {i}" for i in range(n)]
    bank["sha256"] = bank_sha256(bank["sentences"])
    for d in manifest["directions"]:
        d["content_sha256"] = None  # optional: recomputed on import
    big = tmp_path / "big.p2pz"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("tensors.safetensors", tensors, compress_type=zipfile.ZIP_STORED)
    return big


def test_importing_a_bank_over_the_cap_is_refused(tmp_path, tiny_model):
    big = _oversized_library(tmp_path, tiny_model, repo.MAX_BANK_SENTENCES + 1)
    target = Registry.open(f"sqlite:///{tmp_path / 'target.db'}")
    with pytest.raises(RegistryError) as err:
        target.import_(big)
    message = str(err.value)
    assert "\n" not in message and "'cat'" in message and str(repo.MAX_BANK_SENTENCES + 1) in message
    assert f"cap of {repo.MAX_BANK_SENTENCES}" in message and "bank create -n" in message
    assert target.banks() == [] and target.directions() == []
    target.close()


def test_every_way_a_bank_comes_in_meets_the_same_cap(tmp_path, tiny_model, monkeypatch):
    small = _oversized_library(tmp_path, tiny_model, 6)  # a valid library with a 6-sentence bank
    monkeypatch.setattr(importlib.import_module("p2pz.store.repository.banks"), "MAX_BANK_SENTENCES", 5)
    reg = Registry.open(f"sqlite:///{tmp_path / 'target.db'}")
    with pytest.raises(RegistryError, match=r"bank 'cat' holds 6 sentences, over the cap of 5"):
        reg.import_(small)
    with pytest.raises(RegistryError, match=r"bank 'owl' holds 6 sentences, over the cap of 5"):
        reg.make_bank("owl", n=6)  # templates
    sentences = tmp_path / "owls.txt"
    sentences.write_text("\n".join(f"an owl on branch {i}" for i in range(6)))
    with pytest.raises(RegistryError, match=r"bank 'owl' holds 6 sentences, over the cap of 5"):
        reg.make_bank("owl", "file", path=str(sentences))  # a file
    with pytest.raises(RegistryError, match=r"over the cap of 5"):  # refused before any model is loaded
        reg.build_direction("owl", "hawk", str(tmp_path / "no-model-here"),
                            source_sentences=[f"an owl on branch {i}" for i in range(6)])
    with reg.db.write() as s, pytest.raises(StoreError, match=r"over the cap of 5"):  # the one funnel
        repo.insert_bank(s, concept="owl", sha256="0" * 64, generator="file", params={},
                         sentences=[f"owl {i}" for i in range(6)])
    assert reg.banks() == []
    assert reg.make_bank("owl", n=5).n_sentences == 5  # at the cap: stored
    reg.close()


# --- a bank is shown a page at a time ---------------------------------------------------------------------

def _statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *a: seen.append(statement))
    return seen


def test_a_big_bank_is_served_a_page_at_a_time_and_never_read_whole(db, tmp_path, tiny_model):
    sentences = [f"a photo of a cat, take {i}" for i in range(3000)]
    with Registry.open(db) as reg, reg.db.write() as s:
        repo.insert_bank(s, concept="cat", sha256=bank_sha256(sentences), generator="file", params={},
                         sentences=sentences)  # cat@2
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        seen = _statements(c.app.state.p2pz.registry.db.engine)
        page = c.get("/api/banks/cat@2")
        assert page.status_code == 200
        (bank,) = page.json()
        assert bank["n_sentences"] == 3000 and bank["sentences"] == sentences[:100]
        assert (bank["offset"], bank["limit"]) == (0, 100) and len(page.content) < 10_000
        tail = c.get("/api/banks/cat@2", params={"offset": 2990, "limit": 50}).json()[0]
        assert tail["sentences"] == sentences[2990:] and tail["n_sentences"] == 3000
        assert c.get("/api/banks/cat@2", params={"limit": 1001}).status_code == 422
        assert c.get("/api/banks/cat@2", params={"offset": -1}).status_code == 422
        listing = c.get("/api/banks/cat").json()  # every version, no sentences
        assert [b["ref"] for b in listing] == ["cat@1", "cat@2"] and all(b["sentences"] is None for b in listing)
        shown = c.get("/api/directions/cat-to-dog").json()["banks"]["source"]
        assert shown["n_sentences"] == 5 and len(shown["sample"]) == 5
        assert c.get("/d/cat-to-dog").status_code == 200
        assert c.get("/api/banks/unicorn@1").status_code == 404
        # what the database was asked: sentences only ever a LIMITed page of them, never the whole column
        reads = [q for q in seen if re.search(r"\bbanks\.sentences\b", q)]
        assert reads and all("LIMIT" in q.upper() for q in reads), reads


# --- exports: one key per content, a share of the cache, a budget for anonymous callers ----------------------

def _cache_entries(kind: str) -> int:
    return store_cache.usage(cache_dir())[kind]["entries"]


def test_the_same_directions_in_any_order_are_one_export(db, tmp_path, tiny_model):
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        first = c.get("/api/export", params={"names": "cat-to-dog,day-to-night"})
        assert first.status_code == 200 and first.headers["X-P2PZ-Cache"] == "miss"
        for names in ("day-to-night,cat-to-dog", "day-to-night@1,cat-to-dog,cat-to-dog@1"):
            again = c.get("/api/export", params={"names": names})
            assert again.headers["X-P2PZ-Cache"] == "hit" and again.headers["ETag"] == first.headers["ETag"]
            assert again.content == first.content
        assert _cache_entries("exports") == 1


def test_exports_keep_to_their_share_of_the_cache_and_never_evict_other_kinds(db, tmp_path, tiny_model,
                                                                             monkeypatch):
    refs = ["cat-to-dog", "day-to-night", "kitten-to-puppy", "cat-to-dog,day-to-night", "cat-to-dog,kitten-to-puppy",
            "day-to-night,kitten-to-puppy", "cat-to-dog,day-to-night,kitten-to-puppy"]
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        size = len(c.get("/api/export", params={"names": refs[-1]}).content)  # the largest of them
        store_cache.clear(cache_dir(), "exports")
        encodings = cache_dir() / "encodings" / "ab" / "abcdef"  # another kind's entry, the least recently used
        encodings.parent.mkdir(parents=True, exist_ok=True)
        encodings.write_bytes(b"\0" * (10 * size))
        os.utime(encodings, (1_000_000_000, 1_000_000_000))
        before = store_cache.usage(cache_dir())
        others = sum(u["bytes"] for kind, u in before.items() if kind != "exports")
        cap = others + 2 * size  # room for two exports beside the rest (within the exports' share, ¼ of it)
        assert 2 * size <= store_cache.SHARES["exports"] * cap
        monkeypatch.setenv("P2PZ_CACHE_MAX_GB", repr(cap / 2**30))
        for names in refs:  # seven distinct libraries, more than 2 × size together
            r = c.get("/api/export", params={"names": names}, headers=AUTH)  # authorized: all of them cached
            assert r.status_code == 200 and r.headers["X-P2PZ-Cache"] == "miss" and r.content[:2] == b"PK"
        after = store_cache.usage(cache_dir())
        assert encodings.is_file() and after["encodings"] == before["encodings"]  # no other kind was evicted
        assert 1 <= after["exports"]["entries"] < len(refs) and after["exports"]["bytes"] <= 2 * size
        # another kind's write still evicts least recently used entries of every kind, exports included
        assert store_cache.evict(cache_dir(), limit=10 * size, keep=encodings) and encodings.is_file()
        assert _cache_entries("exports") == 0


def test_anonymous_exports_past_the_budget_are_served_but_not_cached(db, tmp_path, tiny_model, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where uncached builds go
    refs = ["cat-to-dog", "day-to-night", "kitten-to-puppy", "cat-to-dog,day-to-night"]
    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False, export_budget=2,
                                    export_budget_window_s=3600.0))) as c:
        got = [c.get("/api/export", params={"names": names}) for names in refs]  # anonymous
        assert [r.status_code for r in got] == [200] * 4
        assert [r.headers["X-P2PZ-Cache"] for r in got] == ["miss", "miss", "uncached", "uncached"]
        assert all(r.content[:2] == b"PK" and int(r.headers["Content-Length"]) == len(r.content) for r in got)
        assert _cache_entries("exports") == 2 and list(scratch.iterdir()) == []  # nothing left behind
        lib = tmp_path / "uncached.p2pz"
        lib.write_bytes(got[2].content)
        target = Registry.open(f"sqlite:///{tmp_path / 'target.db'}")
        assert target.import_(lib)["directions"] == ["kitten-to-puppy@1"]
        target.close()
        # a cached library is still served from the cache, and the token's holder is not held to the budget
        assert c.get("/api/export", params={"names": refs[0]}).headers["X-P2PZ-Cache"] == "hit"
        assert c.get("/api/export", params={"names": refs[2]}, headers=AUTH).headers["X-P2PZ-Cache"] == "miss"
        assert _cache_entries("exports") == 3
        assert c.get("/api/export", params={"names": refs[2]}).headers["X-P2PZ-Cache"] == "hit"


def test_an_uncached_export_that_fails_leaves_no_temporary_folder(tmp_path, tiny_model, monkeypatch):
    """An export built outside the cache (an anonymous caller past the budget) writes into a new temporary folder;
    when the build fails, the folder goes with it."""
    from p2pz.registry.exchange import archive

    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    reg.build_direction("cat", "dog", str(tiny_model), n=5)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(archive, "write_library", broken)
    with pytest.raises(OSError, match="disk full"):
        archive.cached_export(reg.db, ["cat-to-dog"], tmp_path / "exports", keep=lambda: False)
    assert list((tmp_path / "tmp").iterdir()) == []
    reg.close()
