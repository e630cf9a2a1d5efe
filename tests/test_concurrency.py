"""Concurrent writers, read-only databases and a kill in the middle of a write: the registry is never corrupted
or partially written (SQLite and PostgreSQL)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from p2pz.registry import Registry, RegistryError

from .conftest import REPO

pytestmark = pytest.mark.slow  # several processes writing to one registry at once


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


# A barrier for processes (files in $P2PZ_TEST_BARRIER, $P2PZ_TEST_PARTIES of them) and the times each one's work
# started and ended, so a test can check the clients really overlapped instead of hoping they did.
BARRIER = r"""
import os, time
def barrier():
    folder, me, parties = os.environ["P2PZ_TEST_BARRIER"], os.environ["P2PZ_TEST_NAME"], int(os.environ["P2PZ_TEST_PARTIES"])
    open(os.path.join(folder, "ready-" + me), "w").close()
    t0 = time.time()
    while sum(f.startswith("ready-") for f in os.listdir(folder)) < parties:
        if time.time() - t0 > 120:
            raise SystemExit("the barrier timed out")
        time.sleep(0.005)
def stamp(what):
    folder, me = os.environ["P2PZ_TEST_BARRIER"], os.environ["P2PZ_TEST_NAME"]
    with open(os.path.join(folder, what + "-" + me), "w") as f:
        f.write(repr(time.time()))
"""


def barrier_env(folder, name: str, parties: int) -> dict:
    folder.mkdir(exist_ok=True)
    return {"P2PZ_TEST_BARRIER": str(folder), "P2PZ_TEST_NAME": name, "P2PZ_TEST_PARTIES": str(parties)}


def overlapped(folder) -> bool:
    """Every client started its work before any of them finished it."""
    read = lambda what: [float(p.read_text()) for p in folder.glob(f"{what}-*")]  # noqa: E731
    starts, ends = read("start"), read("end")
    assert len(starts) == len(ends) > 1
    return max(starts) < min(ends)


WRITER = BARRIER + r"""
import sys, json
from p2pz.registry import Registry
reg = Registry.open(sys.argv[1])
mode, model, start = sys.argv[2], sys.argv[3], int(sys.argv[4])
barrier()
stamp("start")
if mode == "build":
    for i in range(start, start + 50):
        reg.build_direction(f"c{i}", f"c{i + 1}", model, n=5, name=f"d{i}")
else:
    print(json.dumps(reg.import_(sys.argv[5])["added"]))
stamp("end")
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
    sync = tmp_path / "barrier"
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, "build", str(tiny_model), "0"],
                              env={**env, **barrier_env(sync, "build", 2)}, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-c", WRITER, url, "import", str(tiny_model), "0",
                               str(tmp_path / "lib.p2pz")], env={**env, **barrier_env(sync, "import", 2)},
                              stderr=subprocess.PIPE, text=True)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("locked" in e for e in errors)
    assert overlapped(sync)  # the import ran while the builds were going on
    wall = time.perf_counter() - t
    reg = Registry.open(url)
    refs = [d.ref for d in reg.directions()]
    assert len(refs) == 100 and len(set(refs)) == 100 and all(r.endswith("@1") for r in refs)
    print(f"two writers, 100 directions, {url.split(':')[0]}: {wall:.1f} s")


SAME_NAME = r"""
import sys
from p2pz.registry import Registry
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
import sys, time
import p2pz.store.repository as repo
from p2pz.registry import Registry

plain = repo.insert_direction
done = 0
def held(*args, **kwargs):  # the 5th build stops inside its write transaction, rows flushed but not committed
    out = plain(*args, **kwargs)
    if done == 4:
        print("in transaction", flush=True)
        time.sleep(120)
    return out
repo.insert_direction = held
reg = Registry.open(sys.argv[1])
for i in range(5):
    reg.build_direction(f"k{i}", f"k{i + 1}", sys.argv[2], n=5, name=f"k{i}")
    done += 1
    print("built", i, flush=True)
"""


def test_sigkill_inside_a_write_transaction_leaves_a_consistent_database(tmp_path, tiny_model):
    db = tmp_path / "killed.db"
    url = f"sqlite:///{db}"
    Registry.open(url).close()
    proc = subprocess.Popen([sys.executable, "-c", KILLED, url, str(tiny_model)], env={**os.environ,
                            "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip() for _ in range(5)]
    assert lines == ["built 0", "built 1", "built 2", "built 3", "in transaction"]
    proc.send_signal(signal.SIGKILL)  # the 5th build's banks, embeddings and direction are flushed, not committed
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    assert con.execute("SELECT COUNT(*) FROM directions").fetchone()[0] == 4
    assert con.execute("SELECT COUNT(*) FROM direction_keys").fetchone()[0] == 4
    # k0…k4 banks only: the killed build's new bank k5 is gone with its transaction
    assert [r[0] for r in con.execute("SELECT concept FROM banks ORDER BY concept")] == [f"k{i}" for i in range(5)]
    orphans = con.execute("SELECT COUNT(*) FROM banks b WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                          "WHERE e.bank_id = b.id)").fetchone()[0]
    assert orphans == 0
    con.close()
    reg = Registry.open(url)
    assert [d.ref for d in reg.directions()] == [f"k{i}@1" for i in range(4)]
    assert reg.build_direction("k4", "k5", str(tiny_model), n=5, name="k4").ref == "k4@1"  # a rerun completes it


FIRST_USE = BARRIER + r"""
import sys, time
from alembic.runtime.migration import MigrationContext

plain = MigrationContext._ensure_version_table
def slow(self, *args, **kwargs):  # widen the race: hold the upgrade's transaction open for a second
    plain(self, *args, **kwargs)
    time.sleep(1.0)
MigrationContext._ensure_version_table = slow
from p2pz.registry.cli import main
barrier()  # all four reach the new database together
stamp("start")
try:
    main(sys.argv[1:])
finally:
    stamp("end")
"""


def test_four_clients_first_use_of_a_new_database_at_once(tmp_path, tiny_model, home, db_url):
    """Four `p2pz direction build` processes started together against a new, empty database: every client's
    first use checks the schema; the upgrade is serialized (re-checked under the lock), and all four succeed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sync = tmp_path / "barrier"
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, "--db", db_url, "-q", "direction", "build",
                               "cat", f"dog{i}", "--model", str(tiny_model), "-n", "5"],
                              env={**env, **barrier_env(sync, str(i), 4)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    errors = [err for _, err in results]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert not any("Traceback" in e for e in errors)
    assert overlapped(sync)  # all four were inside their first use at once
    reg = Registry.open(db_url)
    assert sorted(d.ref for d in reg.directions()) == [f"cat-to-dog{i}@1" for i in range(4)]
    reg.close()


def test_a_database_error_is_one_line_not_a_traceback(tmp_path):
    from click.testing import CliRunner

    from p2pz.registry.cli import main

    res = CliRunner().invoke(main, ["--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "bank", "list"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
