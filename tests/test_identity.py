"""Identity across registries (issue #23): content hashes as addresses, version numbers kept by imports, origins,
and edits whose provenance finds the same vector in another registry."""

import json

import pytest
from click.testing import CliRunner

from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main

N = 20


def _two_versions(reg, tiny_model):
    """cat-to-dog@1 and @2 of different content (scales 1 and 2)."""
    one = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    two = reg.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    assert (one.version, two.version) == (1, 2) and one.content_sha256 != two.content_sha256
    return one, two


def _open(tmp_path, name):
    return Registry.open(f"sqlite:///{tmp_path / name}")


def test_an_import_keeps_the_origin_version_numbers_and_records_where_it_came_from(reg, tiny_model, tmp_path):
    one, two = _two_versions(reg, tiny_model)
    lib = tmp_path / "lib.p2pz"
    reg.export(["cat-to-dog@2", "cat-to-dog@1"], lib)  # @2 first: a renumbering import would swap them
    other = _open(tmp_path, "b.db")
    out = other.import_(lib)
    assert sorted(out["directions"]) == ["cat-to-dog@1", "cat-to-dog@2"] and out["renumbered"] == []
    for mine in (one, two):
        theirs = other.get(mine.ref)
        assert theirs.content_sha256 == mine.content_sha256
        assert theirs.vector_numpy().tobytes() == mine.vector_numpy().tobytes()
        assert theirs.origin == {"source": "lib.p2pz", "revision": None, "version": mine.version, "upstream": None}
    assert reg.get("cat-to-dog").origin is None  # made here


def test_a_taken_version_is_renumbered_and_said_and_known_content_keeps_its_version(reg, tiny_model, tmp_path):
    one, two = _two_versions(reg, tiny_model)
    lib = tmp_path / "lib.p2pz"
    reg.export(["cat-to-dog@1", "cat-to-dog@2"], lib)
    other = _open(tmp_path, "b.db")
    own = other.build_direction("cat", "dog", str(tiny_model), n=N, scale=3.0)  # other content takes @1 there
    theirs_two = other.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)  # the content of @2, as @2
    assert own.version == 1 and theirs_two.content_sha256 == two.content_sha256
    out = other.import_(lib)
    assert out["renumbered"] == [{"name": "cat-to-dog", "from": 1, "to": 3, "content_sha256": one.content_sha256,
                                  "reason": "version taken by other content"}]
    assert other.get("cat-to-dog@3").content_sha256 == one.content_sha256
    assert other.get("cat-to-dog@1").content_sha256 == own.content_sha256  # nothing of its own moved


def test_a_direction_pulled_through_two_hops_keeps_its_identity(reg, tiny_model, tmp_path):
    _, two = _two_versions(reg, tiny_model)
    hop1, hop2 = tmp_path / "a.p2pz", tmp_path / "b.p2pz"
    reg.export(["cat-to-dog@2"], hop1)
    b = _open(tmp_path, "b.db")
    b.import_(hop1)
    b.export(["cat-to-dog@2"], hop2)
    c = _open(tmp_path, "c.db")
    c.import_(hop2, source="https://b.example")
    got = c.get(f"sha256:{two.content_sha256[:12]}")
    assert got.ref == "cat-to-dog@2" and got.vector_numpy().tobytes() == two.vector_numpy().tobytes()
    assert got.origin == {"source": "https://b.example", "revision": None, "version": 2,
                          "upstream": {"source": "a.p2pz", "revision": None, "version": 2, "upstream": None}}


def test_content_hash_refs_resolve_everywhere_and_fail_in_one_line(reg, tiny_model, tmp_path, db_url):
    one, two = _two_versions(reg, tiny_model)
    assert reg.get(f"sha256:{two.content_sha256}").ref == "cat-to-dog@2"
    assert reg.get(f"sha256:{one.content_sha256[:12].upper()}").ref == "cat-to-dog@1"
    with pytest.raises(RegistryError, match="no direction has content hash"):
        reg.get("sha256:" + "0" * 12)
    r = CliRunner().invoke(main, ["--db", db_url, "direction", "show", f"sha256:{two.content_sha256[:16]}", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ref"] == "cat-to-dog@2"
    r = CliRunner().invoke(main, ["--db", db_url, "direction", "show", "sha256:abc"])  # too short: a bad name
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1


def test_an_edit_records_the_content_hash_and_another_registry_finds_the_same_vector(reg, tiny_model, tmp_path):
    from p2pz.editor.batch import read_provenance

    _, two = _two_versions(reg, tiny_model)
    lib = tmp_path / "lib.p2pz"
    reg.export(["cat-to-dog@2"], lib)
    other = _open(tmp_path, "b.db")
    other.build_direction("cat", "dog", str(tiny_model), n=N, scale=3.0)  # takes @1 there; the import keeps @2
    other.import_(lib)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'b.db'}", "generate", "a cat", "--direction",
                                  "cat-to-dog@2", "--model", str(tiny_model), "--steps", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    prov = read_provenance(next(p for p in out.glob("*__cat-to-dog@2.png")))
    assert prov["direction_sha256"] == two.content_sha256
    assert prov["direction_origin"] == {"source": "lib.p2pz", "revision": None, "version": 2}
    assert reg.get("sha256:" + prov["direction_sha256"]).vector_numpy().tobytes() == two.vector_numpy().tobytes()
