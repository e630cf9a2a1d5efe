"""Token-aligned directions (issue #36 lever 1, docs/algorithm.md §13): Δ_token from the concept word's
own tokens, stored beside Δ (schema revision 0010, fill-once), and placed at the caption's source word by
``EditConfig.delta_at``. Tiny random CLIP models; the shapes-world effect is measured in tests/test_shapes_model.py
and bench/shapes_ablation.py."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

from p2pz.editor.config import EditConfig
from p2pz.editor.errors import EditorError
from p2pz.editor.loader import load_text_encoder
from p2pz.editor.placement import placed_delta
from p2pz.editor.text import word_mask, word_token_ids
from p2pz.registry.library.encoding import encode_bank, encode_sentences, tokenize
from p2pz.registry.library.records import TokenDelta
from p2pz.store.models import ImmutableRecordError
from tests.numerics import assert_close_relative

SENTENCES = ["a photo of a dog on the grass", "my dog sleeps", "a cat and a dog, dog days", "no animal here",
             "the dog is brown"]


@pytest.fixture
def enc(tiny_model):
    return load_text_encoder(str(tiny_model), device="cpu")


def test_word_mask_finds_every_occurrence_of_whole_token_runs():
    ids = torch.tensor([[1, 5, 6, 7, 5, 6, 0], [1, 6, 5, 0, 0, 0, 0]])
    assert word_mask(ids, [5, 6]).int().tolist() == [[0, 1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]]
    assert word_mask(ids, [6]).int().tolist() == [[0, 0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0]]
    assert not word_mask(ids, []).any()


def test_the_token_mean_is_the_mean_over_sentences_of_the_mean_at_the_words_tokens(enc):
    """An independent computation, one sentence at a time, locating the word by its token ids."""
    got = encode_bank(enc, SENTENCES, batch_size=2, word="dog")
    word = word_token_ids(enc.tokenizer, "dog")
    per_sentence = []
    for s in SENTENCES:
        ids = tokenize(enc, [s])["input_ids"][0].tolist()
        hidden = encode_sentences(enc, [s])[0][0].to(torch.float64)  # [77, D]
        at = [i for i in range(len(ids) - len(word) + 1) if ids[i:i + len(word)] == word]
        if at:
            rows = sorted({i + k for i in at for k in range(len(word))})
            per_sentence.append(hidden[rows].mean(0))
    assert got.token_count == len(per_sentence) == 4  # "no animal here" has no dog
    # separate forward passes of other batch shapes: equal up to float32 rounding (tests/numerics.py)
    assert_close_relative(got.token, torch.stack(per_sentence).mean(0).float().numpy(), rel=1e-5)
    assert got.token.shape == (enc.hidden_size,) and got.token.dtype == np.float32
    assert encode_bank(enc, SENTENCES, word="zebra").token is None  # no sentence has it
    assert encode_bank(enc, SENTENCES).token is None  # not asked for


def test_a_built_direction_carries_delta_token_and_its_words(reg, tiny_model):
    d = reg.build_direction("cat", "dog", str(tiny_model), n=30)
    tok = d.token_delta
    assert tok.word == "cat" and tok.target_word == "dog" and tok.sentences == (30, 30)
    assert tok.vector.shape == (32,) and np.abs(tok.vector).max() > 1e-4
    back = reg.build_direction("dog", "cat", str(tiny_model), n=30).token_delta.vector
    assert np.array_equal(back, -tok.vector)  # the same stored means subtracted the other way: exact
    stats = d.vector_stats()["token"]
    assert stats["word"] == "cat" and stats["norm"] == pytest.approx(float(np.linalg.norm(tok.vector)), rel=1e-6)


def test_a_combination_has_no_delta_token_and_says_why(reg, tiny_model):
    reg.build_direction("cat", "dog", str(tiny_model), n=10)
    reg.build_direction("dog", "lion", str(tiny_model), n=10)
    combo = reg.combine({"cat-to-dog": 1.0, "dog-to-lion": 1.0}, "cat-to-lion-via-dog")
    assert combo.token_delta.vector is None and "combination" in combo.token_delta.reason


def _forget_tokens(path):
    """What a registry made before revision 0010 holds: embeddings without the token columns (raw SQL — the ORM
    refuses content changes)."""
    con = sqlite3.connect(path)
    con.execute("UPDATE embeddings SET token_mean = NULL, token_word = NULL, token_count = NULL")
    con.commit()
    con.close()


def test_an_older_embedding_gains_its_token_mean_once_and_never_changes_it(tmp_path, tiny_model):
    from p2pz.registry import Registry
    from p2pz.store import models as m

    path = tmp_path / "r.db"
    with Registry.open(f"sqlite:///{path}") as reg:
        first = reg.build_direction("cat", "dog", str(tiny_model), n=20).token_delta.vector
    _forget_tokens(path)
    with Registry.open(f"sqlite:///{path}") as reg:
        old = reg.get("cat-to-dog")
        assert old.token_delta.vector is None and "rebuild" in old.token_delta.reason
        again = reg.build_direction("cat", "dog", str(tiny_model), n=20)  # same banks: same version, filled
        assert again.ref == "cat-to-dog@1"
        assert_close_relative(again.token_delta.vector, first, rel=1e-5)  # re-encoded: rounding only
        with pytest.raises(ImmutableRecordError):
            with reg.db.write() as s:
                row = s.query(m.Embedding).first()
                row.token_word = "something else"


def test_the_token_revision_round_trips_a_populated_registry(tmp_path, tiny_model):
    from p2pz.migrations import current_revision, downgrade, upgrade
    from p2pz.store.db import make_engine
    from p2pz.registry import Registry

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry.open(url) as reg:
        d = reg.build_direction("cat", "dog", str(tiny_model), n=10)
    engine = make_engine(url)
    downgrade(engine, "0009")
    assert current_revision(engine) == "0009"
    upgrade(engine)
    engine.dispose()
    with Registry.open(url) as reg:
        back = reg.get("cat-to-dog")
        assert back.vector_numpy().tobytes() == d.vector_numpy().tobytes()
        assert back.token_delta.vector is None  # the token columns did not survive 0009


def _tok(vector, word):
    return TokenDelta(np.asarray(vector, dtype=np.float32), word)


def test_word_placement_puts_delta_token_exactly_at_the_words_tokens(enc):
    delta = torch.randn(1, 77, enc.hidden_size)
    tok = _tok(np.random.default_rng(0).standard_normal(enc.hidden_size), "dog")
    caps = ["a dog on the grass", "a dog and a dog"]
    p = placed_delta(enc.tokenizer, caps, delta, tok, "word", scale=2.0)
    where = word_mask(tokenize(enc, caps)["input_ids"], word_token_ids(enc.tokenizer, "dog"))  # [2, 77]
    assert p.delta.shape == (2, 77, enc.hidden_size) and not p.fallback and p.note is None
    assert torch.equal(p.delta[where], (2.0 * torch.from_numpy(tok.vector)).expand(int(where.sum()), -1))
    assert not p.delta[~where].any()  # nothing anywhere else
    pad = placed_delta(enc.tokenizer, caps, delta, tok, "word+pad")
    attention = tokenize(enc, caps)["attention_mask"].bool()
    assert torch.equal(pad.delta[~attention], delta.expand(2, -1, -1)[~attention])  # Δ's own padding rows
    assert not pad.delta[attention & ~where].any()
    assert placed_delta(enc.tokenizer, caps, delta, tok, "all").delta is delta


def test_a_caption_without_the_word_falls_back_to_all_with_a_note(enc):
    delta = torch.randn(1, 77, enc.hidden_size)
    tok = _tok(np.ones(enc.hidden_size), "dog")
    p = placed_delta(enc.tokenizer, ["a dog", "a cat"], delta, tok, "word")
    assert p.fallback == [1] and torch.equal(p.delta[1], delta[0])
    assert "1 of 2 caption(s) do not contain 'dog'" in p.note and "'a cat'" in p.note and "\n" not in p.note


def test_word_placement_without_delta_token_is_refused_with_the_reason(enc):
    delta = torch.zeros(1, 77, enc.hidden_size)
    with pytest.raises(EditorError, match="no token-aligned mean"):
        placed_delta(enc.tokenizer, ["a dog"], delta, TokenDelta(None, None, None, "no token-aligned mean"), "word")
    with pytest.raises(EditorError, match="raw tensor"):
        placed_delta(enc.tokenizer, ["a dog"], delta, None, "word+pad")
    with pytest.raises(EditorError, match="delta_at must be one of"):
        EditConfig(delta_at="everywhere")


def test_the_editor_applies_the_placed_delta(reg, tiny_model):
    """Editor.edit with delta_at="word" is the edit of the placed Δ given as a plain tensor (oracle: the same
    pipeline fed the placement by hand), and differs from the paper's placement."""
    from p2pz.editor import Editor

    d = reg.build_direction("cat", "dog", str(tiny_model), n=20)
    ed = Editor.from_pretrained(str(tiny_model), captioner=None, cache=False)
    inv = ed.synthetic("a cat on a mat", seed=1, steps=4)
    word = ed.edit(inv, d, EditConfig(delta_at="word"), decode=False)
    by_hand = placed_delta(ed.tokenizer, ["a cat on a mat"], d.vector, d.token_delta, "word").delta  # [1, 77, D]
    plain = ed.edit(inv, by_hand, EditConfig(), decode=False)
    # two edit calls on the same inputs in one process: equal up to rounding, relative to the latents' size
    assert_close_relative(word.latents, plain.latents, rel=1e-5)
    assert word.params["delta_at"] == "word" and word.params["delta_at_fallback"] == 0 and word.notes == []
    everywhere = ed.edit(inv, d, EditConfig(), decode=False)
    assert (everywhere.latents - word.latents).abs().max() > 1e-3
    other = ed.synthetic("a bird on a mat", seed=1, steps=4)  # no "cat": the paper's placement, with a note
    fallback = ed.edit(other, d, EditConfig(delta_at="word"), decode=False)
    assert fallback.params["delta_at_fallback"] == 1 and "do not contain 'cat'" in fallback.notes[0]
    assert_close_relative(fallback.latents, ed.edit(other, d, EditConfig(), decode=False).latents, rel=1e-5)


