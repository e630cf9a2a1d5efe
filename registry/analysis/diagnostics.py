"""Direction diagnostics without images: is a direction stable, specific, and made from healthy banks?

``p2pz direction inspect NAME[@V]`` / ``Registry.inspect(ref)``. Everything here is computed from the stored banks
and their sentence statistics (:class:`registry.library.encoding.BankStats`: per-block sums of the 77 × D hidden states and
every sentence's key, kept in the cache when the bank is encoded), so the stability part needs no encoder call.

* **stability** — split-half cosine of Δ: the sentences of each bank fall in K blocks by hash; a random half of the
  blocks of each side gives Δ_A, the other half Δ_B; cos(Δ_A, Δ_B) over many random splits (mean, sd). The same for
  the search key (``key_stability``). ``sentences_for_095`` extrapolates with Spearman–Brown: halves of n/2
  sentences agree at r, so halves of m·n/2 agree at m·r / (1 + (m − 1)·r); solve for 0.95. Banks of different
  sizes count as two banks of their *effective* size n = 2 / (1/n_source + 1/n_target) each (the noise of a mean
  difference is σ²(1/n_s + 1/n_t)), so a 3-sentence bank against a 1000-sentence one counts as ≈ 6, not ≈ 500.
* **word swap** — the one-sentence direction "a photo of a SOURCE" → "a photo of a TARGET" (two encoder calls):
  its cosine with Δ and the norm ratio. The pix2pix-zero authors' claim is that banks beat a word swap; a bank
  direction far from the swap, or identical to it, is worth a look.
* **token profile** — ‖Δ[i]‖ for each of the 77 positions; BOS (position 0) is 0 for CLIP's causal encoder.
* **bank health** — size, near-duplicates (lower-case, punctuation and spacing ignored), diversity (mean pairwise
  cosine of sentence keys: 1 means every sentence says the same), truncated sentences (> 75 tokens), and leakage
  (sentences of one side that mention the other side's concept: "a cat chasing a dog" in the cat bank pulls Δ toward
  zero), listed.
* **entanglement** — the most similar other directions in the registry, by key.
* **checks** — each with status ok/warn, its value and threshold.

What cannot be computed is said, not guessed: a bank without sentences (imported from a ``.pt`` mean) or with
fewer than two has no stability, no bank-size estimate and no diversity; ``unavailable`` names each missing
figure and why, and the rest (token profile, word swap, neighbours, leakage) is reported as usual.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import from_bytes

from p2pz.registry.library import encoding
from p2pz.registry.library.naming import parse_ref
from p2pz.registry.library.records import RegistryError

from .statistics import SPLITS, bank_health, cosine, effective_size, spearman_brown_size, split_half

PROFILE_HEAD = 8  # "first k positions" of the token profile: BOS, "a photo of a", the concept, EOS


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn"
    value: object
    threshold: str
    note: str = ""


@dataclass
class Diagnostics:
    direction: str
    source: str
    target: str
    encoder: str
    stability: dict | None  # {"mean", "sd", "splits", "half_sizes" (effective), "source_half", "target_half"}
    key_stability: dict | None
    sentences_for_095: float | None
    word_swap_cosine: float | None
    word_swap_norm_ratio: float | None
    token_profile: list[float]
    token_energy_head: float
    banks: dict  # {"source": {...}, "target": {...}}
    neighbours: list[dict]
    checks: list[Check]
    stability_curve: list[dict] = field(default_factory=list)  # [{"sentences", "split_half"}]
    encoder_calls: int = 0
    unavailable: dict = field(default_factory=dict)  # {figure: why it cannot be computed}
    # SDXL: the token profile of each encoder's slice of Δ ({"text_encoder": [77], "text_encoder_2": [77]})
    token_profiles: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        return d


# --- the inspection -----------------------------------------------------------------------------------------


def _made_with(bank) -> dict:
    """How a bank was made: its generator and, for templates and LLM prompts, the kind (object, style, attribute,
    scene) and whether it was given or chosen from the concept (``auto``; None for banks made before that was kept)."""
    params = bank.params or {}
    kind = params.get("template_kind", params.get("prompt_kind"))
    source = params.get("template_kind_source", params.get("prompt_kind_source"))
    return {"generator": bank.generator, "template_kind": kind,
            "template_kind_source": source if kind is not None else None}

def _stats_of(bank, sentences: list[str], fingerprint: str, encoder_loader, calls: list):
    """A bank's sentence statistics under an encoder: from the cache, else by encoding it once (and caching);
    None for a bank without sentences (imported as a mean embedding). ``calls`` collects the size of every
    encoder batch this took."""
    if not sentences:
        return None
    stats = encoding.load_stats(bank.sha256, fingerprint)
    if stats is not None:
        return stats
    stats = encoding.encode_bank(encoder_loader(), sentences, progress=calls.append).stats
    encoding.save_stats(bank.sha256, fingerprint, stats)
    return stats


@dataclass
class _Pair:
    """What inspect reads of a pair direction in one transaction."""

    label: str
    model: str
    fingerprint: str
    architecture: str
    banks: tuple  # (source, target) bank rows, detached
    sentences: tuple[list[str], list[str]]
    made: dict
    delta: np.ndarray  # [77, D]
    key: np.ndarray  # [D]
    parts: list | None = None  # an SDXL pair's encoders ({"subfolder", "hidden_size", …}), in Δ's column order


def _read_pair(db, ref: str) -> _Pair:
    name, version = parse_ref(ref, "direction")
    with db.read() as s:
        row = repo.direction_row(s, name, version)
        if row.kind != "pair":
            raise RegistryError(f"{row.name}@{row.version} is a combination; inspect its components instead")
        enc = row.encoder
        banks = tuple(s.get(m.Embedding, i).bank for i in (row.source_id, row.target_id))
        return _Pair(label=f"{row.name}@{row.version}", model=enc.model, fingerprint=enc.fingerprint,
                     architecture=enc.architecture, banks=banks, sentences=tuple(list(b.sentences) for b in banks),
                     made={side: _made_with(b) for side, b in zip(("source", "target"), banks)},
                     delta=repo.direction_vector(s, row)[0], key=from_bytes(row.key, (enc.key_dim,)),
                     parts=enc.parts)


def _unavailable(pair: _Pair) -> dict:
    """Which figures cannot be computed and why (a bank with fewer than two sentences)."""
    out = {}
    sized = list(zip(("source", "target"), pair.banks, (len(x) for x in pair.sentences)))
    short = [(b, n) for _, b, n in sized if n < 2]
    if short:
        why = "; ".join(f"{b.concept}@{b.version} has " + ("no sentences (a mean embedding imported from a .pt file)"
                                                           if n == 0 else "1 sentence")
                        for b, n in short)
        for figure in ("stability", "key_stability", "sentences_for_095", "stability_curve"):
            out[figure] = f"needs ≥ 2 sentences in each bank: {why}"
    for side, b, n in sized:
        if n < 2:
            out[f"banks.{side}.diversity"] = f"{b.concept}@{b.version} has {n or 'no'} sentence{'s' * (n != 1)}"
        if n == 0:
            out[f"banks.{side}.duplicates"] = out[f"banks.{side}.truncated"] = f"{b.concept}@{b.version} has no sentences"
    return out


def _stability(src_stats, tgt_stats, n_eff: float, splits: int, seed: int):
    """(split-half of Δ, of the key, sentences per bank for 0.95, the stability curve over fractions)."""
    stab = split_half(src_stats, tgt_stats, splits, seed)
    key_stab = split_half(src_stats, tgt_stats, splits, seed, use_keys=True)
    curve = []
    for frac in (0.25, 0.5, 1.0):
        point = split_half(src_stats, tgt_stats, max(5, splits // 2), seed + 1, fraction=frac)
        curve.append({"sentences": 2 * point["half_sizes"], "split_half": point["mean"]})
    return stab, key_stab, spearman_brown_size(stab["mean"], n_eff), curve


def _word_swap(load, pair: _Pair):
    """(cosine of Δ with the one-sentence word swap, Δ's norm over the swap's, the tokenizer); Nones when the
    model is not available here (word swap and truncation are then reported as unknown)."""
    try:
        enc = load()
    except RegistryError:
        return None, None, None
    src, tgt = (b.concept for b in pair.banks)
    hidden, _ = encoding.encode_sentences(enc, [f"a photo of a {src}", f"a photo of a {tgt}"])
    swap = (hidden[1] - hidden[0]).float().cpu().numpy()  # [77, D]
    ratio = float(np.linalg.norm(pair.delta) / max(np.linalg.norm(swap), 1e-12))
    return cosine(pair.delta, swap), ratio, enc.tokenizer


def _bank_reports(pair: _Pair, stats, tokenizer) -> dict:
    (src_b, tgt_b), (src_s, tgt_s) = pair.banks, pair.sentences
    banks = {"source": bank_health(src_s, stats[0], tgt_b.concept, tokenizer),
             "target": bank_health(tgt_s, stats[1], src_b.concept, tokenizer)}
    for side, b in zip(("source", "target"), pair.banks):
        if not banks[side]["size"]:
            banks[side]["duplicates"] = None
        banks[side]["bank"] = f"{b.concept}@{b.version}"
        banks[side].update(pair.made[side])
    return banks


def inspect(db, indexes, ref: str, *, splits: int = SPLITS, seed: int = 0, neighbours: int = 5) -> Diagnostics:
    """The diagnostics of a pair direction (see the module's docstring for each figure)."""
    pair = _read_pair(db, ref)
    encoder = {}

    def load():
        if "enc" not in encoder:
            loaded = encoding.load_encoder(pair.model)
            if loaded.fingerprint != pair.fingerprint:
                raise RegistryError(f"the model at {pair.model} no longer has the text encoder {pair.label} was "
                                    "built with")
            encoder["enc"] = loaded
        return encoder["enc"]

    calls: list[int] = []
    stats = [_stats_of(b, x, pair.fingerprint, load, calls) for b, x in zip(pair.banks, pair.sentences)]
    stability_calls = len(calls)  # encoder batches the stability part needed (0 when the banks' stats are cached)
    unavailable = _unavailable(pair)
    # 1. stability and its extrapolation (banks of different sizes count at their effective size)
    n_eff = effective_size(*(len(x) for x in pair.sentences))
    stab = key_stab = needed = None
    curve = []
    if "stability" not in unavailable:
        stab, key_stab, needed, curve = _stability(*stats, n_eff, splits, seed)
    # 2. word swap (two encoder calls) and the tokenizer's view of the banks
    swap_cos, swap_ratio, tokenizer = _word_swap(load, pair)
    # 3. token profile
    profile = np.linalg.norm(pair.delta.astype(np.float64), axis=1)
    energy = profile ** 2
    head = float(energy[:PROFILE_HEAD].sum() / max(energy.sum(), 1e-30))
    per_encoder = part_profiles(pair.delta, pair.parts)
    # 4. bank health
    banks = _bank_reports(pair, stats, tokenizer)
    # 5. entanglement
    near = [h for h in indexes.hits(pair.fingerprint, pair.key, neighbours + 1)
            if h.direction.ref != pair.label][:neighbours]
    near_list = [{"direction": h.direction.ref, "cosine": round(h.score, 6)} for h in near]
    checks = _checks(stab, key_stab, needed, n_eff, swap_cos, profile, banks, near_list, pair.architecture,
                     unavailable)
    return Diagnostics(direction=pair.label, source=banks["source"]["bank"], target=banks["target"]["bank"],
                       encoder=pair.fingerprint, stability=stab, key_stability=key_stab, sentences_for_095=needed,
                       word_swap_cosine=swap_cos, word_swap_norm_ratio=swap_ratio,
                       token_profile=[float(x) for x in profile], token_energy_head=head, banks=banks,
                       neighbours=near_list, checks=checks, stability_curve=curve, encoder_calls=stability_calls,
                       unavailable=unavailable, token_profiles=per_encoder)


def part_profiles(delta: np.ndarray, parts: list | None) -> dict:
    """‖Δ[i]‖ per position within each encoder's columns of an SDXL Δ [77, 768 + 1280] (CLIP ViT-L first, then
    OpenCLIP bigG, as the prompt embedding concatenates them); empty for a single encoder."""
    if not parts:
        return {}
    out, start = {}, 0
    for part in parts:
        width = int(part["hidden_size"])
        block = delta[:, start:start + width].astype(np.float64)
        out[part["subfolder"]] = [float(x) for x in np.linalg.norm(block, axis=1)]
        start += width
    return out


FAR_BELOW = 4  # a build warns when its banks are worth less than 1/FAR_BELOW of what inspect asks for


def bank_advice(db, ref: str, *, splits: int = 10, seed: int = 0) -> dict | None:
    """Which banks a pair direction was built from and whether they are big enough, from the banks' statistics
    kept when they were encoded (no encoder call) → ``{"source": {"bank", "size"}, "target": {…}, "effective",
    "needed" (inspect's sentences per bank for split-half 0.95; None when unknown), "warning" (None or one
    line)}``; None for a combination."""
    name, version = parse_ref(ref, "direction")
    with db.read() as s:
        row = repo.direction_row(s, name, version)
        if row.kind != "pair":
            return None
        fingerprint, label = row.encoder.fingerprint, f"{row.name}@{row.version}"
        sides = []
        for emb_id in (row.source_id, row.target_id):
            b = s.get(m.Embedding, emb_id).bank
            sides.append({"bank": f"{b.concept}@{b.version}", "size": int(b.n_sentences), "sha256": b.sha256,
                          "concept": b.concept})
    src, tgt = sides
    n_eff = effective_size(src["size"], tgt["size"])
    needed, warning = None, None
    small = min(sides, key=lambda x: x["size"])
    if 0 < small["size"] < 2:
        warning = (f"{small['bank']} has 1 sentence: too few to tell whether {label} is stable; give it more "
                   f"(p2pz bank create {small['concept']!r} -n 1000)")
    elif small["size"] >= 2:
        stats = [encoding.load_stats(x["sha256"], fingerprint) for x in sides]
        if all(x is not None for x in stats):
            r = split_half(stats[0], stats[1], splits, seed)["mean"]
            needed = spearman_brown_size(r, n_eff)
            if needed is None or n_eff * FAR_BELOW < needed:
                asks = "more than the banks can show" if needed is None else f"≈ {needed:.0f} sentences per bank"
                warning = (f"{small['bank']} has {small['size']} sentences, far below what p2pz direction inspect "
                           f"{label} asks for a stable direction ({asks}; these banks count as {n_eff:.0f} each); "
                           f"grow it (p2pz bank create {small['concept']!r} -n 1000) or build from another version")
    for x in sides:
        del x["sha256"], x["concept"]
    return {"source": src, "target": tgt, "effective": n_eff, "needed": needed, "warning": warning}


def _checks(stab, key_stab, needed, n_eff, swap_cos, profile, banks, near, architecture,
            unavailable=None) -> list[Check]:
    def check(name, ok, value, threshold, note=""):
        return Check(name, "ok" if ok else "warn", value, threshold, note)

    sizes = f"{banks['source']['size']} and {banks['target']['size']} sentences"
    if stab is None:  # not measurable: a warning that says why, not a figure
        out = [check("stability", False, None, "≥ 0.9", "cannot be measured: " + (unavailable or {}).get(
            "stability", "the banks have too few sentences"))]
    else:
        out = [
            check("stability", stab["mean"] >= 0.9, round(stab["mean"], 4), "≥ 0.9",
                  "split-half cosine of Δ; low means the banks are too small or too mixed"),
            check("key_stability", key_stab["mean"] >= 0.9, round(key_stab["mean"], 4), "≥ 0.9"),
            check("bank_size", needed is not None and needed <= n_eff,
                  None if needed is None else round(needed),
                  f"≤ {n_eff:.0f} (sentences per bank for 0.95; {sizes} count as {n_eff:.0f} each)",
                  "more sentences (in the smaller bank first) would make the direction more stable"
                  if needed is None or needed > n_eff else ""),
        ]
    if swap_cos is not None:
        out.append(check("word_swap", 0.2 <= swap_cos <= 0.995, round(swap_cos, 4), "0.2 … 0.995",
                         "cosine with the one-sentence word swap: near 0 is suspicious, near 1 adds nothing"))
    if "CLIP" in architecture:
        bos = float(profile[0] / max(profile.max(), 1e-12))
        out.append(check("bos_row", bos < 1e-3, round(bos, 6), "< 0.001 of the largest row",
                         "a causal encoder's BOS row cancels; if not, encoder or pooling differ from SD's"))
    for side in ("source", "target"):
        b = banks[side]
        out.append(check(f"{side}_leakage", not b["leakage"], len(b["leakage"]), "0",
                         "sentences that mention the other concept pull Δ toward zero"))
        if b["duplicates"] is not None:
            out.append(check(f"{side}_duplicates", b["duplicates"] == 0, b["duplicates"], "0"))
        if b["diversity"] is not None:
            out.append(check(f"{side}_diversity", b["diversity"] <= 0.9, round(b["diversity"], 4), "≤ 0.9",
                             "mean pairwise cosine of sentence keys; near 1 means the sentences barely differ"))
        if b["truncated"] is not None:
            out.append(check(f"{side}_truncated", b["truncated"] == 0, b["truncated"], "0",
                             "sentences over 75 tokens lose their end"))
    if near:
        out.append(check("entanglement", near[0]["cosine"] < 0.98, near[0]["cosine"], "< 0.98",
                         f"nearest other direction: {near[0]['direction']}"))
    return out
