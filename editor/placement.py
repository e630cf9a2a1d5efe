"""Where a direction is added to the caption's embedding (docs/algorithm.md §13).

The paper adds its positional mean Δ [1, 77, D] to every position of the caption's embedding (``all``). Bank
sentences put the concept at other positions than the caption does, and in a bidirectional encoder (or after
the end token of a causal one) every position carries the whole sentence, so Δ also moves the words around the
concept — the background of an object edit. The token-aligned direction Δ_token [D] is the change of the concept
word's *own* contextual embedding between the banks; ``word`` adds it only where the caption spells the source
word, ``word+pad`` adds Δ's padding rows as well (where a causal encoder's summary of the sentence lives).

A caption without the source word cannot be edited at the word: that row falls back to ``all`` and the result's
notes say so, one line per edit.

``auto`` (the default) chooses by the kind of the source word (``TokenDelta.kind``: the bank's template kind, or
:func:`generators.templates.choose_kind` of the word): :data:`editor.config.AUTO` — measured on the shapes world
(bench/shapes_ablation.py), where Δ_token at the word wins colour and scene edits and splits shape edits
(triangle → star 95 %, circle → square 0 %), so objects keep the paper's placement. A direction without Δ_token,
or a raw tensor, gets ``all``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import resolve_mode
from .errors import EditorError
from .text import word_mask, word_token_ids


@dataclass
class Placement:
    """The per-row Δ of one direction for a batch of captions, and what happened."""

    delta: torch.Tensor  # [B, 77, D] (or the [1, 77, D] Δ itself for ``all``)
    mode: str
    fallback: list[int] = field(default_factory=list)  # rows without the source word (edited with ``all``)
    note: str | None = None


def placed_delta(tokenizer, captions: list[str], delta: torch.Tensor, token, mode: str, scale: float = 1.0,
                 label: str = "the direction") -> Placement:
    """Δ placed for ``captions`` (``delta`` [1, 77, D] already times ``scale``) → :class:`Placement`.

    ``token`` is the direction's token part (anything with ``tensor`` [D] and ``word``, e.g.
    :class:`registry.library.records.TokenDelta`), or None. ``word`` and ``word+pad`` need it; without one they
    are refused with the reason the direction has none; ``auto`` resolves first (:func:`resolve_mode`)."""
    mode = resolve_mode(mode, token)
    if mode == "all":
        return Placement(delta, mode)
    vector = getattr(token, "tensor", None)
    if vector is None:
        why = getattr(token, "reason", "") or "a raw tensor carries no Δ_token"
        raise EditorError(f"--delta-at {mode} needs {label}'s token-aligned direction, and it has none ({why}); "
                          "use --delta-at all")
    d = delta.shape[-1]
    if vector.shape != (d,):
        raise EditorError(f"{label}'s Δ_token has shape {list(vector.shape)}, but this model needs [{d}]")
    batch = tokenizer(list(captions), padding="max_length", max_length=delta.shape[1], truncation=True,
                      return_tensors="pt")
    ids, attention = batch["input_ids"], batch["attention_mask"]  # [B, 77] each
    at_word = word_mask(ids, word_token_ids(tokenizer, token.word)).to(delta.device)  # [B, 77]
    vector = vector.to(delta.device, delta.dtype) * float(scale)
    placed = at_word.unsqueeze(-1).to(delta.dtype) * vector  # [B, 77, D]
    if mode == "word+pad":
        pad = (attention == 0).to(delta.device).unsqueeze(-1).to(delta.dtype)  # [B, 77, 1]
        placed = placed + pad * delta  # Δ's own padding rows
    missing = [i for i in range(len(captions)) if not bool(at_word[i].any())]
    note = None
    if missing:
        placed[missing] = delta[0]  # the paper's placement for captions without the word
        shown = ", ".join(repr(captions[i]) for i in missing[:2]) + (" …" if len(missing) > 2 else "")
        note = (f"{len(missing)} of {len(captions)} caption(s) do not contain {token.word!r} ({shown}): edited with "
                f"--delta-at all")
    return Placement(placed, mode, missing, note)
