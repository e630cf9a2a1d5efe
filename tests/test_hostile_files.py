"""Hostile files: libraries (.p2pz) and official-format .pt files are refused cleanly, one line, nothing written,
nothing executed. Each fuzz test asserts how many of its generated inputs actually reached the importer."""

import json
import re
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pz.registry import Registry, RegistryError

from .conftest import REPO, db_dump

SOURCES = ["registry", "generators", "store", "editor", "migrations", "bench"]
HOSTILE = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])


def run_examples(strategy, check) -> int:
    """Feed ``strategy``'s examples to ``check``; returns how many examples reached it."""
    reached = []

    @HOSTILE
    @given(strategy)
    def each(value):
        reached.append(1)
        check(value)

    each()
    return len(reached)


def test_no_unsafe_deserialization_in_the_source():
    bad = []
    for pkg in SOURCES:
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            for lineno, line in enumerate(text.splitlines(), 1):
                code = line.split("#")[0]
                if re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(|(?<![.\w])(eval|exec)\(", code):
                    bad.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
                if "torch.load(" in code and "weights_only=True" not in code:
                    bad.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert bad == []



def test_nan_and_inf_are_refused_before_storing(reg, tiny_model, tmp_path, db_url):
    import torch

    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    nan = torch.zeros(1, 77, 32)
    nan[0, 3, 4] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    inf = torch.zeros(1, 77, 32)
    inf[0, 0, 0] = float("inf")
    torch.save(inf, tmp_path / "inf.pt")
    before = db_dump(db_url)
    for bad in ("nan.pt", "inf.pt"):
        with pytest.raises(RegistryError, match="NaN or Inf"):
            reg.import_pt(tmp_path / "ok.pt", tmp_path / bad, model=str(tiny_model))
    with pytest.raises(RegistryError, match="finite"):
        reg.build_direction("cat", "dog", str(tiny_model), n=10, scale=float("nan"))
    assert db_dump(db_url) == before


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model):
    """A real two-direction library (a pair and a combination of it) → (manifest dict, tensors bytes)."""
    folder = tmp_path_factory.mktemp("lib")
    reg = Registry.open(f"sqlite:///{folder / 'src.db'}")
    reg.build_direction("cat", "dog", str(tiny_model), n=5)
    reg.combine({"cat-to-dog": 0.5}, name="half")
    reg.export(["half"], folder / "lib.p2pz")
    with zipfile.ZipFile(folder / "lib.p2pz") as zf:
        return json.loads(zf.read("manifest.json")), zf.read("tensors.safetensors")


@pytest.fixture
def empty_db(tmp_path):
    """A path to a fresh, upgraded registry database file (copy it per example: schema creation is slow)."""
    path = tmp_path / "empty.db"
    Registry.open(f"sqlite:///{path}").close()
    return path


def _zip(members: dict) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _must_refuse(folder, data: bytes):
    path = folder / "hostile.p2pz"
    path.write_bytes(data)
    url = f"sqlite:///{folder / 'target.db'}"
    reg = Registry.open(url)
    before = db_dump(url)
    try:
        reg.import_(path)
    except RegistryError as exc:
        assert "\n" not in str(exc)
    else:
        pytest.fail("a hostile library was imported")
    finally:
        reg.close()
    assert db_dump(url) == before
    assert not (folder.parent / "evil").exists()


def test_random_bytes(tmp_path):
    assert run_examples(st.binary(max_size=2000), lambda data: _must_refuse(tmp_path, data)) == 60


def test_random_zips(tmp_path):
    members = st.dictionaries(st.sampled_from(["manifest.json", "tensors.safetensors", "../evil", "/abs/evil",
                                               "a/../../evil", "x.txt", "manifest.json/.."]),
                              st.binary(max_size=300), min_size=1, max_size=4)
    assert run_examples(members, lambda m: _must_refuse(tmp_path, _zip(m))) == 60


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) |
                           st.text(max_size=20), lambda c: st.lists(c, max_size=4) |
                           st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)
DELETE = object()


