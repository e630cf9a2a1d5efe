"""Δ_token through every exchange path (docs/algorithm.md §13): a ``.p2pz`` library (format 3: ``embedding/<i>/token``
with ``token_word`` and ``token_count``), a Hub repo (the embedding files' ``token``, the direction files'
``delta_token``) and another registry's ``p2pz serve``. What arrives is the same stored bytes, so Δ_token is compared
bit for bit; a library or repo whose token-aligned means do not add up is refused before anything is stored."""

import json

import huggingface_hub
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load, save

from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main

from .conftest import db_dump
from .test_library_integrity import _read, _write
from .test_hub import REPO, _cli, _metadata, _one_line_error, _replace, hub  # noqa: F401 - hub is a fixture

N = 20
PAIRS = ("cat-to-dog@1", "cat-to-dog@2", "day-to-night@1")


@pytest.fixture
def source(tmp_path, tiny_model):
    """Two pair directions (one scaled), a combination; every embedding with its token-aligned mean."""
    reg = Registry.open(f"sqlite:///{tmp_path / 'source.db'}")
    reg.build_direction("cat", "dog", str(tiny_model), n=N)
    reg.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.combine({"cat-to-dog@1": 1.0, "day-to-night": -0.5}, name="mix")
    for ref in PAIRS:  # the premise: the tiny banks contain their words
        assert reg.get(ref).token_delta.vector is not None, reg.get(ref).token_delta.reason
    yield reg
    reg.close()


@pytest.fixture
def library(source, tmp_path):
    path = tmp_path / "lib.p2pz"
    source.export(["mix", "cat-to-dog@2"], path)
    return path


def _same_token(a, b) -> None:
    """``b``'s Δ_token is ``a``'s: the same bytes, words and sentence counts."""
    ta, tb = a.token_delta, b.token_delta
    assert tb.vector is not None, tb.reason
    assert tb.vector.dtype == np.float32 and tb.vector.tobytes() == ta.vector.tobytes()
    assert (tb.word, tb.target_word, tb.sentences) == (ta.word, ta.target_word, ta.sentences)


def _as_version_2(manifest, tensors):
    """What p2pz wrote before format 3: no token fields, no token tensors."""
    old = json.loads(json.dumps(manifest))
    old["format_version"] = 2
    for e in old["embeddings"]:
        e.pop("token_word"), e.pop("token_count")
    return old, {k: v for k, v in tensors.items() if not k.endswith("/token")}


# --- .p2pz libraries -----------------------------------------------------------------------------------------

def test_export_then_import_keeps_delta_token_bit_for_bit(source, library, db_url):
    manifest, tensors = _read(library)
    assert manifest["format_version"] == 3
    for i, e in enumerate(manifest["embeddings"]):
        assert e["token_word"] == manifest["banks"][e["bank"]]["concept"] and e["token_count"] >= 1
        assert tensors[f"embedding/{i}/token"].shape == (manifest["encoders"][0]["hidden_size"],)
    fresh = Registry.open(db_url)
    assert fresh.import_(library)["added"]["directions"] == 4
    for ref in PAIRS:
        _same_token(source.get(ref), fresh.get(ref))
    assert fresh.get("cat-to-dog@1").token_delta.word == "cat"
    assert fresh.get("mix@1").token_delta.vector is None and fresh.get("mix@1").token_delta.reason
    dump = db_dump(db_url)
    assert fresh.import_(library)["added"]["embeddings"] == 0 and db_dump(db_url) == dump  # idempotent
    fresh.close()


def test_a_version_2_library_imports_without_delta_token_and_a_version_3_one_fills_it_in(source, library, tmp_path):
    old = _write(tmp_path / "v2.p2pz", *_as_version_2(*_read(library)))
    fresh = Registry.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert fresh.import_(old)["added"]["directions"] == 4
    tok = fresh.get("cat-to-dog@1").token_delta
    assert tok.vector is None and "no token-aligned mean" in tok.reason
    assert fresh.get("cat-to-dog@1").vector_numpy().tobytes() == source.get("cat-to-dog@1").vector_numpy().tobytes()
    # the same embeddings again, now with their token-aligned means: the stored rows gain them (fill-once)
    assert fresh.import_(library)["added"] == {"encoders": 0, "banks": 0, "embeddings": 0, "directions": 0,
                                               "students": 0}
    for ref in PAIRS:
        _same_token(source.get(ref), fresh.get(ref))
    fresh.close()


