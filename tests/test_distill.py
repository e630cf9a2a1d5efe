"""Distillation end to end on the tiny model: teacher pairs (resumable), training, the stored student, applying it."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.editor.errors import EditorError
from p2pz.editor.student import Student
from p2pz.editor.student.pairs import read_manifest
from p2pz.registry import Registry
from p2pz.registry.cli import main

pytestmark = pytest.mark.slow  # teacher pairs and student training on the tiny model


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """The registry every test starts from (cat-to-dog on the tiny model) and three photos, made once per module."""
    root = tmp_path_factory.mktemp("distill-setup")
    runner = CliRunner()
    assert runner.invoke(main, ["--db", f"sqlite:///{root / 'r.db'}", "direction", "build", "cat", "dog", "--model",
                                str(tiny_model), "-n", "10"]).exit_code == 0
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((np.random.RandomState(i).rand(48, 48, 3) * 255).astype(np.uint8)).save(photos / f"c{i}.png")
    return root


@pytest.fixture
def setup(built, tmp_path):
    """A test's own copy of the module's registry file and photos (tests write students and pairs into it)."""
    with sqlite3.connect(built / "r.db") as src, sqlite3.connect(tmp_path / "r.db") as dst:
        src.backup(dst)  # a consistent copy, whatever the journal mode left beside the file
    shutil.copytree(built / "photos", tmp_path / "photos")
    return f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "photos"


def _pairs(db, photos, out, tiny_model, *extra):
    return CliRunner().invoke(main, ["--db", db, "-q", "distill", "pairs", "cat-to-dog", "--images", str(photos),
                                     "--synthetic", "2", "--out", str(out), "--size", "32", "--steps", "2",
                                     "--captioner", str(tiny_model / "captioner"), "--no-filter", *extra])


def test_pairs_are_resumable_without_duplicates(setup, tmp_path, tiny_model, monkeypatch):
    db, photos = setup
    out = tmp_path / "pairs"
    import p2pz.editor.student.pairs as pairs_mod

    plain = pairs_mod.atomic_write
    writes = []

    def interrupted(path, *a, **k):  # the 4th file written (the 2nd pair's target) is interrupted
        writes.append(path)
        if len(writes) == 4:
            raise KeyboardInterrupt
        return plain(path, *a, **k)

    monkeypatch.setattr(pairs_mod, "atomic_write", interrupted)
    res = _pairs(db, photos, out, tiny_model)
    assert res.exit_code != 0
    assert len(read_manifest(out)["pairs"]) == 1  # only the finished pair is named
    monkeypatch.setattr(pairs_mod, "atomic_write", plain)
    res = _pairs(db, photos, out, tiny_model, "--json")
    assert res.exit_code == 0, res.output
    manifest = read_manifest(out)
    ids = [p["id"] for p in manifest["pairs"]]
    assert len(ids) == 5 and len(set(ids)) == 5 and json.loads(res.stdout)["kept"] == 5
    assert manifest["direction"] == "cat-to-dog@1" and manifest["filtered"] is False and manifest["size"] == 32
    assert manifest["encoder"] == Registry.open(db).get("cat-to-dog").encoder
    for p in manifest["pairs"]:
        assert Image.open(out / p["source"]).size == (32, 32) and (out / p["target"]).is_file()
    assert _pairs(db, photos, out, tiny_model).exit_code == 0  # a third run adds nothing
    assert len(read_manifest(out)["pairs"]) == 5


def test_a_batched_teacher_makes_the_pairs_one_at_a_time_makes(setup, tmp_path, tiny_model):
    db, photos = setup
    assert _pairs(db, photos, tmp_path / "one", tiny_model).exit_code == 0
    res = _pairs(db, photos, tmp_path / "three", tiny_model, "--batch", "3")
    assert res.exit_code == 0, res.output
    one, three = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "three")
    assert [p["id"] for p in one["pairs"]] == [p["id"] for p in three["pairs"]]  # the same jobs, in order
    for a, b in zip(one["pairs"], three["pairs"]):
        assert a["source_sha256"] == b["source_sha256"]
        x = np.asarray(Image.open(tmp_path / "one" / a["target"]), dtype=np.int16)
        y = np.asarray(Image.open(tmp_path / "three" / b["target"]), dtype=np.int16)
        # Each image keeps its own inversion noise; batched kernels differ from single ones only in rounding
        # (≈ 1e-6 on latents), which reaches the 8-bit edit as at most a level or two.
        assert np.abs(x - y).max() <= 2


def test_train_store_show_and_apply_a_student(setup, tmp_path, tiny_model, alex_backbone, tiny_vit):
    db, photos = setup
    runner = CliRunner()
    assert _pairs(db, photos, tmp_path / "pairs", tiny_model).exit_code == 0
    res = runner.invoke(main, ["--db", db, "-q", "distill", "train", str(tmp_path / "pairs"), "--out",
                               str(tmp_path / "run"), "--steps", "20", "--width", "8", "--held-out", "0.2",
                               "--lpips-weights", str(alex_backbone), "--dino-model", str(tiny_vit), "--precision", "bf16",
                               "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["params"]["precision"] == "bf16"
    assert record["direction"] == "cat-to-dog@1" and record["version"] == 1
    assert record["config"]["size"] == 32 and record["config"]["depth"] == 5 and record["params"]["steps"] == 20
    assert record["metrics"]["held_out_pairs"] == 1 and record["metrics"]["l1"] > 0
    assert record["metrics"]["lpips"] >= 0 and record["config"]["lambda_lpips"] == 10.0
    assert record["metrics"]["structure_distance"] >= 0
    for name in ("checkpoint.safetensors", "samples.png", "losses.png"):
        assert (tmp_path / "run" / name).is_file()
    listed = json.loads(runner.invoke(main, ["--db", db, "student", "list", "--json"]).stdout)
    assert [(s["direction"], s["version"]) for s in listed] == [("cat-to-dog@1", 1)]
    shown = json.loads(runner.invoke(main, ["--db", db, "student", "show", "cat-to-dog", "--json"]).stdout)
    assert shown["weights_sha256"] == record["weights_sha256"]

    res = runner.invoke(main, ["--db", db, "-q", "edit", str(photos), "--direction", "cat-to-dog", "--student",
                               "@1", "--out", str(tmp_path / "fast")])
    assert res.exit_code == 0, res.output
    from p2pz.editor.batch import read_provenance

    outs = sorted((tmp_path / "fast").glob("*.png"))
    assert len(outs) == 3 and Image.open(outs[0]).size == (48, 48)
    prov = read_provenance(outs[0])
    assert prov["student"] == 1 and prov["direction"] == "cat-to-dog@1"

    reg = Registry.open(db)
    student = Student.load(reg, "cat-to-dog")
    assert student(Image.open(photos / "c0.png")).size == (48, 48)
    with pytest.raises(EditorError, match="do not fit|unusable"):
        Student.from_weights(b"not safetensors", record["config"])
    wrong = dict(record["config"], base_channels=4)
    with pytest.raises(EditorError, match="do not fit"):
        Student.from_weights(reg.student("cat-to-dog").weights, wrong)
    missing = runner.invoke(main, ["--db", db, "student", "show", "cat-to-dog", "--version", "9"])
    assert missing.exit_code == 1 and "no student" in missing.stderr
    latest = runner.invoke(main, ["--db", db, "-q", "edit", str(photos / "c0.png"), "--direction", "cat-to-dog",
                                  "--student", "--out", str(tmp_path / "fast2")])
    assert latest.exit_code == 0, latest.output
    bad = runner.invoke(main, ["--db", db, "edit", str(photos / "c0.png"), "--direction", "cat-to-dog", "--student",
                               "two", "--out", str(tmp_path / "fast3")])
    assert bad.exit_code == 1 and "@VERSION" in bad.stderr


def test_a_student_travels_in_a_library_bit_exactly_and_tampering_is_refused(tmp_path, tiny_model):
    import io
    import pickle
    import zipfile

    from p2pz.registry import RegistryError
    from p2pz.editor.student import StudentConfig, UNetGenerator, weights_bytes

    src = Registry.open(f"sqlite:///{tmp_path / 'src.db'}")
    src.build_direction("cat", "dog", str(tiny_model), n=5)
    cfg = StudentConfig(size=32, base_channels=4, depth=5)
    weights = weights_bytes(UNetGenerator(cfg))
    stored = src.store_student("cat-to-dog", config=cfg.to_dict(), weights=weights, dataset_sha256="d" * 64,
                               params={"steps": 3}, metrics={"l1": 0.1})
    info = src.export(["cat-to-dog"], tmp_path / "lib.p2pz")
    assert info["students"] == 1
    dst = Registry.open(f"sqlite:///{tmp_path / 'dst.db'}")
    assert dst.import_(tmp_path / "lib.p2pz")["added"]["students"] == 1
    got = dst.student("cat-to-dog")
    assert got.weights == weights and got.weights_sha256 == stored.weights_sha256 and got.metrics == {"l1": 0.1}
    assert dst.import_(tmp_path / "lib.p2pz")["added"]["students"] == 0  # idempotent
    Student.from_weights(got.weights, got.config)(Image.new("RGB", (32, 32)))

    with zipfile.ZipFile(tmp_path / "lib.p2pz") as zf:
        manifest, blob = json.loads(zf.read("manifest.json")), zf.read("tensors.safetensors")
    from safetensors.numpy import load, save

    def rewrite(name, student_bytes, sha=None):
        tensors = load(blob)
        tensors["student/0/weights"] = np.frombuffer(student_bytes, dtype=np.uint8)
        m = json.loads(json.dumps(manifest))
        m["students"][0].update(weights_bytes=len(student_bytes), weights_sha256=sha or m["students"][0]["weights_sha256"])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("manifest.json", json.dumps(m))
            zf.writestr("tensors.safetensors", save(tensors))
        (tmp_path / name).write_bytes(buf.getvalue())
        return tmp_path / name

    import hashlib

    flipped = bytearray(weights)
    flipped[-1] ^= 1
    fresh = Registry.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    with pytest.raises(RegistryError, match="weights_sha256 does not match"):
        fresh.import_(rewrite("tampered.p2pz", bytes(flipped)))
    evil = pickle.dumps({"w": 1})
    with pytest.raises(RegistryError, match="not a safetensors file"):
        fresh.import_(rewrite("pickled.p2pz", evil, hashlib.sha256(evil).hexdigest()))
    assert fresh.students() == []


def _dataset(out, n=6, size=32, direction="cat-to-dog@1"):
    """A pairs dataset written directly (no teacher): smooth random sources, their colour-rotated targets."""
    from p2pz.editor.image import pixels_sha256

    (out / "pairs").mkdir(parents=True)
    pairs = []
    for i in range(n):
        src = Image.fromarray((np.random.RandomState(i).rand(size, size, 3) * 255).astype(np.uint8))
        tgt = Image.fromarray(np.asarray(src)[:, :, [2, 0, 1]])
        pid = f"{i:016x}"
        src.save(out / "pairs" / f"{pid}_source.png")
        tgt.save(out / "pairs" / f"{pid}_target.png")
        pairs.append({"id": pid, "kind": "image", "input": f"{i}.png", "source": f"pairs/{pid}_source.png",
                      "target": f"pairs/{pid}_target.png", "source_sha256": pixels_sha256(src),
                      "target_sha256": pixels_sha256(tgt), "scores": {}, "kept": True})
    (out / "manifest.json").write_text(json.dumps({"format": "p2pz-student-pairs", "direction": direction,
                                                   "size": size, "filtered": False, "filter": None, "pairs": pairs}))
    return out


INTERRUPTED_TRAIN = r"""
import sys, time
import torch

