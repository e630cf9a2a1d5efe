"""Encoding a sentence bank into a concept embedding (docs/algorithm.md §1.2; PAPER §3.2 "Discovering edit directions").

Each sentence is tokenized to exactly ``max_length`` (77) tokens — padded to max length, truncated — and run
through the text encoder **without an attention mask** (the causal mask still applies), exactly as Stable
Diffusion conditions on a prompt; the output used is ``last_hidden_state`` after the final LayerNorm, all 77
positions. The concept embedding is the mean over sentences, [1, 77, D] fp32 (sums accumulated in fp64 so the
result does not depend on sentence order or batch size).

The search key [D] is the encoder's own sentence embedding, averaged over sentences: CLIP's
``pooler_output`` (the EOS state) or, for other encoders, the attention-masked mean of ``last_hidden_state``
(those encoders are run with their attention mask, as they are meant to be).

SDXL (algorithm §12): the pair's prompt embedding as ``StableDiffusionXLPipeline.encode_prompt`` builds it
(:func:`editor.text.sdxl_prompt_embeds`: penultimate hidden states of both encoders concatenated, [1, 77, 2048]),
and the key is the mean pooled embedding ``text_embeds`` of ``text_encoder_2`` [1280] (``key_kind="pooled"``) —
which is also what Δ_pooled is made of.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

from p2pz.editor.loader import DEFAULT_MODEL, ModelLoadError, default_model, load_text_encoder
from p2pz.store import cache as store_cache
from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.files import atomic_write
from p2pz.store.lazy import numpy as np
from p2pz.store.paths import cache_dir
from p2pz.store.progress import progress_bar
from p2pz.store.vectors import from_bytes

from .records import RegistryError
from .banks import bank_sentences, store_bank


N_BLOCKS = 16  # sentences are spread over this many blocks by hash (fewer for tiny banks), for split-half statistics


@dataclass
class BankStats:
    """What diagnostics need from a bank's sentences under one encoder, so they never encode it again:
    per-block sums of the hidden states and keys (each sentence in block sha256(sentence) mod K), and every
    sentence's key. Kept in the cache (``encodings``), ≈ 4 MB per bank at D = 768."""

    block_sums: np.ndarray  # [K, 77, D] float32
    block_key_sums: np.ndarray  # [K, D] float32
    block_counts: np.ndarray  # [K] int64
    sentence_keys: np.ndarray  # [N, D] float16

    def to_tensors(self) -> dict:
        return {"block_sums": self.block_sums, "block_key_sums": self.block_key_sums,
                "block_counts": self.block_counts, "sentence_keys": self.sentence_keys}


@dataclass
class EncodedBank:
    mean: np.ndarray  # [1, 77, D] float32
    key: np.ndarray  # [D] float32
    key_kind: str  # "pooler" | "masked-mean" | "pooled" (SDXL)
    n: int
    stats: BankStats | None = None
    token: np.ndarray | None = None  # [D] float32: mean hidden state at the concept word's own tokens (§13)
    token_count: int = 0  # how many sentences contain the word (``token`` is None when none does)


def sentence_blocks(sentences: list[str], k: int = N_BLOCKS) -> list[int]:
    """The block of each sentence: a function of its text only, so any order of the bank gives the same blocks."""
    return [int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:4], "big") % k for s in sentences]


def tokenize(encoder, sentences: list[str]):
    """Token ids [B, 77] (and the attention mask), padded to max length and truncated."""
    return encoder.tokenizer(
        list(sentences), padding="max_length", max_length=encoder.max_length, truncation=True, return_tensors="pt"
    )