def _drop(name):
    return lambda m, t: t.pop(name)


def _reshape(name):
    return lambda m, t: t.update({name: t[name][:-1]})


def _nan(name):
    def edit(m, t):
        t[name] = t[name].copy()
        t[name][0] = np.nan
    return edit


def _fields(i, **values):
    return lambda m, t: m["embeddings"][i].update(values)


def _unset(i):
    return lambda m, t: [m["embeddings"][i].pop(k) for k in ("token_word", "token_count")]


@pytest.mark.parametrize("mutate,message", [
    (_drop("embedding/0/token"), "tensor 'embedding/0/token' is missing"),
    (_reshape("embedding/1/token"), "tensor embedding/1/token: expected shape (32,), got (31,)"),
    (_nan("embedding/0/token"), "tensor embedding/0/token: vector contains NaN or Inf"),
    (_unset(0), "tensor 'embedding/0/token' comes without its word and count (embeddings[0] has no token_word"),
    (_fields(0, token_count=0), "tensor 'embedding/0/token' comes without its word and count (embeddings[0] has "
                                "token_count 0)"),
    (_fields(0, token_count=None), "embeddings[0] gives token_word without token_count"),
    (_fields(0, token_word=None), "embeddings[0] gives token_count without token_word"),
    (_fields(0, token_count=-1), "embeddings[0].token_count"),
    (_fields(0, token_count="3"), "embeddings[0].token_count has the wrong type"),
    (lambda m, t: m.update(format_version=2), "embeddings[0] has unknown field(s) ['token_count', 'token_word'] "
                                              "(format_version 2 has none; 3 has)"),
])
def test_a_library_whose_token_means_do_not_add_up_is_refused(library, tmp_path, mutate, message):
    manifest, tensors = _read(library)
    mutate(manifest, tensors)
    bad = _write(tmp_path / "bad.p2pz", manifest, tensors)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = Registry.open(url)
    before = db_dump(url)
    with pytest.raises(RegistryError) as err:
        fresh.import_(bad)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert db_dump(url) == before
    fresh.close()


def test_the_cli_refuses_a_missing_token_tensor_in_one_line(library, tmp_path):
    manifest, tensors = _read(library)
    del tensors["embedding/2/token"]
    bad = _write(tmp_path / "bad.p2pz", manifest, tensors)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Registry.open(url).close()
    before = db_dump(url)
    r = CliRunner().invoke(main, ["--db", url, "import", str(bad)])
    _one_line_error(r, "invalid library", "embedding/2/token", "missing")
    assert db_dump(url) == before


# --- the Hub ---------------------------------------------------------------------------------------------------

def test_push_then_pull_keeps_delta_token_and_plain_safetensors_carry_it(hub, source, tmp_path):
    source.push(f"hf://{REPO}")
    files = hub.files(REPO)
    index = json.loads(files["p2pz.json"])
    assert index["format_version"] == 3
    assert all(e["token_word"] and e["token_count"] >= 1 and "token" in load(files[e["file"]])
               for e in index["embeddings"])
    d = source.get("cat-to-dog@2")
    path = "directions/cat-to-dog/2.safetensors"
    st = load(files[path])  # plain safetensors, no p2pz
    assert st["delta_token"].tobytes() == d.token_delta.vector.tobytes()
    meta = _metadata(files[path], tmp=hub)
    assert (meta["token_word"], meta["token_target_word"]) == ("cat", "dog")
    assert "delta_token" not in load(files["directions/mix/1.safetensors"])  # a combination has none
    assert 'd["delta_token"]' in files["README.md"].decode()
    target = Registry.open(f"sqlite:///{tmp_path / 'target.db'}")
    target.pull(f"hf://{REPO}")
    for ref in PAIRS:
        _same_token(source.get(ref), target.get(ref))
    target.close()