def _locations(node, prefix=()):
    """Every key path inside a JSON document (the root excluded)."""
    if prefix:
        yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        yield from _locations(child, prefix + (key,))


def test_mutated_manifests_are_refused_cleanly_or_imported_whole(tmp_path, library, empty_db):
    """Set any field of a real manifest to any JSON value (or delete it). The import either refuses with one line
    and leaves the database as it was, or — the mutation was harmless (a note, a tag, a scale) — imports every
    direction whole: each one readable, its Δ the right shape and finite, no broken row."""
    manifest, tensors = library
    outcomes = {"refused": 0, "imported": 0}

    def check(mutation):
        where, value = mutation
        mutated = json.loads(json.dumps(manifest))
        node = mutated
        for key in where[:-1]:
            node = node[key]
        if value is DELETE:
            del node[where[-1]]
        else:
            node[where[-1]] = value
        folder = tmp_path / f"m{sum(outcomes.values())}"
        folder.mkdir()
        db = folder / "target.db"
        shutil.copy(empty_db, db)
        url = f"sqlite:///{db}"
        (folder / "lib.p2pz").write_bytes(_zip({"manifest.json": json.dumps(mutated),
                                                "tensors.safetensors": tensors}))
        reg = Registry.open(url)
        before = db_dump(url)
        try:
            result = reg.import_(folder / "lib.p2pz")
        except RegistryError as exc:
            assert "\n" not in str(exc) and str(exc)
            assert db_dump(url) == before
            outcomes["refused"] += 1
        else:
            assert len(result["directions"]) == len(mutated["directions"])
            for ref in result["directions"]:
                d = reg.get(ref)
                v = d.vector_numpy()
                assert v.shape == (1, 77, 32) and np.isfinite(v).all() and d.key.shape == (32,)
            with reg.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            outcomes["imported"] += 1
        finally:
            reg.close()

    paths = sorted(_locations(manifest), key=repr)
    reached = run_examples(st.tuples(st.sampled_from(paths), json_values | st.just(DELETE)), check)
    assert reached == 60 and outcomes["refused"] + outcomes["imported"] == 60
    assert outcomes["refused"] >= 30 and outcomes["imported"] >= 1, outcomes


def test_wrong_tensor_shapes_and_dtypes(tmp_path, library):
    from safetensors.numpy import load as st_load
    from safetensors.numpy import save as st_save

    original = st_load(library[1])["embedding/0/mean"]

    def check(spec):
        shape, dtype = spec
        arr = np.zeros(shape, dtype=dtype)
        if arr.shape == original.shape and arr.dtype == original.dtype:
            arr = np.zeros((1, 77, 31), dtype=dtype)  # never the right tensor
        tensors = st_load(library[1])
        tensors["embedding/0/mean"] = arr
        _must_refuse(tmp_path, _zip({"manifest.json": json.dumps(library[0]), "tensors.safetensors": st_save(tensors)}))

    specs = st.tuples(st.lists(st.integers(0, 80), min_size=0, max_size=4),
                      st.sampled_from(["float32", "float16", "int32", "uint8", "float64"]))
    assert run_examples(specs, check) == 60


