"""Atomic writes (store.files) and the permissions of what p2pz writes for people: outputs are 0644 under
umask 022 (a teammate or a web server can read them), never 0600."""

import os
import stat

import pytest
from click.testing import CliRunner

from registry.cli import main
from store.files import atomic_write


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
