"""Teacher pairs for a student (``p2pz distill pairs``, PAPER §4.4) on an engine's workers.

Each worker loads the teacher editor (and the pair filter's judge) once and makes the pairs of one item per call
with :func:`editor.student.pairs.teacher_image_pairs` / :func:`~editor.student.pairs.teacher_pair`: an item is a
batch of real images the teacher inverts and edits at once (``--batch``), or one synthetic source. The pairs come
back as PNG bytes and :func:`editor.student.pairs.make_pairs` writes the dataset in this process. The same path
runs here (``--engine local``) and on Ray.

The judge (:func:`pair_judge`) is the registry's choice: the shapes world's parser for the shapes model, else
CLIP and DINO (:class:`editor.evaluate.Scorers`, loaded through :mod:`editor.loader`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from PIL import Image

from p2pz.editor.config import EditConfig, InversionConfig
from p2pz.editor.devices import resolve_device
from p2pz.editor.errors import EditorError
from p2pz.editor.evaluate import Scorers
from p2pz.editor.loader import SHAPES_MODEL
from p2pz.editor.student.pairs import PairFilter, make_pairs, teacher_image_pairs, teacher_pair

from .editing import EditorOptions, choose_model, open_editor


@dataclass(frozen=True)
class PairsSetup:
    """What every pair of one ``distill pairs`` run shares (the teacher, the judge, the configs)."""

    direction: object  # a detached registry.library.records.Direction
    model: str | None
    options: EditorOptions
    source_concept: str
    target_concept: str
    filter: bool = True
    clip_model: str | None = None
    dino_model: str | None = None
    prompt: str = ""
    size: int = 256
    inversion: InversionConfig = field(default_factory=InversionConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    caption: str | None = None


def pair_judge(setup: PairsSetup):
    """The filter's judge, or None without ``setup.filter``: the shapes world's parser when the teacher is the
    shapes model (exact on its renderings; no CLIP needed), else CLIP + DINO. A judge that cannot load raises
    :class:`~editor.errors.EditorError` (one line with the fix)."""
    if not setup.filter:
        return None
    if choose_model([setup.direction], setup.model) == SHAPES_MODEL:
        from p2pz.editor.shapes.judge import ShapesJudge  # numpy only, but the world's code: only for its model

        return ShapesJudge.for_concepts(setup.source_concept, setup.target_concept)

    return Scorers.load(setup.clip_model, setup.dino_model, device=resolve_device(setup.options.device))


@dataclass
class PairJob:
    kind: str  # "image" (item: a path) or "synthetic" (item: a seed)
    item: str | int
    pid: str


@dataclass
class PairsItem:
    jobs: list[PairJob]  # real images edited in one batch, or one synthetic source


@dataclass
class PairOut:
    pid: str
    png: list[bytes] = field(default_factory=list)  # [source, target] PNG bytes
    scores: dict | None = None
    error: str | None = None


@dataclass
class PairsResult:
    pairs: list[PairOut]
    model: dict | None = None  # {"model", "model_fingerprint"} of the teacher


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class PairsWorker:
    Item, Result = PairsItem, PairsResult
    fatal = ()

    def __init__(self, setup: PairsSetup):
        self.setup = setup
        self.editor = open_editor([setup.direction], setup.model, **setup.options.kwargs())
        self.judge = pair_judge(setup)

    def __call__(self, item: PairsItem) -> PairsResult:
        s, ed = self.setup, self.editor
        common = dict(size=s.size, inversion=s.inversion, edit=s.edit, scorers=self.judge,
                      source_concept=s.source_concept, target_concept=s.target_concept, caption=s.caption)
        images = [j for j in item.jobs if j.kind == "image"]
        if images:
            made = teacher_image_pairs(ed, s.direction, [j.item for j in images], **common)
        else:
            made = [teacher_pair(ed, s.direction, j.kind, j.item, prompt=s.prompt, **common) for j in item.jobs]
        pairs = [PairOut(job.pid, [_png(src), _png(tgt)], scores) for job, (src, tgt, scores) in zip(item.jobs, made)]
        return PairsResult(pairs, {"model": ed.model_id, "model_fingerprint": ed.model_fingerprint})

    @classmethod
    def failed(cls, item: PairsItem, error: str) -> PairsResult:
        return PairsResult([PairOut(j.pid, error=error) for j in item.jobs])


def pairs_runner(engine, setup: PairsSetup, batch: int = 1):
    """A ``runner`` for :func:`editor.student.pairs.make_pairs` computing the pending pairs on ``engine``: real
    images ``batch`` at a time, synthetic sources one by one."""
    setup = replace(setup, direction=setup.direction.detached())

    def run(jobs):
        originals = {pid: (kind, item, pid) for kind, item, pid in jobs}
        typed = [PairJob(kind, str(item) if kind == "image" else item, pid) for kind, item, pid in jobs]
        real = [j for j in typed if j.kind == "image"]
        items = [PairsItem(real[i:i + batch]) for i in range(0, len(real), batch)]
        items += [PairsItem([j]) for j in typed if j.kind != "image"]
        for result in engine.iter(PairsWorker, setup, items):
            for p in result.pairs:
                if p.error is not None:
                    yield originals[p.pid], None, None, None, p.error
                    continue
                src, tgt = (Image.open(io.BytesIO(b)).convert("RGB") for b in p.png)
                yield originals[p.pid], src, tgt, p.scores, result.model
    return run


def distill_pairs(engine, setup: PairsSetup, out: Path, *, images: list[Path], synthetic: int = 0,
                  pair_filter: PairFilter | None = None, batch: int = 1, progress: bool = False,
                  warn: Callable[[str], None] | None = None, info: Callable[[str], None] | None = None) -> dict:
    """Write (or complete) the pairs dataset of ``setup`` in ``out`` on ``engine`` → its manifest.

    The judge is loaded here too, to score the reused pairs of an earlier unfiltered run; when it cannot load,
    ``warn`` says so and the pairs are kept unfiltered (the judge is optional); ``info`` hears which judge
    filters. ``setup.prompt`` defaults to "a photo of a SOURCE" for synthetic sources."""
    warn, info = warn or (lambda message: None), info or (lambda message: None)
    setup = replace(setup, prompt=setup.prompt or f"a photo of a {setup.source_concept}")
    judge = None
    if not setup.filter:
        warn("pairs are not filtered (--no-filter)")
    try:
        judge = pair_judge(setup)
    except EditorError as exc:
        warn(f"pairs are not filtered ({' '.join(str(exc).split())})")
        setup = replace(setup, filter=False)
    if judge is not None and choose_model([setup.direction], setup.model) == SHAPES_MODEL:
        info(f"pairs filtered by the shapes world's parser: the edit reads '{setup.target_concept}', the other "
             f"attributes are kept, mask IoU ≥ {(pair_filter or PairFilter()).min_mask_iou}")
    return make_pairs(None, setup.direction, Path(out), images=images, synthetic=synthetic, prompt=setup.prompt,
                      size=setup.size, inversion=setup.inversion, edit=setup.edit, scorers=judge,
                      pair_filter=pair_filter, source_concept=setup.source_concept,
                      target_concept=setup.target_concept, progress=progress, caption=setup.caption,
                      runner=pairs_runner(engine, setup, batch), filtered=setup.filter)
