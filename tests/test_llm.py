"""The LLM generator against a real HTTP server on 127.0.0.1 (no mocking of the openai client)."""

import json

import pytest
from click.testing import CliRunner

from p2pz.generators import GeneratorError
from p2pz.generators.llm import LLMGenerator, clean_line
from p2pz.registry import Registry, RegistryError
from p2pz.registry.cli import main

from .conftest import db_dump
from .llm_server import FakeLLM

SENTINEL = "sk-p2pz-SENTINEL-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def sentinel_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)


def make(reg_or_none, server, **kw):
    kw.setdefault("model", "fake-llm")
    kw.setdefault("base_url", server.url)
    return kw


def test_normal_run_collects_n_sentences_with_provenance(reg, home):
    with FakeLLM() as server:
        bank = reg.make_bank("cat", "llm", n=120, seed=3, **make(reg, server))
    assert bank.n_sentences == 120 and len(set(bank.sentences)) == 120
    assert all("cat" in s for s in bank.sentences)
    p = bank.params
    assert p["model"] == "fake-llm" and p["base_url_host"] == server.url.split("/")[2]
    assert p["requests"] == 3 and p["requests_sent"] == 3 and p["format"] == "json_schema"
    assert p["usage"] == {"prompt_tokens": 120, "completion_tokens": 3 * 750, "total_tokens": 3 * 790}
    assert p["temperature"] == 1.0 and p["seed"] == 3 and "photographs" in p["prompt"]
    assert sorted(r["seed"] for r in server.requests) == [3, 4, 5]
    assert all(h == f"Bearer {SENTINEL}" for h in server.auth_headers)


def test_messy_replies_are_cleaned_and_drops_counted(reg, tiny_model):
    with FakeLLM("messy") as server:
        bank = reg.make_bank("dog", "llm", n=60, **make(reg, server), tokenizer_model=str(tiny_model))
    s = bank.sentences
    assert len(s) == 60 and len(set(x.lower() for x in s)) == 60
    assert all(x.startswith("A ") and "dog" in x for x in s)
    assert not any(x[0].isdigit() or x.startswith(("-", "*", '"', "Caption")) for x in s)
    d = bank.params["dropped"]
    assert d["no_concept"] > 0 and d["duplicates"] > 0 and d["too_long"] > 0
    assert bank.params["format"] == "text"  # messy server ignores the schema: lines are parsed
    assert bank.params["length_check"].startswith("tokenizer of")


def test_clean_line():
    assert clean_line('12. "A cat on a mat."') == "A cat on a mat."
    assert clean_line("- A cat on a mat") == "A cat on a mat"
    assert clean_line("Caption 4: A cat on a mat.") == "A cat on a mat."
    assert clean_line("**A cat on a mat**") == "A cat on a mat"
    assert clean_line("3) “A cat on a mat.”") == "A cat on a mat."
    assert clean_line("2024 was a good year for my cat.") == "2024 was a good year for my cat."


def test_server_without_structured_output_falls_back_to_lines(reg):
    with FakeLLM("no_schema") as server:
        bank = reg.make_bank("cat", "llm", n=50, **make(reg, server))
    assert bank.n_sentences == 50 and bank.params["format"] == "text"
    assert "response_format" in server.requests[0] and "response_format" not in server.requests[-1]


def test_429_twice_then_success(reg):
    with FakeLLM("429x2") as server:
        bank = reg.make_bank("cat", "llm", n=50, **make(reg, server), concurrency=1)
    assert bank.n_sentences == 50
    assert len(server.requests) == 3  # two refused, one answered: the client's retry with backoff


def test_500_forever_fails_clearly_and_stores_nothing(reg, db_url):
    before = db_dump(db_url)
    with FakeLLM("500") as server:
        with pytest.raises(RegistryError, match="HTTP 500") as err:
            reg.make_bank("cat", "llm", n=50, **make(reg, server), max_retries=2)
    assert len(server.requests) == 3
    assert "\n" not in str(err.value)
    assert db_dump(db_url) == before


