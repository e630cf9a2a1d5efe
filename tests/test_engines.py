"""Batch work on Ray (registry.engine) against a local Ray started once per session: results equal the local
engine's byte for byte, a failing item leaves the others done, a rerun does nothing new."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.registry import Registry
from p2pz.registry.cli import main

pytestmark = pytest.mark.slow  # a local Ray cluster whose workers load the models, and edits on both engines

ray = pytest.importorskip("ray", reason="Ray is not installed (make installs p2pz[ray])")


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def setup(tmp_path, tiny_model):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry.open(db) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=5)
        reg.build_direction("day", "night", str(tiny_model), n=5)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((np.random.RandomState(i).rand(40, 48, 3) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    return db, photos


def _edit(db, photos, out, tiny_model, *extra):
    return CliRunner().invoke(main, ["--db", db, "-q", "edit", str(photos), "--direction", "cat-to-dog",
                                     "--direction", "day-to-night", "--steps", "2", "--out", str(out),
                                     "--captioner", str(tiny_model / "captioner"), "--json", *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ray_edit_equals_the_local_run_byte_for_byte(local_ray, setup, tmp_path, tiny_model):
    db, photos = setup
    local = _edit(db, photos, tmp_path / "local", tiny_model, "--no-cache")
    assert local.exit_code == 0, local.output
    remote = _edit(db, photos, tmp_path / "ray", tiny_model, "--no-cache", "--engine", "ray", "--workers", "2")
    assert remote.exit_code == 0, remote.output
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert len(a) == 6 and a.keys() == b.keys()
    assert a == b  # images and their provenance chunks, bit for bit
    outcomes = json.loads(remote.stdout)
    assert [Path(o["image"]).name for o in outcomes] == ["p0.png", "p1.png", "p2.png"]  # in input order
    assert all(o["ok"] for o in outcomes)


def test_a_failing_item_leaves_the_others_done_and_a_rerun_does_nothing_new(local_ray, setup, tmp_path, tiny_model):
    db, photos = setup
    (photos / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = _edit(db, photos, tmp_path / "out", tiny_model, "--engine", "ray")
    assert res.exit_code == 1 and "1 of 3 images failed" in res.stderr
    outcomes = {Path(o["image"]).name: o for o in json.loads(res.stdout)}
    assert outcomes["p1.png"]["ok"] is False and "not a readable image" in outcomes["p1.png"]["error"]
    assert outcomes["p0.png"]["ok"] and outcomes["p2.png"]["ok"]
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert len(before) == 4
    (photos / "p1.png").unlink()
    again = _edit(db, photos, tmp_path / "out", tiny_model, "--engine", "ray", "--skip-existing")
    assert again.exit_code == 0, again.output
    assert all(o["skipped"] for o in json.loads(again.stdout))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before  # nothing rewritten


def test_engine_options_are_checked(setup, tmp_path):
    db, photos = setup
    res = CliRunner().invoke(main, ["--db", db, "edit", str(photos), "--direction", "cat-to-dog", "--workers", "2"])
    assert res.exit_code == 1 and "need --engine ray" in res.stderr


def _pairs_csv(path: Path, n: int) -> Path:
    concepts = ["cat", "dog", "lion", "tiger", "horse", "zebra", "day", "night", "summer", "winter", "sea", "lake"]
    lines = ["source,target,name", "# twenty pairs of a dozen concepts"]
    for i in range(n):
        a, b = concepts[i % len(concepts)], concepts[(i * 5 + 1) % len(concepts)]
        lines.append(f"{a},{b}" + (f",pair-{i}" if i % 2 else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(db):
    with Registry.open(db) as reg:
        return {d.ref: (d.content_sha256, d.key.tobytes(), d.source, d.target) for d in reg.directions()}


def test_build_many_on_ray_gives_the_records_of_local_builds(local_ray, tmp_path, tiny_model):
    pairs = _pairs_csv(tmp_path / "pairs.csv", 20)
    local_db, ray_db = (f"sqlite:///{tmp_path / name}" for name in ("local.db", "ray.db"))
    runner = CliRunner()
    common = ["direction", "build-many", str(pairs), "--model", str(tiny_model), "-n", "6", "--json"]
    local = runner.invoke(main, ["--db", local_db, "-q", *common])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(main, ["--db", ray_db, "-q", *common, "--engine", "ray", "--workers", "2"])
    assert remote.exit_code == 0, remote.output
    assert len(json.loads(remote.stdout)) == 20
    a, b = _records(local_db), _records(ray_db)
    assert len(a) == len({(r["source"], r["target"], r["name"]) for r in json.loads(local.stdout)}) and a == b
    again = runner.invoke(main, ["--db", ray_db, "-q", *common, "--engine", "ray"])
    assert again.exit_code == 0 and _records(ray_db) == b  # nothing new: every build returns the stored version


def test_build_many_reports_bad_lines_and_failing_pairs(tmp_path, tiny_model):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    bad = tmp_path / "bad.csv"
    bad.write_text("cat,dog\nonly-one-column\n")
    res = CliRunner().invoke(main, ["--db", db, "direction", "build-many", str(bad), "--model", str(tiny_model)])
    assert res.exit_code == 1 and "line 2" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("cat,dog\ncat@7,dog\nday,night,bad@name\n")
    res = CliRunner().invoke(main, ["--db", db, "direction", "build-many", str(mixed), "--model", str(tiny_model),
                                    "-n", "5"])
    assert res.exit_code == 1 and "2 of 3 pairs failed" in res.stderr
    assert "cat@7" in res.stderr
    with Registry.open(db) as reg:
        assert [d.ref for d in reg.directions()] == ["cat-to-dog@1"]


def test_preview_build_on_ray_stores_the_previews_a_local_build_makes(local_ray, setup, tmp_path, tiny_model,
                                                                        monkeypatch):
    db, _ = setup
    runner = CliRunner()
    args = ["--db", db, "-q", "preview", "build", "--steps", "2", "--captioner", str(tiny_model / "captioner"),
            "--json"]
    local = runner.invoke(main, args)
    assert local.exit_code == 0, local.output
    from p2pz.registry.library.previews import previews_dir

    rendered = {p.parent.name + "/" + p.name: p.read_bytes() for p in previews_dir().glob("*/edit.png")}
    assert len(rendered) == 2
    monkeypatch.setenv("P2PZ_HOME", str(tmp_path / "other-home"))  # a second, empty preview store
    remote = runner.invoke(main, args + ["--engine", "ray", "--workers", "2"])
    assert remote.exit_code == 0, remote.output
    assert [r["status"] for r in json.loads(remote.stdout)] == ["rendered", "rendered"]
    assert {p.parent.name + "/" + p.name: p.read_bytes() for p in previews_dir().glob("*/edit.png")} == rendered
    again = runner.invoke(main, args + ["--engine", "ray"])
    assert [r["status"] for r in json.loads(again.stdout)] == ["cached", "cached"]


def test_distill_pairs_on_ray_writes_the_dataset_a_local_run_writes(local_ray, setup, tmp_path, tiny_model):
    from p2pz.editor.student.pairs import read_manifest

    db, photos = setup
    runner = CliRunner()
    args = ["--db", db, "-q", "distill", "pairs", "cat-to-dog", "--images", str(photos), "--synthetic", "2",
            "--size", "32", "--steps", "2", "--captioner", str(tiny_model / "captioner"), "--no-filter"]
    local = runner.invoke(main, args + ["--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(main, args + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"])
    assert remote.exit_code == 0, remote.output
    a, b = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "ray")
    assert len(a["pairs"]) == 5
    key = lambda m: sorted((p["id"], p["source_sha256"], p["target_sha256"]) for p in m["pairs"])  # noqa: E731
    assert key(a) == key(b)  # the same pairs, pixel for pixel (ray may finish them in another order)
    assert {k: v for k, v in a.items() if k != "pairs"} == {k: v for k, v in b.items() if k != "pairs"}
    again = runner.invoke(main, args + ["--out", str(tmp_path / "ray"), "--engine", "ray"])
    assert again.exit_code == 0 and len(read_manifest(tmp_path / "ray")["pairs"]) == 5  # resumed: nothing new


def test_a_worker_that_cannot_start_is_one_line(local_ray, setup, tmp_path, tiny_model):
    db, photos = setup
    res = _edit(db, photos, tmp_path / "out", tiny_model, "--engine", "ray", "--model", str(tmp_path / "missing"))
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: the Ray job failed") and "missing" in res.stderr


def test_ray_edits_an_sdxl_direction_as_the_local_engine_does(local_ray, tmp_path, tiny_model, tiny_sdxl):
    db = f"sqlite:///{tmp_path / 'xl.db'}"
    with Registry.open(db) as reg:
        assert reg.build_direction("cat", "dog", str(tiny_sdxl), n=5).family == "sdxl"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray((np.random.RandomState(i).rand(40, 48, 3) * 255).astype(np.uint8)).save(photos / f"p{i}.png")

    def edit(out, *extra):
        res = CliRunner().invoke(main, ["--db", db, "-q", "edit", str(photos), "--direction", "cat-to-dog", "--steps",
                                        "2", "--caption", "a photo of a cat", "--out", str(out), "--no-cache",
                                        "--json", *extra])
        assert res.exit_code == 0, res.output
        return _files(out)

    local, remote = edit(tmp_path / "local"), edit(tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert len(local) == 2 and local == remote  # pixels and provenance (the model fingerprint too) bit for bit