plain = torch.optim.Adam.step
calls = []
def held(self, *a, **k):  # after the discriminator's update of step 5, before the generator's: press Ctrl-C here
    out = plain(self, *a, **k)
    calls.append(1)
    if len(calls) == 9:
        print("mid-step", flush=True)
        time.sleep(3)
    return out
torch.optim.Adam.step = held
from p2pz.registry.cli import main
main(sys.argv[1:])
"""


def test_ctrl_c_during_training_then_resume_gives_the_weights_of_an_uninterrupted_run(setup, tmp_path):
    """A real SIGINT in the middle of a step (the discriminator updated, the generator not yet): the step is
    finished and checkpointed, the user is told how to resume, and resuming reaches the uninterrupted weights."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import REPO
    from .test_interrupts import _default_sigint

    db, _ = setup
    data = _dataset(tmp_path / "pairs")
    args = ["--db", db, "-q", "distill", "train", str(data), "--steps", "12", "--width", "4", "--batch", "2",
            "--checkpoint-every", "0", "--held-out", "0", "--json"]
    straight = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_TRAIN, *args, "--out", str(run)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    assert proc.stdout.readline().startswith("mid-step")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved at step 5 of 12" in err
    assert f"--out {run} --resume" in err
    resumed = CliRunner().invoke(main, [*args[:-1], "--out", str(run), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["weights_sha256"] == json.loads(straight.stdout)["weights_sha256"]
    assert json.loads(resumed.stdout)["params"]["steps"] == 12


def test_resume_refuses_a_damaged_checkpoint_and_other_settings_and_a_rerun_needs_force(setup, tmp_path):
    db, _ = setup
    data = _dataset(tmp_path / "pairs")
    run = tmp_path / "run"
    base = ["--db", db, "-q", "distill", "train", str(data), "--out", str(run)]
    runner = CliRunner()
    first = runner.invoke(main, [*base, "--steps", "4", "--width", "4", "--batch", "2", "--json"])
    assert first.exit_code == 0, first.output
    ckpt = run / "checkpoint.safetensors"
    before = ckpt.read_bytes()

    again = runner.invoke(main, [*base, "--steps", "4", "--width", "4"])  # would overwrite the checkpoint
    assert again.exit_code == 1 and "already holds a checkpoint (step 4 of 4)" in again.stderr
    assert "--resume" in again.stderr and "--force" in again.stderr and ckpt.read_bytes() == before
    for extra, held in ((["--width", "8"], "--width 4"), (["--steps", "9"], "--steps 4"),
                        (["--batch", "3"], "--batch 2"), (["--seed", "1"], "--seed 0")):
        res = runner.invoke(main, [*base, "--resume", *extra])
        assert res.exit_code == 1 and held in res.stderr and "--force" in res.stderr, (extra, res.output)
        assert ckpt.read_bytes() == before
    same = runner.invoke(main, [*base, "--resume", "--width", "4", "--json"])  # the same settings: fine
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["weights_sha256"] == json.loads(first.stdout)["weights_sha256"]

    ckpt.write_bytes(before[: len(before) // 2])  # truncated
    res = runner.invoke(main, [*base, "--resume"])
    assert res.exit_code == 1 and "unreadable" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert len(res.stderr.strip().splitlines()) == 1
    forced = runner.invoke(main, [*base, "--steps", "4", "--width", "4", "--batch", "2", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["weights_sha256"] == json.loads(first.stdout)["weights_sha256"]


def test_a_small_student_is_sized_to_its_resolution_and_listed_with_rounded_sizes(setup, tmp_path):
    """At 64 px the default width is 16 (not pix2pix's 64, which made a 117 MB record); the checkpoint is the
    two networks' weights and their two Adam moments; ``student list`` shows sizes and rounded metrics."""
    from safetensors import safe_open

    from p2pz.editor.student import PatchDiscriminator, StudentConfig, UNetGenerator, parameter_count

    db, _ = setup
    data = _dataset(tmp_path / "pairs", n=4, size=64)
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db, "-q", "distill", "train", str(data), "--out", str(tmp_path / "run"),
                               "--steps", "1", "--batch", "2", "--held-out", "0.25", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["config"]["base_channels"] == 16 and record["config"]["disc_channels"] == 16
    cfg = StudentConfig(**record["config"])
    p_g, p_d = parameter_count(UNetGenerator(cfg)), parameter_count(PatchDiscriminator(cfg))
    assert record["parameters"] == p_g and record["weights_bytes"] < 4 * p_g + 65536
    assert record["weights_bytes"] < 10e6  # was 117 MB at width 64
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        floats = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()
                     if f.get_slice(k).get_shape() and f.get_slice(k).get_dtype() == "F32")
    assert floats == 3 * (p_g + p_d)  # weights + Adam's exp_avg and exp_avg_sq, of both networks (+ scalars)
    assert ckpt.stat().st_size < 3 * 4 * (p_g + p_d) + 65536

    listed = runner.invoke(main, ["--db", db, "student", "list"])
    assert listed.exit_code == 0, listed.output
    row = listed.stdout.splitlines()[2].split()
    assert row[:4] == ["cat-to-dog@1", "1", "64", "px"]
    assert f"{record['weights_bytes'] / 1e6:.1f}" in row and "MB" in row
    assert f"{record['metrics']['l1']:.4f}" in row and f"{record['metrics']['psnr']:.2f}" in row
    assert not any(len(cell.split(".")[-1]) > 4 for cell in row if cell.replace(".", "").isdigit())
    shown = json.loads(runner.invoke(main, ["--db", db, "student", "show", "cat-to-dog", "--json"]).stdout)
    assert shown["weights_bytes"] == record["weights_bytes"] and shown["parameters"] == p_g


def test_a_deprecated_student_is_used_only_when_asked_for_and_can_be_undeprecated(setup, tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from p2pz.editor.batch import read_provenance
    from p2pz.editor.student import StudentConfig, UNetGenerator, weights_bytes
    from p2pz.registry.web import Settings, create_app

    db, photos = setup
    reg = Registry.open(db)
    for seed in (1, 2):  # two students of cat-to-dog@1 (different weights)
        cfg = StudentConfig(size=32, base_channels=4, depth=5, seed=seed)
        import torch

        torch.manual_seed(seed)
        reg.store_student("cat-to-dog", config=cfg.to_dict(), weights=weights_bytes(UNetGenerator(cfg)),
                          dataset_sha256="d" * 64, params={}, metrics={"l1": 0.123456789})
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db, "student", "deprecate", "cat-to-dog@1", "--version", "2"])
    assert res.exit_code == 0 and "deprecated" in res.stdout, res.output
    assert Student.load(reg, "cat-to-dog").label == "cat-to-dog@1 student 1"
    assert Student.load(reg, "cat-to-dog", version=2).label == "cat-to-dog@1 student 2"  # asked for: still there
    shown = json.loads(runner.invoke(main, ["--db", db, "student", "show", "cat-to-dog", "--json"]).stdout)
    assert shown["version"] == 1 and shown["deprecated"] is False
    rows = runner.invoke(main, ["--db", db, "student", "list"]).stdout.splitlines()[2:]
    assert "deprecated" in rows[1] and "deprecated" not in rows[0] and "0.1235" in rows[0]
    edited = runner.invoke(main, ["--db", db, "-q", "edit", str(photos / "c0.png"), "--direction", "cat-to-dog",
                                  "--student", "--out", str(tmp_path / "a")])
    assert edited.exit_code == 0, edited.output
    assert read_provenance(next((tmp_path / "a").glob("*.png")))["student"] == 1

    assert runner.invoke(main, ["--db", db, "student", "deprecate", "cat-to-dog", "--version", "1"]).exit_code == 0
    none_left = runner.invoke(main, ["--db", db, "edit", str(photos / "c0.png"), "--direction", "cat-to-dog",
                                     "--student", "--out", str(tmp_path / "b")])
    assert none_left.exit_code == 1 and "every student" in none_left.stderr and "undeprecate" in none_left.stderr
    no_version = runner.invoke(main, ["--db", db, "student", "undeprecate", "cat-to-dog"])
    assert no_version.exit_code == 1 and "--version" in no_version.stderr
    assert len(no_version.stderr.strip().splitlines()) == 1
    missing = runner.invoke(main, ["--db", db, "student", "deprecate", "cat-to-dog", "--version", "7"])
    assert missing.exit_code == 1 and "no student version 7" in missing.stderr

    settings = Settings(db_url=db, work_dir=tmp_path / "work", token="t0ken-t0ken-t0ken", model=str(tiny_model))
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        assert client.post("/api/students/cat-to-dog@1/2/undeprecate").status_code == 401  # a write
        res = client.post("/api/students/cat-to-dog@1/2/undeprecate", headers={"Authorization": "Bearer t0ken-t0ken-t0ken"})
        assert res.status_code == 200 and res.json()["deprecated"] is False and res.json()["version"] == 2
        assert client.post("/api/students/cat-to-dog@1/9/deprecate",
                           headers={"Authorization": "Bearer t0ken-t0ken-t0ken"}).status_code == 404
        listed = client.get("/api/students").json()
        assert [(s["version"], s["deprecated"]) for s in listed] == [(1, True), (2, False)]
        assert all("run" not in s["params"] for s in listed)
    assert Student.load(Registry.open(db), "cat-to-dog").label == "cat-to-dog@1 student 2"
    assert runner.invoke(main, ["--db", db, "student", "undeprecate", "cat-to-dog", "--version", "1"]).exit_code == 0
    assert not any(s.deprecated for s in Registry.open(db).students())


def test_a_rerun_applies_its_own_filter_to_the_pairs_it_reuses(setup, tmp_path, tiny_model, tiny_clip, tiny_vit):
    db, photos = setup
    out = tmp_path / "pairs"

    def pairs(*extra):
        res = CliRunner().invoke(main, ["--db", db, "-q", "distill", "pairs", "cat-to-dog", "--images", str(photos),
                                        "--out", str(out), "--size", "32", "--steps", "2", "--captioner",
                                        str(tiny_model / "captioner"), "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    scorers = ["--clip-model", str(tiny_clip), "--dino-model", str(tiny_vit)]
    assert pairs(*scorers, "--min-directional", "2")["kept"] == 0  # no pair passes (cosines are ≤ 1)
    unfiltered = pairs("--no-filter")
    assert unfiltered["kept"] == 3 and unfiltered["filter"] is None
    manifest = read_manifest(out)
    assert manifest["filtered"] is False and all(p["kept"] for p in manifest["pairs"])
    loose = pairs(*scorers, "--min-directional", "-2", "--max-structure", "100")
    assert loose["kept"] == 3 and loose["filter"]["min_clip_directional"] == -2
    assert read_manifest(out)["filtered"] is True

    fresh = tmp_path / "fresh"  # made unfiltered, then filtered: the reused pairs are scored
    out = fresh
    assert pairs("--no-filter")["kept"] == 3
    assert all(p["scores"] == {} for p in read_manifest(fresh)["pairs"])
    assert pairs(*scorers, "--min-directional", "2")["kept"] == 0
    assert all("clip_directional" in p["scores"] for p in read_manifest(fresh)["pairs"])


def test_caption_skips_the_captioner_in_distill_pairs_and_preview_build(setup, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("P2PZ_HOME", str(tmp_path / "home"))
    db, photos = setup
    runner = CliRunner()
    base = ["--db", db, "distill", "pairs", "cat-to-dog", "--images", str(photos), "--size", "32", "--steps", "2",
            "--captioner", str(tmp_path / "no-blip")]
    without = runner.invoke(main, [*base, "--out", str(tmp_path / "a"), "--no-filter"])
    assert without.exit_code == 1 and "--caption TEXT" in without.stderr
    res = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--no-filter", "--caption", "a photo of a cat",
                               "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["pairs"] == 3 and read_manifest(tmp_path / "b")["caption"] == "a photo of a cat"
    unfiltered = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--caption", "a photo of a cat",
                                      "--clip-model", str(tmp_path / "no-clip")])
    assert unfiltered.exit_code == 0, unfiltered.output
    warning = next(line for line in unfiltered.stderr.splitlines() if line.startswith("warning: pairs are not"))
    assert warning.endswith("with a hub id or a folder)"), warning  # the whole hint, not cut mid-word

    preview = ["--db", db, "preview", "build", "cat-to-dog", "--images", str(photos / "c0.png"), "--steps", "2",
               "--model", str(tiny_model), "--captioner", str(tmp_path / "no-blip"), "--json"]
    failed = runner.invoke(main, preview)
    assert failed.exit_code == 1 and "--caption TEXT" in failed.output
    rendered = runner.invoke(main, [*preview, "--caption", "a photo of a cat"])
    assert rendered.exit_code == 0, rendered.output
    assert [r["status"] for r in json.loads(rendered.stdout)] == ["rendered"]
