"""Ctrl-C at a known moment — half-way through encoding a bank, in the middle of writing an output file — leaves
nothing half-written: no rows, no partial or temporary files."""

import os
import signal
import subprocess
import sys

import pytest

from p2pz.registry import Registry

from .conftest import REPO, db_dump

pytestmark = pytest.mark.slow  # real SIGINTs to child processes in the middle of writes


INTERRUPTED_BUILD = r"""
import sys, time
import p2pz.registry.library.encoding as encoding
from p2pz.registry import Registry

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


INTERRUPTED_EDIT = r"""
import sys, time
from PIL import Image

plain_save = Image.Image.save
saved = []
def held_save(self, fp, *args, **kwargs):  # the 4th output stops after writing its temporary file, before the rename
    plain_save(self, fp, *args, **kwargs)
    saved.append(str(fp))
    if len(saved) == 4:
        print("writing", fp, flush=True)
        time.sleep(120)
Image.Image.save = held_save
from p2pz.registry.cli import main
main(sys.argv[1:])
"""


def test_ctrl_c_while_an_output_is_written_leaves_no_partial_files(tmp_path, tiny_model, db_url):
    from PIL import Image

    from p2pz.editor.batch import read_provenance

    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=10)
    reg.close()
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (48, 48), (40 * i, 100, 200)).save(folder / f"im{i:02d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_EDIT, "--db", db_url, "edit", str(folder),
                             "--direction", "cat-to-dog", "--steps", "2", "--caption", "a cat", "--out", str(out)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    line = proc.stdout.readline()
    assert line.startswith("writing") and ".tmp" in line  # the 4th edit is on disk under its temporary name
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)  # a loaded 2-core CI machine needs more than 60 s to unwind (measured)
    assert proc.returncode != 0 and "Traceback" not in err
    files = sorted(f.name for f in out.iterdir())
    assert files == [f"im{i:02d}__cat-to-dog@1.png" for i in range(3)]  # three whole outputs, no temporary file
    assert all(read_provenance(out / f)["direction"] == "cat-to-dog@1" for f in files)
