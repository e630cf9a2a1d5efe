"""Store: schema through Alembic only, versioning, immutability, bit-exact vectors, storage size."""

import os
import sqlite3
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sqlalchemy import inspect, select, text

from registry import Registry, RegistryError
from store import models as m
from migrations import HEAD_REVISION, current_revision, downgrade, known_revisions, upgrade
from store.db import make_engine
from store.vectors import VectorError, from_bytes, to_bytes

from .conftest import REPO


def test_head_constant_matches_alembic(tmp_path):
    from alembic.script import ScriptDirectory

    from migrations import alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD_REVISION
    assert known_revisions() == {"0001", "0002", "0003", "0004", "0005", "0006", "0007"}


def test_models_match_the_migrations(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), m.Base.metadata)
    assert diff == []


def test_upgrade_from_empty_and_downgrade_to_base(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert {"encoders", "banks", "embeddings", "directions", "meta", "direction_keys"} <= set(
        inspect(engine).get_table_names())
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_database_from_first_revision_is_upgraded_with_data_intact(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    reg = Registry.open(url)
    d = reg.build_direction("cat", "dog", str(tiny_model), n=30)
    vec = d.vector_numpy().copy()
    reg.close()
    engine = make_engine(url)
    downgrade(engine, "0001")  # what a p2pz of revision 0001 would have left behind
    assert current_revision(engine) == "0001"
    assert "meta" not in inspect(engine).get_table_names()
    engine.dispose()
    reg = Registry.open(url)  # opening upgrades automatically
    assert current_revision(reg.engine) == HEAD_REVISION
    again = reg.get("cat-to-dog@1")
    assert np.array_equal(again.vector_numpy(), vec)
    assert reg.generation() == 2  # started at (directions + 1)
    assert [h.direction.ref for h in reg.search("cat-to-dog", k=1)] == ["cat-to-dog@1"]


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Registry.open(url).close()
    con = sqlite3.connect(tmp_path / "new.db")
    con.execute("UPDATE alembic_version SET version_num='9999'")
    con.commit()
    con.close()
    with pytest.raises(RegistryError, match="newer than this p2pz"):
        Registry.open(url)


def test_sqlite_pragmas(reg):
    if reg.engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with reg.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_vectors_round_trip_bit_exactly():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16, np.float64):
        a = rng.standard_normal((1, 77, 24)).astype(dtype)
        a[0, 0, 0] = np.finfo(dtype).tiny  # subnormal edge
        b = from_bytes(to_bytes(a), (1, 77, None))
        assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes()
    with pytest.raises(VectorError, match="NaN"):
        to_bytes(np.array([1.0, np.nan], dtype=np.float32))
    with pytest.raises(VectorError, match="shape"):
        from_bytes(to_bytes(np.zeros((3,), np.float32)), (4,))
    with pytest.raises(VectorError):
        from_bytes(b"garbage")


def test_stored_vectors_are_bit_exact(reg, tiny_model):
    from registry.library.encoding import encode_bank
    from editor.loader import load_text_encoder

    d = reg.build_direction("cat", "dog", str(tiny_model), n=30)
    enc = load_text_encoder(str(tiny_model), device="cpu")
    cat = encode_bank(enc, reg.bank("cat@1").sentences).mean
    dog = encode_bank(enc, reg.bank("dog@1").sentences).mean
    assert d.vector_numpy().tobytes() == (dog - cat).tobytes()


def test_bank_versions_are_content_addressed(reg):
    a = reg.make_bank("cat", n=50, seed=0)
    b = reg.make_bank("cat", n=50, seed=0)
    c = reg.make_bank("cat", n=50, seed=1)
    assert (a.version, b.version, c.version) == (1, 1, 2)
    assert reg.bank("cat").version == 2 and reg.bank("cat@1").sha256 == a.sha256
    assert [x.ref for x in reg.banks("cat")] == ["cat@1", "cat@2"]


def test_records_are_immutable(reg, tiny_model):
    reg.build_direction("cat", "dog", str(tiny_model), n=30)
    with reg.db.write() as s:
        row = s.scalar(select(m.Bank).where(m.Bank.concept == "cat"))
        row.sentences = ["tampered cat"]
        with pytest.raises(m.ImmutableRecordError):
            s.flush()
        s.rollback()
    with reg.db.write() as s:
        row = s.scalar(select(m.Direction))
        row.scale = 2.0
        with pytest.raises(m.ImmutableRecordError):
            s.flush()
        s.rollback()
    assert reg.bank("cat@1").sentences != ["tampered cat"]
    assert reg.tag("cat-to-dog@1", "animals").tags == ["animals"]  # annotations may change


def test_directions_do_not_duplicate_their_embeddings(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'size.db'}"
    reg = Registry.open(url)
    for tgt in ("dog", "lion", "tiger", "wolf", "fox"):
        reg.build_direction("cat", tgt, str(tiny_model), n=30)
    for i in range(20):  # 20 more versions, all from the same two embeddings
        reg.build_direction("cat", "dog", str(tiny_model), n=30, scale=1.0 + i, name=f"scaled-{i}")
    with reg.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM directions WHERE vector IS NOT NULL")).scalar() == 0
        per_dir = conn.execute(text(
            "SELECT AVG(LENGTH(k.key) + LENGTH(content_sha256) + LENGTH(name) + 200) FROM directions d "
            "JOIN direction_keys k ON k.direction_id = d.id")).scalar()
        emb = conn.execute(text("SELECT AVG(LENGTH(mean)) FROM embeddings")).scalar()
    assert per_dir < emb / 5  # a direction costs a key and metadata, not another [1, 77, D] tensor
    reg.close()


def test_in_memory_registry(tiny_model):
    reg = Registry.open("sqlite://")
    reg.make_bank("cat", n=20)
    assert reg.bank("cat").n_sentences == 20


def test_wheel_ships_migrations_and_upgrades_from_an_installed_copy(tmp_path):
    """Build the wheel, install it into a bare folder, and run the upgrade from there (not the checkout)."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("p2pz-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("migrations/env.py", "migrations/script.py.mako", "migrations/versions/0001_initial.py",
                   "migrations/versions/0002_meta_generation.py", "migrations/versions/0003_direction_keys.py",
                   "store/db.py", "registry/cli/__init__.py", "registry/cli/edit.py"):
        assert needed in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import migrations as mg, store.db as d; assert str(mg.__file__).startswith(%r), mg.__file__;"
            "e = d.make_engine('sqlite:///%s'); mg.ensure_schema(e); print(mg.current_revision(e))"
            % (str(site), tmp_path / "w.db"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == HEAD_REVISION


def test_the_job_owner_and_student_flag_revision_round_trips_a_populated_database(db_url, tiny_model):
    """Revision 0007 adds jobs.owner/heartbeat_at and students.deprecated: a populated database goes down to
    0006 and back up with its students intact and the new flag false."""
    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=5)
    reg.store_student("cat-to-dog", config={"size": 32}, weights=b"w", dataset_sha256="0" * 64, params={},
                      metrics={})
    reg.close()
    engine = make_engine(db_url)
    downgrade(engine, "0006")
    assert current_revision(engine) == "0006"
    cols = {c["name"] for c in inspect(engine).get_columns("students")}
    assert "deprecated" not in cols and "owner" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION == "0007"
    with engine.connect() as c:
        assert c.execute(text("SELECT deprecated FROM students")).scalars().all() in ([False], [0])
    assert {"owner", "heartbeat_at"} <= {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()
    reg = Registry.open(db_url)
    assert [s.direction for s in reg.students()] == ["cat-to-dog@1"]
    reg.close()
