"""Registry to registry: ``p2pz pull/push http://HOST:PORT`` between two ``p2pz serve`` apps, each under a real
uvicorn on 127.0.0.1."""

import pytest
from click.testing import CliRunner

from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main
from p2pz.registry.web import create_app
from p2pz.registry.web.settings import Settings

from .conftest import db_dump
from .test_web_security import live

TOKEN = "team-secret-42"
N = 20


def _serve(url, tmp_path, tiny_model, name, **kw):
    return live(create_app(Settings(db_url=url, work_dir=tmp_path / f"work-{name}", token=TOKEN,
                                    captioner=str(tiny_model / "captioner"), model=str(tiny_model),
                                    worker=False, **kw)))


@pytest.fixture
def two(tmp_path, tiny_model, db_url):
    """Registry A (SQLite, two versions and a combination) and B (each backend), each served."""
    a_url = f"sqlite:///{tmp_path / 'a.db'}"
    with Registry.open(a_url) as a:
        a.build_direction("cat", "dog", str(tiny_model), n=N)
        a.build_direction("cat", "dog", str(tiny_model), n=N, scale=2.0)
        a.build_direction("day", "night", str(tiny_model), n=N)
        a.combine({"cat-to-dog@2": 1.0, "day-to-night": 0.5}, name="mix")
    Registry.open(db_url).close()
    with _serve(a_url, tmp_path, tiny_model, "a") as pa, _serve(db_url, tmp_path, tiny_model, "b") as pb:
        yield a_url, db_url, f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"


def test_pull_from_another_registry_keeps_versions_and_identity(two, monkeypatch):
    a_url, b_url, a_http, _ = two
    monkeypatch.delenv("P2PZ_TOKEN", raising=False)  # reads need no token
    with Registry.open(b_url) as b:
        out = b.pull(a_http)
        assert sorted(out["directions"]) == ["cat-to-dog@1", "cat-to-dog@2", "day-to-night@1", "mix@1"]
        with Registry.open(a_url) as a:
            for ref in out["directions"]:
                mine, theirs = a.get(ref), b.get(ref)
                assert mine.vector_numpy().tobytes() == theirs.vector_numpy().tobytes()
                assert theirs.content_sha256 == mine.content_sha256
                assert theirs.origin["source"] == a_http and theirs.origin["version"] == mine.version
        dump = db_dump(b_url)
        assert b.pull(a_http, ["cat-to-dog"])["added"]["directions"] == 0 and db_dump(b_url) == dump


def test_push_needs_the_token_is_idempotent_and_refuses_conflicts(two, monkeypatch, tiny_model):
    a_url, b_url, _, b_http = two
    runner = CliRunner()
    monkeypatch.delenv("P2PZ_TOKEN", raising=False)
    r = runner.invoke(main, ["--db", a_url, "push", b_http, "cat-to-dog@2"])
    assert r.exit_code == 1 and "P2PZ_TOKEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("P2PZ_TOKEN", TOKEN)
    r = runner.invoke(main, ["--db", a_url, "push", b_http, "cat-to-dog@2", "mix"])
    assert r.exit_code == 0 and TOKEN not in r.output, r.output
    with Registry.open(b_url) as b, Registry.open(a_url) as a:
        assert b.get("cat-to-dog@2").content_sha256 == a.get("cat-to-dog@2").content_sha256  # @2 stays @2
        assert b.get("mix@1").vector_numpy().tobytes() == a.get("mix@1").vector_numpy().tobytes()
        assert b.get("cat-to-dog@2").origin["source"].startswith("p2pz push from ")
        assert b.build_direction("cat", "dog", str(tiny_model), n=N, scale=5.0).version == 3  # B's own
        assert a.build_direction("cat", "dog", str(tiny_model), n=N, scale=7.0).version == 3  # A's, other content
    dump = db_dump(b_url)
    assert runner.invoke(main, ["--db", a_url, "push", b_http, "cat-to-dog@2"]).exit_code == 0  # idempotent
    assert db_dump(b_url) == dump
    r = runner.invoke(main, ["--db", a_url, "push", b_http, "cat-to-dog@1", "cat-to-dog@3"])
    assert r.exit_code == 1 and "cat-to-dog@3 exists here" in r.stderr and "--renumber" in r.stderr, r.stderr
    assert db_dump(b_url) == dump  # all or nothing: @1 (free there) did not go in either
    r = runner.invoke(main, ["--db", a_url, "push", b_http, "cat-to-dog@1", "cat-to-dog@3", "--renumber", "--json"])
    assert r.exit_code == 0 and '"to": 4' in r.output, r.output


def test_bad_registry_addresses_and_dead_servers_fail_in_one_line(tmp_path):
    with Registry.open(f"sqlite:///{tmp_path / 'x.db'}") as reg:
        with pytest.raises(RegistryError, match="credentials"):
            reg.pull("http://user:pw@127.0.0.1:9")
        with pytest.raises(RegistryError, match="cannot reach the registry"):
            reg.pull("http://127.0.0.1:9")


def test_pull_of_long_names_is_chunked_under_the_servers_character_cap(tmp_path, tiny_model, monkeypatch):
    """Issue #35 item 11: 60 combinations of 194-character names are ~12,000 characters of refs, over the
    10,000 that /api/export takes in ``names``: the pull splits them by characters, not only by count."""
    monkeypatch.delenv("P2PZ_TOKEN", raising=False)
    a_url, b_url = f"sqlite:///{tmp_path / 'long.db'}", f"sqlite:///{tmp_path / 'here.db'}"
    names = [f"{i:02d}-" + "x" * 191 for i in range(60)]
    with Registry.open(a_url) as a:
        a.build_direction("cat", "dog", str(tiny_model), n=N)
        for i, name in enumerate(names):
            a.combine({"cat-to-dog": 0.5 + i / 100}, name=name)
    Registry.open(b_url).close()
    with _serve(a_url, tmp_path, tiny_model, "long") as port:
        r = CliRunner().invoke(main, ["--db", b_url, "pull", f"http://127.0.0.1:{port}", "--json"])
    assert r.exit_code == 0, r.output
    with Registry.open(b_url) as b, Registry.open(a_url) as a:
        for name in names:
            assert b.get(f"{name}@1").content_sha256 == a.get(f"{name}@1").content_sha256


def test_a_pull_may_not_redeclare_a_stored_encoder(two, tiny_model, monkeypatch):
    """Issue #35 item 8 through ``pull http://``: a registry that states the same encoder fingerprint with another
    field is refused in one line naming the field, and the pulling registry is left as it was."""
    from sqlalchemy import create_engine, text

    a_url, b_url, a_http, _ = two
    monkeypatch.delenv("P2PZ_TOKEN", raising=False)
    with Registry.open(b_url) as b:
        b.build_direction("day", "night", str(tiny_model), n=N)  # B stores the encoder as it really is
    engine = create_engine(a_url)
    with engine.begin() as conn:  # A states the same fingerprint with another architecture
        conn.execute(text("UPDATE encoders SET architecture = 'EvilTextModel'"))
    engine.dispose()
    before = db_dump(b_url)
    r = CliRunner().invoke(main, ["--db", b_url, "pull", a_http])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert "architecture" in r.stderr and "EvilTextModel" in r.stderr
    assert db_dump(b_url) == before