def encode_sentences(encoder, sentences: list[str]):
    """Per-sentence hidden states [B, 77, D] and keys [B, D] for one batch (model dtype, on its device)."""
    import torch  # lazy: torch

    if encoder.family == "sdxl":  # the pair: hidden [B, 77, 2048], pooled [B, 1280]
        return encoder.encode(sentences)
    batch = tokenize(encoder, sentences)
    ids = batch["input_ids"].to(encoder.device)  # [B, 77]
    with torch.inference_mode():
        if encoder.is_clip:
            out = encoder.model(input_ids=ids)  # no attention mask, as SD
            return out.last_hidden_state, out.pooler_output
        mask = batch["attention_mask"].to(encoder.device)
        out = encoder.model(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state  # [B, 77, D]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        key = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return hidden, key


def encode_bank(
    encoder, sentences: list[str], batch_size: int = 32, progress: Callable[[int], None] | None = None,
    word: str | None = None,
) -> EncodedBank:
    """Mean embedding [1, 77, D] and mean key [D] of ``sentences`` (batched, inference mode), plus the
    :class:`BankStats` diagnostics use (block sums and per-sentence keys, from the same forward passes).

    With ``word`` (the bank's concept), also the **token-aligned mean** [D] (docs/algorithm.md §13): in each
    sentence that contains the word, the mean hidden state over the word's own token positions; then the mean
    over those sentences. Sentences without the word do not count (``token_count`` says how many did)."""
    import torch  # lazy: torch

    from p2pz.editor.text import word_mask, word_token_ids

    if not sentences:
        raise ValueError("cannot encode an empty bank")
    total_hidden = None
    total_key = None
    n_blocks = min(N_BLOCKS, len(sentences))
    blocks = torch.tensor(sentence_blocks(sentences, n_blocks))
    block_hidden = block_key = None
    keys = []
    word_ids = word_token_ids(encoder.tokenizer, word) if word else []
    token_total, token_count = None, 0
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        hidden, key = encode_sentences(encoder, chunk)
        if word_ids:
            where = word_mask(tokenize(encoder, chunk)["input_ids"], word_ids).to(hidden.device)  # [B, 77]
            hits = where.sum(1)  # [B] word tokens per sentence
            has = hits > 0
            if has.any():
                w = where.to(torch.float64) / hits.clamp(min=1).unsqueeze(1).to(torch.float64)  # [B, 77]
                per = torch.einsum("bt,btd->bd", w, hidden.to(torch.float64))[has].sum(0)  # [D]
                token_total = per if token_total is None else token_total + per
                token_count += int(has.sum())
        h = hidden.to(torch.float64).sum(0)  # [77, D]
        k = key.to(torch.float64).sum(0)  # [D]
        total_hidden = h if total_hidden is None else total_hidden + h
        total_key = k if total_key is None else total_key + k
        if block_hidden is None:
            block_hidden = torch.zeros((n_blocks, *hidden.shape[1:]), dtype=torch.float64, device=hidden.device)
            block_key = torch.zeros((n_blocks, key.shape[-1]), dtype=torch.float64, device=key.device)
        idx = blocks[start : start + batch_size].to(hidden.device)
        block_hidden.index_add_(0, idx, hidden.to(torch.float64))  # [K, 77, D]
        block_key.index_add_(0, idx, key.to(torch.float64))  # [K, D]
        keys.append(key.to(torch.float16).cpu())
        if progress:
            progress(len(chunk))
    n = len(sentences)
    mean = (total_hidden / n).to(torch.float32).unsqueeze(0).cpu().numpy()  # [1, 77, D]
    key = (total_key / n).to(torch.float32).cpu().numpy()  # [D]
    stats = BankStats(block_sums=block_hidden.to(torch.float32).cpu().numpy(),
                      block_key_sums=block_key.to(torch.float32).cpu().numpy(),
                      block_counts=torch.bincount(blocks, minlength=n_blocks).numpy().astype(np.int64),
                      sentence_keys=torch.cat(keys).numpy())
    kind = "pooled" if encoder.family == "sdxl" else "pooler" if encoder.is_clip else "masked-mean"
    token = None if token_total is None else (token_total / token_count).to(torch.float32).cpu().numpy()  # [D]
    return EncodedBank(mean=mean, key=key, key_kind=kind, n=n, stats=stats, token=token, token_count=token_count)


# --- bank statistics in the cache -------------------------------------------------------------------------

def stats_path(bank_sha: str, fingerprint: str):
    return cache_dir() / "encodings" / bank_sha[:2] / f"{bank_sha}-{fingerprint}.safetensors"


def save_stats(bank_sha: str, fingerprint: str, stats: BankStats) -> None:
    from safetensors.numpy import save_file  # lazy: safetensors

    path = stats_path(bank_sha, fingerprint)
    tensors = {k: np.ascontiguousarray(v) for k, v in stats.to_tensors().items()}
    atomic_write(path, writer=lambda tmp: save_file(tensors, str(tmp)))
    store_cache.evict(cache_dir(), keep=path)


def load_stats(bank_sha: str, fingerprint: str) -> BankStats | None:
    from safetensors.numpy import load_file  # lazy: safetensors

    path = stats_path(bank_sha, fingerprint)
    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        stats = BankStats(t["block_sums"], t["block_key_sums"], t["block_counts"], t["sentence_keys"])
    except Exception:  # a truncated or corrupt cache file is a miss
        return None
    store_cache.touch(path)
    return stats


# --- the registry's side: load an encoder, embed a bank once, store the embedding ---------------------------

def registry_model(db, model: str | None) -> str:
    """The model an entry point uses (every build, word-pair search, import and embedding; CLI and web alike):
    ``model`` when named; else ``$P2PZ_MODEL``; else the registry's own when its encoders all come from one
    model; else, for a registry without encoders, CompVis/stable-diffusion-v1-4. A registry with several models
    is asked which (a :class:`RegistryError` listing them)."""

    if model:
        return model
    if os.environ.get("P2PZ_MODEL"):
        return os.environ["P2PZ_MODEL"]
    with db.read() as s:
        models = list(dict.fromkeys(e.model for e in repo.encoders(s)))
    if not models:
        return DEFAULT_MODEL
    if len(models) == 1:
        return models[0]
    raise RegistryError(f"this registry holds directions of {len(models)} models ({', '.join(models[:5])}"
                        f"{', …' if len(models) > 5 else ''}); name one with --model (or $P2PZ_MODEL)")


def load_encoder(model: str | None, device: str | None = None):
    """The text encoder of ``model`` (``None``: $P2PZ_MODEL, else CompVis/stable-diffusion-v1-4; entry points
    pass :func:`registry_model`'s choice)."""

    try:
        return load_text_encoder(model or default_model(), device=device)
    except ModelLoadError as exc:
        raise RegistryError(str(exc)) from None


def encoder_facts(enc) -> dict:
    """What the registry records about a loaded text encoder (table ``encoders``)."""
    return {"fingerprint": enc.fingerprint, "model": enc.location.model, "subfolder": enc.subfolder,
            "revision": enc.location.revision, "architecture": enc.architecture, "hidden_size": enc.hidden_size,
            "max_length": enc.max_length, "pad_id": enc.pad_id, "family": enc.family, "parts": enc.parts,
            "key_size": enc.key_size}


@dataclass
class EmbeddingSource:
    """A bank's embedding under one encoder: stored (``row_id``) or freshly encoded (``mean``, ``key``)."""

    bank: object  # registry.library.banks.BankSource
    mean: np.ndarray | None = None  # [1, 77, D]
    key: np.ndarray | None = None  # [D]
    key_kind: str = "pooler"
    row_id: int | None = None
    token: np.ndarray | None = None  # [D] the token-aligned mean (algorithm §13), when the bank has the word
    token_word: str | None = None  # the word looked for (None: not looked for, e.g. an imported mean)
    token_count: int = 0

    def token_fields(self) -> dict:
        return {"token": self.token, "token_word": self.token_word, "token_count": self.token_count}


def embed(db, bank, enc, *, progress: bool = False, batch_size: int = 32) -> EmbeddingSource:
    """Reuse the stored embedding of (bank, encoder) or encode the bank now, outside any transaction.

    A stored embedding made before schema revision 0010 has no token-aligned mean; when its bank's sentences are
    here, the bank is encoded again once to add it (:func:`store_embedding` fills it in)."""
    stored = None
    with db.read() as s:
        row = repo.find_embedding(s, bank.concept, bank.sha256, enc.fingerprint)
        if row is not None:
            stored = EmbeddingSource(bank=bank, row_id=row.id, key=from_bytes(row.key, (None,)),
                                     key_kind=row.key_kind)
            if row.token_word is not None:
                return stored
    sentences = bank_sentences(db, bank)
    if not sentences:
        if stored is not None:
            return stored  # an imported mean without sentences: Δ_token stays unavailable, and says so
        raise RegistryError(f"bank {bank.concept} has no sentences to encode (imported embeddings can only be "
                            "used with the encoder they were made with)")
    label = f"encoding {bank.concept}" if stored is None else f"adding {bank.concept}'s token-aligned mean"
    with progress_bar(len(sentences), label, enabled=progress, unit="sent") as bar:
        encoded = encode_bank(enc, sentences, batch_size=batch_size, progress=bar.update, word=bank.concept)
    try:
        save_stats(bank.sha256, enc.fingerprint, encoded.stats)  # for `direction inspect`: no second encoding
    except OSError:
        pass  # a read-only cache only costs a later re-encode
    if stored is not None:
        with db.write() as s:
            repo.fill_token_mean(s, s.get(m.Embedding, stored.row_id), encoded.token, bank.concept,
                                 encoded.token_count)
        return stored
    return EmbeddingSource(bank=bank, mean=encoded.mean, key=encoded.key, key_kind=encoded.key_kind,
                           token=encoded.token, token_word=bank.concept, token_count=encoded.token_count)


def store_embedding(s, source: EmbeddingSource, encoder_id: int):
    """Write an embedding (and its bank, when new) inside the caller's transaction → the row."""
    if source.row_id is not None:
        return s.get(m.Embedding, source.row_id)
    bank_row = store_bank(s, source.bank)
    row, _ = repo.insert_embedding(s, bank_id=bank_row.id, encoder_id=encoder_id, mean=source.mean, key=source.key,
                                   key_kind=source.key_kind, **source.token_fields())
    source.row_id = row.id
    return row