def _fresh_cache(monkeypatch, tmp_path, name):
    """A new Hub cache: the test Hub's ``tamper`` keeps the commit and ETag, so the old one would answer."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / name))


def test_a_hub_embedding_file_without_its_declared_token_is_refused(hub, source, tmp_path, monkeypatch):
    source.push(f"hf://{REPO}", ["cat-to-dog@1"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    path = index["embeddings"][0]["file"]
    st = load(hub.files(REPO)[path])
    del st["token"]
    _replace(hub, path, save(st, metadata=_metadata(hub.files(REPO)[path], tmp=hub)))
    db = f"sqlite:///{tmp_path / 'target.db'}"
    Registry.open(db).close()
    dump = db_dump(db)
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, path, "lacks the tensor 'token'", "p2pz.json declares")
    assert db_dump(db) == dump

    def undeclare(index):  # and a token the index does not declare
        for e in index["embeddings"]:
            e.pop("token_word"), e.pop("token_count")
    _replace(hub, path, _with_token(hub, path), edit_index=undeclare)
    _fresh_cache(monkeypatch, tmp_path, "hf-cache-2")
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, "holds a tensor 'token' that p2pz.json does not declare")
    assert db_dump(db) == dump


def _with_token(hub, path) -> bytes:
    st = load(hub.files(REPO)[path])
    st["token"] = np.ones(st["key"].shape, dtype=np.float32)
    return save(st)


def test_a_repo_pushed_before_format_3_gains_the_token_means_with_the_next_push(hub, source, tmp_path, monkeypatch):
    source.push(f"hf://{REPO}", ["cat-to-dog@1"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    for e in index["embeddings"]:  # rewrite the repo as an older p2pz pushed it
        st = load(hub.files(REPO)[e["file"]])
        del st["token"]
        _replace(hub, e["file"], save(st))
    index = _replace(hub, None, b"", edit_index=lambda ix: [
        ix.update(format_version=2), *[(e.pop("token_word"), e.pop("token_count")) for e in ix["embeddings"]]])
    old = Registry.open(f"sqlite:///{tmp_path / 'old.db'}")
    old.pull(f"hf://{REPO}")
    tok = old.get("cat-to-dog@1").token_delta
    assert tok.vector is None and tok.reason
    source.push(f"hf://{REPO}", ["cat-to-dog@1", "cat-to-dog@2"])  # same embeddings, a new version
    pushed = json.loads(hub.files(REPO)["p2pz.json"])
    assert pushed["format_version"] == 3 and all(e["token_count"] >= 1 for e in pushed["embeddings"])
    assert {e["file"] for e in index["embeddings"]} <= set(hub.commits(REPO)[-1].added)
    _fresh_cache(monkeypatch, tmp_path, "hf-cache-2")  # the rewritten files kept their ETags
    old.pull(f"hf://{REPO}")  # the stored embeddings gain them: Δ_token for @1 as well
    for ref in ("cat-to-dog@1", "cat-to-dog@2"):
        _same_token(source.get(ref), old.get(ref))
    old.close()


# --- registry to registry --------------------------------------------------------------------------------------

def test_a_pull_from_another_registry_keeps_delta_token(source, tmp_path, tiny_model, monkeypatch):
    from .test_remote import _serve

    monkeypatch.delenv("P2PZ_TOKEN", raising=False)
    with _serve(f"sqlite:///{tmp_path / 'source.db'}", tmp_path, tiny_model, "a") as port, \
            Registry.open(f"sqlite:///{tmp_path / 'here.db'}") as here:
        here.pull(f"http://127.0.0.1:{port}", ["cat-to-dog", "mix"])
    with Registry.open(f"sqlite:///{tmp_path / 'here.db'}") as here:
        for ref in PAIRS:
            _same_token(source.get(ref), here.get(ref))
        assert here.get("mix@1").token_delta.vector is None
