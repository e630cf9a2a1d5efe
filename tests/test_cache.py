"""The cache folder: kinds and sizes (`p2pz cache info`), clearing, the LRU cap, --no-cache and --cache-maps."""

import json
import os
import time

import pytest
from click.testing import CliRunner

from p2pz.registry.cli import main
from p2pz.store import cache as store_cache
from p2pz.store.db import StoreError


def _entry(root, kind, name, size, age):
    path = root / kind / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_lru_eviction_keeps_the_recently_used(tmp_path):
    old = _entry(tmp_path, "inversions", "aa1", 4000, age=300)
    used = _entry(tmp_path, "inversions", "bb2", 4000, age=200)
    mid = _entry(tmp_path, "llm", "cc3", 4000, age=100)
    new = _entry(tmp_path, "inversions", "dd4", 4000, age=0)
    store_cache.touch(used)  # read just now: the most recently used
    removed = store_cache.evict(tmp_path, limit=8000, keep=new)
    assert [e.path for e in removed] == [old, mid]
    assert used.exists() and new.exists() and not old.exists() and not mid.exists()
    assert store_cache.usage(tmp_path)["inversions"] == {"entries": 2, "bytes": 8000}


def test_the_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("P2PZ_CACHE_MAX_GB", "0.5")
    assert store_cache.max_bytes() == 2**29
    monkeypatch.setenv("P2PZ_CACHE_MAX_GB", "lots")
    with pytest.raises(StoreError, match="P2PZ_CACHE_MAX_GB"):
        store_cache.max_bytes()
    monkeypatch.delenv("P2PZ_CACHE_MAX_GB")
    assert store_cache.max_bytes() == 20 * 2**30


def _edit(db, image, out, *extra):
    res = CliRunner().invoke(main, ["--db", db, "-q", "edit", str(image), "--direction", "cat-to-dog", "--steps", "2",
                                    "--caption", "a cat", "--out", str(out), "--force", *extra])
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_cli_cache_info_clear_no_cache_and_cache_maps(tmp_path, tiny_model, home, monkeypatch):
    from PIL import Image

    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model), "-n",
                                "5"]).exit_code == 0
    Image.new("RGB", (40, 40), (9, 99, 199)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 40), (199, 9, 99)).save(tmp_path / "b.png")

    def info():
        return json.loads(runner.invoke(main, ["cache", "info", "--json"]).stdout)

    assert info()["kinds"]["encodings"]["entries"] == 2  # the banks' sentence statistics, from the build
    _edit(db, tmp_path / "a.png", tmp_path / "out", "--no-cache")
    assert info()["kinds"]["inversions"]["entries"] == 0 and info()["kinds"]["maps"]["entries"] == 0
    _edit(db, tmp_path / "a.png", tmp_path / "out")  # default: the inversion is cached, the maps are not
    kinds = info()["kinds"]
    assert kinds["inversions"]["entries"] == 1 and kinds["maps"]["entries"] == 0
    _edit(db, tmp_path / "a.png", tmp_path / "out", "--cache-maps")
    kinds = info()["kinds"]
    assert kinds["maps"]["entries"] == 1 and kinds["maps"]["bytes"] > kinds["inversions"]["bytes"]
    res = runner.invoke(main, ["cache", "clear", "--kind", "maps", "--json"])
    assert json.loads(res.stdout)["entries"] == 1
    assert info()["kinds"]["maps"]["entries"] == 0 and info()["kinds"]["inversions"]["entries"] == 1
    # a cap smaller than two inversions keeps only the newest
    monkeypatch.setenv("P2PZ_CACHE_MAX_GB", str(1.5 * info()["kinds"]["inversions"]["bytes"] / 2**30))
    _edit(db, tmp_path / "b.png", tmp_path / "out")
    assert info()["kinds"]["inversions"]["entries"] == 1
    bad = runner.invoke(main, ["--db", db, "edit", str(tmp_path / "a.png"), "--direction", "cat-to-dog",
                               "--no-cache", "--cache-maps", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "--cache-maps needs the cache" in bad.output