def test_auto_places_colours_and_scenes_at_the_word_and_everything_else_everywhere(reg, tiny_model):
    from p2pz.editor.config import resolve_mode

    vec = np.ones(4, dtype=np.float32)
    assert resolve_mode("auto", TokenDelta(vec, "red", kind="attribute")) == "word"
    assert resolve_mode("auto", TokenDelta(vec, "night", kind="scene")) == "word"
    assert resolve_mode("auto", TokenDelta(vec, "cat", kind="object")) == "all"
    assert resolve_mode("auto", TokenDelta(vec, "watercolor", kind="style")) == "all"
    assert resolve_mode("auto", TokenDelta(None, "red", kind="attribute", reason="old")) == "all"  # no Δ_token
    assert resolve_mode("auto", None) == "all"  # a raw tensor
    assert resolve_mode("word+pad", None) == "word+pad"  # explicit modes are not second-guessed
    assert EditConfig().delta_at == "auto"
    # the kind comes from the bank's recorded template kind (or the templates' choice for the word)
    assert reg.build_direction("red", "blue", str(tiny_model), n=10).token_delta.kind == "attribute"
    assert reg.build_direction("day", "night", str(tiny_model), n=10).token_delta.kind == "scene"
    assert reg.build_direction("cat", "dog", str(tiny_model), n=10).token_delta.kind == "object"


