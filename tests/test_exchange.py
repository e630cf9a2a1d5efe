"""Libraries (.p2pz) and official .pt embeddings."""

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from tests.numerics import assert_close_relative
from p2pz.registry import Registry, RegistryError

from .conftest import db_dump

N = 40


@pytest.fixture
def lib(reg, tiny_model, tmp_path):
    reg.build_direction("cat", "dog", str(tiny_model), n=N, tags=["animals"])
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.combine({"cat-to-dog": 1.0, "day-to-night": -0.25}, name="mix")
    path = tmp_path / "lib.p2pz"
    info = reg.export(["mix", "cat-to-dog"], path)
    assert info["directions"] == 3 and info["embeddings"] == 4 and info["banks"] == 4
    return path


def test_round_trip_into_a_fresh_registry_is_exact_and_idempotent(reg, lib, tmp_path):
    fresh = Registry.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    out = fresh.import_(lib)
    assert out["added"] == {"encoders": 1, "banks": 4, "embeddings": 4, "directions": 3, "students": 0}
    for ref in ("cat-to-dog@1", "day-to-night@1", "mix@1"):
        a, b = reg.get(ref), fresh.get(ref)
        assert a.vector_numpy().tobytes() == b.vector_numpy().tobytes()
        assert a.key.tobytes() == b.key.tobytes()
        assert (a.encoder, a.source, a.target, a.kind) == (b.encoder, b.source, b.target, b.kind)
    assert fresh.get("cat-to-dog").tags == ["animals"]
    assert fresh.bank("cat@1").sentences == reg.bank("cat@1").sentences
    dump = db_dump(f"sqlite:///{tmp_path / 'fresh.db'}")
    again = fresh.import_(lib)
    assert again["added"] == {"encoders": 0, "banks": 0, "embeddings": 0, "directions": 0, "students": 0}
    assert db_dump(f"sqlite:///{tmp_path / 'fresh.db'}") == dump
    assert [h.direction.name for h in fresh.search("cat-to-dog", k=1)] == ["cat-to-dog"]


def _rewrite(src, dst, manifest_fn=None, extra=None):
    with zipfile.ZipFile(src) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        tensors = zf.read("tensors.safetensors")
    if manifest_fn:
        manifest_fn(manifest)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("tensors.safetensors", tensors)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dst


def test_mismatched_encoder_claims_are_refused(reg, lib, tmp_path, tiny_model_b):
    reg.build_direction("cat", "dog", str(tiny_model_b), n=N, name="cat-to-dog-b")
    other = reg.get("cat-to-dog-b").encoder

    def claim_other(manifest):
        enc = dict(manifest["encoders"][0], fingerprint=other)
        manifest["encoders"].append(enc)
        manifest["directions"][0]["encoder"] = other

    bad = _rewrite(lib, tmp_path / "bad.p2pz", claim_other)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = Registry.open(url)
    before = db_dump(url)
    with pytest.raises(RegistryError, match="claims encoder"):
        fresh.import_(bad)
    assert db_dump(url) == before


@pytest.mark.parametrize("mutate,message", [
    (lambda m: m["banks"][0].update(sentences=["tampered"]), "sha256 does not match"),
    (lambda m: m.update(format_version=99), "format_version"),
    (lambda m: m["directions"][0].update(colour="red"), "unknown field"),
    (lambda m: m["directions"][0].pop("encoder"), "lacks the field"),
    (lambda m: m["directions"][0].update(scale="big"), "wrong type"),
    (lambda m: m["embeddings"][0].update(bank=99), "points nowhere"),
    (lambda m: m["encoders"][0].update(hidden_size=31), "expected shape"),
])
def test_malformed_manifests_are_refused(lib, tmp_path, mutate, message):
    bad = _rewrite(lib, tmp_path / "bad.p2pz", mutate)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = Registry.open(url)
    before = db_dump(url)
    with pytest.raises(RegistryError, match=message):
        fresh.import_(bad)
    assert db_dump(url) == before


