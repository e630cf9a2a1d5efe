"""Reference §10 invariants 1–6 on a tiny random CLIP text encoder, plus versioning of directions."""

import json
import random

import numpy as np
import pytest
import torch

from p2pz.registry import RegistryError
from p2pz.registry.library.encoding import encode_bank, encode_sentences, tokenize
from p2pz.editor.loader import load_text_encoder
from tests.numerics import assert_close_relative

N = 60


@pytest.fixture
def enc(tiny_model):
    return load_text_encoder(str(tiny_model), device="cpu")


def test_identical_banks_give_an_exactly_zero_direction(reg, tiny_model):
    d = reg.build_direction("cat", "cat", str(tiny_model), n=N, name="cat-to-cat")
    v = d.vector_numpy()
    assert v.shape == (1, 77, 32) and v.dtype == np.float32
    assert np.count_nonzero(v) == 0


def test_antisymmetry_and_additivity(reg, tiny_model):
    ab = reg.build_direction("cat", "dog", str(tiny_model), n=N).vector_numpy()
    ba = reg.build_direction("dog", "cat", str(tiny_model), n=N).vector_numpy()
    bc = reg.build_direction("dog", "lion", str(tiny_model), n=N).vector_numpy()
    ac = reg.build_direction("cat", "lion", str(tiny_model), n=N).vector_numpy()
    assert np.array_equal(ab, -ba)  # exact: b − a and a − b of the same stored means differ only in sign (IEEE)
    # c − a against (b − a) + (c − b): the same means, summed in another order, so equal up to float32 rounding
    # relative to Δ's magnitude (tests/numerics.py)
    assert_close_relative(ac, ab + bc, rel=1e-6)
    assert np.abs(ab).max() > 1e-3  # a real, non-trivial direction


def test_mean_does_not_depend_on_order_batching_or_duplicates(enc):
    sentences = [f"a photo of a cat number {i} on a mat" for i in range(40)]
    base = encode_bank(enc, sentences, batch_size=64)
    shuffled = sentences[:]
    random.Random(3).shuffle(shuffled)
    # other batch sizes run the encoder's matmuls in other shapes, which round differently (and differently on
    # other CPUs): equal up to rounding, relative to the hidden states' magnitude (tests/numerics.py)
    assert_close_relative(encode_bank(enc, shuffled, batch_size=7).mean, base.mean, rel=1e-6)
    assert_close_relative(encode_bank(enc, sentences * 2, batch_size=64).mean, base.mean, rel=1e-6)
    # batched == one sentence at a time (the reference's loop), fixed padding, no attention mask
    singles = torch.cat([encode_sentences(enc, [s])[0] for s in sentences]).to(torch.float64).mean(0, keepdim=True)
    assert_close_relative(base.mean, singles.float().numpy(), rel=1e-6)
    assert base.mean.shape == (1, 77, enc.hidden_size) and base.key.shape == (enc.hidden_size,)
    assert base.key_kind == "pooler"


def test_every_sequence_has_77_tokens_and_truncation_is_exact(enc):
    short = tokenize(enc, ["a cat"])["input_ids"]
    long_a = "a small cat " * 40 + "on a sunny beach"
    long_b = "a small cat " * 40 + "in a dark forest at night"
    ids = tokenize(enc, [long_a, long_b])["input_ids"]
    assert short.shape == (1, 77) and ids.shape == (2, 77)
    assert short[0, 0].item() == enc.tokenizer.bos_token_id
    assert torch.equal(ids[0], ids[1])  # both truncated to the same 75 content tokens: exactly the same ids
    hidden, _ = encode_sentences(enc, [long_a, long_b])
    # two rows of one batch: the same ids, but a matmul may take another kernel path for another row block, so the
    # hidden states are compared up to rounding relative to their magnitude (tests/numerics.py)
    assert_close_relative(hidden[0], hidden[1], rel=1e-6)


def test_bos_row_of_any_direction_is_zero(reg, tiny_model):
    d = reg.build_direction("cat", "dog", str(tiny_model), n=N).vector_numpy()
    assert np.linalg.norm(d[0, 0]) < 1e-5
    assert np.linalg.norm(d[0, 1:]) > 1e-2


def test_scale_multiplies_exactly(reg, tiny_model):
    base = reg.build_direction("cat", "dog", str(tiny_model), n=N).vector_numpy()
    zero = reg.build_direction("cat", "dog", str(tiny_model), n=N, scale=0.0, name="zero").vector_numpy()
    three = reg.build_direction("cat", "dog", str(tiny_model), n=N, scale=3.0, name="triple").vector_numpy()
    assert np.count_nonzero(zero) == 0
    assert np.array_equal(three, np.float32(3.0) * base)  # exact: one float32 product of the same stored Δ


def test_names_with_2_and_txt(reg, tiny_model, tmp_path):
    d = reg.build_direction("r2d2", "c3po", str(tiny_model), n=N)
    assert d.name == "r2d2-to-c3po" and d.source == "r2d2@1" and d.target == "c3po@1"
    assert reg.get("r2d2-to-c3po@1").name == "r2d2-to-c3po"
    f = tmp_path / "text.txt"
    f.write_text("some text on a page\nthe text of a letter\n")
    b = reg.make_bank("text", "file", path=str(f))
    assert b.concept == "text" and b.params["file"] == "text.txt"


