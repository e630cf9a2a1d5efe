"""The official pix2pix-zero ``.pt`` concept embeddings: read as plain tensors only, never unpickled."""

from __future__ import annotations

import hashlib
from pathlib import Path

from p2pz.generators import BankDraft
from p2pz.store import repository as repo
from p2pz.store.lazy import numpy as np

from p2pz.registry.library.banks import BankSource, check_bank_concept
from p2pz.registry.library.directions import record_of
from p2pz.registry.library.encoding import EmbeddingSource, encoder_facts, load_encoder, registry_model, store_embedding
from p2pz.registry.library.naming import check_name, direction_name
from p2pz.registry.library.records import Direction, RegistryError

MAX_PT_BYTES = 1 << 30
MAX_PT_ROWS = repo.MAX_BANK_SENTENCES  # a raw bank [N, 77, D]: at most the one cap on a bank's sentences


def load_pt_embedding(path: Path, hidden_size: int) -> np.ndarray:
    """Read an official pix2pix-zero concept embedding: a tensor [1, 77, D] (or a raw bank [N, 77, D],
    averaged), loaded with ``torch.load(weights_only=True)`` only — a pickled object is refused."""
    import torch  # lazy: torch

    if not path.is_file():
        raise RegistryError(f"embedding file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_PT_BYTES:
        raise RegistryError(f"{path} is larger than {MAX_PT_BYTES >> 20} MiB; not a concept embedding")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a hostile-input boundary: any failure to parse is the file's fault (struct.error, …)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"{path} is not a plain tensor file (torch.load with weights_only=True refused it: "
                            f"{first})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise RegistryError(f"{path} holds a {type(obj).__name__}, not a tensor [1, 77, D]")
    if obj.dim() != 3 or obj.shape[1] != 77 or obj.shape[0] < 1:
        raise RegistryError(f"{path} holds a tensor of shape {tuple(obj.shape)}; expected [1, 77, D] or [N, 77, D]")
    if obj.shape[0] > MAX_PT_ROWS:
        raise RegistryError(f"{path} holds {obj.shape[0]} rows; a concept embedding has 1 (a raw bank at most "
                            f"{MAX_PT_ROWS})")
    nbytes = obj.numel() * obj.element_size()
    if not obj.is_contiguous() or nbytes > path.stat().st_size:
        # an expanded (stride-0) or strided view claims more data than the file holds: refuse before any copy
        raise RegistryError(f"{path} holds a tensor view of {nbytes} bytes over a smaller storage (a {path.stat().st_size}"
                            "-byte file); save a plain contiguous tensor")
    if obj.shape[2] != hidden_size:
        raise RegistryError(f"{path} has width D={obj.shape[2]} but the model's text encoder has D={hidden_size}; "
                            "pass the --model these embeddings were made with")
    if not obj.is_floating_point():
        raise RegistryError(f"{path} holds a {obj.dtype} tensor; expected floating point")
    arr = obj.to(torch.float64).mean(0, keepdim=True).to(torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise RegistryError(f"{path} contains NaN or Inf")
    return arr


def _pt_side(path: Path, hidden_size: int) -> EmbeddingSource:
    arr = load_pt_embedding(path, hidden_size)  # [1, 77, D]
    concept = check_bank_concept(path.stem)  # a proper extension split: "text.pt" → "text" (the reference's strip() bug)
    params = {"file": path.name, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "sentences": "unknown (imported mean embedding)"}
    bank = BankSource(concept=concept, sha256=hashlib.sha256(b"pt:" + arr.tobytes()).hexdigest(),
                      generator="import-pt", draft=BankDraft(sentences=[], params=params))
    key = arr[0, 1:].mean(0).astype(np.float32)  # no sentences, so no pooled key: mean over token rows 1..76 [D]
    return EmbeddingSource(bank=bank, mean=arr, key=key, key_kind="token-mean")


def import_pt(db, source: Path, target: Path, name: str | None, model: str | None) -> Direction:
    """A direction from two official per-concept ``.pt`` means, tied to ``model``'s text encoder."""
    enc = load_encoder(registry_model(db, model))
    src, tgt = _pt_side(source, enc.hidden_size), _pt_side(target, enc.hidden_size)
    name = check_name(name or direction_name(src.bank.concept, tgt.bank.concept), "direction")
    content = repo.direction_content("pair", enc.fingerprint, source=(src.bank.concept, src.bank.sha256),
                                     target=(tgt.bank.concept, tgt.bank.sha256), scale=1.0)
    with db.write() as s:
        enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
        se = store_embedding(s, src, enc_row.id)
        te = store_embedding(s, tgt, enc_row.id)
        row, _ = repo.insert_direction(s, name=name, content=content, encoder_id=enc_row.id, key=tgt.key - src.key,
                                       source_id=se.id, target_id=te.id,
                                       note=f"imported from {source.name} and {target.name}")
        return record_of(db, s, row)
