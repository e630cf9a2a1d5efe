"""The statistics behind ``p2pz direction inspect`` (:mod:`registry.analysis.diagnostics` explains each): the
split-half stability of Δ over blocks of both banks, its Spearman–Brown extrapolation at the banks' effective
size, and a bank's health (near-duplicates, diversity, truncation, leakage). Plain numpy over stored statistics."""

from __future__ import annotations

import re

from p2pz.generators import contains_concept
from p2pz.store.lazy import numpy as np

SPLITS = 20
TARGET_STABILITY = 0.95


def cosine(a: np.ndarray, b: np.ndarray) -> float:
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
        values.append(cosine(ta - sa, tb - sb))
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
