"""Editing files: expand inputs, run the editor, write PNGs with full provenance (``p2pz edit``, ``generate``).

One inversion and one reference pass per image serve every requested direction. Outputs are written atomically
(:func:`store.files.atomic_write`), so an interrupted batch never leaves a partial file under a final name; an
existing output is never overwritten without ``force``. A bad image is reported and the others are still edited.
"""

from __future__ import annotations

import glob
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from store.files import atomic_write

from .config import EditConfig, InversionConfig
from .errors import EditorError, ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns → image paths, in order, without repeats."""
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
    atomic_write(path, writer=lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


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
    skipped: bool = False  # every output already existed (skip_existing)


def _one_line(exc: Exception) -> str:
    """A per-image error as one line (an OS error names its file)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror} ({exc.filename})"
    return " ".join(str(exc).split())


def _finish(outcome: EditOutcome, t0: float, outcomes: list, report) -> None:
    outcome.seconds = time.perf_counter() - t0
    outcomes.append(outcome)
    if report:
        report(outcome)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise EditorError(f"{existing[0]} exists; pass --force to overwrite")


def _model_provenance(editor) -> dict:
    return {"p2pz": _version(), "model": editor.model_id, "model_fingerprint": editor.model_fingerprint,
            "encoder_fingerprint": editor.text_encoder_fingerprint, "prediction_type": editor.prediction_type}


def _edit_provenance(label: str, cfg: EditConfig, res) -> dict:
    return {"direction": label, "scale": cfg.scale, "xa_guidance": res.params["xa_guidance"],
            "guidance_scale": cfg.guidance_scale, "negative_prompt": res.params["negative"][0],
            "safety_checker_flagged": bool(res.nsfw and res.nsfw[0])}


def _label(d, i: int) -> str:
    return f"{d.name}@{d.version}" if hasattr(d, "version") else f"direction{i}"


def edit_files(editor, images: list[Path], directions: list, out_dir: Path, *,
               inversion: InversionConfig | None = None, edit: EditConfig | None = None,
               caption: str | None = None, save_reconstruction: bool = False, force: bool = False,
               skip_existing: bool = False,
               report: Callable[[EditOutcome], None] | None = None) -> list[EditOutcome]:
    """Edit every image with every direction; returns one outcome per image (errors included, not raised).

    Writes ``OUT/<image stem>__<direction>@<version>.png`` (and ``__reconstruction.png``) with provenance. With
    ``skip_existing``, an image whose outputs all exist is not edited again (a rerun of an interrupted batch)."""
    inversion = inversion or InversionConfig()
    edit = edit or EditConfig()
    labels = [_label(d, i) for i, d in enumerate(directions)]
    outcomes = []
    for path in images:
        t0 = time.perf_counter()
        outcome = EditOutcome(image=str(path), ok=False)
        targets = [out_dir / output_name(path.stem, label) for label in labels]
        recon_path = out_dir / output_name(path.stem, "reconstruction")
        wanted = targets + ([recon_path] if save_reconstruction else [])
        if skip_existing and not force and all(p.exists() for p in wanted):
            outcome.ok, outcome.skipped, outcome.outputs = True, True, [str(p) for p in wanted]
            _finish(outcome, t0, outcomes, report)
            continue
        try:
            _refuse_existing(wanted, force)
            from .image import load_image

            image = load_image(path, outcome.warnings)  # read once: clear errors before any model work
            cap = caption or editor.caption(image)
            inv = editor.invert(image, cap, inversion)
            results = editor.edit(inv, directions, edit)
            outcome.caption = cap
            outcome.inversion_cached = inv.cached
            outcome.reference_cached = results[0].reference_cached
            base = {**_model_provenance(editor), "source_image": path.name, "source_path": str(path.resolve()),
                    "source_sha256": inv.image_sha256[0],
                    "caption": cap, "seed": inversion.seed, "steps": inv.steps, "schedule": inv.schedule,
                    "inversion": inv.params}
            for label, res, target in zip(labels, results, targets):
                save_png(res.edited, target, {**base, **_edit_provenance(label, edit, res)})
                outcome.outputs.append(str(target))
                if res.nsfw and res.nsfw[0]:
                    outcome.nsfw.append(str(target))
            if save_reconstruction:
                save_png(results[0].reconstruction, recon_path, {**base, "direction": None, "reconstruction": True})
                outcome.outputs.append(str(recon_path))
            outcome.ok = True
        except (EditorError, ImageError, OSError) as exc:
            outcome.error = _one_line(exc)
        _finish(outcome, t0, outcomes, report)
    return outcomes


@dataclass
class GenerateOutcome:
    generated: str
    edits: list[str]
    nsfw: list[str] = field(default_factory=list)


def generate_files(editor, prompt: str, directions: list, out_dir: Path, *, seed: int = 0, size: int | None = None,
                   steps: int = 50, edit: EditConfig | None = None, force: bool = False) -> GenerateOutcome:
    """A synthetic image from ``prompt`` (x_T from ``seed``) edited with every direction (PAPER §4.2).

    Writes ``OUT/generated-<seed>.png`` (the unedited sample) and ``OUT/generated-<seed>__<direction>.png``."""
    edit = edit or EditConfig()
    labels = [_label(d, i) for i, d in enumerate(directions)]
    stem = f"generated-{seed}"
    targets = [out_dir / output_name(stem, label) for label in labels]
    sample = out_dir / f"{stem}.png"
    _refuse_existing(targets + [sample], force)
    inv = editor.synthetic(prompt, seed=seed, size=size, steps=steps)
    results = editor.edit(inv, directions, edit)
    base = {**_model_provenance(editor), "prompt": prompt, "seed": seed, "steps": inv.steps, "synthetic": True}
    save_png(results[0].reconstruction, sample, {**base, "direction": None})
    outcome = GenerateOutcome(generated=str(sample), edits=[])
    for label, res, target in zip(labels, results, targets):
        save_png(res.edited, target, {**base, **_edit_provenance(label, edit, res)})
        outcome.edits.append(str(target))
        if res.nsfw and res.nsfw[0]:
            outcome.nsfw.append(str(target))
    return outcome


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("p2pz")
    except Exception:
        return "unknown"


def student_files(students: list, images: list[Path], out_dir: Path, *, force: bool = False,
                  report: Callable[[EditOutcome], None] | None = None) -> list[EditOutcome]:
    """Apply trained students (``(label, student, provenance)`` each) to image files: the same output names and
    provenance as diffusion edits, plus the student's version and weights."""
    from .image import load_image

    outcomes = []
    for path in images:
        t0 = time.perf_counter()
        outcome = EditOutcome(image=str(path), ok=False)
        targets = [out_dir / output_name(path.stem, label) for label, _, _ in students]
        try:
            _refuse_existing(targets, force)
            image = load_image(path, outcome.warnings)
            for (label, model, prov), target in zip(students, targets):
                save_png(model(image), target, {"p2pz": _version(), "source_image": path.name,
                                                "source_path": str(path.resolve()), "direction": label, **prov})
                outcome.outputs.append(str(target))
            outcome.ok = True
        except (EditorError, ImageError, OSError) as exc:
            outcome.error = _one_line(exc)
        _finish(outcome, t0, outcomes, report)
    return outcomes