def test_sdxl_directions_carry_delta_token_and_edit_at_the_word(reg, tiny_sdxl):
    """SDXL (algorithm §12): Δ_token is taken on the pair's concatenated penultimate states [D₁ + D₂] and placed like
    SD's; Δ_pooled is added as before. Untested on real SDXL weights; here: the shapes, the placement and that it
    changes the edit."""
    from p2pz.editor import Editor

    d = reg.build_direction("red", "blue", str(tiny_sdxl), n=10)
    tok = d.token_delta
    assert tok.vector.shape == (d.hidden_size,) == (80,) and tok.kind == "attribute"
    ed = Editor.from_pretrained(str(tiny_sdxl), captioner=None, device="cpu", cache=False)
    inv = ed.synthetic("a red car", seed=0, steps=3)
    word = ed.edit(inv, d, EditConfig(delta_at="word"), decode=False)
    by_hand = placed_delta(ed.tokenizer, ["a red car"], d.vector, tok, "word").delta
    plain = ed.edit(inv, (by_hand, d.pooled), EditConfig(delta_at="all"), decode=False)
    # two edit calls on the same inputs in one process: equal up to rounding, relative to the latents' size
    assert_close_relative(word.latents, plain.latents, rel=1e-5)
    assert word.params["delta_at"] == "word"
    assert (ed.edit(inv, d, EditConfig(delta_at="all"), decode=False).latents - word.latents).abs().max() > 1e-4
