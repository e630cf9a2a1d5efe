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
from pathlib import Path
from typing import Callable

from store.files import atomic_write
from store.hashing import sha256_json
from store.paths import data_home

from .records import Direction, NotFound, RegistryError

THUMB = 256
DEFAULT_STEPS = 50
SAMPLE_IMAGE = Path(__file__).parent / "data" / "sample.png"
# a held-out shapes-world scene (red circle, day sky; its caption recorded in the PNG): the preview image of
# directions on the shapes model, whose world has no cats on grass (architecture §12)
SHAPES_SAMPLE_IMAGE = Path(__file__).parent / "data" / "shapes-sample.png"


def default_images(model: str | None) -> list[Path]:
    """The preview images of a model when none are given: the shapes sample on ``p2pz/shapes``, else the photo."""
    from editor.loader import SHAPES_MODEL

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
    from editor.loader import default_model

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
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        atomic_write(dst, writer=lambda p: im.save(p, format="PNG"))


def build_previews(registry, refs: list[str] | None, images: list[Path] | None = None, *, model: str | None = None,
                   device: str | None = None, dtype: str | None = None, captioner: str | None = None,
                   caption: str | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                   force: bool = False, editor_for: Callable | None = None, on_step: Callable | None = None,
                   engine=None,
                   report: Callable[[dict], None] | None = None, progress: bool = False) -> list[dict]:
    """Render the preview of every direction in ``refs`` (default: every non-deprecated one) on every image of
    ``images`` (default: the bundled sample of the direction's model, :func:`default_images`) → one summary per
    (direction, image): ``{"direction", "image", "key", "status": "rendered" | "cached" | "failed", "error"}``. Directions sharing a model share one
    inversion per image. ``editor_for(directions)`` supplies the editor (default: loaded here, once per model;
    the web app's job runner passes the one it keeps loaded). With a Ray ``engine``
    (:class:`registry.engines.Engine`), the renders run on its workers and are stored here."""
    from editor.batch import edit_files, output_name, output_stem
    from editor.config import EditConfig, InversionConfig

    from .editing import choose_model, open_editor

    directions = [registry.get(r) for r in refs] if refs else registry.directions()
    given = [Path(p) for p in images] if images else None
    for p in given or ():
        if not p.is_file():
            raise RegistryError(f"preview image {p} does not exist")
    params = {"steps": steps, "seed": seed, **({"caption": caption} if caption else {})}  # caption: not BLIP's
    out: list[dict] = []
    loaded: dict = {}
    by_model: dict[str | None, list[Direction]] = {}
    for d in directions:
        by_model.setdefault(choose_model([d], model), []).append(d)
    work: list[tuple[str | None, Path, list]] = []  # (model, image, [(direction, entry)]) still to render

    def finish(image: Path, chunk: list, error: str | None, edited: Callable[[Direction], Path]) -> None:
        for d, entry in chunk:
            summary = {"direction": d.ref, "image": image.name, "key": entry["key"]}
            if error is not None:
                out.append({**summary, "status": "failed", "error": error})
            else:
                _store(edited(d), image, entry["key"])
                _record(d, entry)
                out.append({**summary, "status": "rendered"})
            if report:
                report(out[-1])

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
                    out.append({"direction": d.ref, "image": image.name, "key": key, "status": "cached"})
                    if report:
                        report(out[-1])
                else:
                    todo.append((d, entry))
            work += [(chosen, image, todo[i:i + BATCH]) for i in range(0, len(todo), BATCH)]
    if engine is not None and engine.kind == "ray" and work:
        _render_on_ray(engine, work, steps, seed, {k: v for k, v in (("device", device), ("dtype", dtype),
                                                                    ("captioner", captioner)) if v},
                       finish, progress, caption)
        return out
    for chosen, image, chunk in work:
        if editor_for is not None:
            editor = editor_for([d for d, _ in chunk])
        else:
            if loaded.get("model", ()) != chosen:
                loaded.update(model=chosen, editor=None)
                loaded["editor"] = open_editor([d for d, _ in chunk], chosen, progress=progress, **{
                    k: v for k, v in (("device", device), ("dtype", dtype), ("captioner", captioner)) if v})
            editor = loaded["editor"]
        editor.on_step = on_step
        with tempfile.TemporaryDirectory(dir=_ensure(previews_dir())) as tmp:
            outcome = edit_files(editor, [image], [d for d, _ in chunk], Path(tmp),
                                 inversion=InversionConfig(steps=steps, seed=seed), edit=EditConfig(),
                                 caption=caption, force=True)[0]
            finish(image, chunk, None if outcome.ok else outcome.error,
                   lambda d, tmp=tmp, image=image: Path(tmp) / output_name(output_stem(image), d.ref))
        editor.on_step = None
    return out


def _render_on_ray(engine, work: list, steps: int, seed: int, editor_kwargs: dict, finish, progress: bool,
                   caption: str | None = None) -> None:
    """Each (model, image, chunk) of ``work`` rendered by a Ray worker; the edited PNGs come back as bytes and
    are stored here (one writer)."""
    import base64
    import json

    import torch

    from . import engines

    frozen, items = {}, []
    for chosen, image, chunk in work:
        for d, _ in chunk:
            frozen.setdefault(d.ref, engines.freeze(d))
        items.append({"item": json.dumps({"model": chosen, "image": str(image), "refs": [d.ref for d, _ in chunk]})})
    spec = {"directions": frozen, "editor": editor_kwargs, "steps": steps, "seed": seed, "caption": caption,
            "threads": torch.get_num_threads()}
    rows = engines.ray_map(engine, items, engines.PreviewWorker, (spec,), desc="previews (ray)", progress=progress)
    for (chosen, image, chunk), row in zip(work, rows):
        with tempfile.TemporaryDirectory(dir=_ensure(previews_dir())) as tmp:
            def edited(d, tmp=tmp, row=row):
                path = Path(tmp) / f"{len(list(Path(tmp).iterdir()))}.png"
                path.write_bytes(base64.b64decode(row["pngs"][d.ref]))
                return path
            finish(image, chunk, row.get("error"), edited)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _store(edited: Path, image: Path, key: str) -> None:
    """Move one rendered preview into its content-addressed folder: the edit (with its provenance), the source
    at the edit's size, and both thumbnails — ``edit_thumb.png`` last, as a preview counts as present once it
    exists."""
    from PIL import Image, ImageOps

    final = _ensure(previews_dir() / key)
    shutil.copyfile(edited, final / "edit.png.tmp")
    (final / "edit.png.tmp").replace(final / "edit.png")
    with Image.open(final / "edit.png") as e, Image.open(image) as im:
        source = ImageOps.exif_transpose(im).convert("RGB").resize(e.size, Image.LANCZOS)
    atomic_write(final / "source.png", writer=lambda p: source.save(p, format="PNG"))
    _thumb(final / "source.png", final / "source_thumb.png")
    _thumb(final / "edit.png", final / "edit_thumb.png")
