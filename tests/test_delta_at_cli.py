"""``p2pz edit --delta-at`` and Δ_token in ``p2pz direction show`` and the web page, end to end on the tiny model
(docs/algorithm.md §13)."""

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2pz.editor.batch import read_provenance
from p2pz.registry import Registry
from p2pz.registry.cli import main


@pytest.fixture
def lib(tmp_path, tiny_model):
    """A SQLite registry with cat-to-dog (it has Δ_token) and a photo; returns (db url, db file, photo)."""
    path = tmp_path / "registry.db"
    url = f"sqlite:///{path}"
    with Registry.open(url) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=20)
    photo = tmp_path / "p0.png"
    Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype(np.uint8)).save(photo)
    return url, path, photo


def cli(url, *args):
    return CliRunner().invoke(main, ["--db", url, "-q", *args])


def edit(url, tiny_model, *args):
    return cli(url, "edit", *args, "--steps", "2", "--captioner", str(tiny_model / "captioner"))


def drop_token(path):
    """Δ_token's columns back to NULL, as for an embedding made before schema revision 0010 (raw SQL: the ORM
    refuses to change a stored embedding)."""
    with sqlite3.connect(path) as con:
        con.execute("UPDATE embeddings SET token_mean = NULL, token_word = NULL, token_count = NULL")
    con.close()


def test_edit_at_the_word_records_it_and_notes_a_caption_without_the_word(lib, tmp_path, tiny_model):
    url, _, photo = lib
    out = tmp_path / "out"
    r = edit(url, tiny_model, str(photo), "--direction", "cat-to-dog", "--caption", "a photo of a cat",
             "--delta-at", "word", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["notes"] == [] and "note:" not in r.stderr
    prov = read_provenance(out / "p0__cat-to-dog@1.png")
    assert prov["delta_at"] == "word" and prov["delta_at_fallback"] == 0 and "notes" not in prov

    r = edit(url, tiny_model, str(photo), "--direction", "cat-to-dog", "--caption", "a photo of a horse",
             "--delta-at", "word+pad", "--out", str(out), "--force")
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cat-to-dog@1" in notes[0] and "'cat'" in notes[0], r.stderr
    assert "edited with --delta-at all" in notes[0] and str(photo) in notes[0]
    prov = read_provenance(out / "p0__cat-to-dog@1.png")
    assert prov["delta_at"] == "word+pad" and prov["delta_at_fallback"] == 1
    assert len(prov["notes"]) == 1 and "do not contain 'cat'" in prov["notes"][0]

    r = edit(url, tiny_model, str(photo), "--direction", "cat-to-dog", "--caption", "a photo of a horse",
             "--delta-at", "word", "--out", str(out), "--force", "--json")  # --json: the notes in it and on stderr
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)[0]["notes"]) == 1 and r.stderr.count("note:") == 1

    r = edit(url, tiny_model, str(photo), "--direction", "cat-to-dog", "--caption", "a photo of a horse",
             "--out", str(out), "--force")  # the default: Δ everywhere, nothing to note
    assert r.exit_code == 0, r.output
    assert "note:" not in r.stderr
    prov = read_provenance(out / "p0__cat-to-dog@1.png")
    assert prov["delta_at"] == "all" and "delta_at_fallback" not in prov


def test_a_bad_delta_at_is_a_usage_error():
    r = CliRunner().invoke(main, ["edit", "x.png", "--direction", "cat-to-dog", "--delta-at", "everywhere"])
    assert r.exit_code == 2
    assert "Invalid value for '--delta-at'" in r.stderr and "'everywhere' is not one of" in r.stderr
    assert "--delta-at [auto|all|word|word+pad]" in CliRunner().invoke(main, ["edit", "--help"]).stdout


def test_direction_show_has_the_token_line_and_json(lib):
    url, _, _ = lib
    shown = json.loads(cli(url, "direction", "show", "cat-to-dog", "--json").stdout)
    token = shown["vector"]["token"]
    assert token["shape"] == [32] and token["norm"] > 0
    assert token["word"] == "cat" and token["target_word"] == "dog"
    assert len(token["sentences"]) == 2 and all(0 < n <= 20 for n in token["sentences"])
    r = cli(url, "direction", "show", "cat-to-dog")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("Δ_token"))
    assert f"‖Δ_token‖ {token['norm']:.4g}" in line
    assert f"'cat' (in {token['sentences'][0]} bank sentences) → 'dog' (in {token['sentences'][1]})" in line


def test_a_direction_without_a_token_says_why_and_is_refused_at_the_word(lib, tmp_path, tiny_model):
    url, path, photo = lib
    drop_token(path)
    token = json.loads(cli(url, "direction", "show", "cat-to-dog", "--json").stdout)["vector"]["token"]
    assert list(token) == ["none"] and "no token-aligned mean for cat, dog" in token["none"]
    r = cli(url, "direction", "show", "cat-to-dog")
    line = next(x for x in r.stdout.splitlines() if x.startswith("Δ_token"))
    assert line.split(None, 1)[1].startswith("none (no token-aligned mean for cat, dog")

    r = edit(url, tiny_model, str(photo), "--direction", "cat-to-dog", "--caption", "a cat", "--delta-at", "word",
             "--out", str(tmp_path / "out"))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --delta-at word needs cat-to-dog@1's token-aligned direction")
    assert "use --delta-at all" in r.stderr and not (tmp_path / "out").exists()
    r = cli(url, "generate", "a cat", "--direction", "cat-to-dog", "--steps", "2", "--delta-at", "word+pad",
            "--out", str(tmp_path / "g"))
    assert r.exit_code == 1 and r.stderr.startswith("error: --delta-at word+pad needs") and r.stderr.count("\n") == 1


def test_the_web_page_and_api_show_the_token_line(lib, tmp_path, tiny_model):
    from .test_web_api import AUTH, Client, png, settings
    from p2pz.registry.web import create_app

    url, path, _ = lib
    with Client(create_app(settings(url, tmp_path, tiny_model, worker=False))) as c:
        token = c.get("/api/directions/cat-to-dog").json()["vector"]["token"]
        assert token["word"] == "cat" and token["target_word"] == "dog"
        page = c.get("/d/cat-to-dog").text
        assert "Δ_token" in page and f"‖Δ_token‖ {token['norm']:.4g}" in page and "&#39;cat&#39; (in" in page
        bad = c.post("/api/edits", files={"image": ("p.png", png(), "image/png")},
                     data={"directions": "cat-to-dog", "delta_at": "middle"}, headers=AUTH)
        assert bad.status_code == 400 and "delta_at must be one of" in bad.text
        queued = c.post("/api/edits", files={"image": ("p.png", png(), "image/png")},
                        data={"directions": "cat-to-dog", "delta_at": "word"}, headers=AUTH)
        assert queued.status_code == 202 and queued.json()["params"]["delta_at"] == "word"
    drop_token(path)
    with Client(create_app(settings(url, tmp_path, tiny_model, worker=False))) as c:
        assert "none (no token-aligned mean" in c.get("/d/cat-to-dog").text
        refused = c.post("/api/edits", files={"image": ("p.png", png(), "image/png")},
                         data={"directions": "cat-to-dog", "delta_at": "word"}, headers=AUTH)
        assert refused.status_code == 400 and "token-aligned direction" in refused.text
