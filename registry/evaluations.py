"""The evaluation harness: edit images with a stored direction, score the edits, keep the scores (``p2pz eval``).

``evaluate`` edits each image (cached inversions are reused), scores the edit against its source with
:mod:`editor.evaluate` and stores one ``evaluations`` row per metric for the run; ``score_files`` scores edits
that already exist, finding their source image and direction from the provenance chunk ``p2pz edit`` writes.
Scores are compared at the edit's resolution (the source is resized as the editor resized it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from store import repository as repo

from .records import Direction, RegistryError


@dataclass
class EvalRun:
    run_id: str
    direction: str
    means: dict[str, float]
    images: list[dict] = field(default_factory=list)  # {"image", "output", "scores"} per image
    params: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    edit_s: float = 0.0
    score_s: float = 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "direction": self.direction, "means": self.means, "images": self.images,
                "params": self.params, "skipped": self.skipped, "edit_s": self.edit_s, "score_s": self.score_s}


def concepts(d: Direction) -> tuple[str, str]:
    if d.kind != "pair" or not d.source or not d.target:
        raise RegistryError(f"{d.ref} is a combination; evaluate a pair direction (SOURCE → TARGET)")
    return d.source.split("@")[0], d.target.split("@")[0]


def record(db, direction_id: int, means: dict[str, float], n_images: int, params: dict) -> str:
    run_id = uuid.uuid4().hex
    with db.write() as s:
        repo.insert_evaluation(s, run_id=run_id, direction_id=direction_id, scores=means, n_images=n_images,
                               params=params)
    return run_id


def latest(db, directions: list[Direction]) -> dict[str, dict]:
    """{ref: latest run summary} for the directions that have been evaluated."""
    with db.read() as s:
        found = repo.latest_scores(s, [d.id for d in directions])
    return {d.ref: found[d.id] for d in directions if d.id in found}


def evaluate(reg, ref: str, images: list[Path], *, editor, scorers, inversion, edit, caption: str | None = None,
             limit: int | None = None, masks: dict | None = None, out_dir: Path | None = None,
             report=None) -> EvalRun:
    from editor.batch import output_name, save_png
    from editor.errors import EditorError
    from editor.evaluate import score_pair, summarize
    from editor.image import load_image

    d = reg.get(ref)
    source, target = concepts(d)
    rows, skipped = [], []
    edit_s = score_s = 0.0
    for path in images[: limit or None]:
        try:
            image = load_image(path)
            t0 = time.perf_counter()
            cap = caption or editor.caption(image)
            inv = editor.invert(image, cap, inversion)
            res = editor.edit(inv, d, edit)
            used = res.params
            edit_s += time.perf_counter() - t0
            t1 = time.perf_counter()
            src = image.resize(res.edited.size, resample=3) if image.size != res.edited.size else image
            scores = score_pair(scorers, src, res.edited, source, target, (masks or {}).get(Path(path).name))
            score_s += time.perf_counter() - t1
        except (EditorError, OSError) as exc:
            skipped.append(f"{path}: {' '.join(str(exc).split())}")
            continue
        row = {"image": str(path), "caption": cap, "scores": scores, "output": None}
        if out_dir is not None:
            target_path = Path(out_dir) / output_name(Path(path).stem, d.ref)
            save_png(res.edited, target_path, {"direction": d.ref, "source_image": Path(path).name,
                                               "source_path": str(Path(path).resolve()), "caption": cap,
                                               "scores": scores, "evaluation": True})
            row["output"] = str(target_path)
        rows.append(row)
        if report:
            report(row)
    if not rows:
        raise RegistryError(f"no image could be evaluated ({len(skipped)} skipped); check --images")
    means = summarize([r["scores"] for r in rows])
    params = {**scorers.names, "editor_model": editor.model_id, "model_fingerprint": editor.model_fingerprint,
              "inversion": {"steps": inversion.steps, **inversion.params()},
              "edit": {k: used[k] for k in ("scale", "xa_guidance", "guidance_scale", "steps", "prediction_type")},
              "caption": caption, "images": len(rows), "source": source, "target": target}
    run_id = record(reg.db, d.id, means, len(rows), params)
    return EvalRun(run_id=run_id, direction=d.ref, means=means, images=rows, params=params, skipped=skipped,
                   edit_s=edit_s, score_s=score_s)


def score_files(reg, edited: list[Path], *, scorers, sources: Path | None = None) -> list[EvalRun]:
    """Score existing outputs of ``p2pz edit``: direction and source image from each file's provenance (the
    source is looked up by name in ``sources`` when its recorded path is gone). One run per direction."""
    from PIL import Image

    from editor.batch import read_provenance
    from editor.evaluate import score_pair, summarize

    groups: dict[str, list[dict]] = {}
    for path in edited:
        try:
            prov = read_provenance(path)
        except (OSError, KeyError, ValueError):
            raise RegistryError(f"{path} has no p2pz provenance; score outputs of p2pz edit") from None
        if not prov.get("direction"):
            raise RegistryError(f"{path} is not an edit (a reconstruction or a generated sample)")
        candidates = [Path(prov["source_path"])] if prov.get("source_path") else []
        if sources is not None and prov.get("source_image"):
            candidates.append(Path(sources) / prov["source_image"])
        src = next((c for c in candidates if c.is_file()), None)
        if src is None:
            raise RegistryError(f"the source image of {path} ({prov.get('source_image')}) is not found; pass "
                                "--images DIR where it is")
        d = reg.get(prov["direction"])
        source, target = concepts(d)
        with Image.open(path) as e, Image.open(src) as s_img:
            edit_img, src_img = e.convert("RGB"), s_img.convert("RGB")
        src_img = src_img.resize(edit_img.size, resample=3) if src_img.size != edit_img.size else src_img
        scores = score_pair(scorers, src_img, edit_img, source, target)
        groups.setdefault(d.ref, []).append({"image": str(src), "output": str(path), "scores": scores})
    runs = []
    for ref, rows in groups.items():
        d = reg.get(ref)
        means = summarize([r["scores"] for r in rows])
        params = {**scorers.names, "scored_files": len(rows), "source": concepts(d)[0], "target": concepts(d)[1]}
        runs.append(EvalRun(run_id=record(reg.db, d.id, means, len(rows), params), direction=ref, means=means,
                            images=rows, params=params))
    return runs