def test_401_names_the_key_problem_without_leaking_it(reg, db_url):
    before = db_dump(db_url)
    with FakeLLM("401") as server:
        with pytest.raises(RegistryError, match="OPENAI_API_KEY is missing or wrong") as err:
            reg.make_bank("cat", "llm", n=50, **make(reg, server))
    assert SENTINEL not in str(err.value)
    assert db_dump(db_url) == before


def test_timeout_is_bounded(reg):
    """A server that never answers in time costs at most 1 + max_retries requests (a work count, not a clock: the
    bank's other 49 sentences are never asked for)."""
    with FakeLLM("slow") as server:
        with pytest.raises(RegistryError, match="did not answer within 0.3 s"):
            reg.make_bank("cat", "llm", n=50, **make(reg, server), timeout=0.3, max_retries=1, concurrency=1)
        assert 1 <= len(server.requests) <= 2


def test_garbage_and_connection_errors(reg):
    with FakeLLM("garbage") as server:
        with pytest.raises(RegistryError, match="not a chat completion|without text"):
            reg.make_bank("cat", "llm", n=50, **make(reg, server), max_retries=0)
    with FakeLLM() as server:
        url = server.url
    with pytest.raises(RegistryError, match=f"cannot connect to {url}"):
        reg.make_bank("cat", "llm", n=50, model="fake", base_url=url, max_retries=0)


def test_request_cap_stops_a_useless_model(reg):
    with FakeLLM("off_topic") as server:
        with pytest.raises(RegistryError, match="only 0 of 50 valid sentences .* after 4 requests"):
            reg.make_bank("cat", "llm", n=50, **make(reg, server), max_requests=4)
    assert len(server.requests) == 4


def test_cache_makes_a_second_run_free_and_identical(reg, home):
    with FakeLLM() as server:
        first = reg.make_bank("cat", "llm", n=120, **make(reg, server))
        sent = len(server.requests)
        second = reg.make_bank("cat", "llm", n=120, **make(reg, server))
        assert len(server.requests) == sent  # zero new requests
        third = reg.make_bank("cat", "llm", n=120, **make(reg, server), use_cache=False)
        assert len(server.requests) == 2 * sent
    assert second.ref == first.ref == third.ref == "cat@1"
    assert list((home / "cache" / "llm").rglob("*.json"))
    # offline: the server is gone, the cache still rebuilds the bank
    fresh = Registry.open("sqlite://")
    offline = fresh.make_bank("cat", "llm", n=120, model="fake-llm", base_url=server.url)
    assert offline.sentences == first.sentences and offline.params["requests_sent"] == 0


def test_concurrency_does_not_change_the_bank(home):
    with FakeLLM() as server:
        a = LLMGenerator(model="m", base_url=server.url, concurrency=1).generate("cat", 200, seed=1)
        b = LLMGenerator(model="m", base_url=server.url, concurrency=4).generate("cat", 200, seed=1)
    assert a.sentences == b.sentences


def test_the_key_never_reaches_disk(reg, home, tmp_path, tiny_model, db_url):
    with FakeLLM() as server:
        reg.make_bank("cat", "llm", n=60, **make(reg, server))
        reg.build_direction("cat", "dog", str(tiny_model), generator="llm", n=60, llm_model="fake-llm",
                            base_url=server.url)
        reg.export(["cat-to-dog"], tmp_path / "lib.p2pz")
    reg.close()
    for root in (home, tmp_path):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert SENTINEL.encode() not in data, f
                assert b"SENTINEL" not in data, f


