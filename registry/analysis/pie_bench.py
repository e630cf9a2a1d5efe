"""PIE-Bench (Ju et al., "PnP Inversion", 2023) run with sentence-bank directions: each entry's bracketed words
give a direction, every edit is scored with the benchmark's own definitions (``p2pz eval pie-bench``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from p2pz.registry.library.records import RegistryError

PIE_COLUMNS = [  # (our key, the published table's column, scale factor)
    ("structure_distance", "Structure Distance ×10³", 1e3),
    ("bg_psnr", "PSNR", 1.0),
    ("bg_lpips", "LPIPS ×10³", 1e3),
    ("bg_mse", "MSE ×10⁴", 1e4),
    ("bg_ssim", "SSIM ×10²", 1e2),
    ("clip_whole", "CLIP Whole", 1.0),
    ("clip_edited", "CLIP Edited", 1.0),
]
_BRACKETS = re.compile(r"\[([^\]]+)\]")


def bracketed(prompt: str) -> str:
    """The words a PIE-Bench prompt marks as edited: "a [black] [cat]" → "black cat"."""
    return " ".join(w.strip() for w in _BRACKETS.findall(prompt or "")).strip()


def unbracketed(prompt: str) -> str:
    return " ".join((prompt or "").replace("[", "").replace("]", "").split())


def _read_mapping(mapping_path: Path) -> dict:
    try:
        mapping = json.loads(Path(mapping_path).read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the PIE-Bench mapping {mapping_path} ({exc})") from None
    if not isinstance(mapping, dict):
        raise RegistryError(f"{mapping_path} is not a PIE-Bench mapping_file.json (an object keyed by image id)")
    return mapping


def _delta(reg, source: str, target: str, model: str | None, bank_size: int):
    """Δ of the two words' template banks (made when missing; not stored as a direction)."""
    import torch  # heavy: only when the benchmark runs

    for concept in (source, target):
        try:
            reg.bank(concept)
        except RegistryError:
            reg.make_bank(concept, n=bank_size)
    return torch.from_numpy(reg.embedding(target, model) - reg.embedding(source, model))


def _scores(scorers, image, edited, source: str, target: str, rle: list, target_prompt: str) -> dict:
    """PIE-Bench's scores of one edit: the pair's (background outside the mask), CLIP of the whole edit and of
    the edited part."""
    import numpy as np  # heavy: only when the benchmark runs
    from PIL import Image  # lazy: PIL

    from p2pz.editor.evaluate import score_pair  # lazy: torch
    from p2pz.editor.metrics import decode_rle  # lazy: torch

    src = image.resize(edited.size, resample=3) if image.size != edited.size else image
    mask = decode_rle([int(v) for v in rle]) if rle else None
    scores = score_pair(scorers, src, edited, source, target, mask)
    scores["clip_whole"] = scorers.clip.score([edited], [target_prompt])[0]
    if mask is not None:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(edited.size, Image.NEAREST)) > 0
        part = Image.fromarray((np.asarray(edited) * m[..., None]).astype(np.uint8))
        scores["clip_edited"] = scorers.clip.score([part], [target_prompt])[0]
    return scores


def pie_bench(reg, mapping_path: Path, images_dir: Path, *, editor, scorers, model: str | None = None,
              inversion, edit, limit: int | None = None, bank_size: int = 1000, report=None) -> dict:
    """Run the PIE-Bench layout (docs: shared reference): each entry's bracketed words give a direction (template
    banks for both words, Δ not stored); the source is captioned with its own prompt; every edit is scored with
    PIE-Bench's definitions (masked background metrics, CLIP of the whole edit and of the edited part).
    Add/delete entries (one side has no bracketed words) are counted and skipped."""
    from p2pz.editor.evaluate import summarize  # torch: only when the benchmark runs
    from p2pz.editor.image import load_image  # lazy: torch

    mapping = _read_mapping(mapping_path)
    deltas: dict[tuple[str, str], object] = {}
    rows, skipped = [], {}
    for key, entry in list(sorted(mapping.items()))[: limit or None]:
        try:
            source, target = bracketed(entry["original_prompt"]), bracketed(entry["editing_prompt"])
            path = Path(images_dir) / entry["image_path"]
            rle = entry.get("mask") or []
            kind = str(entry.get("editing_type_id", "?"))
        except (KeyError, TypeError, AttributeError):
            raise RegistryError(f"entry {key} of {mapping_path} lacks original_prompt, editing_prompt or "
                                "image_path") from None
        if not source or not target or source == target:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        if (source, target) not in deltas:
            deltas[(source, target)] = _delta(reg, source, target, model, bank_size)
        image = load_image(path)
        inv = editor.invert(image, unbracketed(entry["original_prompt"]), inversion)
        res = editor.edit(inv, deltas[(source, target)], edit)
        scores = _scores(scorers, image, res.edited, source, target, rle, unbracketed(entry["editing_prompt"]))
        rows.append({"id": key, "type": kind, "source": source, "target": target, "scores": scores})
        if report:
            report(rows[-1])
    if not rows:
        raise RegistryError(f"no PIE-Bench entry could be edited ({sum(skipped.values())} add/delete entries "
                            "skipped)")
    means = summarize([r["scores"] for r in rows])
    table = {column: means[k] * factor for k, column, factor in PIE_COLUMNS if k in means}
    return {"images": len(rows), "skipped_add_delete": skipped, "table": table, "means": means, "rows": rows}
