"""SDXL through the front ends (issue #22): the tiny-model command, build/show/inspect, edit (with the cache and
the layer choice), generate, and the Ray engine, on a tiny SDXL snapshot."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.editor.batch import read_provenance
from p2pz.registry import Registry
from p2pz.registry.cli import main


def run(db_url, *args):
    return CliRunner().invoke(main, ["--db", db_url, "-q", *args])


@pytest.fixture
def xl_registry(tmp_path, tiny_model, tiny_sdxl, db_url):
    """An SD direction and the SDXL one of the same banks, and a folder with one photo."""
    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=16)
    reg.close()
    r = run(db_url, "direction", "build", "cat@1", "dog@1", "--model", str(tiny_sdxl), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ref"] == "cat-to-dog-sdxl@1"
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype(np.uint8)).save(photos / "p0.png")
    return photos


def test_tiny_model_family_flag(tmp_path):
    r = CliRunner().invoke(main, ["dev", "tiny-model", "--family", "sdxl", "--vocab", "trained", str(tmp_path / "xl")])
    assert r.exit_code == 0, r.output
    assert "sdxl" in r.stdout and "pooled 40" in r.stdout
    assert (tmp_path / "xl" / "text_encoder_2").is_dir() and (tmp_path / "xl" / "tokenizer_2").is_dir()
    bad = CliRunner().invoke(main, ["dev", "tiny-model", "--family", "sdxl", "--v-prediction", str(tmp_path / "v")])
    assert bad.exit_code == 2 and "--v-prediction is for --family sd" in bad.output


def test_show_lists_the_other_models_and_inspect_splits_the_profile(xl_registry, db_url, tiny_sdxl):
    r = run(db_url, "direction", "show", "cat-to-dog-sdxl", "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["family"] == "sdxl" and shown["vector"]["pooled_shape"] == [1, 40]
    assert [s["ref"] for s in shown["siblings"]] == ["cat-to-dog@1"]
    text = run(db_url, "direction", "show", "cat-to-dog@1")
    assert "other models" in text.stdout and "cat-to-dog-sdxl@1" in text.stdout
    r = run(db_url, "direction", "inspect", "cat-to-dog-sdxl", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["token_profiles"]) == {"text_encoder", "text_encoder_2"}
    whole, parts = np.array(d["token_profile"]), [np.array(p) for p in d["token_profiles"].values()]
    assert np.allclose(whole ** 2, parts[0] ** 2 + parts[1] ** 2, rtol=1e-6)  # the two slices make up Δ


def test_edit_and_generate_on_sdxl(xl_registry, db_url, tiny_sdxl, tmp_path):
    out = tmp_path / "out"
    base = ["--steps", "3", "--caption", "a photo of a cat", "--out", str(out)]
    r = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog-sdxl", "--xa-layers", "high",
            "--size", "48", "--json", "--cache-maps", *base)
    assert r.exit_code == 0, r.output
    png = out / "p0__cat-to-dog-sdxl@1.png"
    prov = read_provenance(png)
    assert prov["xa_layers"] == "high" and prov["direction"] == "cat-to-dog-sdxl@1"
    with Image.open(png) as im:
        assert im.size == (48, 48)
    again = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog-sdxl", "--xa-layers", "high",
                "--size", "48", "--json", "--cache-maps", "--force", *base)
    assert again.exit_code == 0 and json.loads(again.stdout)[0]["reference_cached"]
    other = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog-sdxl", "--size", "48", "--json",
                "--cache-maps", "--force", *base)  # another layer set: another reference entry
    assert other.exit_code == 0 and not json.loads(other.stdout)[0]["reference_cached"]
    g = run(db_url, "generate", "a cat on a sofa", "--direction", "cat-to-dog-sdxl", "--steps", "3", "--out",
            str(tmp_path / "gen"), "--json")
    assert g.exit_code == 0, g.output
    # a name that exists for both families needs the model in use
    reg = Registry.open(db_url)
    reg.build_direction("cat@1", "dog@1", str(tiny_sdxl), name="cat-to-dog")
    reg.close()
    amb = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog", *base)
    assert amb.exit_code == 1 and "exists for 2 text encoders" in amb.stderr
    chosen = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog", "--model", str(tiny_sdxl), "--force",
                 *base)
    assert chosen.exit_code == 0, chosen.output
    assert (out / "p0__cat-to-dog@2.png").is_file()


def test_directions_of_two_families_in_one_edit_are_refused(xl_registry, db_url, tmp_path):
    out = tmp_path / "mixed"
    r = run(db_url, "edit", str(xl_registry), "--direction", "cat-to-dog", "--direction", "cat-to-dog-sdxl",
            "--steps", "2", "--caption", "a photo of a cat", "--out", str(out))
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "cat-to-dog@1 and cat-to-dog-sdxl@1 were built with different text encoders" in r.stderr
    assert not out.exists()


def test_preview_build_eval_and_distill_pairs_on_sdxl(xl_registry, db_url, tiny_sdxl, tmp_path, tiny_clip, tiny_vit,
                                                      alex_backbone):
    caption = ["--caption", "a photo of a cat"]
    prev = run(db_url, "preview", "build", "cat-to-dog-sdxl", "--steps", "2", "--images", str(xl_registry),
               "--json", *caption)
    assert prev.exit_code == 0, prev.output
    assert [p["status"] for p in json.loads(prev.stdout)] == ["rendered"]
    scorers = ["--clip-model", str(tiny_clip), "--dino-model", str(tiny_vit), "--lpips-weights", str(alex_backbone),
               "--device", "cpu"]
    ev = run(db_url, "eval", "run", "cat-to-dog-sdxl", "--images", str(xl_registry), "--steps", "2", "--out",
             str(tmp_path / "evals"), "--json", *caption, *scorers)
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    assert result["images"][0]["output"].endswith("__cat-to-dog-sdxl@1.png")
    assert result["means"]["structure_distance"] >= 0
    pairs = run(db_url, "distill", "pairs", "cat-to-dog-sdxl", "--images", str(xl_registry), "--synthetic", "1",
                "--out", str(tmp_path / "pairs"), "--size", "32", "--steps", "2", "--no-filter", "--json", *caption)
    assert pairs.exit_code == 0, pairs.output
    from p2pz.editor.student.pairs import read_manifest

    manifest = read_manifest(tmp_path / "pairs")
    assert len(manifest["pairs"]) == 2 and manifest["direction"] == "cat-to-dog-sdxl@1"