def test_cli_bank_and_direction_from_llm(db_url, tiny_model):
    with FakeLLM() as server:
        r = CliRunner().invoke(main, ["--db", db_url, "-q", "bank", "create", "cat", "--from", "llm", "--model",
                                      "fake-llm", "--base-url", server.url, "-n", "80", "--json"])
        assert r.exit_code == 0, r.output
        bank = json.loads(r.stdout)
        assert bank["generator"] == "llm" and bank["n_sentences"] == 80
        r = CliRunner().invoke(main, ["--db", db_url, "-q", "direction", "build", "cat", "dog", "--model",
                                      str(tiny_model), "--from", "llm", "--llm-model", "fake-llm", "--base-url",
                                      server.url, "-n", "80", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["target"] == "dog@1"
    with FakeLLM("401") as server:
        r = CliRunner().invoke(main, ["--db", db_url, "bank", "create", "lion", "--from", "llm", "--base-url",
                                      server.url, "-n", "10"])
        assert r.exit_code == 1 and r.stderr.startswith("error: ") and SENTINEL not in r.stderr


def test_missing_key_for_openai_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(GeneratorError, match="OPENAI_API_KEY is not set"):
        LLMGenerator().generate("cat", 10)


def test_rerun_is_served_from_the_cache_when_the_server_has_no_structured_output(tmp_path, monkeypatch):
    """A server that answers 400 to response_format and 429 once: the first command works; the identical second
    command sends nothing; with the server gone, the same command still works (offline, free)."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    with FakeLLM("no_schema_429") as server:
        args = ["--db", db, "bank", "create", "zebra", "--from", "llm", "--base-url", server.url, "--model", "m",
                "-n", "60", "--json"]
        first = json.loads(runner.invoke(main, args, catch_exceptions=False).stdout)
        sent = len(server.requests)
        second = json.loads(runner.invoke(main, args, catch_exceptions=False).stdout)
        assert len(server.requests) == sent  # not one new request
    assert first["params"]["requests_sent"] >= 2 and first["params"]["format"] == "text"
    assert second["sha256"] == first["sha256"] and second["version"] == first["version"] == 1
    monkeypatch.delenv("OPENAI_API_KEY")  # the server is gone and so is the key: the cache needs neither
    third = runner.invoke(main, args, catch_exceptions=False)
    assert third.exit_code == 0, third.output
    assert json.loads(third.stdout)["sha256"] == first["sha256"]
    from p2pz.store.paths import cache_dir

    assert len(list((cache_dir() / "llm").rglob("*.json"))) == first["params"]["requests_sent"] == 2


def test_422_to_response_format_means_unsupported_like_400(reg):
    with FakeLLM("no_schema_422") as server:
        bank = reg.make_bank("cat", "llm", n=60, **make(reg, server))
    assert bank.n_sentences == 60 and bank.params["format"] == "text"


def test_429_advice_names_a_flag_that_exists(tmp_path):
    with FakeLLM("429x2") as server:
        res = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'r.db'}", "bank", "create", "cat", "--from",
                                        "llm", "--base-url", server.url, "--model", "m", "-n", "10",
                                        "--max-retries", "0"])
    assert res.exit_code == 1 and "raise --max-retries" in res.stderr and len(server.requests) == 1


def test_credentials_in_the_base_url_are_never_stored_or_printed(tmp_path, home):
    secret = "tok-p2pz-URL-SECRET"
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    with FakeLLM() as server:
        url = server.url.replace("http://", f"http://alice:{secret}@")
        res = runner.invoke(main, ["--db", db, "bank", "create", "cat", "--from", "llm", "--base-url", url,
                                   "--model", "m", "-n", "50", "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        params = json.loads(res.stdout)["params"]
        port = server.server.server_address[1]
    assert params["base_url_host"] == f"127.0.0.1:{port}"
    gone = runner.invoke(main, ["--db", db, "bank", "create", "dog", "--from", "llm", "--base-url", url,
                                "--model", "m", "-n", "50", "--max-retries", "0"])
    assert gone.exit_code == 1 and "cannot connect to http://127.0.0.1" in gone.stderr
    assert secret not in gone.stderr and "alice" not in gone.stderr
    stored = (tmp_path / "r.db").read_bytes() + b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert secret.encode() not in stored


def test_prompt_kinds_include_scene_and_auto_is_accepted():

    assert "seen in the night" in LLMGenerator(template_kind="scene").prompt("night")
    LLMGenerator(template_kind="auto")  # resolved per concept by generate (templates.choose_kind)
    with pytest.raises(GeneratorError, match="unknown prompt kind"):
        LLMGenerator(template_kind="weather")


def test_auto_prompt_kind_is_chosen_from_the_concept(tmp_path):
    with FakeLLM() as server:
        draft = LLMGenerator(model="fake-llm", base_url=server.url, template_kind="auto").generate("night", 20)
    assert draft.params["prompt_kind"] == "scene" and draft.params["prompt_kind_source"] == "auto"
    assert "seen in the night" in draft.params["prompt"]
