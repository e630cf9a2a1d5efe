"""Editing files: expand inputs, run the editor per image, write PNGs with full provenance (``p2pz edit``).

One inversion and one reference pass per image serve every requested direction. Outputs are written under a
temporary name and renamed, so an interrupted batch never leaves a partial file under a final name; an existing
output is never overwritten without ``force``. A bad image is reported and the others are still edited.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns → image paths, in order, without repeats."""
    from .errors import EditorError

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if any(ch in item for ch in "*?["):
            found = sorted(Path(x) for x in glob.glob(item) if Path(x).is_file())
            if not found:
                raise EditorError(f"no files match {item!r}")
            out += found
        elif p.is_dir():
            found = sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise EditorError(f"folder {item!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out += found
        else:
            out.append(p)  # a missing file is reported per image by the batch, the others still run
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def output_name(stem: str, label: str) -> str:
    return f"{stem}__{label}.png"


def save_png(image: Image.Image, path: Path, provenance: dict) -> None:
    """Write atomically with the provenance as a PNG text chunk ``p2pz`` (JSON)."""
    info = PngInfo()
    info.add_text("p2pz", json.dumps(provenance, sort_keys=True, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png.tmp")
    os.close(fd)
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_provenance(path: str | Path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.text["p2pz"])


@dataclass
class EditOutcome:
    image: str
    ok: bool
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    caption: str | None = None
    inversion_cached: bool = False
    reference_cached: bool = False
    nsfw: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def edit_files(editor, images: list[Path], directions: list, out_dir: Path, *, scale: float = 1.0,
               caption: str | None = None, steps: int = 50, xa_guidance: float = 0.1, guidance_scale: float = 5.0,
               seed: int = 0, keep_aspect: bool = False, schedule: str = "symmetric",
               save_reconstruction: bool = False, force: bool = False,
               report: Callable[[EditOutcome], None] | None = None) -> list[EditOutcome]:
    """Edit every image with every direction; returns one outcome per image (errors included, not raised)."""
    from .errors import EditorError, ImageError

    labels = [f"{d.name}@{d.version}" if hasattr(d, "version") else f"direction{i}" for i, d in enumerate(directions)]
    outcomes = []
    for path in images:
        t0 = time.perf_counter()
        outcome = EditOutcome(image=str(path), ok=False)
        targets = [out_dir / output_name(path.stem, label) for label in labels]
        recon_path = out_dir / output_name(path.stem, "reconstruction")
        try:
            existing = [str(t) for t in targets + ([recon_path] if save_reconstruction else []) if t.exists()]
            if existing and not force:
                raise EditorError(f"{existing[0]} exists; pass --force to overwrite")
            from .image import load_image

            image = load_image(path, outcome.warnings)  # read once: clear errors before any model work
            before = dict(editor.stats)
            cap = caption or editor.caption(image)
            inv = editor.invert(image, cap, steps=steps, seed=seed, keep_aspect=keep_aspect, schedule=schedule)
            results = editor.edit(inv, directions, scale=scale, xa_guidance=xa_guidance,
                                  guidance_scale=guidance_scale, steps=steps)
            outcome.caption = cap
            outcome.inversion_cached = editor.stats["inversions_cached"] > before["inversions_cached"]
            outcome.reference_cached = editor.stats["reference_cached"] > before["reference_cached"]
            base = {"p2pz": _version(), "source_image": path.name, "source_sha256": inv.image_sha256[0],
                    "model": editor.model_id, "model_fingerprint": editor.model_fingerprint,
                    "encoder_fingerprint": editor.text_encoder_fingerprint, "caption": cap, "seed": seed,
                    "steps": steps, "schedule": schedule, "inversion": inv.params}
            for d, label, res, target in zip(directions, labels, results, targets):
                prov = {**base, "direction": label, "scale": scale, "xa_guidance": xa_guidance,
                        "guidance_scale": guidance_scale, "negative_prompt": res.params["negative"][0],
                        "safety_checker_flagged": bool(res.nsfw and res.nsfw[0])}
                save_png(res.edited, target, prov)
                outcome.outputs.append(str(target))
                if res.nsfw and res.nsfw[0]:
                    outcome.nsfw.append(str(target))
            if save_reconstruction:
                save_png(results[0].reconstruction, recon_path, {**base, "direction": None, "reconstruction": True})
                outcome.outputs.append(str(recon_path))
            outcome.ok = True
        except (EditorError, ImageError, OSError) as exc:
            outcome.error = " ".join(str(exc).split()) if not isinstance(exc, OSError) or not exc.filename else \
                f"{exc.strerror} ({exc.filename})"
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        if report:
            report(outcome)
    return outcomes


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("p2pz")
    except Exception:
        return "unknown"