def test_unsafe_member_paths_are_refused(lib, tmp_path):
    for name in ("../evil.txt", "/etc/evil", "a/../../evil"):
        bad = _rewrite(lib, tmp_path / "bad.p2pz", extra={name: b"x"})
        with pytest.raises(RegistryError, match="unsafe path"):
            Registry.open(f"sqlite:///{tmp_path / 'f.db'}").import_(bad)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_not_a_library(tmp_path):
    reg = Registry.open(f"sqlite:///{tmp_path / 'f.db'}")
    junk = tmp_path / "junk.p2pz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(RegistryError, match="not a zip"):
        reg.import_(junk)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(RegistryError, match="expected members"):
        reg.import_(tmp_path / "other.zip")
    bomb = tmp_path / "bomb.p2pz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", b" " * (50 << 20))
        zf.writestr("tensors.safetensors", b"")
    with pytest.raises(RegistryError, match="zip bomb"):
        reg.import_(bomb)


def test_import_pt_reads_official_embeddings(reg, tiny_model, tmp_path):
    g = torch.Generator().manual_seed(0)
    cat = torch.randn(1, 77, 32, generator=g)
    text = torch.randn(1, 77, 32, generator=g).half()  # the shipped horse/zebra files are fp16
    torch.save(cat, tmp_path / "cat.pt")
    torch.save(text, tmp_path / "text.pt")  # the reference's .strip(".txt") bug would call this "e"
    d = reg.import_pt(tmp_path / "cat.pt", tmp_path / "text.pt", model=str(tiny_model))
    assert d.name == "cat-to-text" and d.source == "cat@1" and d.target == "text@1"
    expected = text.float().numpy() - cat.numpy()
    assert d.vector_numpy().tobytes() == expected.astype(np.float32).tobytes()
    assert reg.import_pt(tmp_path / "cat.pt", tmp_path / "text.pt", model=str(tiny_model)).version == 1
    bank = torch.randn(5, 77, 32, generator=g)  # a raw bank [N, 77, D] is averaged
    torch.save(bank, tmp_path / "dog.pt")
    d2 = reg.import_pt(tmp_path / "cat.pt", tmp_path / "dog.pt", name="c2d", model=str(tiny_model))
    # our mean and this one: the same float64 sum, perhaps in another order: rounding, relative (tests/numerics.py)
    assert_close_relative(d2.vector_numpy(), (bank.double().mean(0, keepdim=True).float() - cat).numpy(), rel=1e-6)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_import_pt_refuses_pickled_objects_and_wrong_shapes(reg, tiny_model, tmp_path, db_url, capsys):
    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(), f)
    torch.save({"x": Evil()}, tmp_path / "evil2.pt")
    torch.save(torch.zeros(1, 77, 31), tmp_path / "narrow.pt")
    torch.save(torch.zeros(77, 32), tmp_path / "flat.pt")
    before = db_dump(db_url)
    for bad, msg in [("evil.pt", "weights_only"), ("evil2.pt", "weights_only"), ("narrow.pt", "D=31"),
                     ("flat.pt", "shape"), ("missing.pt", "does not exist")]:
        with pytest.raises(RegistryError, match=msg):
            reg.import_pt(tmp_path / "ok.pt", tmp_path / bad, model=str(tiny_model))
    assert "pwned" not in capsys.readouterr().out
    assert db_dump(db_url) == before


