"""Push and pull directions through a Hugging Face Hub: huggingface_hub talks HTTP to a Hub-compatible server on
127.0.0.1 (tests/hub_server.py) that keeps what is pushed. Nothing of huggingface_hub is mocked."""

import json

import huggingface_hub
import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi
from safetensors import safe_open
from safetensors.numpy import load

from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main

from .conftest import db_dump
from .hub_server import HubServer

TOKEN = "hf_test_secret_token_123"
REPO = "alice/animal-edits"
N = 20


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = HubServer(tokens={TOKEN}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # LFS through the git-lfs batch API (the test Hub does not speak Xet, which hf_xet would otherwise use)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server
    server.stop()


@pytest.fixture
def source(tmp_path, tiny_model):
    reg = Registry.open(f"sqlite:///{tmp_path / 'source.db'}")
    reg.build_direction("cat", "dog", str(tiny_model), n=N, tags=["animals"])
    reg.build_direction("day", "night", str(tiny_model), n=N)
    reg.combine({"cat-to-dog": 1.0, "day-to-night": -0.25}, name="mix")
    yield reg
    reg.close()


def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_push_writes_the_card_the_index_and_plain_safetensors(hub, source):
    out = source.push(f"hf://{REPO}")
    assert sorted(out["added"]) == ["cat-to-dog@1", "day-to-night@1", "mix@1"]
    files = hub.files(REPO)
    index = json.loads(files["p2pz.json"])
    for path, meta in index["files"].items():  # every file with its sha256
        import hashlib

        assert hashlib.sha256(files[path]).hexdigest() == meta["sha256"] and len(files[path]) == meta["size"]
    assert set(index["files"]) | {"p2pz.json", "README.md"} == set(files)
    card = files["README.md"].decode()
    head = card.split("---")[1]
    assert "library_name: p2pz" in head and '"animals"' in head and "base_model" not in head  # a folder model
    assert "`cat-to-dog@1`" in card and "hf_hub_download" in card and TOKEN not in card
    diag = source.inspect("cat-to-dog@1")  # the card's diagnostics are direction inspect's
    row = next(line for line in card.splitlines() if line.startswith("| `cat-to-dog@1`"))
    assert f"stability {diag.stability['mean']:.2f}" in row and "word-swap cos" in row
    assert all(c.name in row for c in diag.checks if c.status != "ok")
    assert next(e for e in index["directions"] if e["name"] == "mix")["summary"].get("diagnostics") is None
    d = source.get("cat-to-dog@1")
    st = load(files["directions/cat-to-dog/1.safetensors"])  # plain safetensors, no p2pz
    assert st["delta"].tobytes() == d.vector_numpy().tobytes() and st["key"].tobytes() == d.key.tobytes()
    meta = _metadata(files["directions/cat-to-dog/1.safetensors"], tmp=hub)
    assert meta["name"] == "cat-to-dog" and meta["version"] == "1" and meta["encoder"] == d.encoder
    assert meta["content_sha256"] == d.content_sha256 and len(meta["source_bank_sha256"]) == 64
    assert files["banks/cat/" + index["banks"][0]["sha256"][:16] + ".txt"].decode().count("\n") == N
    # as on the real Hub, the safetensors go to LFS storage (the batch API, a signed PUT), the text inline
    tree = hub.repo(REPO).resolve("main").tree
    assert {p for p, blob in tree.items() if blob.lfs} == {p for p in files if p.endswith(".safetensors")}
    assert {"p2pz.json", "README.md"} <= {p for r in hub.log if r.host == "hub" for p in r.uploaded}


def _metadata(blob: bytes, tmp) -> dict:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(blob)
        f.flush()
        with safe_open(f.name, "np") as st:
            return st.metadata()


def test_push_then_pull_is_bytes_equal_and_records_the_commit(hub, source, db_url):
    pushed = source.push(f"hf://{REPO}")
    target = Registry.open(db_url)
    got = target.pull(f"hf://{REPO}")
    assert got["revision"] == pushed["commit"] and sorted(got["directions"]) == ["cat-to-dog@1", "day-to-night@1",
                                                                                 "mix@1"]
    for ref in ("cat-to-dog@1", "day-to-night@1", "mix@1"):
        a, b = source.get(ref), target.get(ref)
        assert a.vector_numpy().tobytes() == b.vector_numpy().tobytes() and a.key.tobytes() == b.key.tobytes()
        assert a.content_sha256 == b.content_sha256
        assert b.origin == {"source": f"hf://{REPO}", "revision": pushed["commit"], "version": 1, "upstream": None}
    assert target.bank("cat@1").sentences == source.bank("cat@1").sentences
    dump = db_dump(db_url)
    again = target.pull(f"hf://{REPO}")  # idempotent
    assert again["added"]["directions"] == 0 and db_dump(db_url) == dump
    target.close()


def test_a_second_push_sends_only_the_new_version(hub, source, tiny_model):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    source.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    hub.log.clear()
    out = source.push(f"hf://{REPO}", ["cat-to-dog@1", "cat-to-dog@2"])
    assert out["added"] == ["cat-to-dog@2"] and out["skipped"] == ["cat-to-dog@1"]
    last = hub.commits(REPO)[-1]
    assert sorted(last.added) == ["README.md", "directions/cat-to-dog/2.safetensors", "p2pz.json"]
    new_file = hub.files(REPO)["directions/cat-to-dog/2.safetensors"]
    import hashlib

    assert [oid for r in hub.log if r.host == "storage" for oid in r.uploaded] == [hashlib.sha256(new_file).hexdigest()]
    assert "cat-to-dog@2" in last.message
    n = len(hub.commits(REPO))
    assert source.push(f"hf://{REPO}", ["cat-to-dog@2"])["added"] == [] and len(hub.commits(REPO)) == n


def test_a_version_on_the_hub_with_other_content_is_refused_naming_both_hashes(hub, source, tiny_model, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    other = Registry.open(f"sqlite:///{tmp_path / 'other.db'}")
    mine = other.build_direction("cat", "dog", str(tiny_model), n=N, scale=3.0)
    theirs = source.get("cat-to-dog@1")
    with pytest.raises(RegistryError) as err:
        other.push(f"hf://{REPO}", ["cat-to-dog@1"])
    assert theirs.content_sha256[:16] in str(err.value) and mine.content_sha256[:16] in str(err.value)
    # and the other way: pulling @1 into a registry whose @1 is other content is refused unless --renumber
    dump = db_dump(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(RegistryError, match="--renumber"):
        other.pull(f"hf://{REPO}")
    assert db_dump(f"sqlite:///{tmp_path / 'other.db'}") == dump
    got = other.pull(f"hf://{REPO}", renumber=True)
    assert got["renumbered"][0]["from"] == 1 and got["renumbered"][0]["to"] == 2
    assert other.get("cat-to-dog@2").content_sha256 == theirs.content_sha256
    other.close()


def test_a_tampered_file_is_refused_and_nothing_is_imported(hub, source, db_url):
    source.push(f"hf://{REPO}")
    blob = bytearray(hub.files(REPO)["directions/day-to-night/1.safetensors"])
    blob[-1] ^= 1
    hub.tamper(REPO, "directions/day-to-night/1.safetensors", bytes(blob))
    target = Registry.open(db_url)
    dump = db_dump(db_url)
    with pytest.raises(RegistryError, match="day-to-night/1.safetensors has sha256 .* refused"):
        target.pull(f"hf://{REPO}")
    assert db_dump(db_url) == dump
    target.close()


def test_a_pull_interrupted_midway_leaves_the_registry_as_it_was(hub, source, tmp_path):
    source.push(f"hf://{REPO}")
    hub.fail_download(REPO, "directions/mix/1.safetensors", mode="error", times=None)
    url = f"sqlite:///{tmp_path / 'target.db'}"
    target = Registry.open(url)
    target.make_bank("owl", n=5)
    dump = db_dump(url)
    with pytest.raises(RegistryError, match="the Hub answered 500"):
        target.pull(f"hf://{REPO}")
    assert db_dump(url) == dump
    target.close()


def test_a_401_is_one_line_naming_hf_token_and_the_token_never_shows(hub, source, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_456")
    r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'source.db'}", "push", f"hf://{REPO}"])
    assert r.exit_code == 1 and "HF_TOKEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "hf_wrong_token_456" not in r.output + r.stderr
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'source.db'}", "push", f"hf://{REPO}", "--json"])
    assert r.exit_code == 0, r.output
    everything = b"".join(hub.files(REPO).values()) + db_dump(f"sqlite:///{tmp_path / 'source.db'}").encode()
    assert TOKEN.encode() not in everything and TOKEN not in r.output


def test_pull_at_a_tag_or_commit_and_offline_from_the_cache(hub, source, tiny_model, tmp_path, monkeypatch):
    first = source.push(f"hf://{REPO}", ["cat-to-dog"])["commit"]
    HfApi(endpoint=hub.url, token=TOKEN).create_tag(REPO, tag="v1", revision=first)
    source.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    source.push(f"hf://{REPO}", ["cat-to-dog@2"])
    at_tag = Registry.open(f"sqlite:///{tmp_path / 'tag.db'}")
    got = at_tag.pull(f"hf://{REPO}@v1")
    assert got["revision"] == first and got["directions"] == ["cat-to-dog@1"]
    assert at_tag.get("cat-to-dog").origin["revision"] == first
    at_commit = Registry.open(f"sqlite:///{tmp_path / 'commit.db'}")
    assert at_commit.pull(f"hf://{REPO}@{first}")["directions"] == ["cat-to-dog@1"]
    r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'main.db'}", "pull", f"hf://{REPO}", "cat-to-dog"])
    assert r.exit_code == 0 and "cat-to-dog@1, cat-to-dog@2" in r.output, r.output
    hub.stop()  # the Hub is gone: what is cached still pulls
    _offline(monkeypatch)
    cold = Registry.open(f"sqlite:///{tmp_path / 'offline.db'}")
    got = cold.pull(f"hf://{REPO}")
    assert sorted(got["directions"]) == ["cat-to-dog@1", "cat-to-dog@2"]
    assert cold.get("cat-to-dog@2").vector_numpy().tobytes() == source.get("cat-to-dog@2").vector_numpy().tobytes()
    with pytest.raises(RegistryError, match="HF_HUB_OFFLINE"):
        cold.pull("hf://alice/never-pulled")
    for reg in (at_tag, at_commit, cold):
        reg.close()


def test_bad_addresses_fail_in_one_line(hub, source, tmp_path):
    for url in ("hf://just-owner", "hf://a/b/c", "ftp://x"):
        r = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'source.db'}", "pull", url])
        assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, (url, r.stderr)
    with pytest.raises(RegistryError, match="no Hub repo"):
        source.pull("hf://alice/missing")