def test_zip_bomb_is_refused_without_expanding(tmp_path, library, monkeypatch):
    """Refused from the member's header: the bytes inflated are counted (a work count, not a clock)."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(library[0]))
        zf.writestr("tensors.safetensors", b"\0" * (300 << 20))
    inflated = []
    real_read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        out = real_read(self, n)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    _must_refuse(tmp_path, buf.getvalue())
    assert sum(inflated) < 1 << 20  # the manifest at most; none of the 300 MB member


def test_random_pt_files(tmp_path, tiny_model):
    import torch

    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    url = f"sqlite:///{tmp_path / 'pt.db'}"

    def check(data):
        (tmp_path / "bad.pt").write_bytes(data)
        reg = Registry.open(url)
        before = db_dump(url)
        with pytest.raises(RegistryError) as err:
            reg.import_pt(tmp_path / "ok.pt", tmp_path / "bad.pt", model=str(tiny_model))
        assert "\n" not in str(err.value)
        reg.close()
        assert db_dump(url) == before

    assert run_examples(st.binary(max_size=3000), check) == 60


def test_a_stride_0_pt_tensor_is_refused_before_any_copy(tmp_path, tiny_model):
    import resource

    import torch

    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    torch.save(torch.zeros(1, 77, 32).expand(90_000, 77, 32), tmp_path / "expanded.pt")  # 10 KB on disk
    assert (tmp_path / "expanded.pt").stat().st_size < 50_000
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RegistryError, match="contiguous") as err:
        reg.import_pt(tmp_path / "ok.pt", tmp_path / "expanded.pt", model=str(tiny_model))
    assert "\n" not in str(err.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500  # the float64 copy would have been 90 000·77·32·8 B = 1.8 GB
    torch.save(torch.zeros(100_001, 77, 1), tmp_path / "tall.pt")
    with pytest.raises(RegistryError, match="rows"):
        reg.import_pt(tmp_path / "ok.pt", tmp_path / "tall.pt", model=str(tiny_model))


def _library_with(tmp_path, library, manifest_bytes=None, tensors=None, name="x.p2pz", encrypt=False):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", manifest_bytes if manifest_bytes is not None else json.dumps(library[0]))
        zf.writestr("tensors.safetensors", tensors if tensors is not None else library[1])
    data = bytearray(buf.getvalue())
    if encrypt:  # set the "encrypted" general-purpose flag in every local and central header
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(sig)
            while at != -1:
                data[at + offset] |= 0x1
                at = data.find(sig, at + 4)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def _refused(tmp_path, path, match):
    url = f"sqlite:///{tmp_path / 'target.db'}"
    reg = Registry.open(url)
    before = db_dump(url)
    with pytest.raises(RegistryError, match=match) as err:
        reg.import_(path)
    assert "\n" not in str(err.value)
    assert db_dump(url) == before
    reg.close()


def test_deeply_nested_manifest_is_one_line(tmp_path, library):
    _refused(tmp_path, _library_with(tmp_path, library, manifest_bytes=b"[" * 100_000), "nested too deeply")


def test_encrypted_member_is_refused(tmp_path, library):
    _refused(tmp_path, _library_with(tmp_path, library, encrypt=True), "encrypted")


def test_tensors_larger_than_the_manifest_describes_are_refused_unread(tmp_path, library):
    padded = library[1] + b"\0" * (4 << 20)  # 4 MB more than two directions over D=32 can need
    _refused(tmp_path, _library_with(tmp_path, library, tensors=padded), "too large")


def test_a_changed_scale_is_tampering(tmp_path, library):
    manifest = json.loads(json.dumps(library[0]))
    manifest["directions"][0]["scale"] = 2.0
    _refused(tmp_path, _library_with(tmp_path, library, manifest_bytes=json.dumps(manifest)), "content_sha256")
    manifest = json.loads(json.dumps(library[0]))
    manifest["directions"][1]["components"][0]["weight"] = 0.75
    _refused(tmp_path, _library_with(tmp_path, library, manifest_bytes=json.dumps(manifest)), "content_sha256")


def test_deprecated_survives_export_and_import(tmp_path, tiny_model):
    src = Registry.open(f"sqlite:///{tmp_path / 'src.db'}")
    src.build_direction("cat", "dog", str(tiny_model), n=5)
    src.build_direction("cat", "dog", str(tiny_model), n=5, scale=2.0)
    src.deprecate("cat-to-dog@1")
    src.export(["cat-to-dog@1", "cat-to-dog@2"], tmp_path / "lib.p2pz")
    dst = Registry.open(f"sqlite:///{tmp_path / 'dst.db'}")
    dst.import_(tmp_path / "lib.p2pz")
    assert [(d.ref, d.deprecated) for d in dst.versions("cat-to-dog")] == [("cat-to-dog@1", True),
                                                                          ("cat-to-dog@2", False)]
    assert dst.get("cat-to-dog").ref == "cat-to-dog@2"
    assert [h.direction.ref for h in dst.search("cat-to-dog@2", k=5)] == ["cat-to-dog@2"]