def test_bulk_inserts_follow_the_versioning_rules(reg, tiny_model):
    """store.repository.insert_directions (library imports) = insert_direction's rules, many at a time."""
    from p2pz.store import repository as repo

    d = reg.build_direction("cat", "dog", str(tiny_model), n=5)
    with reg.db.read() as s:
        row = repo.direction_row(s, "cat-to-dog", 1)
        base = {"encoder_id": row.encoder_id, "source_id": row.source_id, "target_id": row.target_id}
    content = lambda scale: repo.direction_content(  # noqa: E731
        "pair", d.encoder, source=("cat", reg.bank("cat").sha256), target=("dog", reg.bank("dog").sha256),
        scale=scale)
    key = d.key
    items = [{"name": "cat-to-dog", "content": content(1.0), "key": key, **base},  # stored: version 1, not new
             {"name": "cat-to-dog", "content": content(2.0), "key": 2 * key, "scale": 2.0, **base},  # new: v2
             {"name": "cat-to-dog", "content": content(2.0), "key": 2 * key, "scale": 2.0, **base},  # same again
             {"name": "other", "content": content(1.0), "key": key, "tags": ["b", "a"], **base}]  # new name: v1
    generation = reg.generation()
    with reg.db.write() as s:
        out = repo.insert_directions(s, items)
    assert [(o.name, o.version, o.created) for o in out] == [("cat-to-dog", 1, False), ("cat-to-dog", 2, True),
                                                             ("cat-to-dog", 2, True), ("other", 1, True)]
    assert out[1].id == out[2].id and reg.generation() == generation + 1
    assert reg.get("other").tags == ["a", "b"] and reg.get("cat-to-dog@2").scale == 2.0
    assert np.allclose(reg.get("cat-to-dog@2").key, 2 * key)
    assert [h.direction.ref for h in reg.search("other", k=3)][0] in ("other@1", "cat-to-dog@1", "cat-to-dog@2")
    with reg.db.write() as s:
        again = repo.insert_directions(s, items)
    assert not any(o.created for o in again) and reg.generation() == generation + 1


def test_the_export_cache_key_needs_no_student_weights_and_follows_the_content(reg, lib, tmp_path):
    from safetensors.numpy import save

    from p2pz.registry.exchange.archive import cached_export, collect_library, library_key

    weights = save({"w": np.arange(1000, dtype=np.float32)})
    reg.store_student("cat-to-dog", config={"size": 32}, weights=weights, dataset_sha256="0" * 64, params={},
                      metrics={"lpips": 0.2})
    light = collect_library(reg.db, ["mix", "cat-to-dog"], weights=False)
    full = collect_library(reg.db, ["mix", "cat-to-dog"])
    assert "student/0/weights" in full[1] and "student/0/weights" not in light[1]
    assert light[0].students[0].weights_bytes == len(weights)  # measured by the database, not read
    assert library_key(*light) == library_key(*full)  # what a lookup computes is what a build stores under
    root = tmp_path / "exports"
    built = []
    path, hit = cached_export(reg.db, ["mix", "cat-to-dog"], root, build=lambda: _recording(built))
    assert not hit and built == [1] and path.name == f"{library_key(*full)}.p2pz"
    again, hit = cached_export(reg.db, ["mix", "cat-to-dog"], root, build=lambda: _recording(built))
    assert hit and again == path and built == [1]  # a hit builds nothing
    fresh = Registry.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert fresh.import_(path)["added"]["students"] == 1
    fresh.close()
    reg.tag("cat-to-dog@1", "pets")  # metadata is content: a new key
    tagged = library_key(*collect_library(reg.db, ["mix", "cat-to-dog"], weights=False))
    assert tagged != library_key(*full)
    # the same library whichever order names it (a combination's components come first)...
    assert library_key(*collect_library(reg.db, ["cat-to-dog", "mix"])) == tagged
    assert library_key(*collect_library(reg.db, ["cat-to-dog"])) != tagged  # ...and another set is another one
    # many refs are looked up inside the build slot, a few before it
    from p2pz.registry.exchange import archive

    inside = []
    monkey = pytest.MonkeyPatch()
    monkey.setattr(archive, "CHEAP_LOOKUP_REFS", 1)
    try:
        _, hit = cached_export(reg.db, ["mix", "cat-to-dog"], root, build=lambda: _recording(inside))
    finally:
        monkey.undo()
    assert not hit and inside == [1]
    _, hit = cached_export(reg.db, ["mix", "cat-to-dog"], root, build=lambda: _recording(inside))
    assert hit and inside == [1]  # built above under the tagged key: a hit, no slot


def _recording(calls):
    import contextlib

    calls.append(1)
    return contextlib.nullcontext()
