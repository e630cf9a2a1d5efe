"""The registry is never corrupted or partially written; nothing from a file executes (issue #6, items 3–6)."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import Registry, RegistryError

from .conftest import REPO, db_dump

SOURCES = ["registry", "generators", "store", "editor", "migrations", "bench"]


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


def test_read_only_database_reads_work_and_writes_fail_clearly(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry.open(url)
    reg.build_direction("cat", "dog", str(tiny_model), n=10)
    reg.close()
    ro = Registry.open(f"sqlite:///file:{tmp_path / 'r.db'}?mode=ro&uri=true")
    assert ro.get("cat-to-dog").ref == "cat-to-dog@1"
    assert [d.ref for d in ro.directions()] == ["cat-to-dog@1"]
    with pytest.raises(RegistryError, match="read-only"):
        ro.make_bank("lion", n=10)


WRITER = r"""
import sys, json
from registry import Registry
reg = Registry.open(sys.argv[1])
mode, model, start = sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "build":
    for i in range(start, start + 50):
        reg.build_direction(f"c{i}", f"c{i + 1}", model, n=5, name=f"d{i}")
else:
    print(json.dumps(reg.import_(sys.argv[5])["added"]))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path, tiny_model, home, db_url):
    url = db_url
    src = Registry.open(f"sqlite:///{tmp_path / 'src.db'}")
    for i in range(100, 150):
        src.build_direction(f"c{i}", f"c{i + 1}", str(tiny_model), n=5, name=f"d{i}")
    src.export([f"d{i}" for i in range(100, 150)], tmp_path / "lib.p2pz")
    src.close()
    Registry.open(url).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, "build", str(tiny_model), "0"], env=env,
                              stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-c", WRITER, url, "import", str(tiny_model), "0",
                               str(tmp_path / "lib.p2pz")], env=env, stderr=subprocess.PIPE, text=True)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("locked" in e for e in errors)
    wall = time.perf_counter() - t
    reg = Registry.open(url)
    refs = [d.ref for d in reg.directions()]
    assert len(refs) == 100 and len(set(refs)) == 100 and all(r.endswith("@1") for r in refs)
    print(f"two writers, 100 directions, {url.split(':')[0]}: {wall:.1f} s")


SAME_NAME = r"""
import sys
from registry import Registry
reg = Registry.open(sys.argv[1])
for i in range(10):
    reg.build_direction("cat", "dog", sys.argv[2], n=5, name="shared", scale=1.0 + int(sys.argv[3]) * 100 + i)
"""


def test_four_writers_keep_versions_unique_and_gap_free(tmp_path, tiny_model, home, db_url):
    Registry.open(db_url).build_direction("cat", "dog", str(tiny_model), n=5)  # banks and embeddings exist
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", SAME_NAME, db_url, str(tiny_model), str(w)], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    wall = time.perf_counter() - t
    versions = sorted(d.version for d in Registry.open(db_url).versions("shared"))
    assert versions == list(range(1, 41))
    print(f"four writers, 40 versions of one name, {db_url.split(':')[0]}: {wall:.1f} s")


KILLED = r"""
import sys
from registry import Registry
reg = Registry.open(sys.argv[1])
i = 0
while True:
    reg.build_direction(f"k{i}", f"k{i + 1}", sys.argv[2], n=5, name=f"k{i}")
    print(i, flush=True)
    i += 1
"""


def test_sigkill_mid_build_leaves_a_consistent_database(tmp_path, tiny_model):
    db = tmp_path / "killed.db"
    url = f"sqlite:///{db}"
    Registry.open(url).close()
    proc = subprocess.Popen([sys.executable, "-c", KILLED, url, str(tiny_model)], env={**os.environ,
                            "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    for _ in range(4):  # let it finish a few builds, then kill it in the middle of the next ones
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    n_dirs = con.execute("SELECT COUNT(*) FROM directions").fetchone()[0]
    assert n_dirs >= 4
    assert con.execute("SELECT COUNT(*) FROM direction_keys").fetchone()[0] == n_dirs
    # every stored direction is complete: both embeddings and banks exist; no bank was left without its build
    orphans = con.execute("SELECT COUNT(*) FROM banks b WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                          "WHERE e.bank_id = b.id)").fetchone()[0]
    assert orphans == 0
    con.close()
    assert len(Registry.open(url).directions()) == n_dirs


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("lib")
    reg = Registry.open(f"sqlite:///{folder / 'src.db'}")
    reg.build_direction("cat", "dog", str(tiny_model), n=5)
    reg.combine({"cat-to-dog": 0.5}, name="half")
    reg.export(["half"], folder / "lib.p2pz")
    with zipfile.ZipFile(folder / "lib.p2pz") as zf:
        return json.loads(zf.read("manifest.json")), zf.read("tensors.safetensors")


def _zip(members: dict) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) |
                           st.text(max_size=20), lambda c: st.lists(c, max_size=4) |
                           st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)
HOSTILE = settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
COUNT = {"tried": 0}


def _must_refuse(tmp_path, data: bytes):
    COUNT["tried"] += 1
    path = tmp_path / "hostile.p2pz"
    path.write_bytes(data)
    url = f"sqlite:///{tmp_path / 'target.db'}"
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
    assert not (tmp_path.parent / "evil").exists()


