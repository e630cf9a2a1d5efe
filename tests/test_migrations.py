"""Schema revisions (Alembic) in one place: the models equal what the revisions create, every revision upgrades
and downgrades a populated database with its data intact, a newer schema is refused, and ``p2pz db upgrade`` runs
them (the wheel's copy of the revisions: tests/test_install.py)."""

import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from p2pz.migrations import HEAD_REVISION, current_revision, downgrade, known_revisions, upgrade
from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main
from p2pz.store import models as m
from p2pz.store.db import make_engine

from .test_web_api import Client, create_app, db, edit, settings  # noqa: F401 (db is a fixture)


def test_head_constant_matches_alembic(tmp_path):
    from alembic.script import ScriptDirectory

    from p2pz.migrations import alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD_REVISION
    assert known_revisions() == {"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010"}


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
    assert current_revision(engine) == HEAD_REVISION == "0010"
    with engine.connect() as c:
        assert c.execute(text("SELECT deprecated FROM students")).scalars().all() in ([False], [0])
    assert {"owner", "heartbeat_at"} <= {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()
    reg = Registry.open(db_url)
    assert [s.direction for s in reg.students()] == ["cat-to-dog@1"]
    reg.close()


def test_the_encoder_families_revision_round_trips_and_refuses_to_drop_sdxl(db_url, tiny_model, tiny_sdxl):
    """Revision 0008 adds encoders.family/parts/key_size: an SD-only registry goes down to 0007 and back up with
    its directions intact and family 'sd'; one holding an SDXL encoder refuses the downgrade and loses nothing."""
    reg = Registry.open(db_url)
    sd = reg.build_direction("cat", "dog", str(tiny_model), n=5)
    before = sd.vector.clone()
    reg.close()
    engine = make_engine(db_url)
    downgrade(engine, "0007")
    assert "family" not in {c["name"] for c in inspect(engine).get_columns("encoders")}
    upgrade(engine)
    with engine.connect() as c:
        assert c.execute(text("SELECT family, parts, key_size FROM encoders")).all() == [("sd", None, None)]
    engine.dispose()
    reg = Registry.open(db_url)
    assert torch_equal(reg.get("cat-to-dog").vector, before)
    xl = reg.build_direction("cat@1", "dog@1", str(tiny_sdxl))
    reg.close()
    engine = make_engine(db_url)
    with pytest.raises(RuntimeError, match="SDXL encoder"):
        downgrade(engine, "0007")
    assert current_revision(engine) in ("0008", HEAD_REVISION)  # the refused step is rolled back
    engine.dispose()
    reg = Registry.open(db_url)
    back = reg.get(xl.ref)
    assert back.family == "sdxl" and tuple(back.pooled.shape) == (1, 40)
    reg.close()


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_the_students_revision_upgrades_and_downgrades_a_populated_database(db_url, tiny_model):
    from p2pz.migrations import current_revision, downgrade
    from p2pz.store.db import make_engine

    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=5)
    reg.store_student("cat-to-dog", config={"size": 32}, weights=b"w", dataset_sha256="0" * 64, params={},
                      metrics={})
    reg.close()
    engine = make_engine(db_url)
    downgrade(engine, "0004")
    assert current_revision(engine) == "0004"
    engine.dispose()
    reg = Registry.open(db_url)
    assert reg.students() == [] and reg.get("cat-to-dog").ref == "cat-to-dog@1"
    reg.close()


def test_the_evaluations_revision_upgrades_and_downgrades_a_populated_database(db_url, tiny_model):
    from p2pz.migrations import current_revision, downgrade
    from p2pz.store.db import make_engine

    reg = Registry.open(db_url)
    d = reg.build_direction("cat", "dog", str(tiny_model), n=5)
    from p2pz.registry.analysis.evaluations import record

    record(reg.db, d.id, {"clip_acc": 1.0, "structure_distance": 0.01}, 3, {"test": True})
    reg.close()
    engine = make_engine(db_url)
    downgrade(engine, "0003")
    assert current_revision(engine) == "0003"
    engine.dispose()
    reg = Registry.open(db_url)  # upgraded again on open
    assert reg.get("cat-to-dog").ref == "cat-to-dog@1" and reg.scores([reg.get("cat-to-dog")]) == {}
    record(reg.db, reg.get("cat-to-dog").id, {"clip_acc": 0.5}, 2, {})
    assert reg.scores([reg.get("cat-to-dog")])["cat-to-dog@1"]["scores"] == {"clip_acc": 0.5}
    reg.close()


def test_the_jobs_revision_upgrades_and_downgrades_a_populated_database(db, tmp_path, tiny_model):
    from sqlalchemy import inspect

    from p2pz.migrations import HEAD_REVISION, current_revision, downgrade, upgrade
    from p2pz.store.db import make_engine

    with Client(create_app(settings(db, tmp_path, tiny_model, worker=False))) as c:
        assert edit(c).status_code == 202
    engine = make_engine(db)
    assert "jobs" in inspect(engine).get_table_names()
    downgrade(engine, "0005")
    assert current_revision(engine) == "0005" and "jobs" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION == "0010" and "jobs" in inspect(engine).get_table_names()
    engine.dispose()
    with Registry.open(db) as reg:
        assert [d.ref for d in reg.directions()] == ["cat-to-dog@1", "day-to-night@1", "kitten-to-puppy@1"]


def test_db_upgrade_runs_the_revisions_and_says_what_it_did(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry.open(url) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5)
    engine = make_engine(url)
    downgrade(engine, "0005")
    engine.dispose()
    res = CliRunner().invoke(main, ["--db", url, "db", "upgrade"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"schema 0005 → {HEAD_REVISION}"
    assert current_revision(make_engine(url)) == HEAD_REVISION
    again = CliRunner().invoke(main, ["--db", url, "db", "upgrade"])
    assert again.stdout.strip() == f"schema {HEAD_REVISION} → {HEAD_REVISION}"
    with Registry.open(url) as reg:
        assert [d.ref for d in reg.directions()] == ["cat-to-dog@1"]


def test_the_direction_origin_revision_round_trips_a_populated_database(db_url, tiny_model, tmp_path):
    """Revision 0009 adds directions.origin and an index on content_sha256: a registry holding imported
    directions goes down to 0008 (origins dropped, directions intact) and back up."""
    src = Registry.open(f"sqlite:///{tmp_path / 'src.db'}")
    d = src.build_direction("cat", "dog", str(tiny_model), n=5)
    src.export(["cat-to-dog"], tmp_path / "lib.p2pz")
    src.close()
    reg = Registry.open(db_url)
    reg.import_(tmp_path / "lib.p2pz")
    assert reg.get("cat-to-dog").origin["source"] == "lib.p2pz"
    reg.close()
    engine = make_engine(db_url)
    downgrade(engine, "0008")
    assert current_revision(engine) == "0008"
    assert "origin" not in {c["name"] for c in inspect(engine).get_columns("directions")}
    assert "ix_directions_content_sha256" not in {i["name"] for i in inspect(engine).get_indexes("directions")}
    upgrade(engine)
    assert "ix_directions_content_sha256" in {i["name"] for i in inspect(engine).get_indexes("directions")}
    engine.dispose()
    reg = Registry.open(db_url)
    back = reg.get(f"sha256:{d.content_sha256}")
    assert back.ref == "cat-to-dog@1" and back.origin is None  # the origin did not survive 0008
    assert back.vector_numpy().tobytes() == d.vector_numpy().tobytes()
    reg.close()