def test_rebuild_returns_the_stored_version_without_encoding(reg, tiny_model, monkeypatch):
    first = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    import p2pz.registry.library.encoding as encoding

    def boom(*a, **k):
        raise AssertionError("the encoder must not run again")

    monkeypatch.setattr(encoding, "encode_bank", boom)
    again = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    assert again.ref == first.ref == "cat-to-dog@1"
    assert np.array_equal(again.vector_numpy(), first.vector_numpy())


def test_new_bank_content_gives_a_new_version(reg, tiny_model):
    v1 = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    v2 = reg.build_direction("cat", "dog", str(tiny_model), n=N, seed=5, generator="templates")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.source == "cat@2" and v2.target == "dog@2"
    assert reg.get("cat-to-dog").version == 2
    assert [d.version for d in reg.versions("cat-to-dog")] == [1, 2]
    assert not np.array_equal(v1.vector_numpy(), v2.vector_numpy())
    reg.deprecate("cat-to-dog@2")
    assert reg.get("cat-to-dog").version == 1
    assert reg.get("cat-to-dog@2").deprecated


def test_fingerprint_is_computed_once_per_folder(tiny_model, home, monkeypatch):
    import p2pz.editor.loader as loader

    loader._encoders.clear()
    first = loader.load_text_encoder(str(tiny_model), device="cpu").fingerprint
    assert (home / "cache" / "fingerprints.json").is_file()
    loader._encoders.clear()
    monkeypatch.setattr(loader, "compute_fingerprint", lambda model: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert loader.load_text_encoder(str(tiny_model), device="cpu").fingerprint == first
    loader._encoders.clear()


def test_nested_combinations_materialize_and_a_chain_past_max_nesting_is_one_line(reg, tiny_model):
    from p2pz.store.repository import MAX_NESTING

    a = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    b = reg.build_direction("day", "night", str(tiny_model), n=N)
    inner = reg.combine({"cat-to-dog": 1.0, "day-to-night": -1.0}, name="inner")
    outer = reg.combine({"inner": 2.0, "cat-to-dog": 0.5}, name="outer")
    expect = np.float32(2.0) * (a.vector_numpy() - b.vector_numpy()) + np.float32(0.5) * a.vector_numpy()
    # the same stored Δs weighted and summed in another order: up to rounding, relative to Δ (tests/numerics.py)
    assert_close_relative(reg.get("outer").vector_numpy(), expect, rel=1e-6)
    assert [c["name"] for c in outer.components] == ["inner", "cat-to-dog"] and inner.kind == "combination"
    name = "outer"
    for i in range(MAX_NESTING):  # outer is at depth 1 already: this chain ends MAX_NESTING + 1 deep
        name = reg.combine({name: 1.0}, name=f"chain-{i}").name
    reg.combine({"chain-0": 1.0}, name="shallow").vector_numpy()  # a shallow one still materializes
    with pytest.raises(RegistryError) as err:
        reg.get(name).vector_numpy()
    assert "nested too deeply" in str(err.value) and "\n" not in str(err.value)


def test_direction_list_filters_by_tag(reg, tiny_model, db_url):
    from click.testing import CliRunner

    from p2pz.registry.cli import main

    reg.build_direction("cat", "dog", str(tiny_model), n=N, tags=["animals"])
    reg.build_direction("day", "night", str(tiny_model), n=N, tags=["scenes"])
    res = CliRunner().invoke(main, ["--db", db_url, "direction", "list", "--tag", "scenes", "--json"])
    assert res.exit_code == 0, res.output
    assert [d["ref"] for d in json.loads(res.stdout)] == ["day-to-night@1"]
    none = CliRunner().invoke(main, ["--db", db_url, "direction", "list", "--tag", "nothing", "--json"])
    assert none.exit_code == 0 and json.loads(none.stdout) == []


def test_combination_is_a_weighted_sum_and_refuses_mixed_encoders(reg, tiny_model, tiny_model_b):
    a = reg.build_direction("cat", "dog", str(tiny_model), n=N)
    b = reg.build_direction("day", "night", str(tiny_model), n=N)
    c = reg.combine({"cat-to-dog": 1.0, "day-to-night@1": 0.5}, name="mix")
    # the same stored Δs, weighted and summed (perhaps in float64 first): up to rounding, relative to Δ
    assert_close_relative(c.vector_numpy(), a.vector_numpy() + np.float32(0.5) * b.vector_numpy(), rel=1e-6)
    assert c.kind == "combination" and [x["name"] for x in c.components] == ["cat-to-dog", "day-to-night"]
    assert reg.combine({"cat-to-dog": 1.0, "day-to-night@1": 0.5}, name="mix").version == 1
    reg.build_direction("cat", "dog", str(tiny_model_b), n=N, name="cat-to-dog-b")
    with pytest.raises(RegistryError) as err:
        reg.combine({"cat-to-dog": 1.0, "cat-to-dog-b": 1.0}, name="bad")
    msg = str(err.value)
    assert "different text encoders" in msg and str(tiny_model) in msg and str(tiny_model_b) in msg
    assert "\n" not in msg
