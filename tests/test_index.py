"""Search index kinds (store.index): approximate indexes re-rank exactly, find what exact search finds, and the
kind asked for survives restarts; ``auto`` switches kind when a registry crosses its threshold."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.store.index import DirectionIndex, default_params, normalize, resolve_kind


def clustered(n, d=768, centres=400, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    return c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def keys20k():
    keys = clustered(20_000)
    ids = np.random.default_rng(1).permutation(20_000).astype(np.int64) * 3 + 7  # unsorted, sparse ids
    return ids, keys


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivf-sq8", "hnsw"])
def test_approximate_search_finds_what_exact_search_finds_with_exact_scores(keys20k, kind):
    ids, keys = keys20k
    approx = DirectionIndex.build("f", 768, 1, ids, keys, kind=kind)
    exact = DirectionIndex.build("f", 768, 1, ids, keys, kind="exact")
    assert approx.kind == kind and exact.kind == "exact" and approx.size == 20_000
    rng = np.random.default_rng(2)
    queries = keys[rng.integers(0, len(keys), 100)] + 0.05 * rng.standard_normal((100, 768)).astype(np.float32)
    by_id = dict(zip(ids.tolist(), normalize(keys)))
    recalls = []
    for q in queries:
        a, e = approx.search(q, 10), exact.search(q, 10)
        recalls.append(len({i for i, _ in a} & {i for i, _ in e}) / 10)
        qn = normalize(q[None])[0]
        for i, score in a:  # every score is the exact cosine of the stored key
            assert score == pytest.approx(float(by_id[i] @ qn), abs=1e-5)
        assert [s for _, s in a] == sorted((s for _, s in a), reverse=True)
    print(f"{kind}: recall@10 {np.mean(recalls):.4f} on 20k clustered keys")
    assert np.mean(recalls) >= 0.99


def test_kinds_and_parameters():
    assert resolve_kind("auto", 49_999) == "exact" and resolve_kind("auto", 50_000) == "ivf-sq8"
    assert resolve_kind("auto", 10, threshold=5) == "ivf-sq8"
    with pytest.raises(ValueError, match="unknown index kind"):
        resolve_kind("lsh", 10)
    assert default_params("ivf-sq8", 100_000)["nlist"] == 632 and default_params("ivf-sq8", 10)["nlist"] == 1
    assert default_params("ivf-sq8", 1_000_000)["nprobe"] <= 64
    empty = DirectionIndex.build("f", 8, 1, np.zeros(0, np.int64), np.zeros((0, 8), np.float32), kind="hnsw")
    assert empty.kind == "exact" and empty.search(np.ones(8), 3) == []


def test_a_saved_approximate_index_loads_back_memory_mapped(tmp_path, keys20k):
    ids, keys = keys20k
    built = DirectionIndex.build("f", 768, 5, ids[:3000], keys[:3000], kind="ivf-sq8")
    built.save(tmp_path)
    loaded = DirectionIndex.load(tmp_path, "f", 768, 5)
    assert loaded.kind == "ivf-sq8" and loaded.params == built.params and isinstance(loaded.keys, np.memmap)
    q = keys[17]
    assert loaded.search(q, 5) == built.search(q, 5)
    assert DirectionIndex.load(tmp_path, "f", 768, 6) is None  # stale generation: rebuilt by the caller
    (tmp_path / "f.keys.npy").write_bytes(b"truncated")
    assert DirectionIndex.load(tmp_path, "f", 768, 5) is None  # a damaged cache is a miss, never an error


def _registry(tmp_path, tiny_model, pairs):
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    for a, b in pairs:
        reg.build_direction(a, b, str(tiny_model), n=4)
    return reg


def test_the_kind_asked_for_survives_restarts_and_staleness(tmp_path, tiny_model):
    reg = _registry(tmp_path, tiny_model, [("cat", "dog"), ("day", "night"), ("sea", "lake")])
    fp = reg.get("cat-to-dog").encoder
    built = reg.rebuild_index("hnsw")
    assert built[fp]["kind"] == "hnsw" and built[fp]["requested"] == "hnsw" and built[fp]["size"] == 3
    exact_scores = [h.score for h in reg.search("cat-to-dog", k=3)]
    reg.close()
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")  # a restart
    assert reg.indexes.index(fp).kind == "hnsw"
    assert [h.score for h in reg.search("cat-to-dog", k=3)] == pytest.approx(exact_scores, abs=1e-5)
    reg.build_direction("sun", "moon", str(tiny_model), n=4)  # the index is now stale: rebuilt, same kind
    assert reg.indexes.index(fp).kind == "hnsw" and reg.indexes.index(fp).size == 4
    assert reg.rebuild_index()[fp]["kind"] == "hnsw"  # a plain rebuild keeps the kind asked for
    assert reg.rebuild_index("auto")[fp]["kind"] == "exact"
    reg.close()


def test_auto_switches_kind_when_the_registry_crosses_the_threshold(tmp_path, tiny_model):
    reg = _registry(tmp_path, tiny_model, [("cat", "dog"), ("day", "night")])
    reg.indexes.auto_threshold = 3
    fp = reg.get("cat-to-dog").encoder
    assert reg.rebuild_index()[fp]["kind"] == "exact"
    reg.build_direction("sea", "lake", str(tiny_model), n=4)
    index = reg.indexes.index(fp)  # stale → rebuilt; 3 keys cross the threshold
    assert index.kind == "ivf-sq8" and index.requested == "auto"
    hits = reg.search("day-to-night", k=3)
    assert hits[0].direction.ref == "day-to-night@1" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    reg.close()


def test_index_cli_rebuild_and_bench(tmp_path, tiny_model):
    _registry(tmp_path, tiny_model, [("cat", "dog"), ("day", "night"), ("sea", "lake"), ("sun", "moon")]).close()
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db, "index", "rebuild", "--kind", "ivf-sq8"])
    assert res.exit_code == 0 and "4 directions indexed, ivf-sq8 (nlist 1, nprobe 1, rerank 64)" in res.output
    res = runner.invoke(main, ["--db", db, "index", "bench", "--queries", "20", "--json"])
    assert res.exit_code == 0, res.output
    (info,) = json.loads(res.stdout).values()
    assert info["kind"] == "ivf-sq8" and info["recall_at_k"] == 1.0 and info["queries"] == 20
    assert info["p50_ms"] > 0 and info["exact_p50_ms"] > 0
    table = runner.invoke(main, ["--db", db, "index", "bench", "--queries", "5"])
    assert table.exit_code == 0 and "recall@10" in table.output
    bad = runner.invoke(main, ["--db", db, "index", "rebuild", "--kind", "lsh"])
    assert bad.exit_code == 2
