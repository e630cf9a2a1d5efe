"""`p2pz eval` end to end on the tiny models: edit, score, store, show, sort; scoring existing edits; the
evaluations revision on a populated database."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.store.repository import METRICS


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        rng = np.random.RandomState(i)
        Image.fromarray((np.kron(rng.rand(6, 6, 3), np.ones((8, 8, 1))) * 255).astype(np.uint8)).save(
            folder / f"cat{i}.png")
    return folder


def _scorer_args(tiny_clip, tiny_vit, alex_backbone):
    return ["--clip-model", str(tiny_clip), "--dino-model", str(tiny_vit), "--lpips-weights", str(alex_backbone),
            "--device", "cpu"]


@pytest.mark.slow
def test_eval_run_stores_scores_that_show_and_sort(db_url, tiny_model, photos, tiny_clip, tiny_vit, alex_backbone,
                                                   tmp_path):
    runner = CliRunner()
    for src, tgt in (("cat", "dog"), ("cat", "lion")):
        assert runner.invoke(main, ["--db", db_url, "direction", "build", src, tgt, "--model", str(tiny_model),
                                    "-n", "10"]).exit_code == 0
    scorer = _scorer_args(tiny_clip, tiny_vit, alex_backbone)
    runs = {}
    for name in ("cat-to-dog", "cat-to-lion"):
        res = runner.invoke(main, ["--db", db_url, "-q", "eval", "run", name, "--images", str(photos), "--limit", "2",
                                   "--caption", "a cat", "--steps", "2", "--out", str(tmp_path / "evals"), "--json",
                                   *scorer])
        assert res.exit_code == 0, res.output
        runs[name] = json.loads(res.stdout)
    run = runs["cat-to-dog"]
    assert len(run["images"]) == 2 and set(run["means"]) == set(METRICS)
    assert run["means"]["clip_acc"] in (0.0, 0.5, 1.0) and run["means"]["structure_distance"] >= 0
    assert 0 <= run["means"]["bg_ssim"] <= 1 and run["params"]["clip_model"] == str(tiny_clip)
    assert all(img["output"].endswith("__cat-to-dog@1.png") for img in run["images"])

    shown = json.loads(runner.invoke(main, ["--db", db_url, "direction", "show", "cat-to-dog", "--json"]).stdout)
    assert shown["scores"]["run_id"] == run["run_id"] and shown["scores"]["n_images"] == 2
    assert shown["scores"]["scores"] == pytest.approx(run["means"])
    text = runner.invoke(main, ["--db", db_url, "direction", "show", "cat-to-dog"]).stdout
    assert "scores" in text and "structure_distance" in text

    for metric, lower_first in (("structure_distance", True), ("clip_score", False)):
        listed = json.loads(runner.invoke(main, ["--db", db_url, "direction", "list", "--sort", metric,
                                                 "--json"]).stdout)
        values = [d["scores"][metric] for d in listed]
        assert values == sorted(values, reverse=not lower_first)
    bad = runner.invoke(main, ["--db", db_url, "direction", "list", "--sort", "beauty"])
    assert bad.exit_code == 1 and "unknown metric" in bad.stderr
    from p2pz.registry.cli.evaluate import METRIC_COLUMNS

    assert METRIC_COLUMNS == METRICS  # the CLI keeps its own copy so `p2pz --help` does not import the store


    # a second run is the latest
    again = json.loads(runner.invoke(main, ["--db", db_url, "-q", "eval", "run", "cat-to-dog", "--images",
                                            str(photos), "--limit", "1", "--caption", "a cat", "--steps", "2",
                                            "--json", *scorer]).stdout)
    reg = Registry.open(db_url)
    latest = reg.scores([reg.get("cat-to-dog")])["cat-to-dog@1"]
    assert latest["run_id"] == again["run_id"] and latest["n_images"] == 1
    reg.close()


def test_eval_score_reads_the_provenance_of_existing_edits(tmp_path, tiny_model, photos, tiny_clip, tiny_vit,
                                                           alex_backbone):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model), "-n",
                                "10"]).exit_code == 0
    out = tmp_path / "edits"
    res = runner.invoke(main, ["--db", db, "-q", "edit", str(photos), "--direction", "cat-to-dog", "--steps", "2",
                               "--caption", "a cat", "--out", str(out), "--save-reconstruction",
                               "--record-source-path"])  # absolute inputs: their path is recorded only on request
    assert res.exit_code == 0, res.output
    edits = sorted(str(p) for p in out.glob("*__cat-to-dog@1.png"))
    res = runner.invoke(main, ["--db", db, "eval", "score", *edits, "--json",
                               *_scorer_args(tiny_clip, tiny_vit, alex_backbone)])
    assert res.exit_code == 0, res.output
    (run,) = json.loads(res.stdout)
    assert run["direction"] == "cat-to-dog@1" and len(run["images"]) == 3 and set(run["means"]) == set(METRICS)
    recon = str(next(out.glob("*__reconstruction.png")))
    bad = runner.invoke(main, ["--db", db, "eval", "score", recon, *_scorer_args(tiny_clip, tiny_vit, alex_backbone)])
    assert bad.exit_code == 1 and "not an edit" in bad.stderr


def test_missing_metric_models_are_one_line_errors(tmp_path, tiny_model, photos, tiny_clip, tiny_vit):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model), "-n", "5"])
    res = runner.invoke(main, ["--db", db, "eval", "run", "cat-to-dog", "--images", str(photos), "--clip-model",
                               str(tmp_path / "no-clip"), "--dino-model", str(tiny_vit)])
    assert res.exit_code == 1 and "--clip-model" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_sweep_runs_once_per_value_and_reports(tmp_path, tiny_model, photos, tiny_clip, tiny_vit, alex_backbone):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model), "-n", "5"])
    res = runner.invoke(main, ["--db", db, "-q", "eval", "run", "cat-to-dog", "--images", str(photos), "--limit", "1",
                               "--caption", "a cat", "--steps", "2", "--sweep", "xa_guidance=0,0.5",
                               "--report", str(tmp_path / "sweep.html"), "--json",
                               *_scorer_args(tiny_clip, tiny_vit, alex_backbone)])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)
    assert [r["label"] for r in runs] == ["xa_guidance=0", "xa_guidance=0.5"]
    assert [r["params"]["edit"]["xa_guidance"] for r in runs] == [0.0, 0.5]
    assert runs[0]["means"] != runs[1]["means"]  # the guidance changed the edit
    page = (tmp_path / "sweep.html").read_text()
    # one plot + (source, reconstruction, edit) for each run's one image; nothing fetched from outside
    assert page.count("data:image/png;base64,") == 1 + 2 * 3 and "http" not in page
    bad = runner.invoke(main, ["--db", db, "eval", "run", "cat-to-dog", "--images", str(photos), "--sweep",
                               "steps=1,2", *_scorer_args(tiny_clip, tiny_vit, alex_backbone)])
    assert bad.exit_code == 1 and "malformed sweep" in bad.stderr


def test_pie_bench_layout(tmp_path, tiny_model, tiny_clip, tiny_vit, alex_backbone, monkeypatch):
    from p2pz.registry.analysis.pie_bench import PIE_COLUMNS, bracketed, unbracketed

    assert bracketed("a [black] [cat] on a mat") == "black cat" and unbracketed("a [cat] sat") == "a cat sat"
    images = tmp_path / "annotation_images"
    (images / "1_change_object_80").mkdir(parents=True)
    for i in range(2):
        Image.fromarray((np.random.RandomState(i).rand(64, 64, 3) * 255).astype(np.uint8)).save(
            images / "1_change_object_80" / f"{i}.jpg")
    mask = [512 * 200 + 200, 100, 512 * 201 + 200, 100]
    mapping = {
        "000": {"image_path": "1_change_object_80/0.jpg", "original_prompt": "a [cat] on a sofa",
                "editing_prompt": "a [dog] on a sofa", "editing_type_id": "1", "mask": mask},
        "001": {"image_path": "1_change_object_80/1.jpg", "original_prompt": "a cat on a sofa",
                "editing_prompt": "a cat and a [hat] on a sofa", "editing_type_id": "2", "mask": mask},
        "002": {"image_path": "1_change_object_80/1.jpg", "original_prompt": "a [cat] in a garden",
                "editing_prompt": "a [dog] in a garden", "editing_type_id": "1", "mask": []},
    }
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    res = CliRunner().invoke(main, ["--db", db, "-q", "eval", "pie-bench", str(tmp_path / "mapping_file.json"),
                                    "--images", str(images), "--model", str(tiny_model), "--bank-size", "20",
                                    "--steps", "2", "--json", *_scorer_args(tiny_clip, tiny_vit, alex_backbone)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["images"] == 2 and out["skipped_add_delete"] == {"2": 1}
    assert list(out["table"]) == [column for _, column, _ in PIE_COLUMNS]
    assert out["table"]["SSIM ×10²"] == pytest.approx(100 * out["means"]["bg_ssim"])
    assert {r["source"] for r in out["rows"]} == {"cat"} and {r["target"] for r in out["rows"]} == {"dog"}
    reg = Registry.open(db)
    assert reg.bank("cat").n_sentences == 20 and reg.directions() == []  # banks kept, the direction temporary


def test_eval_run_names_a_component_that_cannot_load_and_each_skip_says_why(tiny_model, photos, tiny_clip,
                                                                            tiny_vit, alex_backbone, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = f"sqlite:///{tmp_path / 'eval.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", url, "direction", "build", "cat", "dog", "--model", str(tiny_model),
                                "-n", "10"]).exit_code == 0
    base = ["--db", url, "-q", "eval", "run", "cat-to-dog", "--steps", "2",
            *_scorer_args(tiny_clip, tiny_vit, alex_backbone)]
    # the captioner cannot load: one error naming it and the fixes, not "no image could be evaluated (3 skipped)"
    r = runner.invoke(main, [*base, "--images", str(photos), "--captioner", "p2pz-test/no-such-blip"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: cannot load the captioner"), r.stderr
    assert "p2pz-test/no-such-blip" in r.stderr and "--caption" in r.stderr and "--captioner" in r.stderr
    assert "skipped" not in r.stderr
    # images that really cannot be used are skipped, and the error says why
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = runner.invoke(main, [*base, "--images", str(broken), "--caption", "a cat"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "a.png is not a readable image" in r.stderr and "1 more skipped" in r.stderr, r.stderr
