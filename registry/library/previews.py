"""Preview renders: what a direction does to a preview image, shown by the web gallery (``p2pz preview build``).

A preview is content-addressed: its key hashes the direction's content (``content_sha256``, so the same Δ
under another name shares it), the source image's bytes, the model (a folder's fingerprint, or the hub id) and
the edit parameters. It lives in ``$P2PZ_HOME/previews/<key>/`` — ``source.png`` and ``edit.png`` at the
model's size (the edit with its provenance) and 256-px ``*_thumb.png`` for the gallery — and
``previews/by-direction/<content_sha256>.json`` lists the previews of that content, newest first. Rendering again
what exists is a no-op; a killed render leaves no half-written preview (files are written, then the index).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from p2pz.editor.batch import edit_files, output_name, output_stem
from p2pz.editor.config import EditConfig, InversionConfig
from p2pz.editor.loader import SHAPES_MODEL, default_model
from p2pz.store.files import atomic_write
from p2pz.store.hashing import sha256_json
from p2pz.store.paths import data_home

from p2pz.registry.engine import LocalEngine

from .editing import EditorOptions, choose_model, open_editor
from .records import Direction, NotFound, RegistryError

THUMB = 256
DEFAULT_STEPS = 50
SAMPLE_IMAGE = Path(__file__).parent.parent / "data" / "sample.png"
# a held-out shapes-world scene (red circle, day sky; its caption recorded in the PNG): the preview image of
# directions on the shapes model, whose world has no cats on grass (architecture §12)
SHAPES_SAMPLE_IMAGE = Path(__file__).parent.parent / "data" / "shapes-sample.png"


def default_images(model: str | None) -> list[Path]:
    """The preview images of a model when none are given: the shapes sample on ``p2pz/shapes``, else the photo."""
    return [SHAPES_SAMPLE_IMAGE] if model == SHAPES_MODEL else [SAMPLE_IMAGE]
BATCH = 8  # directions edited together per inversion


def previews_dir() -> Path:
    return data_home() / "previews"


def valid_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def model_key(model: str | None) -> str:
    """What identifies the model in a preview key: the hub id, or for a local folder its path with the names,
    sizes and modification times of every weight and config file in it (cheap: nothing is loaded), so replacing
    the weights invalidates the previews."""
    model = model or default_model()
    folder = Path(model).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
        stat = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return f"folder:{folder.resolve()}:{sha256_json(stat)[:16]}"
    return model


def _index_path(content_sha256: str) -> Path:
    return previews_dir() / "by-direction" / f"{content_sha256}.json"


def lookup(direction: Direction) -> list[dict]:
    """The stored previews of a direction's content, newest first ([] when none): each
    ``{"key", "image", "params", "model"}`` with its files present."""
    if not direction.content_sha256:
        return []
    path = _index_path(direction.content_sha256)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict) and valid_key(str(e.get("key", "")))
            and (previews_dir() / e["key"] / "edit_thumb.png").is_file()]


def preview_file(key: str, which: str) -> Path:
    """A preview's file by key and kind (``source``, ``edit``, ``source_thumb``, ``edit_thumb``) — a path built
    by the server, never taken from a client."""
    if not valid_key(key) or which not in ("source", "edit", "source_thumb", "edit_thumb"):
        raise NotFound("no such preview")
    path = previews_dir() / key / f"{which}.png"
    if not path.is_file():
        raise NotFound(f"no such preview {key[:12]}; render it with p2pz preview build")
    return path


def _record(direction: Direction, entry: dict) -> None:
    path = _index_path(direction.content_sha256)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = []
    entries = [entry] + [e for e in entries if isinstance(e, dict) and e.get("key") != entry["key"]]
    atomic_write(path, json.dumps(entries, indent=1))


def _thumb(src: Path, dst: Path) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        atomic_write(dst, writer=lambda p: im.save(p, format="PNG"))


@dataclass(frozen=True)
class PreviewSetup:
    """What every render of one ``build_previews`` shares. ``editor_for`` and ``on_step`` are local-only hooks
    (the web app's job runner passes the editor it keeps loaded and its progress callback)."""

    directions: dict  # ref → Direction (detached)
    options: EditorOptions
    steps: int = DEFAULT_STEPS
    seed: int = 0
    caption: str | None = None
    editor_for: Callable | None = None
    on_step: Callable | None = None


@dataclass
class PreviewItem:
    """One image edited with a chunk of directions of one model (one inversion)."""

    model: str | None
    image: str
    refs: list[str]


@dataclass
class PreviewResult:
    pngs: dict = field(default_factory=dict)  # ref → the edited PNG's bytes (with its provenance)
    error: str | None = None


class PreviewWorker:
    """Renders previews: one editor per model (loaded on first use, or the setup's ``editor_for``); each call
    edits one image with a chunk of directions and returns the edited PNGs' bytes."""

    Item, Result = PreviewItem, PreviewResult
    fatal = ()

    def __init__(self, setup: PreviewSetup):
        self.setup = setup
        self.loaded: tuple = ()  # (model, editor)

    def _editor(self, model: str | None, dirs: list):
        if self.setup.editor_for is not None:
            return self.setup.editor_for(dirs)
        if not self.loaded or self.loaded[0] != model:
            self.loaded = ()  # the previous model's editor is released before the next one loads
            self.loaded = (model, open_editor(dirs, model, **self.setup.options.kwargs()))
        return self.loaded[1]

    def __call__(self, item: PreviewItem) -> PreviewResult:
        s = self.setup
        dirs = [s.directions[r] for r in item.refs]
        editor = self._editor(item.model, dirs)
        image = Path(item.image)
        with editor.reporting(s.on_step), tempfile.TemporaryDirectory() as tmp:
            outcome = edit_files(editor, [image], dirs, Path(tmp), inversion=InversionConfig(steps=s.steps,
                                 seed=s.seed), edit=EditConfig(), caption=s.caption, force=True)[0]
            if not outcome.ok:
                return PreviewResult(error=outcome.error)
            stem = output_stem(image)
            return PreviewResult(pngs={d.ref: (Path(tmp) / output_name(stem, d.ref)).read_bytes() for d in dirs})

    @classmethod
    def failed(cls, item: PreviewItem, error: str) -> PreviewResult:
        return PreviewResult(error=error)


def _plan(directions, given: list[Path] | None, model: str | None, params: dict, force: bool, done) -> list:
    """The renders still to make → [(item, [(direction, entry)])]: per model, per image, the directions without a
    stored preview of these settings, :data:`BATCH` at a time; a stored one is recorded and reported ``cached``."""
    by_model: dict[str | None, list[Direction]] = {}
    for d in directions:
        by_model.setdefault(choose_model([d], model), []).append(d)
    work: list[tuple[PreviewItem, list]] = []
    for chosen, group in by_model.items():
        mkey = model_key(chosen)
        for image in given or default_images(chosen or model):
            image_sha = hashlib.sha256(image.read_bytes()).hexdigest()
            todo = []
            for d in group:
                key = sha256_json({"direction": d.content_sha256, "image": image_sha, "model": mkey,
                                   "params": params})
                entry = {"key": key, "image": image.name, "params": params, "model": chosen or mkey}
                if not force and (previews_dir() / key / "edit_thumb.png").is_file():
                    _record(d, entry)
                    done({"direction": d.ref, "image": image.name, "key": key, "status": "cached"})
                else:
                    todo.append((d, entry))
            work += [(PreviewItem(chosen, str(image), [d.ref for d, _ in todo[i:i + BATCH]]), todo[i:i + BATCH])
                     for i in range(0, len(todo), BATCH)]
    return work


def build_previews(registry, refs: list[str] | None, images: list[Path] | None = None, *, model: str | None = None,
                   device: str | None = None, dtype: str | None = None, captioner: str | None = None,
                   caption: str | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                   force: bool = False, editor_for: Callable | None = None, on_step: Callable | None = None,
                   engine=None, report: Callable[[dict], None] | None = None, progress: bool = False) -> list[dict]:
    """Render the preview of every direction in ``refs`` (default: every non-deprecated one) on every image of
    ``images`` (default: the bundled sample of the direction's model, :func:`default_images`) → one summary per
    (direction, image): ``{"direction", "image", "key", "status": "rendered" | "cached" | "failed", "error"}``.
    Directions sharing a model share one inversion per image (:data:`BATCH` at a time). ``editor_for(directions)``
    supplies the editor (default: loaded once per model). The renders run on ``engine``'s workers
    (:mod:`registry.engine`; default here) and are stored by this process."""
    directions = [registry.get(r) for r in refs] if refs else registry.directions()
    given = [Path(p) for p in images] if images else None
    for p in given or ():
        if not p.is_file():
            raise RegistryError(f"preview image {p} does not exist")
    params = {"steps": steps, "seed": seed, **({"caption": caption} if caption else {})}  # caption: not BLIP's
    out: list[dict] = []

    def done(summary: dict) -> None:
        out.append(summary)
        if report:
            report(summary)

    work = _plan(directions, given, model, params, force, done)
    if not work:
        return out
    options = EditorOptions(device=device, dtype=dtype, captioner=captioner, progress=progress)
    setup = PreviewSetup(directions={d.ref: d.detached() for _, chunk in work for d, _ in chunk}, options=options,
                         steps=steps, seed=seed, caption=caption, editor_for=editor_for, on_step=on_step)
    results = (engine or LocalEngine()).iter(PreviewWorker, setup, [item for item, _ in work])
    for (item, chunk), result in zip(work, results):
        image = Path(item.image)
        with tempfile.TemporaryDirectory(dir=_ensure(previews_dir())) as tmp:
            for d, entry in chunk:
                summary = {"direction": d.ref, "image": image.name, "key": entry["key"]}
                if result.error is not None:
                    done({**summary, "status": "failed", "error": result.error})
                    continue
                edited = Path(tmp) / f"{entry['key']}.png"
                edited.write_bytes(result.pngs[d.ref])
                _store(edited, image, entry["key"])
                _record(d, entry)
                done({**summary, "status": "rendered"})
    return out


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _store(edited: Path, image: Path, key: str) -> None:
    """Move one rendered preview into its content-addressed folder: the edit (with its provenance), the source
    at the edit's size, and both thumbnails — ``edit_thumb.png`` last, as a preview counts as present once it
    exists."""
    final = _ensure(previews_dir() / key)
    shutil.copyfile(edited, final / "edit.png.tmp")
    (final / "edit.png.tmp").replace(final / "edit.png")
    with Image.open(final / "edit.png") as e, Image.open(image) as im:
        source = ImageOps.exif_transpose(im).convert("RGB").resize(e.size, Image.LANCZOS)
    atomic_write(final / "source.png", writer=lambda p: source.save(p, format="PNG"))
    _thumb(final / "source.png", final / "source_thumb.png")
    _thumb(final / "edit.png", final / "edit_thumb.png")