def test_an_index_naming_a_path_outside_the_repo_is_refused(hub, source, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    index["directions"][0]["file"] = "../../outside.safetensors"
    index["files"]["../../outside.safetensors"] = index["files"]["directions/cat-to-dog/1.safetensors"]
    hub.tamper(REPO, "p2pz.json", json.dumps(index).encode())
    target = Registry.open(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(RegistryError, match="unsafe path"):
        target.pull(f"hf://{REPO}")
    assert target.directions() == []
    target.close()


def test_students_travel_only_when_asked(hub, source, tmp_path):
    import numpy as np
    from safetensors.numpy import save

    weights = save({"w": np.arange(6, dtype=np.float32)})
    source.store_student("cat-to-dog", config={"size": 32}, weights=weights, dataset_sha256="0" * 64, params={},
                         metrics={"lpips": 0.1})
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    assert not any(p.startswith("students/") for p in hub.files(REPO))
    out = source.push(f"hf://{REPO}", ["cat-to-dog"], students=True)
    assert out["added"] == [] and out["files"] == 1
    (path,) = [p for p in hub.files(REPO) if p.startswith("students/")]
    assert hub.files(REPO)[path] == weights
    target = Registry.open(f"sqlite:///{tmp_path / 't.db'}")
    got = target.pull(f"hf://{REPO}")
    assert got["added"]["students"] == 1
    (st,) = target.students()
    assert st.direction == "cat-to-dog@1" and st.metrics == {"lpips": 0.1}
    target.close()


def test_without_hf_token_the_hubs_own_login_is_used(hub, source, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with pytest.raises(RegistryError, match="HF_TOKEN"):  # no token anywhere: the Hub refuses the write
        source.push(f"hf://{REPO}")
    stored = tmp_path / "hf-home" / "token"  # what `hf auth login` writes
    stored.parent.mkdir()
    stored.write_text(TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(stored))
    assert sorted(source.push(f"hf://{REPO}")["added"]) == ["cat-to-dog@1", "day-to-night@1", "mix@1"]
    assert TOKEN.encode() not in b"".join(hub.files(REPO).values())


# --- issue #35: what reaches the Hub, and what a hostile or broken repo can do -------------------------------------

def _cli(db: str, *args):
    return CliRunner().invoke(main, ["--db", db, *args])


def _one_line_error(r, *expected):
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, (r.exit_code, r.stderr, r.output)
    assert "Traceback" not in r.output + r.stderr, r.output
    for text in expected:
        assert text in r.stderr, (text, r.stderr)


def _replace(hub, path: str, data: bytes, edit_index=None) -> dict:
    """Rewrite ``path`` at the head (None: remove nothing, just edit the index) and record its sha256 and size in
    ``p2pz.json``: a repo whose files match their hashes. → the new index."""
    import hashlib

    index = json.loads(hub.files(REPO)["p2pz.json"])
    if path is not None:
        hub.tamper(REPO, path, data)
        index["files"][path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if edit_index:
        edit_index(index)
    hub.tamper(REPO, "p2pz.json", json.dumps(index).encode())
    return index


def test_a_local_model_folder_reaches_the_hub_only_by_its_name(hub, tiny_model, tmp_path):
    import shutil

    from p2pz.registry.exchange.hub import public_model

    folder = tmp_path / "alice-private" / "models" / "my-sd"
    shutil.copytree(tiny_model, folder)
    reg = Registry.open(f"sqlite:///{tmp_path / 'local.db'}")
    reg.build_direction("cat", "dog", str(folder), n=N)
    assert reg.get("cat-to-dog").encoder_model == str(folder)  # the registry itself keeps the folder
    reg.push(f"hf://{REPO}")
    files = hub.files(REPO)
    index = json.loads(files["p2pz.json"])
    assert [e["model"] for e in index["encoders"]] == ["my-sd"]
    assert index["directions"][0]["summary"]["model"] == "my-sd"
    assert _metadata(files["directions/cat-to-dog/1.safetensors"], tmp=hub)["model"] == "my-sd"
    assert "| my-sd |" in files["README.md"].decode()
    leaks = {str(folder), str(folder.parent), str(tmp_path), "alice-private", str(tiny_model), str(tiny_model.parent)}
    uploaded = dict(files)
    for path, blob in uploaded.items():
        for leak in leaks:
            assert leak.encode() not in blob, (path, leak)
    reg.close()
    # the one rule: a Hub id as it is, a local folder by its name only
    assert public_model("runwayml/stable-diffusion-v1-5") == "runwayml/stable-diffusion-v1-5"
    assert public_model("gpt2") == "gpt2"
    for local in ("/home/alice/models/my-sd", "/home/alice/models/my-sd/", "./models/my-sd", "../my-sd",
                  "~/models/my-sd", "C:\\Users\\alice\\my-sd", "models/nested/my-sd"):
        assert public_model(local) == "my-sd", local


def test_a_bank_file_that_is_not_utf8_is_one_line_and_nothing_is_imported(hub, source, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    index = json.loads(hub.files(REPO)["p2pz.json"])
    bank_file = next(b["file"] for b in index["banks"] if b["concept"] == "cat")
    _replace(hub, bank_file, b"a photo of a cat\n\xff\xfe broken \xc3\x28\n")
    db = f"sqlite:///{tmp_path / 'target.db'}"
    Registry.open(db).close()
    dump = db_dump(db)
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, bank_file, f"hf://{REPO}", "UTF-8")
    assert "UnicodeDecodeError" not in r.stderr and db_dump(db) == dump


def test_a_direction_file_whose_delta_is_not_finite_is_refused(hub, source, tmp_path):
    import numpy as np
    from safetensors.numpy import save

    source.push(f"hf://{REPO}", ["cat-to-dog"])
    path = "directions/cat-to-dog/1.safetensors"
    meta = _metadata(hub.files(REPO)[path], tmp=hub)
    st = load(hub.files(REPO)[path])
    st["delta"][0, 3, 1] = np.nan
    _replace(hub, path, save(st, metadata=meta))
    db = f"sqlite:///{tmp_path / 'target.db'}"
    Registry.open(db).close()
    dump = db_dump(db)
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, path, "delta", "NaN")
    assert db_dump(db) == dump


def test_a_malformed_summary_is_named_and_never_looks_like_a_network_error(hub, source, tiny_model, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])

    def break_summary(index):
        index["directions"][0]["summary"]["scores"] = "not a mapping"
    _replace(hub, None, b"", break_summary)
    source.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    r = _cli(f"sqlite:///{tmp_path / 'source.db'}", "push", f"hf://{REPO}", "cat-to-dog@2")
    _one_line_error(r, "p2pz.json", "summary", "scores")
    assert "cannot reach" not in r.stderr and "HF_ENDPOINT" not in r.stderr


def test_the_card_escapes_every_text_from_the_repo_and_the_registry(hub, source, tiny_model, tmp_path):
    import re

    source.tag("cat-to-dog@1", "<b>bold</b>")
    source.push(f"hf://{REPO}", ["cat-to-dog", "day-to-night"])

    def hostile(index):
        s = index["directions"][0]["summary"]
        s.update(source="<script>alert(1)</script>", target="[click](javascript:alert(1))",
                 model="<img src=x onerror=alert(1)>", scores={"<i>fid</i>": 1.5}, n_images=3,
                 diagnostics={"checks_ok": 1, "warnings": ["<svg onload=alert(1)>"]})
        index["directions"][1]["summary"]["target"] = "![x](javascript:alert(2)) <a href='javascript:x'>y</a>"
    _replace(hub, None, b"", hostile)
    source.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
    source.push(f"hf://{REPO}", ["cat-to-dog@2"])
    card = hub.files(REPO)["README.md"].decode()
    assert "<" not in card and ">" not in card.replace("→", "")  # no HTML at all, from any source
    assert "&lt;script&gt;" in card and "&lt;b&gt;bold&lt;/b&gt;" not in card.split("---")[1]
    targets = re.findall(r"\]\(([^)]*)\)", card)  # every markdown link or image target
    assert targets and all(t.startswith("https://") or re.fullmatch(r"[\w.+\-/]+", t) for t in targets), targets
    assert not re.search(r"\]\(\s*javascript", card, re.I)
    head = card.split("---")[1]
    assert '"\\u003cb\\u003ebold\\u003c/b\\u003e"' in head  # the tag, JSON-escaped in the YAML, still the tag


def test_a_preview_path_that_is_not_a_relative_path_is_refused(hub, source, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    _replace(hub, None, b"", lambda index: index["directions"][0]["summary"].update(preview="javascript:alert(1)"))
    with pytest.raises(RegistryError, match="p2pz.json is not a valid p2pz index .*preview"):
        Registry.open(f"sqlite:///{tmp_path / 't.db'}").pull(f"hf://{REPO}")


def test_combinations_as_deep_as_a_push_allows_pull(hub, source, tmp_path):
    from p2pz.store.repository import MAX_NESTING

    prev = "cat-to-dog"
    for i in range(20):  # deeper than the 16 pulls used to allow, within the registry's limit
        prev = source.combine({prev: 1.0}, name=f"deep{i}").ref
    assert 20 < MAX_NESTING
    source.push(f"hf://{REPO}", [prev])
    target = Registry.open(f"sqlite:///{tmp_path / 't.db'}")
    got = target.pull(f"hf://{REPO}", [prev])
    assert prev in got["directions"]
    assert target.get(prev).vector_numpy().tobytes() == source.get(prev).vector_numpy().tobytes()
    target.close()


def test_misleading_lines_name_the_real_problem(hub, source, tmp_path, monkeypatch):
    from . import hub_server

    source.push(f"hf://{REPO}")
    db = f"sqlite:///{tmp_path / 't.db'}"
    HfApi(endpoint=hub.url, token=TOKEN).delete_file("directions/mix/1.safetensors", REPO)
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, "directions/mix/1.safetensors", f"hf://{REPO}")
    assert "no p2pz.json" not in r.stderr
    for rev in ("..", "a..b", ".hidden", "-x", "v1.lock", "v1."):
        r = _cli(db, "pull", f"hf://{REPO}@{rev}")
        _one_line_error(r, "invalid revision")
        assert "HF_HUB_OFFLINE" not in r.stderr and "network" not in r.stderr, (rev, r.stderr)
    for repo in ("a/b..c", "a/b--c", "a/-b", "a/b-", "a/b.git", ".a/b", "a/" + "x" * 97):
        r = _cli(db, "pull", f"hf://{repo}")
        _one_line_error(r, "invalid Hub repo id", "'..'")
        assert "network" not in r.stderr, (repo, r.stderr)
    assert Registry.open(db).directions() == []
    # online, a Hub answer huggingface_hub reports as a cache miss is the Hub's answer, not "HF_HUB_OFFLINE is set"
    resolve = hub_server._Handler._resolve

    def refuse_head(self, repo, revision, path):
        if self.command == "HEAD":
            raise hub_server.HubError(400, "Bad request: resolve refused")
        return resolve(self, repo, revision, path)
    monkeypatch.setattr(hub_server._Handler, "_resolve", refuse_head)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cold-cache"))
    r = _cli(db, "pull", f"hf://{REPO}")
    _one_line_error(r, "the Hub answered 400")
    assert "HF_HUB_OFFLINE" not in r.stderr


def test_control_characters_from_a_remote_never_reach_the_terminal(hub, tiny_model, tmp_path, monkeypatch):
    from . import hub_server

    ansi = "\x1b[2J\x1b]0;owned\x07\x9b31m"
    src = Registry.open(f"sqlite:///{tmp_path / 'src.db'}")
    src.build_direction("cat", "dog", str(tiny_model), source_sentences=[f"a cat{ansi} sitting", "a cat"],
                        target_sentences=["a dog", "a dog sitting"])
    src.push(f"hf://{REPO}")
    src.close()
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert _cli(db, "pull", f"hf://{REPO}").exit_code == 0
    for args in (["bank", "show", "cat@1"], ["bank", "show", "cat@1", "--sentences"]):
        r = _cli(db, *args)
        assert r.exit_code == 0 and "a cat" in r.output, r.output
        assert not any(c in r.output for c in "\x1b\x07\x9b"), (args, r.output)

    serve = hub_server._Handler._serve

    def answer(self, *args):
        if self.command != "GET":
            return serve(self, *args)
        raise hub_server.HubError(500, f"Internal Error {ansi} in the Hub")
    monkeypatch.setattr(hub_server._Handler, "_serve", answer)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cold-cache"))
    r = _cli(f"sqlite:///{tmp_path / 'other.db'}", "pull", f"hf://{REPO}")
    _one_line_error(r, "the Hub answered 500", "Internal Error", "in the Hub")  # the Hub's words, inert
    assert not any(c in r.stderr for c in "\x1b\x07\x9b"), r.stderr


def test_direction_show_separates_every_field_from_its_value(hub, source, tmp_path):
    source.push(f"hf://{REPO}", ["cat-to-dog"])
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert _cli(db, "pull", f"hf://{REPO}").exit_code == 0
    r = _cli(db, "direction", "show", "cat-to-dog@1")
    assert r.exit_code == 0, r.output
    import re

    d = source.get("cat-to-dog@1")
    keys = [k for k, v in d.to_dict().items() if v not in (None, [], "")]
    assert "content_sha256" in keys
    for key in keys:  # "KEY  value": at least one space, whatever the key's length
        assert re.search(rf"^{key} +\S", r.output, re.M), (key, r.output)
    assert re.search(rf"^content_sha256 +{d.content_sha256}$", r.output, re.M), r.output


def test_only_network_failures_read_as_cannot_reach_the_hub(hub, source, monkeypatch):
    """A Hub that is not there is one line naming HF_ENDPOINT; an error of ours keeps its traceback instead of
    posing as a network problem (a malformed index once did)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(RegistryError, match=r"cannot reach the Hub for alice/animal-edits .*HF_ENDPOINT") as err:
        source.push(f"hf://{REPO}", [])
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)

    def broken(*a, **k):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", broken)
    with pytest.raises(ZeroDivisionError, match="a bug of ours"):
        source.push(f"hf://{REPO}", [])
