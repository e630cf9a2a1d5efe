"""Editing with stored directions: which model to load for them (the registry's policy), the editor, and the
batch edit (``p2pz edit``) on any engine.

The editor knows nothing of the registry; this is where the two meet. A direction records the text encoder it
was built with, so by default the editor loads the model the directions were built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from p2pz.editor.batch import EditOutcome, edit_files, labels_of, triage
from p2pz.editor.config import EditConfig, InversionConfig
from p2pz.editor.errors import ComponentLoadError

from p2pz.registry.engine import LocalEngine

from .records import RegistryError
from .students import edit_with_students, parse_choice


@dataclass(frozen=True)
class EditorOptions:
    """How to load an editor (``editor.Editor.from_pretrained``'s settings). ``captioner`` None: the default one
    (the snapshot's own ``captioner/``, else BLIP); ``dtype`` None: float32."""

    device: str | None = None
    dtype: str | None = None
    captioner: str | None = None
    safety_checker: bool = True
    cache: bool = True
    cache_maps: bool = False
    map_dtype: str = "float32"
    progress: bool = False

    def __post_init__(self):
        if self.cache_maps and not self.cache:
            raise RegistryError("--cache-maps needs the cache; drop --no-cache")

    def kwargs(self) -> dict:
        out = {"device": self.device, "safety_checker": self.safety_checker, "cache": self.cache,
               "cache_maps": self.cache_maps, "map_dtype": self.map_dtype, "progress": self.progress}
        out.update({k: v for k, v in (("dtype", self.dtype), ("captioner", self.captioner)) if v is not None})
        return out


def one_encoder(directions) -> None:
    """Refuse directions of more than one text encoder in one edit (an SD and an SDXL direction cannot share a
    model): one line naming two of them and the fix."""
    first = {}
    for d in directions:
        if getattr(d, "encoder", None):
            first.setdefault(d.encoder, d)
    if len(first) > 1:
        a, b = list(first.values())[:2]
        raise RegistryError(f"{a.ref} and {b.ref} were built with different text encoders ({a.encoder_model} and "
                            f"{b.encoder_model}); edit with one model's directions at a time")


def choose_model(directions, model: str | None = None) -> str | None:
    """``model`` when given; else the one model every direction was built with; else None (the default model,
    ``$P2PZ_MODEL`` or CompVis/stable-diffusion-v1-4). Directions of several text encoders are refused."""
    one_encoder(directions)
    if model:
        return model
    models = {d.encoder_model for d in directions if getattr(d, "encoder_model", None)}
    return models.pop() if len(models) == 1 else None


def check_delta_at(directions, edit: EditConfig) -> None:
    """``delta_at`` ``word`` and ``word+pad`` (``--delta-at``) need every direction's token-aligned direction
    Δ_token (docs/algorithm.md §13): a direction without one is refused here, before a model loads, in one line
    with the reason it has none."""
    if edit.delta_at in ("all", "auto"):  # auto falls back to all by itself
        return
    for d in directions:
        token = getattr(d, "token_delta", None)
        if token is None or token.vector is None:
            why = getattr(token, "reason", "") or "a raw tensor carries no Δ_token"
            raise RegistryError(f"--delta-at {edit.delta_at} needs {getattr(d, 'ref', d)}'s token-aligned direction "
                                f"(Δ_token), and it has none ({why}); use --delta-at all")


def open_editor(directions, model: str | None = None, **kwargs):
    """An :class:`editor.Editor` for ``directions`` (see :func:`choose_model`); ``kwargs`` go to
    ``Editor.from_pretrained`` (device, dtype, captioner, safety_checker, progress, map_dtype, cache). A
    direction built with another text encoder is refused before the UNet and VAE load."""
    from p2pz.editor import Editor  # lazy: torch

    return Editor.from_pretrained(choose_model(directions, model), directions=list(directions), **kwargs)


# --- the batch edit on an engine ----------------------------------------------------------------------------

@dataclass(frozen=True)
class EditSetup:
    """What every image of one ``p2pz edit`` shares: the directions (detached records), the model, the editor's
    settings, the output folder and the two configs."""

    directions: list
    model: str | None
    options: EditorOptions
    out_dir: str
    inversion: InversionConfig
    edit: EditConfig
    caption: str | None = None
    save_reconstruction: bool = False
    force: bool = False
    skip_existing: bool = False
    record_source_path: bool = False


@dataclass
class EditItem:
    image: str


class EditWorker:
    """One editor, loaded once, then one image per call through :func:`editor.batch.edit_files`."""

    Item, Result = EditItem, EditOutcome
    fatal = (ComponentLoadError,)  # the captioner cannot load: every image would fail alike

    def __init__(self, setup: EditSetup):
        self.setup = setup
        self.editor = open_editor(setup.directions, setup.model, **setup.options.kwargs())

    def __call__(self, item: EditItem) -> EditOutcome:
        s = self.setup
        return edit_files(self.editor, [Path(item.image)], s.directions, Path(s.out_dir), inversion=s.inversion,
                          edit=s.edit, caption=s.caption, save_reconstruction=s.save_reconstruction, force=s.force,
                          skip_existing=s.skip_existing, record_source_path=s.record_source_path)[0]

    @classmethod
    def failed(cls, item: EditItem, error: str):
        return EditOutcome(image=item.image, ok=False, error=error)


@dataclass(frozen=True)
class EditRequest:
    """A batch edit (``p2pz edit``) as a front end states it, checked when built: the directions by ref, the
    model (None: the directions' own), how to load the editor, the two configs, the outputs, and ``student``
    (``latest`` or ``@V``: the directions' trained students instead of the diffusion editor)."""

    directions: tuple[str, ...]
    model: str | None = None
    options: EditorOptions = field(default_factory=EditorOptions)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    out_dir: str = "p2pz-out"
    caption: str | None = None
    save_reconstruction: bool = False
    force: bool = False
    skip_existing: bool = False
    record_source_path: bool = False
    student: str | None = None

    def __post_init__(self):
        if not self.directions:
            raise RegistryError("give at least one direction to apply (--direction NAME[@V])")
        if self.student is not None:
            parse_choice(self.student)  # the form is checked here, the version when the records are read


def run_edits(registry, engine, request: EditRequest, paths: list[Path], *, report: Callable | None = None,
              info: Callable[[str], None] | None = None) -> list:
    """Apply ``request`` to ``paths`` → one :class:`editor.batch.EditOutcome` per image: with the diffusion
    editor on ``engine`` (:func:`edit_many`), or with the directions' students here (milliseconds each)."""
    directions = [registry.get(ref, request.model) for ref in request.directions]
    if request.student is not None:
        if request.edit.delta_at in ("word", "word+pad"):
            raise RegistryError("--delta-at places Δ for the diffusion editor; a student has its own: drop one of "
                                "--delta-at and --student")
        if not isinstance(engine, LocalEngine):
            raise RegistryError("--student runs locally (milliseconds per image); drop --engine ray")
        return edit_with_students(registry, directions, paths, request.out_dir, parse_choice(request.student),
                                  device=request.options.device, force=request.force,
                                  record_source_path=request.record_source_path, report=report)
    check_delta_at(directions, request.edit)
    setup = EditSetup(directions=directions, model=request.model, options=request.options,
                      out_dir=request.out_dir, inversion=request.inversion, edit=request.edit,
                      caption=request.caption, save_reconstruction=request.save_reconstruction, force=request.force,
                      skip_existing=request.skip_existing, record_source_path=request.record_source_path)
    return edit_many(engine, setup, paths, progress=request.options.progress, report=report, info=info)


def edit_many(engine, setup: EditSetup, paths: list[Path], *, progress: bool = False,
              report: Callable | None = None, info: Callable[[str], None] | None = None) -> list:
    """Edit every image with every direction of ``setup`` on ``engine`` → one :class:`editor.batch.EditOutcome`
    per image, in input order.

    What needs no model is settled first (:func:`editor.batch.triage`: missing inputs, existing outputs, two
    inputs writing one output), so the model is loaded only when some image is left to edit."""
    settled = triage(paths, labels_of(setup.directions), Path(setup.out_dir), force=setup.force,
                     skip_existing=setup.skip_existing, save_reconstruction=setup.save_reconstruction)
    for outcome in settled:
        if outcome is not None and report:
            report(outcome)
    todo = [p for p, o in zip(paths, settled) if o is None]
    if todo and info:
        info(f"loading {choose_model(setup.directions, setup.model) or 'the default model'} …")
    setup = replace(setup, directions=[d.detached() for d in setup.directions])
    done = iter(engine.map(EditWorker, setup, [EditItem(str(p)) for p in todo], desc="editing",
                           progress=progress, on_result=report))
    return [o if o is not None else next(done) for o in settled]
