"""Atomic writes (store.files) and the permissions of what p2pz writes for people: outputs are 0644 under
umask 022 (a teammate or a web server can read them), never 0600."""

import os
import stat

import pytest
from click.testing import CliRunner

from p2pz.registry.cli import main
from p2pz.store.files import atomic_write


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_follows_the_umask(tmp_path, umask_022):
    assert mode(atomic_write(tmp_path / "a.txt", "hello")) == 0o644
    os.umask(0o077)
    assert mode(atomic_write(tmp_path / "b.bin", b"\0")) == 0o600
    assert mode(atomic_write(tmp_path / "c.bin", b"\0", mode=0o640)) == 0o640


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    (tmp_path / "keep.txt").write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "keep.txt", writer=broken)
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_edits_and_libraries_are_readable_by_others(tmp_path, tiny_model, umask_022):
    from PIL import Image

    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model),
                                "-n", "5"]).exit_code == 0
    Image.new("RGB", (40, 40), (9, 99, 199)).save(tmp_path / "photo.png")
    res = runner.invoke(main, ["--db", db, "edit", str(tmp_path / "photo.png"), "--direction", "cat-to-dog",
                               "--steps", "2", "--caption", "a cat", "--save-reconstruction", "--out",
                               str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["--db", db, "export", "cat-to-dog", "-o", str(tmp_path / "lib.p2pz")])
    assert res.exit_code == 0, res.output
    written = sorted((tmp_path / "out").iterdir()) + [tmp_path / "lib.p2pz"]
    assert len(written) == 3 and all(mode(p) == 0o644 for p in written), [(p.name, oct(mode(p))) for p in written]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path, tiny_model):
    """kill -9 during a write leaves its temporary; the next p2pz write into that folder removes it (and the
    older naming's when old), but never a live writer's, another host's recent one, or the user's files."""
    import signal
    import subprocess
    import sys
    import time

    from p2pz.registry import Registry

    out = tmp_path / "out"
    out.mkdir()
    writer = ("import sys, time\nfrom store.files import atomic_write\n"
              "def slow(p):\n    p.write_bytes(b'half a library')\n    print('writing', flush=True)\n"
              "    time.sleep(600)\n"
              f"atomic_write({str(out / 'lib.p2pz')!r}, writer=slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    live = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)  # stays alive
    assert live.stdout.readline() == "writing\n"
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        temps = sorted(p.name for p in out.glob(".lib.p2pz.p2pz-*.tmp"))
        assert len(temps) == 2 and all(f"-{proc.pid}-" in t or f"-{live.pid}-" in t for t in temps)
        legacy = out / ".lib.p2pz.abc123_x.tmp"  # the naming before owners were recorded, two hours old
        legacy.write_bytes(b"x")
        os.utime(legacy, (time.time() - 7200,) * 2)
        foreign = out / ".lib.p2pz.p2pz-00000000-1-abcdefgh.tmp"  # another host's write, a minute old
        foreign.write_bytes(b"x")
        os.utime(foreign, (time.time() - 60,) * 2)
        (out / ".notes.tmp").write_text("mine")
        db = f"sqlite:///{tmp_path / 'r.db'}"
        Registry.open(db).build_direction("cat", "dog", str(tiny_model), n=5)
        res = CliRunner().invoke(main, ["--db", db, "export", "cat-to-dog", "-o", str(out / "lib.p2pz")])
        assert res.exit_code == 0, res.output
        left = sorted(p.name for p in out.iterdir())
        assert left == sorted([".notes.tmp", foreign.name, "lib.p2pz"] +
                              [t for t in temps if f"-{live.pid}-" in t]), left
    finally:
        live.kill()
        live.wait(timeout=30)
