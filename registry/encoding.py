"""Encoding a sentence bank into a concept embedding (docs/algorithm.md §1.2; PAPER §3.2 "Discovering edit directions").

Each sentence is tokenized to exactly ``max_length`` (77) tokens — padded to max length, truncated — and run
through the text encoder **without an attention mask** (the causal mask still applies), exactly as Stable
Diffusion conditions on a prompt; the output used is ``last_hidden_state`` after the final LayerNorm, all 77
positions. The concept embedding is the mean over sentences, [1, 77, D] fp32 (sums accumulated in fp64 so the
result does not depend on sentence order or batch size).

The search key [D] is the encoder's own sentence embedding, averaged over sentences: CLIP's
``pooler_output`` (the EOS state) or, for other encoders, the attention-masked mean of ``last_hidden_state``
(those encoders are run with their attention mask, as they are meant to be).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from store.lazy import numpy as np


@dataclass
class EncodedBank:
    mean: np.ndarray  # [1, 77, D] float32
    key: np.ndarray  # [D] float32
    key_kind: str  # "pooler" | "masked-mean"
    n: int


def tokenize(encoder, sentences: list[str]):
    """Token ids [B, 77] (and the attention mask), padded to max length and truncated."""
    return encoder.tokenizer(
        list(sentences), padding="max_length", max_length=encoder.max_length, truncation=True, return_tensors="pt"
    )


def encode_sentences(encoder, sentences: list[str]):
    """Per-sentence hidden states [B, 77, D] and keys [B, D] for one batch (model dtype, on its device)."""
    import torch

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
    encoder, sentences: list[str], batch_size: int = 32, progress: Callable[[int], None] | None = None
) -> EncodedBank:
    """Mean embedding [1, 77, D] and mean key [D] of ``sentences`` (batched, inference mode)."""
    import torch

    if not sentences:
        raise ValueError("cannot encode an empty bank")
    total_hidden = None
    total_key = None
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        hidden, key = encode_sentences(encoder, chunk)
        h = hidden.to(torch.float64).sum(0)  # [77, D]
        k = key.to(torch.float64).sum(0)  # [D]
        total_hidden = h if total_hidden is None else total_hidden + h
        total_key = k if total_key is None else total_key + k
        if progress:
            progress(len(chunk))
    n = len(sentences)
    mean = (total_hidden / n).to(torch.float32).unsqueeze(0).cpu().numpy()  # [1, 77, D]
    key = (total_key / n).to(torch.float32).cpu().numpy()  # [D]
    return EncodedBank(mean=mean, key=key, key_kind="pooler" if encoder.is_clip else "masked-mean", n=n)


# --- the registry's side: load an encoder, embed a bank once, store the embedding ---------------------------

def load_encoder(model: str | None, device: str | None = None):
    """The text encoder of ``model`` (default: $P2PZ_MODEL, else CompVis/stable-diffusion-v1-4)."""
    from editor.loader import ModelLoadError, default_model, load_text_encoder

    from .records import RegistryError

    try:
        return load_text_encoder(model or default_model(), device=device)
    except ModelLoadError as exc:
        raise RegistryError(str(exc)) from None


def encoder_facts(enc) -> dict:
    """What the registry records about a loaded text encoder (table ``encoders``)."""
    return {"fingerprint": enc.fingerprint, "model": enc.location.model, "subfolder": enc.subfolder,
            "revision": enc.location.revision, "architecture": enc.architecture, "hidden_size": enc.hidden_size,
            "max_length": enc.max_length, "pad_id": enc.pad_id}


@dataclass
class EmbeddingSource:
    """A bank's embedding under one encoder: stored (``row_id``) or freshly encoded (``mean``, ``key``)."""

    bank: object  # registry.banks.BankSource
    mean: np.ndarray | None = None  # [1, 77, D]
    key: np.ndarray | None = None  # [D]
    key_kind: str = "pooler"
    row_id: int | None = None


def embed(db, bank, enc, *, progress: bool = False, batch_size: int = 32) -> EmbeddingSource:
    """Reuse the stored embedding of (bank, encoder) or encode the bank now, outside any transaction."""
    from store import repository as repo
    from store.progress import progress_bar
    from store.vectors import from_bytes

    from .banks import bank_sentences
    from .records import RegistryError

    with db.read() as s:
        row = repo.find_embedding(s, bank.concept, bank.sha256, enc.fingerprint)
        if row is not None:
            return EmbeddingSource(bank=bank, row_id=row.id, key=from_bytes(row.key, (None,)), key_kind=row.key_kind)
    sentences = bank_sentences(db, bank)
    if not sentences:
        raise RegistryError(f"bank {bank.concept} has no sentences to encode (imported embeddings can only be "
                            "used with the encoder they were made with)")
    with progress_bar(len(sentences), f"encoding {bank.concept}", enabled=progress, unit="sent") as bar:
        encoded = encode_bank(enc, sentences, batch_size=batch_size, progress=bar.update)
    return EmbeddingSource(bank=bank, mean=encoded.mean, key=encoded.key, key_kind=encoded.key_kind)


def store_embedding(s, source: EmbeddingSource, encoder_id: int):
    """Write an embedding (and its bank, when new) inside the caller's transaction → the row."""
    from store import models as m
    from store import repository as repo

    from .banks import store_bank

    if source.row_id is not None:
        return s.get(m.Embedding, source.row_id)
    bank_row = store_bank(s, source.bank)
    row, _ = repo.insert_embedding(s, bank_id=bank_row.id, encoder_id=encoder_id, mean=source.mean, key=source.key,
                                   key_kind=source.key_kind)
    source.row_id = row.id
    return row
