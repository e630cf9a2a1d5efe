"""Store: schema through Alembic only, versioning, immutability, bit-exact vectors, storage size."""

import numpy as np
import pytest
from sqlalchemy import select, text

from p2pz.registry import Registry
from p2pz.store import models as m
from p2pz.store.vectors import VectorError, from_bytes, to_bytes


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
    from p2pz.registry.library.encoding import encode_bank
    from p2pz.editor.loader import load_text_encoder

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


