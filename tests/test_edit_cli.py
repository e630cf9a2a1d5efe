"""p2pz edit / generate end to end with the tiny model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.editor.batch import read_provenance
from p2pz.registry import Registry
from p2pz.registry.cli import main


@pytest.fixture
def setup(tmp_path, tiny_model, db_url):
    reg = Registry.open(db_url)
    reg.build_direction("cat", "dog", str(tiny_model), n=20)
    reg.build_direction("day", "night", str(tiny_model), n=20)
    reg.close()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.RandomState(i).rand(60, 80, 3) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def edit(db_url, tiny_model, *args):
    base = ["--db", db_url, "-q", "edit", *args, "--steps", "3", "--captioner", str(tiny_model / "captioner")]
    return CliRunner().invoke(main, base)


def test_folder_times_directions_with_provenance_refusal_and_cache(setup, tmp_path, tiny_model, db_url):
    out = tmp_path / "out"
    r = edit(db_url, tiny_model, str(setup), "--direction", "cat-to-dog", "--direction", "day-to-night@1",
             "--out", str(out), "--json", "--cache-maps")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["p0__cat-to-dog@1.png", "p0__day-to-night@1.png", "p1__cat-to-dog@1.png", "p1__day-to-night@1.png"]
    prov = read_provenance(out / "p0__cat-to-dog@1.png")
    assert prov["direction"] == "cat-to-dog@1" and prov["seed"] == 0 and prov["steps"] == 3
    assert prov["caption"] and prov["encoder_fingerprint"] == Registry.open(db_url).get("cat-to-dog").encoder
    assert prov["xa_guidance"] == 0.1 and prov["guidance_scale"] == 5.0 and prov["inversion"]["lambda_ac"] == 20.0
    assert not any(o["inversion_cached"] for o in first)

    again = edit(db_url, tiny_model, str(setup), "--direction", "cat-to-dog", "--out", str(out))
    assert again.exit_code == 1 and "exists; pass --force" in again.stderr
    assert "2 of 2 images failed" in again.stderr

    plain = edit(db_url, tiny_model, str(setup), "--direction", "cat-to-dog", "--out", str(out), "--force", "--json")
    assert plain.exit_code == 0, plain.output  # inversions are cached; maps are read only with --cache-maps
    assert all(o["inversion_cached"] and not o["reference_cached"] for o in json.loads(plain.stdout))
    forced = edit(db_url, tiny_model, str(setup), "--direction", "cat-to-dog", "--out", str(out), "--force", "--json",
                  "--cache-maps")
    assert forced.exit_code == 0, forced.output
    assert all(o["inversion_cached"] and o["reference_cached"] for o in json.loads(forced.stdout))


def test_one_bad_image_does_not_stop_the_batch(setup, tmp_path, tiny_model, db_url):
    bad = setup / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    r = edit(db_url, tiny_model, str(setup / "p0.png"), str(bad), str(tmp_path / "missing.png"),
             "--direction", "cat-to-dog", "--out", str(tmp_path / "o2"), "--caption", "a cat", "--save-reconstruction")
    assert r.exit_code == 1
    assert "broken.png" in r.stderr and "missing.png" in r.stderr and "2 of 3 images failed" in r.stderr
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["p0__cat-to-dog@1.png", "p0__reconstruction.png"]


def test_unknown_direction_and_missing_model_are_one_line_errors(setup, tmp_path, tiny_model, db_url):
    r = edit(db_url, tiny_model, str(setup), "--direction", "nope")
    assert r.exit_code == 1 and r.stderr.startswith("error: no direction named")
    r = edit(db_url, tiny_model, str(setup), "--direction", "cat-to-dog", "--model", str(tmp_path / "nomodel"))
    assert r.exit_code == 1 and "does not exist" in r.stderr and r.stderr.count("\n") == 1


def test_generate(setup, tmp_path, tiny_model, db_url):
    r = CliRunner().invoke(main, ["--db", db_url, "-q", "generate", "a cat on a sofa", "--direction", "cat-to-dog",
                                  "--steps", "3", "--seed", "4", "--out", str(tmp_path / "g"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["generated"].endswith("generated-4.png") and out["edits"][0].endswith("generated-4__cat-to-dog@1.png")
    prov = read_provenance(out["edits"][0])
    assert prov["negative_prompt"] == "" and prov["xa_guidance"] == 0.15 and prov["synthetic"] is True


@pytest.fixture(scope="module")
def guarded_model(tiny_model, tmp_path_factory):
    """The tiny snapshot plus a tiny safety checker whose thresholds flag every image."""
    import shutil

    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    folder = tmp_path_factory.mktemp("guarded") / "sd"
    shutil.copytree(tiny_model, folder)
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 20, "num_hidden_layers": 1,
                                     "num_attention_heads": 2},
                        vision_config={"hidden_size": 16, "intermediate_size": 20, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=8)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every cosine score is above −10: everything is flagged
    checker.save_pretrained(folder / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "feature_extractor")
    return folder


def test_safety_checker_blanks_are_reported_and_can_be_turned_off(setup, tmp_path, guarded_model, db_url):
    base = ["--db", db_url, "edit", str(setup / "p0.png"), "--direction", "cat-to-dog", "--model", str(guarded_model),
            "--steps", "2", "--caption", "a cat"]
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "the safety checker blanked" in r.stderr and "--no-safety-checker" in r.stderr
    out = tmp_path / "a" / "p0__cat-to-dog@1.png"
    assert np.asarray(Image.open(out)).max() == 0 and read_provenance(out)["safety_checker_flagged"] is True
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "b"), "--no-safety-checker"])
    assert r.exit_code == 0 and "safety checker" not in r.stderr
    assert np.asarray(Image.open(tmp_path / "b" / "p0__cat-to-dog@1.png")).max() > 0


# --- issue 19: device, captioner, output names, checks before loading, source paths ----------------------------

@pytest.fixture
def lib(tmp_path, tiny_model, tiny_model_b):
    """A SQLite registry with cat-to-dog (the tiny model) and cat-to-dog-b (the second tiny text encoder)."""
    url = f"sqlite:///{tmp_path / 'edit.db'}"
    reg = Registry.open(url)
    reg.build_direction("cat", "dog", str(tiny_model), n=20)
    reg.build_direction("cat", "dog", str(tiny_model_b), n=20, name="cat-to-dog-b")
    reg.close()
    return url


def _photo(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.RandomState(seed).rand(40, 48, 3) * 255).astype(np.uint8)).save(path)
    return path


def _one_line_error(r, *needles):
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception  # not a traceback
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_a_device_this_machine_lacks_is_one_line_in_edit_and_build(lib, tmp_path, tiny_model):
    import torch

    photo = _photo(tmp_path / "p.png")
    for device in ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"]):
        for args in (["edit", str(photo), "--direction", "cat-to-dog", "--caption", "a cat", "--out",
                      str(tmp_path / "out")],
                     ["direction", "build", "cat", "dog", "--model", str(tiny_model), "-n", "10"]):
            r = CliRunner().invoke(main, ["--db", lib, *args, "--device", device])
            _one_line_error(r, repr(device), "cpu")


def test_the_snapshot_captioner_is_the_default_offline(lib, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # BLIP from the hub cannot load: the tiny snapshot's own must be used
    photo = _photo(tmp_path / "p.png")
    r = CliRunner().invoke(main, ["--db", lib, "-q", "edit", str(photo), "--direction", "cat-to-dog", "--steps", "2",
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert read_provenance(tmp_path / "out" / "p__cat-to-dog@1.png")["caption"]
    from p2pz.editor.caption import DEFAULT_CAPTIONER, snapshot_captioner

    assert snapshot_captioner(tmp_path) == DEFAULT_CAPTIONER  # a snapshot without captioner/: BLIP base


def test_a_captioner_that_cannot_load_stops_the_batch_with_one_error(lib, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for i in range(2):
        _photo(tmp_path / "in" / f"p{i}.png", seed=i)
    r = CliRunner().invoke(main, ["--db", lib, "-q", "edit", str(tmp_path / "in"), "--direction", "cat-to-dog",
                                  "--steps", "2", "--captioner", "p2pz-test/no-such-blip", "--out",
                                  str(tmp_path / "out")])
    _one_line_error(r, "captioner", "p2pz-test/no-such-blip", "--caption")
    assert "images failed" not in r.stderr and not (tmp_path / "out").exists()


def test_inputs_sharing_a_stem_get_distinct_outputs(lib, tmp_path):
    folder = tmp_path / "in"
    for i, ext in enumerate(("bmp", "webp", "png")):
        _photo(folder / f"img.{ext}", seed=i)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["--db", lib, "-q", "edit", str(folder), "--direction", "cat-to-dog", "--steps", "2",
                                  "--caption", "a cat", "--out", str(out)])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["img.bmp__cat-to-dog@1.png", "img.webp__cat-to-dog@1.png", "img__cat-to-dog@1.png"]
    assert {read_provenance(out / n)["source_image"] for n in names} == {"img.bmp", "img.webp", "img.png"}
    # the same file name in two folders: refused as a whole, before the model loads
    a, b = _photo(tmp_path / "a" / "x.png"), _photo(tmp_path / "b" / "x.png", seed=1)
    r = CliRunner().invoke(main, ["--db", lib, "-q", "edit", str(a), str(b), "--direction", "cat-to-dog",
                                  "--caption", "a cat", "--out", str(out)])
    _one_line_error(r, "would both be written as", "x__cat-to-dog@1.png", "--out")


def test_what_needs_no_model_is_refused_before_it_loads(lib, tmp_path, tiny_model, monkeypatch):
    from diffusers import UNet2DConditionModel

    from p2pz.editor import Editor

    loads = []

    def spy(cls_, name):  # records each call of the loader entry point, then loads as usual
        real = getattr(cls_, "from_pretrained").__func__
        monkeypatch.setattr(cls_, "from_pretrained",
                            classmethod(lambda cls, *a, **k: loads.append(name) or real(cls, *a, **k)))

    spy(Editor, "editor")
    spy(UNet2DConditionModel, "unet")
    photo, out = _photo(tmp_path / "p.png"), tmp_path / "out"
    base = ["--db", lib, "-q", "edit", "--steps", "2", "--caption", "a cat", "--out", str(out)]
    r = CliRunner().invoke(main, [*base, str(tmp_path / "missing.png"), "--direction", "cat-to-dog"])
    assert r.exit_code == 1 and "missing.png' does not exist" in r.stderr and loads == []
    _photo(out / "p__cat-to-dog@1.png")
    r = CliRunner().invoke(main, [*base, str(photo), "--direction", "cat-to-dog"])
    assert r.exit_code == 1 and "exists; pass --force" in r.stderr and loads == []
    r = CliRunner().invoke(main, [*base, str(photo), "--direction", "cat-to-dog-b", "--model", str(tiny_model)])
    _one_line_error(r, "was built with text encoder", "rebuild it with --model")
    assert "unet" not in loads
    r = CliRunner().invoke(main, [*base, str(photo), "--direction", "cat-to-dog", "--force"])  # the spies see loads
    assert r.exit_code == 0, r.output
    assert loads.count("unet") == 1


def test_outputs_record_the_source_path_as_given(lib, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = _photo(tmp_path / "photos" / "p.png").relative_to(tmp_path)
    absolute = _photo(tmp_path / "photos" / "q.png", seed=1)
    base = ["--db", lib, "-q", "edit", "--direction", "cat-to-dog", "--steps", "2", "--caption", "a cat"]
    r = CliRunner().invoke(main, [*base, str(relative), str(absolute), "--out", "o1"])
    assert r.exit_code == 0, r.output
    assert read_provenance(tmp_path / "o1" / "p__cat-to-dog@1.png")["source_path"] == str(relative)
    assert read_provenance(tmp_path / "o1" / "q__cat-to-dog@1.png")["source_path"] == "q.png"  # not the disk layout
    r = CliRunner().invoke(main, [*base, str(absolute), "--out", "o2", "--record-source-path"])
    assert r.exit_code == 0, r.output
    assert read_provenance(tmp_path / "o2" / "q__cat-to-dog@1.png")["source_path"] == str(absolute.resolve())


def test_p2pz_model_does_not_override_the_directions_own_model(setup, tmp_path, tiny_model, db_url, monkeypatch):
    """A direction edits with the model it was built with: $P2PZ_MODEL (the default for builds) does not replace
    it; --model does."""
    monkeypatch.setenv("P2PZ_MODEL", str(tmp_path / "no-such-model"))
    r = edit(db_url, tiny_model, str(setup / "p0.png"), "--direction", "cat-to-dog", "--out", str(tmp_path / "a"),
             "--json")
    assert r.exit_code == 0, r.output
    assert read_provenance(tmp_path / "a" / "p0__cat-to-dog@1.png")["model"] == str(tiny_model)
    r = edit(db_url, tiny_model, str(setup / "p0.png"), "--direction", "cat-to-dog", "--out", str(tmp_path / "b"),
             "--model", str(tmp_path / "no-such-model"))
    assert r.exit_code == 1 and "no-such-model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
