"""Editing files: expand inputs, run the editor, write PNGs with full provenance (``p2pz edit``, ``generate``).

One inversion and one reference pass per image serve every requested direction. Outputs are written atomically
(:func:`store.files.atomic_write`), so an interrupted batch never leaves a partial file under a final name; an
existing output is never overwritten without ``force``. A bad image is reported and the others are still edited;
what needs no model (missing inputs, existing outputs, two inputs writing one output) is settled by :func:`triage`
before one is loaded.
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

from p2pz.store.files import atomic_write
from p2pz.store.version import package_version

from .config import EditConfig, InversionConfig
from .errors import ComponentLoadError, EditorError, ImageError, missing_image

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


def output_stem(path: str | Path) -> str:
    """What the outputs of one input are named after: its file name, without the extension when it is ``.png``
    (``cat.png`` → ``cat``, ``cat.jpg`` → ``cat.jpg``), so two inputs of one folder (``img.bmp``, ``img.webp``,
    ``img.png``) never share an output name."""
    p = Path(path)
    return p.stem if p.suffix.lower() == ".png" else p.name


def output_name(stem: str, label: str) -> str:
    """``<stem>__<label>.png``; ``stem`` is :func:`output_stem` of the input."""
    return f"{stem}__{label}.png"


def source_fields(path: str | Path, record_path: bool = False) -> dict:
    """How an output records its source image: its file name, and ``source_path`` — the path as the user gave it
    when relative, the file name alone when absolute (an output shared with others does not show the layout of
    the user's disk), or the absolute path with ``record_path`` (``--record-source-path``)."""
    p = Path(path)
    recorded = str(p.resolve()) if record_path else (p.name if p.is_absolute() else str(p))
    return {"source_image": p.name, "source_path": recorded}


def save_png(image: Image.Image, path: Path, provenance: dict, caption: str | None = None) -> None:
    """Write atomically with the provenance as a PNG text chunk ``p2pz`` (JSON); ``caption`` (what the image
    shows, e.g. the prompt of a generated image) goes into ``p2pz:caption``, read back by
    :func:`editor.caption.recorded_caption`."""
    from .caption import CAPTION_KEY  # lazy: torch

    info = PngInfo()
    info.add_text("p2pz", json.dumps(provenance, sort_keys=True, default=str))
    if caption:
        info.add_text(CAPTION_KEY, caption)
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
    notes: list[str] = field(default_factory=list)  # ``label: note``, one line each: what an edit did otherwise
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


def _wanted(path: Path, labels: list[str], out_dir: Path, save_reconstruction: bool) -> list[Path]:
    """Every output of one input: one per direction label, then the reconstruction when asked for."""
    stem = output_stem(path)
    return ([out_dir / output_name(stem, label) for label in labels]
            + ([out_dir / output_name(stem, "reconstruction")] if save_reconstruction else []))


def _settled(path: Path, wanted: list[Path], force: bool, skip_existing: bool) -> EditOutcome | None:
    """The outcome of an input that needs no model — skipped (its outputs exist, ``skip_existing``), refused (an
    output exists without ``force``) or missing — else None (it is to be edited)."""
    if skip_existing and not force and all(p.exists() for p in wanted):
        return EditOutcome(image=str(path), ok=True, skipped=True, outputs=[str(p) for p in wanted])
    try:
        _refuse_existing(wanted, force)
        if not Path(path).is_file():
            raise missing_image(path)
    except EditorError as exc:
        return EditOutcome(image=str(path), ok=False, error=_one_line(exc))
    return None


def triage(images: list[Path], labels: list[str], out_dir: Path, *, force: bool = False,
           skip_existing: bool = False, save_reconstruction: bool = False) -> list[EditOutcome | None]:
    """What can be settled about a batch before any model is loaded: per input, its outcome when it needs no
    model (see :func:`_settled`), else None. Two inputs that would write the same output (``a/img.png`` and
    ``b/img.png``) are refused as a whole (:class:`EditorError`)."""
    seen: dict[Path, Path] = {}
    for path in images:
        for target in _wanted(Path(path), labels, Path(out_dir), save_reconstruction):
            other = seen.setdefault(target, Path(path))
            if other != Path(path):
                raise EditorError(f"{other} and {path} would both be written as {target}; edit them into different "
                                  "--out folders")
    return [_settled(Path(p), _wanted(Path(p), labels, Path(out_dir), save_reconstruction), force, skip_existing)
            for p in images]


def labels_of(directions: list) -> list[str]:
    """The output label of each direction (``name@version``)."""
    return [_label(d, i) for i, d in enumerate(directions)]


def _model_provenance(editor) -> dict:
    return {"p2pz": package_version(), "model": editor.model_id, "model_fingerprint": editor.model_fingerprint,
            "encoder_fingerprint": editor.text_encoder_fingerprint, "family": editor.family, "prediction_type": editor.prediction_type}


def _identity(d) -> dict:
    """A direction's identity in every registry (issue #23): its content hash, and where it was pulled from —
    what an edit's provenance needs to find the same vector again after renames and renumbering."""
    sha = getattr(d, "content_sha256", None)
    if not sha:
        return {}
    origin = getattr(d, "origin", None)
    return {"direction_sha256": sha,
            **({"direction_origin": {k: origin.get(k) for k in ("source", "revision", "version")}} if origin else {})}


def _edit_provenance(label: str, cfg: EditConfig, res, direction=None) -> dict:
    """One edit's own provenance: the direction, the edit settings, where Δ went (``delta_at``; with ``word`` modes
    ``delta_at_fallback``, 1 when the caption lacked the word and Δ went everywhere) and the edit's notes."""
    notes = list(getattr(res, "notes", None) or [])
    return {"direction": label, **_identity(direction), "scale": cfg.scale, "xa_guidance": res.params["xa_guidance"],
            "guidance_scale": cfg.guidance_scale, "negative_prompt": res.params["negative"][0],
            "xa_layers": cfg.xa_layers, "delta_at": res.params.get("delta_at", cfg.delta_at),
            **({"delta_at_asked": cfg.delta_at} if cfg.delta_at != res.params.get("delta_at", cfg.delta_at) else {}),
            **({"delta_at_fallback": res.params["delta_at_fallback"]} if "delta_at_fallback" in res.params else {}),
            **({"notes": notes} if notes else {}),
            "safety_checker_flagged": bool(res.nsfw and res.nsfw[0])}


def _notes(label: str, res) -> list[str]:
    """An edit's notes (:attr:`editor.records.EditResult.notes`) as ``label: note`` lines."""
    return [f"{label}: {note}" for note in (getattr(res, "notes", None) or [])]


def _label(d, i: int) -> str:
    return f"{d.name}@{d.version}" if hasattr(d, "version") else f"direction{i}"


def edit_files(editor, images: list[Path], directions: list, out_dir: Path, *,
               inversion: InversionConfig | None = None, edit: EditConfig | None = None,
               caption: str | None = None, save_reconstruction: bool = False, force: bool = False,
               skip_existing: bool = False, record_source_path: bool = False,
               report: Callable[[EditOutcome], None] | None = None) -> list[EditOutcome]:
    """Edit every image with every direction; returns one outcome per image (its errors included, not raised).

    Writes ``OUT/<stem>__<direction>@<version>.png`` (and ``__reconstruction.png``) with provenance, ``<stem>``
    being :func:`output_stem` of the input. With ``skip_existing``, an image whose outputs all exist is not
    edited again (a rerun of an interrupted batch). A component that cannot load (the captioner) is not an
    image's failure: its :class:`ComponentLoadError` stops the batch. ``record_source_path``: see
    :func:`source_fields`."""
    inversion = inversion or InversionConfig()
    edit = edit or EditConfig()
    labels = labels_of(directions)
    outcomes = []
    for path in images:
        t0 = time.perf_counter()
        wanted = _wanted(path, labels, out_dir, save_reconstruction)
        targets, recon_path = wanted[:len(labels)], (wanted[-1] if save_reconstruction else None)
        settled = _settled(path, wanted, force, skip_existing)
        if settled is not None:
            _finish(settled, t0, outcomes, report)
            continue
        outcome = EditOutcome(image=str(path), ok=False)
        try:
            from .image import load_image  # lazy: torch

            image = load_image(path, outcome.warnings)  # read once: clear errors before any model work
            cap = caption or editor.caption(image)
            inv = editor.invert(image, cap, inversion)
            results = editor.edit(inv, directions, edit)
            outcome.caption = cap
            outcome.inversion_cached = inv.cached
            outcome.reference_cached = results[0].reference_cached
            base = {**_model_provenance(editor), **source_fields(path, record_source_path),
                    "source_sha256": inv.image_sha256[0],
                    "caption": cap, "seed": inversion.seed, "steps": inv.steps, "schedule": inv.schedule,
                    "inversion": inv.params}
            for d, label, res, target in zip(directions, labels, results, targets):
                save_png(res.edited, target, {**base, **_edit_provenance(label, edit, res, d)})
                outcome.outputs.append(str(target))
                outcome.notes += _notes(label, res)
                if res.nsfw and res.nsfw[0]:
                    outcome.nsfw.append(str(target))
            if save_reconstruction:
                save_png(results[0].reconstruction, recon_path, {**base, "direction": None, "reconstruction": True})
                outcome.outputs.append(str(recon_path))
            outcome.ok = True
        except ComponentLoadError:
            raise
        except (EditorError, ImageError, OSError) as exc:
            outcome.error = _one_line(exc)
        _finish(outcome, t0, outcomes, report)
    return outcomes


@dataclass
class GenerateOutcome:
    generated: str
    edits: list[str]
    nsfw: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # ``label: note``, one line each


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
    save_png(results[0].reconstruction, sample, {**base, "direction": None}, caption=prompt)
    outcome = GenerateOutcome(generated=str(sample), edits=[])
    for d, label, res, target in zip(directions, labels, results, targets):
        save_png(res.edited, target, {**base, **_edit_provenance(label, edit, res, d)})
        outcome.edits.append(str(target))
        outcome.notes += _notes(label, res)
        if res.nsfw and res.nsfw[0]:
            outcome.nsfw.append(str(target))
    return outcome


def student_files(students: list, images: list[Path], out_dir: Path, *, force: bool = False,
                  record_source_path: bool = False,
                  report: Callable[[EditOutcome], None] | None = None) -> list[EditOutcome]:
    """Apply trained students (``(label, student, provenance)`` each) to image files: the same output names and
    provenance as diffusion edits, plus the student's version and weights."""
    from .image import load_image  # lazy: torch

    outcomes = []
    for path in images:
        t0 = time.perf_counter()
        outcome = EditOutcome(image=str(path), ok=False)
        targets = [out_dir / output_name(output_stem(path), label) for label, _, _ in students]
        try:
            _refuse_existing(targets, force)
            image = load_image(path, outcome.warnings)
            for (label, model, prov), target in zip(students, targets):
                save_png(model(image), target, {"p2pz": package_version(),
                                                **source_fields(path, record_source_path),
                                                "direction": label, **prov})
                outcome.outputs.append(str(target))
            outcome.ok = True
        except (EditorError, ImageError, OSError) as exc:
            outcome.error = _one_line(exc)
        _finish(outcome, t0, outcomes, report)
    return outcomes
