"""What an import may not change (issue #35): a stored encoder is never re-declared, no tensor of the wrong size is
stored, ``p2pz db check`` finds and repairs a registry broken that way before; students keep ``deprecated``
across libraries and the Hub, under a format version that older readers refuse."""

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load, save
from sqlalchemy import insert

from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main
from p2pz.registry.exchange import hub as hub_mod
from p2pz.registry.web import create_app
from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.db import StoreError
from p2pz.store.vectors import to_bytes

from .conftest import db_dump
from .test_hub import REPO, hub  # noqa: F401 (hub is a fixture)
from .test_web_api import AUTH, Client, settings

N = 20


@pytest.fixture
def lib(tmp_path, tiny_model):
    """A registry holding the tiny encoder (and two pairs and their mix), and its library."""
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    reg = Registry.open(url)
    reg.build_direction("cat", "dog", str(tiny_model), n=N, tags=["animals"])
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.combine({"cat-to-dog": 1.0, "day-to-night": -0.25}, name="mix")
    path = tmp_path / "lib.p2pz"
    reg.export(["mix"], path)
    yield reg, url, path
    reg.close()


def _read(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json")), load(zf.read("tensors.safetensors"))


def _write(path, manifest, tensors):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("tensors.safetensors", save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    return path


def _redeclare(src, dst, **changes):
    """``src`` with its encoder stated with ``changes`` and tensors shaped to match (a library consistent in itself),
    its directions renamed so that none is already stored."""
    manifest, tensors = _read(src)
    enc = manifest["encoders"][0]
    enc.update(changes)
    for d in manifest["directions"]:
        d["name"] = "evil-" + d["name"]
    width = enc.get("key_size") or enc["hidden_size"]
    for name, t in tensors.items():
        if name.endswith("/key"):
            tensors[name] = t[:width]
        elif name.endswith("/mean"):
            tensors[name] = t[:, :enc["max_length"], :enc["hidden_size"]]
        elif name.endswith("/token"):  # the token-aligned mean [D] (format 3)
            tensors[name] = t[:enc["hidden_size"]]
    return _write(dst, manifest, tensors)


@pytest.mark.parametrize("field,value", [
    ("key_size", 16), ("max_length", 10), ("hidden_size", 31), ("family", "sdxl"), ("architecture", "EvilModel"),
    ("pad_id", 1), ("parts", [{"subfolder": "text_encoder", "fingerprint": "0" * 64, "architecture": "X",
                               "hidden_size": 32}]),
])
def test_an_import_may_not_redeclare_a_stored_encoder(lib, tmp_path, field, value):
    reg, url, path = lib
    bad = _redeclare(path, tmp_path / "evil.p2pz", **{field: value})
    before = db_dump(url)
    with pytest.raises(RegistryError) as err:
        reg.import_(bad)
    msg = str(err.value)
    assert "\n" not in msg and f"{field}={value!r}"[:40] in msg and "nothing was stored" in msg
    stored = _read(path)[0]["encoders"][0]  # what the registry stores: the library came from it
    stored["key_size"] = stored["key_size"] or stored["hidden_size"]  # None reads "as wide as D"
    assert f"{field}={stored[field]!r}"[:40] in msg.split("this registry stores it")[1]
    assert db_dump(url) == before
    assert [h.direction.name for h in reg.search("cat-to-dog", k=1)] == ["cat-to-dog"]


def test_the_store_refuses_tensors_of_the_wrong_size(lib):
    """Whatever the caller checked, no key or embedding of another size than its encoder's lands."""
    reg, url, _ = lib
    with reg.db.read() as s:
        row = repo.direction_row(s, "cat-to-dog", 1)
        ids = {"encoder_id": row.encoder_id, "source_id": row.source_id, "target_id": row.target_id}
        content = repo.direction_content("pair", row.encoder.fingerprint, source=("a", "1"), target=("b", "2"))
    short = np.ones(16, np.float32)

    def embedding(s):
        bank, _ = repo.insert_bank(s, concept="owl", sha256="f" * 64, generator="templates", params={},
                                   sentences=["an owl"])
        repo.insert_embedding(s, bank_id=bank.id, encoder_id=ids["encoder_id"], mean=np.ones((1, 10, 32), np.float32),
                              key=np.ones(32, np.float32), key_kind="pooler")

    before = db_dump(url)
    for write in (lambda s: repo.insert_directions(s, [{"name": "evil", "content": content, "key": short, **ids}]),
                  lambda s: repo.insert_direction(s, name="evil", content=content, key=short, **ids),
                  embedding):
        with pytest.raises(StoreError, match=r"has shape \[.*\] but encoder \w+ makes \[.*nothing was stored"):
            with reg.db.write() as s:
                write(s)
    assert db_dump(url) == before


def test_an_upload_to_post_api_import_may_not_redeclare_the_encoder(lib, tmp_path, tiny_model):
    reg, url, path = lib
    bad = _redeclare(path, tmp_path / "evil.p2pz", key_size=16)
    before = db_dump(url)
    with Client(create_app(settings(url, tmp_path, tiny_model))) as c:
        r = c.post("/api/import", files={"file": ("evil.p2pz", bad.read_bytes(), "application/zip")}, headers=AUTH)
        assert r.status_code == 400 and "key_size=16" in r.json()["error"] and "key_size=32" in r.json()["error"]
    assert db_dump(url) == before


# --- p2pz db check ---------------------------------------------------------------------------------------------

def _break_the_old_way(reg):
    """The rows an import re-declaring the tiny encoder (key_size 16, max_length 10) stored before encoders were
    compared field by field: a direction with a 16-wide key, an embedding of 10 tokens and a direction built on it,
    a combination of the first, a student and an evaluation of it. Written as the old import wrote them, with
    plain inserts (today's repository refuses them)."""
    owl = reg.make_bank("owl", n=5)
    with reg.db.write() as s:
        good = repo.direction_row(s, "cat-to-dog", 1)
        enc, src, tgt = good.encoder_id, good.source_id, good.target_id
        bank = repo.bank_row(s, "owl", owl.version)
        emb = s.execute(insert(m.Embedding).returning(m.Embedding.id), [{
            "bank_id": bank.id, "encoder_id": enc, "mean": to_bytes(np.ones((1, 10, 32), np.float32)),
            "key": to_bytes(np.ones(32, np.float32)), "key_kind": "pooler"}]).scalar_one()

        def direction(name, key, **kw):
            row = {"name": name, "version": 1, "kind": "pair", "encoder_id": enc, "source_id": src,
                   "target_id": tgt, "scale": 1.0, "components": None, "content_sha256": f"{len(name):064x}",
                   "tags": [], "note": None, "deprecated": False, "created_at": m.utcnow(), "origin": None, **kw}
            rid = s.execute(insert(m.Direction).returning(m.Direction.id), [row]).scalar_one()
            s.execute(insert(m.DirectionKey), [{"direction_id": rid, "key": to_bytes(key)}])
            return rid

        short = direction("evil", np.ones(16, np.float32))
        direction("evil-owl", np.ones(32, np.float32), target_id=emb)
        direction("evil-mixed", np.ones(32, np.float32), kind="combination", source_id=None, target_id=None,
                  components=[{"id": good.id, "name": "cat-to-dog", "version": 1, "weight": 1.0},
                              {"id": short, "name": "evil", "version": 1, "weight": 1.0}])
        weights = save({"w": np.ones(3, np.float32)})
        s.add(m.Student(direction_id=short, version=1, config={}, weights=weights, weights_sha256="a" * 64,
                        dataset_sha256="0" * 64, params={}, metrics={}))
        s.add(m.Evaluation(run_id="r1", direction_id=short, metric="clip_direction", value=0.1, n_images=1,
                           params={}))
        repo.bump_generation(s)


def test_db_check_finds_a_registry_broken_by_an_old_import_and_repair_makes_it_work(reg, db_url, tiny_model, tmp_path):
    reg.build_direction("cat", "dog", str(tiny_model), n=N, tags=["animals"])
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.combine({"cat-to-dog": 1.0, "day-to-night": -0.25}, name="mix")
    _break_the_old_way(reg)
    with pytest.raises(RegistryError, match="shape"):  # what the issue saw: the whole encoder unusable
        reg.search("cat-to-dog", k=3)
    with pytest.raises(RegistryError):
        reg.export(["evil-mixed"], tmp_path / "x.p2pz")
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db_url, "db", "check"])
    assert res.exit_code == 1, res.output
    broken = sorted(line.split()[2] for line in res.stdout.splitlines() if line.startswith("broken:"))
    assert broken == ["evil-mixed@1", "evil-owl@1", "evil@1", "owl@1"]
    assert "key has shape [16], encoder makes [32]" in res.stdout and "[1, 10, 32], encoder makes [1, 77, 32]" in res.stdout
    assert "--repair" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = runner.invoke(main, ["--db", db_url, "db", "check", "--repair"])
    assert res.exit_code == 0, res.output
    assert "removed 3 direction(s), 1 embedding(s), 1 student(s), 1 evaluation(s); banks kept" in res.stdout
    res = runner.invoke(main, ["--db", db_url, "db", "check", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"problems": [], "removed": None}
    assert sorted(d.ref for d in reg.directions(include_deprecated=True)) == ["cat-to-dog@1", "day-to-night@1",
                                                                              "mix@1"]
    assert reg.bank("owl@1").sentences  # banks stay
    assert [h.direction.name for h in reg.search("cat-to-dog", k=1)] == ["cat-to-dog"]
    reg.rebuild_index()
    info = reg.export([d.ref for d in reg.directions()], tmp_path / "all.p2pz")
    assert info["directions"] == 3
    other = Registry.open(f"sqlite:///{tmp_path / 'other.db'}")
    assert other.import_(tmp_path / "all.p2pz")["added"]["directions"] == 3
    other.close()


# --- through the Hub (the test Hub of tests/test_hub.py) --------------------------------------------------------

def _student(reg, ref, seed):
    weights = save({"w": np.full(4, seed, np.float32)})
    return reg.store_student(ref, config={"size": 32}, weights=weights, dataset_sha256="0" * 64, params={},
                             metrics={"lpips": 0.1})


def test_a_pull_may_not_redeclare_the_encoder(hub, lib, tmp_path, tiny_model):
    reg, _, _ = lib
    reg.push(f"hf://{REPO}", ["cat-to-dog"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    index["encoders"][0]["architecture"] = "EvilModel"
    hub.tamper(REPO, "p2pz.json", json.dumps(index).encode())
    url = f"sqlite:///{tmp_path / 'target.db'}"
    target = Registry.open(url)
    target.build_direction("day", "night", str(tiny_model), n=N)
    before = db_dump(url)
    with pytest.raises(RegistryError, match="architecture='EvilModel' but this registry stores it with "
                                            "architecture='CLIPTextModel'"):
        target.pull(f"hf://{REPO}")
    assert db_dump(url) == before
    target.close()


def test_deprecated_students_travel_through_the_hub(hub, lib, tmp_path):
    reg, _, _ = lib
    _student(reg, "cat-to-dog", 1)
    _student(reg, "cat-to-dog", 2)
    reg.deprecate_student("cat-to-dog", 1)
    reg.push(f"hf://{REPO}", ["cat-to-dog"], students=True)
    index = json.loads(hub.files(REPO)["p2pz.json"])
    assert index["format_version"] == 3
    assert sorted(st["deprecated"] for st in index["students"]) == [False, True]
    target = Registry.open(f"sqlite:///{tmp_path / 't.db'}")
    assert target.pull(f"hf://{REPO}")["added"]["students"] == 2
    assert sorted((st.version, st.deprecated) for st in target.students()) == [(1, True), (2, False)]
    target.close()


def test_hub_index_versions(hub, lib):
    reg, _, _ = lib
    reg.push(f"hf://{REPO}", ["cat-to-dog"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    index["format_version"] = 1  # what p2pz wrote before students carried the flag: still read
    assert hub_mod.parse_index(json.dumps(index).encode()).format_version == 1
    index["format_version"] = 4
    with pytest.raises(RegistryError, match=r"format_version 4, newer than this p2pz reads .*upgrade p2pz") as err:
        hub_mod.parse_index(json.dumps(index).encode())
    assert "\n" not in str(err.value)


# --- students' deprecated flag in .p2pz files --------------------------------------------------------------------

def test_a_library_keeps_a_students_deprecated_flag(lib, tmp_path):
    reg, _, _ = lib
    _student(reg, "cat-to-dog", 1)
    _student(reg, "cat-to-dog", 2)
    reg.deprecate_student("cat-to-dog", 1)
    path = tmp_path / "st.p2pz"
    reg.export(["cat-to-dog"], path)
    manifest, _ = _read(path)
    assert manifest["format_version"] == 3
    fresh = Registry.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert fresh.import_(path)["added"]["students"] == 2
    assert sorted((st.version, st.deprecated) for st in fresh.students()) == [(1, True), (2, False)]
    fresh.close()


def test_a_newer_format_is_refused_naming_the_upgrade_and_an_older_one_still_imports(lib, tmp_path):
    reg, _, _ = lib
    _student(reg, "cat-to-dog", 1)
    path = tmp_path / "st.p2pz"
    reg.export(["cat-to-dog"], path)
    manifest, tensors = _read(path)
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = Registry.open(url)
    before = db_dump(url)
    newer = _write(tmp_path / "newer.p2pz", {**manifest, "format_version": 4}, tensors)
    with pytest.raises(RegistryError, match=r"format_version 4, newer than this p2pz reads .*upgrade p2pz") as err:
        fresh.import_(newer)
    assert "\n" not in str(err.value) and db_dump(url) == before
    res = CliRunner().invoke(main, ["--db", url, "import", str(newer)])
    assert res.exit_code == 1 and "upgrade p2pz" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    old = json.loads(json.dumps(manifest))
    old["format_version"] = 1
    for st in old["students"]:
        del st["deprecated"]  # version 1 had no such field
    for e in old["embeddings"]:
        e.pop("token_word"), e.pop("token_count")  # nor token-aligned means (format 3)
    tensors = {k: v for k, v in tensors.items() if not k.endswith("/token")}
    assert fresh.import_(_write(tmp_path / "v1.p2pz", old, tensors))["added"] == {
        "encoders": 1, "banks": 2, "embeddings": 2, "directions": 1, "students": 1}
    assert [st.deprecated for st in fresh.students()] == [False]
    old["students"][0]["deprecated"] = True  # a field version 1 does not have
    with pytest.raises(RegistryError, match=r"students\[0\] has unknown field"):
        Registry.open(f"sqlite:///{tmp_path / 'f2.db'}").import_(_write(tmp_path / "v1b.p2pz", old, tensors))
    fresh.close()