@HOSTILE
@given(data=st.binary(max_size=2000))
def test_random_bytes(tmp_path, data):
    _must_refuse(tmp_path, data)


@HOSTILE
@given(members=st.dictionaries(st.sampled_from(["manifest.json", "tensors.safetensors", "../evil", "/abs/evil",
                                                "a/../../evil", "x.txt", "manifest.json/.."]),
                               st.binary(max_size=300), min_size=1, max_size=4))
def test_random_zips(tmp_path, members):
    _must_refuse(tmp_path, _zip(members))


@HOSTILE
@given(path=st.lists(st.sampled_from(["encoders", "banks", "embeddings", "directions", 0, "scale", "encoder",
                                      "hidden_size", "sentences", "kind", "components", "source", "tags", "format",
                                      "format_version", "key_kind", "bank", "weight", "direction"]),
                     min_size=1, max_size=4),
       value=json_values)
def test_mutated_manifests(tmp_path, library, path, value):
    manifest, tensors = json.loads(json.dumps(library[0])), library[1]
    node = manifest
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if node.get(last) == value:
            return
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if node[last] == value:
            return
        node[last] = value
    else:
        return
    try:
        text = json.dumps(manifest)
    except ValueError:
        return
    _must_refuse(tmp_path, _zip({"manifest.json": text, "tensors.safetensors": tensors}))


@HOSTILE
@given(shape=st.lists(st.integers(0, 80), min_size=0, max_size=4),
       dtype=st.sampled_from(["float32", "float16", "int32", "uint8", "float64"]))
def test_wrong_tensor_shapes_and_dtypes(tmp_path, library, shape, dtype):
    from safetensors.numpy import load as st_load
    from safetensors.numpy import save as st_save

    tensors = st_load(library[1])
    name = "embedding/0/mean"
    arr = np.zeros(shape, dtype=dtype)
    if arr.shape == tensors[name].shape and arr.dtype == tensors[name].dtype:
        return
    tensors[name] = arr
    _must_refuse(tmp_path, _zip({"manifest.json": json.dumps(library[0]), "tensors.safetensors": st_save(tensors)}))


def test_zip_bomb_is_refused_without_expanding(tmp_path, library):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(library[0]))
        zf.writestr("tensors.safetensors", b"\0" * (300 << 20))
    t = time.perf_counter()
    _must_refuse(tmp_path, buf.getvalue())
    assert time.perf_counter() - t < 5


def test_report_hostile_count():
    print(f"hostile inputs tried: {COUNT['tried']}")


@HOSTILE
@given(data=st.binary(max_size=3000))
def test_random_pt_files(tmp_path, tiny_model, data):
    import torch

    COUNT["tried"] += 1
    torch.save(torch.zeros(1, 77, 32), tmp_path / "ok.pt")
    (tmp_path / "bad.pt").write_bytes(data)
    url = f"sqlite:///{tmp_path / 'pt.db'}"
    reg = Registry.open(url)
    before = db_dump(url)
    with pytest.raises(RegistryError):
        reg.import_pt(tmp_path / "ok.pt", tmp_path / "bad.pt", model=str(tiny_model))
    reg.close()
    assert db_dump(url) == before


def test_offline_hub_id_names_the_fix(monkeypatch, home):
    from editor.loader import ModelLoadError, resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    with pytest.raises(ModelLoadError) as err:
        resolve_model("nobody/no-such-model")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download nobody/no-such-model" in msg and "\n" not in msg


INTERRUPTED_BUILD = r"""
import sys, time
import registry.encoding as encoding
from registry import Registry

plain = encoding.encode_sentences
def announced(enc, sentences):  # tell the test that encoding is under way, and give it time to press Ctrl-C
    print("batch", flush=True)
    time.sleep(0.2)
    return plain(enc, sentences)
encoding.encode_sentences = announced
reg = Registry.open(sys.argv[1])
reg.build_direction("alpha", "beta", sys.argv[2], n=2000)
"""


def _default_sigint():
    """Children get the default Ctrl-C handling even when the test runner was started with SIGINT ignored (as
    background jobs of a non-interactive shell are)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_bank_build_writes_nothing(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    Registry.open(url).close()
    before = db_dump(url)
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_BUILD, url, str(tiny_model)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    for _ in range(3):  # three batches encoded: the bank build is half-way through
        assert proc.stdout.readline().startswith("batch")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert db_dump(url) == before


def test_ctrl_c_during_an_edit_batch_leaves_no_partial_files(tmp_path, tiny_model, db_url):
    from PIL import Image

    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=10)
    reg.close()
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(30):
        Image.new("RGB", (48, 48), (8 * i, 100, 200)).save(folder / f"im{i:02d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "registry.cli", "--db", db_url, "edit", str(folder), "--direction",
                             "cat-to-dog", "--steps", "20", "--caption", "a cat", "--out", str(out)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    files = sorted(out.iterdir())
    assert files and all(f.suffix == ".png" and not f.name.startswith(".") for f in files)
    from editor.batch import read_provenance

    assert all(read_provenance(f)["direction"] == "cat-to-dog@1" for f in files)
    assert len(files) < 30
