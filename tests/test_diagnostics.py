"""Direction diagnostics without images (`p2pz direction inspect`): stability, word swap, token profile, bank
health, entanglement and checks — on the tiny CLIP model and on the real all-MiniLM-L6-v2 encoder."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.registry.analysis.diagnostics_report import summary
from p2pz.registry.analysis.statistics import spearman_brown_size

CONTRACT = {"stability", "key_stability", "sentences_for_095", "word_swap_cosine", "token_profile", "banks",
            "neighbours", "checks"}


@pytest.fixture
def sqlite_reg(tmp_path):
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    yield reg
    reg.close()


def test_contract_keys_bos_and_no_encoder_call_for_stability(sqlite_reg, tiny_model, monkeypatch):
    import p2pz.registry.library.encoding as encoding

    reg = sqlite_reg
    reg.build_direction("cat", "dog", str(tiny_model), n=300)
    reg.build_direction("kitten", "puppy", str(tiny_model), n=100)
    batches = []
    plain = encoding.encode_sentences
    monkeypatch.setattr(encoding, "encode_sentences", lambda enc, s: (batches.append(list(s)), plain(enc, s))[1])
    diag = reg.inspect("cat-to-dog")
    assert diag.encoder_calls == 0  # the banks' statistics were kept when they were encoded
    assert batches == [["a photo of a cat", "a photo of a dog"]]  # the word swap's one call, nothing else
    d = diag.to_dict()
    assert CONTRACT <= set(d)
    assert set(d["banks"]["source"]) >= {"size", "duplicates", "diversity", "leakage", "truncated"}
    assert d["banks"]["source"]["size"] == 300 and d["banks"]["target"]["size"] == 300
    assert len(d["token_profile"]) == 77 and d["token_profile"][0] < 1e-3 * max(d["token_profile"])  # CLIP: BOS 0
    assert {c["status"] for c in d["checks"]} <= {"ok", "warn"}
    assert all({"name", "status", "value", "threshold"} <= set(c) for c in d["checks"])
    assert next(c for c in d["checks"] if c["name"] == "bos_row")["status"] == "ok"
    assert d["neighbours"][0]["direction"] == "kitten-to-puppy@1"
    assert -1 <= d["stability"]["mean"] <= 1 and d["stability"]["splits"] == 20
    assert d["word_swap_cosine"] is not None and -1 <= d["word_swap_cosine"] <= 1

    # without the cached statistics the banks are encoded once (and cached again): the same figures
    from p2pz.registry.library.encoding import stats_path

    for concept in ("cat", "dog"):
        stats_path(reg.bank(concept).sha256, diag.encoder).unlink()
    again = reg.inspect("cat-to-dog")
    assert again.encoder_calls > 0
    assert again.stability == diag.stability and again.key_stability == diag.key_stability
    assert reg.inspect("cat-to-dog").encoder_calls == 0


def test_spearman_brown():
    assert spearman_brown_size(0.95, 100) == pytest.approx(100)
    assert spearman_brown_size(0.5, 100) == pytest.approx(1900)  # m = 0.95·0.5 / (0.5·0.05) = 19
    assert spearman_brown_size(0.99, 100) < 100 and spearman_brown_size(-0.1, 100) is None


@pytest.mark.slow
def test_a_bigger_bank_is_more_stable_with_a_real_encoder(sqlite_reg, minilm):
    reg = sqlite_reg
    model = str(minilm)
    for n in (20, 1000):
        reg.make_bank("cat", n=n, seed=1)
        reg.make_bank("dog", n=n, seed=1)
    reg.build_direction("cat@1", "dog@1", model, name="small")
    reg.build_direction("cat@2", "dog@2", model, name="big")
    small, big = reg.inspect("small"), reg.inspect("big")
    assert big.stability["mean"] > small.stability["mean"] + 0.02
    assert big.stability["mean"] > 0.9 and big.key_stability["mean"] > 0.9
    assert small.sentences_for_095 > 20 and big.sentences_for_095 < small.sentences_for_095 * 2
    assert next(c for c in small.to_dict()["checks"] if c["name"] == "bank_size")["status"] == "warn"
    assert small.token_profile[0] > 0.01 * max(small.token_profile)  # a BERT-style encoder has no zero BOS row


@pytest.mark.slow
def test_planted_leakage_is_found_and_a_near_copy_is_the_top_neighbour(sqlite_reg, minilm, tmp_path):
    reg = sqlite_reg
    model = str(minilm)
    cats = [f"a photo of a cat number {i} on a sofa" for i in range(40)]
    planted = ["a cat chasing a dog in the garden", "two dogs and a cat asleep"]
    dogs = [f"a photo of a dog number {i} on a sofa" for i in range(40)]
    reg.build_direction("cat", "dog", model, source_sentences=cats + planted, target_sentences=dogs)
    reg.build_direction("day", "night", model, n=100)
    reg.combine({"cat-to-dog": 0.9}, name="cat-to-dog-copy")
    d = reg.inspect("cat-to-dog")
    assert sorted(d.banks["source"]["leakage"]) == sorted(planted) and d.banks["target"]["leakage"] == []
    checks = {c.name: c for c in d.checks}
    assert checks["source_leakage"].status == "warn" and checks["source_leakage"].value == 2
    assert d.neighbours[0]["direction"] == "cat-to-dog-copy@1" and d.neighbours[0]["cosine"] > 0.999
    assert checks["entanglement"].status == "warn"
    assert d.neighbours[-1]["direction"] == "day-to-night@1"


def test_cli_inspect_summary_json_and_self_contained_report(tmp_path, tiny_model):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["--db", db, "direction", "build", "cat", "dog", "--model", str(tiny_model), "-n",
                                "60"]).exit_code == 0
    res = runner.invoke(main, ["--db", db, "direction", "inspect", "cat-to-dog", "--report",
                               str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "stability" in res.stdout and "checks" in res.stdout and "report:" in res.stdout
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table" in page and "http" not in page
    js = json.loads(runner.invoke(main, ["--db", db, "direction", "inspect", "cat-to-dog@1", "--json"]).stdout)
    assert CONTRACT <= set(js) and js["direction"] == "cat-to-dog@1"
    bad = runner.invoke(main, ["--db", db, "direction", "inspect", "nope"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error: no direction named")
    combo = runner.invoke(main, ["--db", db, "direction", "combine", "cat-to-dog=0.5", "--name", "half"])
    assert combo.exit_code == 0
    res = runner.invoke(main, ["--db", db, "direction", "inspect", "half"])
    assert res.exit_code == 1 and "combination" in res.stderr
    assert np.isfinite(js["stability"]["mean"])


def test_a_tiny_bank_counts_at_its_effective_size_and_a_pt_direction_says_what_it_cannot_compute(
        sqlite_reg, tiny_model, tmp_path):
    import torch

    reg = sqlite_reg
    three = ["a photo of a cat", "a cat on a sofa", "a sleepy cat in the sun"]
    reg.build_direction("cat", "dog", str(tiny_model), n=300, source_sentences=three)
    d = reg.inspect("cat-to-dog")
    # halves of 1.5 and 150 sentences are as noisy as two halves of ≈ 3, not of the ≈ 76 an average says
    assert d.stability["source_half"] == pytest.approx(1.5, abs=0.5) and d.stability["target_half"] > 100
    assert d.stability["half_sizes"] < 4
    size = next(c for c in d.checks if c.name == "bank_size")
    assert size.threshold.startswith("≤ 6 ") and "3 and 300 sentences" in size.threshold, size.threshold
    text = summary(d)
    assert "effective" in text and "≈76" not in text and "≈ 76" not in text

    torch.manual_seed(0)
    torch.save(torch.randn(1, 77, 32), tmp_path / "horse.pt")
    torch.save(torch.randn(1, 77, 32), tmp_path / "zebra.pt")
    reg.import_pt(tmp_path / "horse.pt", tmp_path / "zebra.pt", model=str(tiny_model))
    pt = reg.inspect("horse-to-zebra")  # no sentences: what can be computed is, the rest is said
    assert pt.stability is None and pt.sentences_for_095 is None
    assert "no sentences" in pt.unavailable["stability"] and "horse@1" in pt.unavailable["stability"]
    assert len(pt.token_profile) == 77 and pt.word_swap_cosine is not None
    assert pt.banks["source"]["size"] == 0 and pt.banks["source"]["diversity"] is None
    assert next(c for c in pt.checks if c.name == "stability").status == "warn"
    json.dumps(pt.to_dict())
    res = CliRunner().invoke(main, ["--db", reg.url, "direction", "inspect", "horse-to-zebra"])
    assert res.exit_code == 0, res.output
    assert "not computed" in res.stdout and "no sentences" in res.stdout


def test_day_to_night_banks_read_as_scenes_and_inspect_says_so(tmp_path, tiny_model):
    """No --kind: the day and night banks get the scene templates (not "A photo of a vintage day …"), their
    parameters say so, and ``direction inspect`` shows each bank's kind."""
    from p2pz.generators.templates import OBJECT_FRAMES, PLACES, ADJECTIVES, render

    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    res = runner.invoke(main, ["--db", db, "direction", "build", "day", "night", "--model", str(tiny_model),
                               "-n", "200"])
    assert res.exit_code == 0, res.output
    reg = Registry.open(db)
    try:
        for concept in ("day", "night"):
            b = reg.bank(concept)
            assert b.params["template_kind"] == "scene" and b.params["template_kind_source"] == "auto"
            objects = {render("object", concept, f, (a, p)) for f in OBJECT_FRAMES for a in ADJECTIVES for p in PLACES}
            assert not set(b.sentences) & objects
            assert not any(f"vintage {concept}" in s or s.startswith(f"A photo of a {concept}") for s in b.sentences)
        d = reg.inspect("day-to-night").to_dict()
    finally:
        reg.close()
    for side in ("source", "target"):
        assert d["banks"][side]["generator"] == "templates"
        assert d["banks"][side]["template_kind"] == "scene" and d["banks"][side]["template_kind_source"] == "auto"
    res = runner.invoke(main, ["--db", db, "direction", "inspect", "day-to-night"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("source", "target"))]
    assert len(lines) == 2 and all("templates scene (auto)" in ln for ln in lines), res.stdout
