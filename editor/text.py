"""Prompt embeddings: the text side of a model, as the registry records it and as the UNet conditions on it.

Two families (algorithm §12):

* ``sd`` — one text encoder (SD 1.x / 2.x: a ``CLIPTextModel``; or a plain transformers encoder). A prompt's
  embedding is ``last_hidden_state`` [B, 77, D] (padded to 77, no attention mask for CLIP, as SD conditions).
* ``sdxl`` — the pair ``text_encoder`` (CLIP ViT-L, ``CLIPTextModel``) and ``text_encoder_2`` (OpenCLIP bigG,
  ``CLIPTextModelWithProjection``). As ``StableDiffusionXLPipeline.encode_prompt`` builds it, a prompt's embedding
  is each encoder's **penultimate** hidden states concatenated, [B, 77, 768 + 1280 = 2048], plus the pooled
  embedding ``text_embeds`` of ``text_encoder_2`` [B, 1280] (its projected EOS state), which SDXL's UNet takes as
  added conditioning. :func:`sdxl_prompt_embeds` is that computation, the one both the registry (concept means)
  and the editor (captions) use.

The loaded records (:class:`TextEncoder`, :class:`TextEncoderPair`) are built by :mod:`editor.loader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pz.store.hashing import sha256_json

SD, SDXL = "sd", "sdxl"


def tokenize_ids(tokenizer, prompts: list[str], max_length: int):
    """Token ids [B, max_length]: padded to max length and truncated, as every SD pipeline tokenizes."""
    return tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt").input_ids


def sdxl_prompt_embeds(tokenizers, models, prompts: list[str], max_length: int = 77, device=None):
    """(hidden [B, 77, Σ Dᵢ], pooled [B, P]) of ``prompts`` under SDXL's two encoders (no attention mask; the
    penultimate layer of each; ``text_embeds`` of the last), in the models' dtype."""
    import torch  # lazy: torch

    hidden = []
    out = None
    with torch.inference_mode():
        for tokenizer, model in zip(tokenizers, models):
            ids = tokenize_ids(tokenizer, prompts, max_length).to(device or model.device)  # [B, 77]
            out = model(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # [B, 77, Dᵢ]: the penultimate layer, before the final norm
        return torch.cat(hidden, dim=-1), out[0]  # [B, 77, 2048], text_embeds [B, 1280]


def pair_fingerprint(fingerprints: list[str]) -> str:
    """The combined fingerprint of an SDXL pair: a hash of the family and each part's fingerprint, in order."""
    return sha256_json({"family": SDXL, "parts": list(fingerprints)})


@dataclass
class TextEncoder:
    """A loaded tokenizer + text encoder with the facts the registry records about it (family ``sd``)."""

    location: object  # editor.loader.ModelLocation
    tokenizer: object
    model: object
    fingerprint: str
    architecture: str
    hidden_size: int
    max_length: int
    pad_id: int | None
    is_clip: bool
    device: str = "cpu"
    info: dict = field(default_factory=dict)
    family = SD
    key_size = None  # the key is [hidden_size]
    parts = None

    @property
    def subfolder(self) -> str | None:
        return "text_encoder" if self.location.layout == "diffusers" else None

    @property
    def key_dim(self) -> int:
        return self.hidden_size


@dataclass
class TextEncoderPair:
    """SDXL's two text encoders as one encoder record (family ``sdxl``): ``fingerprint`` is the combined one
    (:func:`pair_fingerprint`), ``parts`` each encoder's facts; ``hidden_size`` = D₁ + D₂ (2048),
    ``key_size`` = the pooled width P (1280): the search key is the mean pooled embedding, which is Δ_pooled's
    source (:meth:`registry.library.records.Direction.pooled`)."""

    location: object
    tokenizers: tuple
    models: tuple
    fingerprints: tuple[str, str]
    hidden_size: int
    key_size: int
    max_length: int = 77
    pad_id: int | None = None
    device: str = "cpu"
    family = SDXL
    is_clip = True
    architecture = "CLIPTextModel+CLIPTextModelWithProjection"
    subfolder = "text_encoder,text_encoder_2"

    @property
    def fingerprint(self) -> str:
        return pair_fingerprint(list(self.fingerprints))

    @property
    def key_dim(self) -> int:
        return self.key_size

    @property
    def tokenizer(self):
        """The first encoder's tokenizer: both share CLIP's BPE vocabulary and 77-token window, so token counts
        and truncation (bank health) are the same under either."""
        return self.tokenizers[0]

    @property
    def parts(self) -> list[dict]:
        return [{"subfolder": sub, "fingerprint": fp, "architecture": type(model).__name__,
                 "hidden_size": int(model.config.hidden_size)}
                for sub, fp, model in zip(("text_encoder", "text_encoder_2"), self.fingerprints, self.models)]

    def encode(self, prompts: list[str]):
        """(hidden [B, 77, 2048], pooled [B, 1280]): :func:`sdxl_prompt_embeds` on this pair."""
        return sdxl_prompt_embeds(self.tokenizers, self.models, prompts, self.max_length, self.device)


# --- token-aligned directions (algorithm §13) --------------------------------------------------------------

def word_token_ids(tokenizer, word: str) -> list[int]:
    """The token ids of ``word`` as it is spelled inside a sentence (no special tokens): one id for most words
    ("red" → [2417]), several for a word the vocabulary splits or a multi-word concept ("night sky")."""
    return list(tokenizer(word.strip(), add_special_tokens=False).input_ids)


def word_mask(ids, word_ids: list[int]):
    """Where ``word_ids`` occurs, contiguously, in each row of ``ids`` [B, T] → bool [B, T] (every occurrence, every
    token of it). Matches whole tokens only, so "red" does not match inside "reddish" (another token)."""
    import torch  # lazy: torch

    b, t = ids.shape
    n = len(word_ids)
    mask = torch.zeros((b, t), dtype=torch.bool, device=ids.device)
    if n == 0 or n > t:
        return mask
    want = torch.as_tensor(word_ids, dtype=ids.dtype, device=ids.device)
    windows = ids.unfold(1, n, 1)  # [B, T - n + 1, n]
    starts = (windows == want).all(-1)  # [B, T - n + 1]
    for k in range(n):
        mask[:, k:k + starts.shape[1]] |= starts
    return mask
