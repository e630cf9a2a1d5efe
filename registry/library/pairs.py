"""Teacher pairs for a student (``p2pz distill pairs``) made on an engine's workers: each worker loads the
teacher editor (and the filter's CLIP/DINO scorers) once and makes one pair per call with
:func:`editor.student.pairs.teacher_pair`; the pairs come back as PNG bytes and
:func:`editor.student.pairs.make_pairs` writes the dataset in this process."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from .editing import EditorOptions, open_editor


@dataclass(frozen=True)
class PairsSetup:
    direction: object  # a detached registry.library.records.Direction
    model: str | None
    options: EditorOptions
    filter: bool
    clip_model: str | None
    dino_model: str | None
    prompt: str
    size: int
    inversion: object  # editor.config.InversionConfig
    edit: object  # editor.config.EditConfig
    source_concept: str
    target_concept: str
    caption: str | None = None


@dataclass
class PairsItem:
    kind: str  # "image" (item: a path) or "synthetic" (item: a seed)
    item: str | int
    pid: str


@dataclass
class PairsResult:
    pid: str
    png: list = field(default_factory=list)  # [source, target] PNG bytes
    scores: dict | None = None
    model: dict | None = None  # {"model", "model_fingerprint"} of the teacher
    error: str | None = None


class PairsWorker:
    Item, Result = PairsItem, PairsResult
    fatal = ()

    def __init__(self, setup: PairsSetup):
        self.setup = setup
        self.editor = open_editor([setup.direction], setup.model, **setup.options.kwargs())
        self.scorers = None
        if setup.filter:
            from editor.evaluate import Scorers

            self.scorers = Scorers.load(setup.clip_model, setup.dino_model, device=setup.options.device)

    def __call__(self, item: PairsItem) -> PairsResult:
        from editor.student.pairs import teacher_pair

        s = self.setup
        src, tgt, scores = teacher_pair(self.editor, s.direction, item.kind, item.item, prompt=s.prompt, size=s.size,
                                        inversion=s.inversion, edit=s.edit, scorers=self.scorers,
                                        source_concept=s.source_concept, target_concept=s.target_concept,
                                        caption=s.caption)
        png = []
        for im in (src, tgt):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            png.append(buf.getvalue())
        return PairsResult(pid=item.pid, png=png, scores=scores, model={
            "model": self.editor.model_id, "model_fingerprint": self.editor.model_fingerprint})

    @classmethod
    def failed(cls, item: PairsItem, error: str) -> PairsResult:
        return PairsResult(pid=item.pid, error=error)


def pairs_runner(engine, setup: PairsSetup):
    """A ``runner`` for :func:`editor.student.pairs.make_pairs` computing the pending pairs on ``engine``."""
    from dataclasses import replace

    setup = replace(setup, direction=setup.direction.detached())

    def run(jobs):
        from PIL import Image

        originals = {pid: (kind, item, pid) for kind, item, pid in jobs}
        items = [PairsItem(kind, str(item) if kind == "image" else item, pid) for kind, item, pid in jobs]
        for r in engine.iter(PairsWorker, setup, items):
            job = originals[r.pid]
            if r.error is not None:
                yield job, None, None, None, r.error
                continue
            src, tgt = (Image.open(io.BytesIO(p)).convert("RGB") for p in r.png)
            yield job, src, tgt, r.scores, r.model
    return run
