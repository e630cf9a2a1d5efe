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

import re
from dataclasses import asdict, dataclass, field

from generators import contains_concept
from store import models as m
from store import repository as repo
from store.lazy import numpy as np
from store.vectors import from_bytes

from registry.library.naming import parse_ref
from registry.library.records import RegistryError

SPLITS = 20
TARGET_STABILITY = 0.95
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        return d


# --- statistics -------------------------------------------------------------------------------------------

def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def _half_means(sums: np.ndarray, counts: np.ndarray, rng, blocks: np.ndarray | None = None):
    """Means of a random half of the (non-empty) blocks and of the other half."""
    usable = np.flatnonzero(counts > 0) if blocks is None else blocks
    order = rng.permutation(usable)
    a, b = order[: len(order) // 2], order[len(order) // 2:]
    mean = lambda idx: sums[idx].sum(0) / max(counts[idx].sum(), 1)  # noqa: E731
    return mean(a), mean(b), int(counts[a].sum()), int(counts[b].sum())


def effective_size(a: float, b: float) -> float:
    """The size two equal banks would need to be as noisy as banks of ``a`` and ``b`` sentences: 2/(1/a + 1/b)."""
    return 2.0 / (1.0 / a + 1.0 / b) if a > 0 and b > 0 else 0.0


def split_half(src, tgt, splits: int = SPLITS, seed: int = 0, use_keys: bool = False,
               fraction: float = 1.0) -> dict:
    """cos(Δ_A, Δ_B) over random splits of the blocks of both banks (optionally of a fraction of the blocks).
    ``half_sizes``: the halves' effective size (:func:`effective_size`); ``source_half``/``target_half``: each
    side's sentences per half."""
    rng = np.random.default_rng(seed)
    values, sizes, src_sizes, tgt_sizes = [], [], [], []
    for _ in range(splits):
        sides = []
        for stats in (src, tgt):
            sums = stats.block_key_sums if use_keys else stats.block_sums
            usable = np.flatnonzero(stats.block_counts > 0)
            if fraction < 1.0:
                usable = rng.choice(usable, size=max(2, int(round(len(usable) * fraction))), replace=False)
            sides.append(_half_means(sums, stats.block_counts, rng, usable))
        (sa, sb, na, nb), (ta, tb, ma, mb) = sides
        values.append(_cos(ta - sa, tb - sb))
        sizes.append((effective_size(na, ma) + effective_size(nb, mb)) / 2)
        src_sizes.append((na + nb) / 2)
        tgt_sizes.append((ma + mb) / 2)
    v = np.array(values)
    return {"mean": float(v.mean()), "sd": float(v.std()), "splits": splits, "half_sizes": float(np.mean(sizes)),
            "source_half": float(np.mean(src_sizes)), "target_half": float(np.mean(tgt_sizes))}


def spearman_brown_size(r_half: float, n: float, target: float = TARGET_STABILITY) -> float | None:
    """Sentences per bank for halves to agree at ``target``, from halves of n/2 agreeing at ``r_half``."""
    if r_half <= 0:
        return None
    m_factor = target * (1 - r_half) / (r_half * (1 - target))  # halves m·n/2 long agree at ``target``
    return float(n * m_factor)


_PUNCT = re.compile(r"[^\w\s]")


def _near_key(sentence: str) -> str:
    return " ".join(_PUNCT.sub(" ", sentence.lower()).split())


def bank_health(sentences: list[str], stats, other_concept: str, tokenizer=None) -> dict:
    """Size, near-duplicates, diversity (None without sentence statistics or with < 2 sentences), truncation,
    leakage."""
    seen, dups = set(), 0
    for s in sentences:
        k = _near_key(s)
        dups += k in seen
        seen.add(k)
    diversity = None
    if stats is not None and len(stats.sentence_keys) > 1:
        keys = stats.sentence_keys.astype(np.float64)
        unit = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
        n = len(unit)
        total = unit.sum(0)
        diversity = float((total @ total - n) / (n * (n - 1)))  # mean pairwise cosine
    truncated = None
    if tokenizer is not None and sentences:
        lengths = [len(ids) for ids in tokenizer(list(sentences), add_special_tokens=False, truncation=False)["input_ids"]]
        truncated = int(sum(n_tok > 75 for n_tok in lengths))
    leakage = [s for s in sentences if contains_concept(s, other_concept)]
    return {"size": len(sentences), "duplicates": dups, "diversity": diversity, "truncated": truncated,
            "leakage": leakage}


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
    from registry.library.encoding import encode_bank, load_stats, save_stats

    if not sentences:
        return None
    stats = load_stats(bank.sha256, fingerprint)
    if stats is not None:
        return stats
    stats = encode_bank(encoder_loader(), sentences, progress=calls.append).stats
    save_stats(bank.sha256, fingerprint, stats)
    return stats


def inspect(db, indexes, ref: str, *, splits: int = SPLITS, seed: int = 0, neighbours: int = 5) -> Diagnostics:
    name, version = parse_ref(ref, "direction")
    with db.read() as s:
        row = repo.direction_row(s, name, version)
        if row.kind != "pair":
            raise RegistryError(f"{row.name}@{row.version} is a combination; inspect its components instead")
        enc_row = row.encoder
        architecture = enc_row.architecture
        src_emb, tgt_emb = s.get(m.Embedding, row.source_id), s.get(m.Embedding, row.target_id)
        src_bank, tgt_bank = src_emb.bank, tgt_emb.bank
        src_sentences, tgt_sentences = list(src_bank.sentences), list(tgt_bank.sentences)
        made = {side: _made_with(b) for side, b in (("source", src_bank), ("target", tgt_bank))}
        delta = repo.direction_vector(s, row)[0]  # [77, D]
        key = from_bytes(row.key, (enc_row.hidden_size,))
        label = f"{row.name}@{row.version}"
        model, fingerprint = enc_row.model, enc_row.fingerprint
    encoder = {}

    def load():
        if "enc" not in encoder:
            from registry.library.encoding import load_encoder

            loaded = load_encoder(model)
            if loaded.fingerprint != fingerprint:
                raise RegistryError(f"the model at {model} no longer has the text encoder {label} was built with")
            encoder["enc"] = loaded
        return encoder["enc"]

    calls: list[int] = []
    src_stats = _stats_of(src_bank, src_sentences, fingerprint, load, calls)
    tgt_stats = _stats_of(tgt_bank, tgt_sentences, fingerprint, load, calls)
    stability_calls = len(calls)  # encoder batches the stability part needed (0 when the banks' stats are cached)
    unavailable = {}
    short = [(b, n) for b, n in ((src_bank, len(src_sentences)), (tgt_bank, len(tgt_sentences))) if n < 2]
    if short:
        why = "; ".join(f"{b.concept}@{b.version} has " + ("no sentences (a mean embedding imported from a .pt file)"
                                                           if n == 0 else "1 sentence")
                        for b, n in short)
        for figure in ("stability", "key_stability", "sentences_for_095", "stability_curve"):
            unavailable[figure] = f"needs ≥ 2 sentences in each bank: {why}"
    for side, b, n in (("source", src_bank, len(src_sentences)), ("target", tgt_bank, len(tgt_sentences))):
        if n < 2:
            unavailable[f"banks.{side}.diversity"] = f"{b.concept}@{b.version} has {n or 'no'} sentence{'s' * (n != 1)}"
        if n == 0:
            unavailable[f"banks.{side}.duplicates"] = unavailable[f"banks.{side}.truncated"] = \
                f"{b.concept}@{b.version} has no sentences"

    # 1. stability and its extrapolation (banks of different sizes count at their effective size)
    n_eff = effective_size(len(src_sentences), len(tgt_sentences))
    stab = key_stab = needed = None
    curve = []
    if not short:
        stab = split_half(src_stats, tgt_stats, splits, seed)
        key_stab = split_half(src_stats, tgt_stats, splits, seed, use_keys=True)
        needed = spearman_brown_size(stab["mean"], n_eff)
        for frac in (0.25, 0.5, 1.0):
            point = split_half(src_stats, tgt_stats, max(5, splits // 2), seed + 1, fraction=frac)
            curve.append({"sentences": 2 * point["half_sizes"], "split_half": point["mean"]})

    # 2. word swap (two encoder calls) and the tokenizer's view of the banks
    swap_cos = swap_ratio = None
    tokenizer = None
    try:
        enc = load()
        from registry.library.encoding import encode_sentences

        hidden, _ = encode_sentences(enc, [f"a photo of a {src_bank.concept}", f"a photo of a {tgt_bank.concept}"])
        swap = (hidden[1] - hidden[0]).float().cpu().numpy()  # [77, D]
        swap_cos = _cos(delta, swap)
        swap_ratio = float(np.linalg.norm(delta) / max(np.linalg.norm(swap), 1e-12))
        tokenizer = enc.tokenizer
    except RegistryError:
        pass  # the model is not available here: word swap and truncation are reported as unknown

    # 3. token profile
    profile = np.linalg.norm(delta.astype(np.float64), axis=1)
    energy = profile ** 2
    head = float(energy[:PROFILE_HEAD].sum() / max(energy.sum(), 1e-30))

    # 4. bank health
    banks = {"source": bank_health(src_sentences, src_stats, tgt_bank.concept, tokenizer),
             "target": bank_health(tgt_sentences, tgt_stats, src_bank.concept, tokenizer)}
    for side in ("source", "target"):
        if not banks[side]["size"]:
            banks[side]["duplicates"] = None
    for side, b in (("source", src_bank), ("target", tgt_bank)):
        banks[side]["bank"] = f"{b.concept}@{b.version}"
        banks[side].update(made[side])

    # 5. entanglement
    near = [h for h in indexes.hits(fingerprint, key, neighbours + 1) if h.direction.ref != label][:neighbours]
    near_list = [{"direction": h.direction.ref, "cosine": round(h.score, 6)} for h in near]

    checks = _checks(stab, key_stab, needed, n_eff, swap_cos, profile, banks, near_list, architecture, unavailable)
    return Diagnostics(direction=label, source=banks["source"]["bank"], target=banks["target"]["bank"],
                       encoder=fingerprint, stability=stab, key_stability=key_stab, sentences_for_095=needed,
                       word_swap_cosine=swap_cos, word_swap_norm_ratio=swap_ratio,
                       token_profile=[float(x) for x in profile], token_energy_head=head, banks=banks,
                       neighbours=near_list, checks=checks, stability_curve=curve, encoder_calls=stability_calls,
                       unavailable=unavailable)


FAR_BELOW = 4  # a build warns when its banks are worth less than 1/FAR_BELOW of what inspect asks for


def bank_advice(db, ref: str, *, splits: int = 10, seed: int = 0) -> dict | None:
    """Which banks a pair direction was built from and whether they are big enough, from the banks' statistics
    kept when they were encoded (no encoder call) → ``{"source": {"bank", "size"}, "target": {…}, "effective",
    "needed" (inspect's sentences per bank for split-half 0.95; None when unknown), "warning" (None or one
    line)}``; None for a combination."""
    from registry.library.encoding import load_stats

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
        stats = [load_stats(x["sha256"], fingerprint) for x in sides]
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


# --- presentation -------------------------------------------------------------------------------------------

def summary(d: Diagnostics) -> str:
    """A one-screen text summary."""
    st = d.stability
    lines = [f"{d.direction}: {d.source} → {d.target} (encoder {d.encoder[:12]})",
             "stability        " + ("not computed (see below)" if st is None else
                                    f"{st['mean']:.4f} ± {st['sd']:.4f} over {st['splits']} splits (halves of "
                                    f"≈ {st['source_half']:.4g} and {st['target_half']:.4g} sentences, effective "
                                    f"{st['half_sizes']:.4g}); key {d.key_stability['mean']:.4f}"),
             "bank size for 0.95 " + ("n/a" if d.sentences_for_095 is None else
                                      f"≈ {d.sentences_for_095:.0f} sentences per bank"),
             "word swap        " + ("n/a (model not available)" if d.word_swap_cosine is None else
                                    f"cosine {d.word_swap_cosine:.4f}, norm ratio {d.word_swap_norm_ratio:.3f}"),
             f"token profile    BOS {d.token_profile[0]:.3g}, max {max(d.token_profile):.3g}, "
             f"{100 * d.token_energy_head:.1f} % of the energy in the first {PROFILE_HEAD} positions"]
    for side in ("source", "target"):
        b = d.banks[side]
        na = lambda v, f="{}": "n/a" if v is None else f.format(v)  # noqa: E731
        made = " ".join(x for x in (b.get("generator"), b.get("template_kind")) if x)  # "templates scene"
        if b.get("template_kind_source"):
            made += f" ({b['template_kind_source']})"
        lines.append(f"{side:<7}{b['bank']:>10}  {made + ', ' if made else ''}{b['size']} sentences, "
                     f"{na(b['duplicates'])} near-duplicates, diversity {na(b['diversity'], '{:.3f}')}, "
                     f"truncated {na(b['truncated'])}, leakage {len(b['leakage'])}")
        for s in b["leakage"][:3]:
            lines.append(f"         leak: {s}")
    if d.neighbours:
        lines.append("neighbours       " + ", ".join(f"{n['direction']} {n['cosine']:.3f}" for n in d.neighbours))
    if d.unavailable:
        lines.append("not computed")
        for figure, why in d.unavailable.items():
            lines.append(f"  {figure}: {why}")
    lines.append("checks")
    for c in d.checks:
        lines.append(f"  {'ok  ' if c.status == 'ok' else 'WARN'}  {c.name:<20} {c.value!s:<10} {c.threshold}"
                     + (f"  — {c.note}" if c.status == "warn" and c.note else ""))
    return "\n".join(lines)


def figure_png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(d: Diagnostics) -> str:
    """One self-contained HTML file: the summary tables, a token-profile plot and a stability curve (PNG inside)."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(range(len(d.token_profile)), d.token_profile, color="#4a7bb7")
    ax.set_xlabel("token position")
    ax.set_ylabel("‖Δ[i]‖")
    ax.set_title("token profile")
    profile_png = figure_png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    xs = [p["sentences"] for p in d.stability_curve]
    ax.plot(xs, [p["split_half"] for p in d.stability_curve], "o", label="measured (split-half)")
    r = d.stability["mean"] if d.stability else 0.0
    n_half = d.stability["half_sizes"] if d.stability else 0.0
    if r > 0 and xs:
        grid = np.linspace(max(1.0, min(xs) / 2), max(xs + [d.sentences_for_095 or 0]) * 1.2, 100)
        k = grid / (2 * n_half)
        ax.plot(grid, k * r / (1 + (k - 1) * r), "-", color="#999", label="Spearman–Brown")
    ax.axhline(TARGET_STABILITY, color="#c44", lw=0.8, ls="--", label="0.95")
    ax.set_xlabel("sentences per bank")
    ax.set_ylabel("split-half cosine")
    ax.legend(fontsize=8)
    ax.set_title("stability")
    curve_png = figure_png(fig)
    plt.close(fig)
    esc = html.escape
    rows = "".join(f"<tr class='{c.status}'><td>{esc(c.name)}</td><td>{c.status}</td><td>{esc(str(c.value))}</td>"
                   f"<td>{esc(c.threshold)}</td><td>{esc(c.note)}</td></tr>" for c in d.checks)
    leaks = "".join(f"<li><b>{side}</b>: {esc(s)}</li>" for side in ("source", "target")
                    for s in d.banks[side]["leakage"])
    near = "".join(f"<tr><td>{esc(n['direction'])}</td><td>{n['cosine']:.4f}</td></tr>" for n in d.neighbours)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(d.direction)} — p2pz inspect</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
tr.warn td{{background:#fde8e8}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>{esc(d.direction)}</h1><p>{esc(d.source)} → {esc(d.target)}, encoder <code>{d.encoder[:12]}</code></p>
<pre>{esc(summary(d))}</pre>
<h2>Checks</h2><table><tr><th>check</th><th>status</th><th>value</th><th>threshold</th><th>note</th></tr>{rows}</table>
<h2>Token profile</h2><img alt="token profile" src="{profile_png}">
<h2>Stability</h2><img alt="stability curve" src="{curve_png}">
<h2>Leakage</h2><ul>{leaks or '<li>none</li>'}</ul>
<h2>Nearest directions</h2><table>{near or '<tr><td>none</td></tr>'}</table>
</body></html>
"""
