"""Training pairs for a student: the teacher (the diffusion editor) edits sources; each source/edit pair is written
to a dataset folder with a manifest (PAPER §4.4 trains on generated pairs, as InstructPix2Pix filters its own).

Layout::

    DATASET/manifest.json              direction, encoder and model fingerprints, every parameter, the filter, pairs
    DATASET/pairs/<id>_source.png      the source at the student's size
    DATASET/pairs/<id>_target.png      the teacher's edit at the same size

A pair's id is derived from its input (the image's pixels, or the synthetic seed and prompt), so a rerun skips
finished pairs; both images are written before the manifest names the pair, each atomically, so an interrupted
run leaves no half-written pair. With scorers, a pair is kept only if its scores pass the recorded thresholds:
CLIP directional similarity and DINO structure distance (:class:`editor.evaluate.Scorers`), or, for the shapes
world, the parser's reading (:class:`editor.shapes.judge.ShapesJudge`: the target read, the mask kept); without
them every pair is kept and the manifest says so. A rerun
re-applies its own filter (or ``--no-filter``) to the pairs it reuses, scoring those made unfiltered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p2pz.store.files import atomic_write
from p2pz.store.hashing import sha256_json
from p2pz.store.progress import progress_bar

from ..config import EditConfig, InversionConfig
from ..errors import EditorError
from ..image import load_image, pixels_sha256

MANIFEST = "manifest.json"
FORMAT = "p2pz-student-pairs"


@dataclass(frozen=True)
class PairFilter:
    """InstructPix2Pix-style filtering thresholds (kept when every threshold whose score was measured holds).

    The CLIP/DINO scorers give ``clip_directional`` and ``structure_distance``; the shapes world's parser gives
    ``target_read`` (1 when the edit shows the target), ``others_kept`` (1 when the other attributes read the
    same) and ``mask_iou`` (object masks of source and edit)."""

    min_clip_directional: float = 0.2
    max_structure_distance: float = 0.1
    min_mask_iou: float = 0.5

    def keeps(self, scores: dict) -> bool:
        return (scores.get("clip_directional", 1.0) >= self.min_clip_directional
                and scores.get("structure_distance", 0.0) <= self.max_structure_distance
                and scores.get("target_read", 1.0) >= 1.0 and scores.get("others_kept", 1.0) >= 1.0
                and scores.get("mask_iou", 1.0) >= self.min_mask_iou)


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EditorError(f"{folder} is not a student dataset ({MANIFEST}: {exc})") from None
    if data.get("format") != FORMAT or not isinstance(data.get("pairs"), list):
        raise EditorError(f"{folder}/{MANIFEST} is not a p2pz student dataset manifest")
    return data


def dataset_sha256(folder: Path) -> str:
    """Content address of a dataset: its manifest's kept pairs (ids and image sha256s)."""
    data = read_manifest(folder)
    return sha256_json([[p["id"], p["source_sha256"], p["target_sha256"]] for p in data["pairs"] if p["kept"]])


def teacher_pair(editor, direction, kind: str, item, *, prompt: str | None, size: int, inversion, edit,
                 scorers=None, source_concept: str = "", target_concept: str = "", caption: str | None = None):
    """One training pair: the teacher's edit of a real image (``kind="image"``, ``item`` its path; captioned
    ``caption``, else by the editor's captioner) or of a synthetic source (``kind="synthetic"``, ``item`` its
    seed) → (source, target) at ``size`` px and the scores."""
    if kind == "image":
        return teacher_image_pairs(editor, direction, [item], size=size, inversion=inversion, edit=edit,
                                   scorers=scorers, source_concept=source_concept, target_concept=target_concept,
                                   caption=caption)[0]
    inv = editor.synthetic(prompt, seed=item, steps=inversion.steps)
    res = editor.edit(inv, direction, edit)
    return _finish(res.reconstruction, res.edited, size, scorers, source_concept, target_concept)


def teacher_image_pairs(editor, direction, paths: list, *, size: int, inversion, edit, scorers=None,
                        source_concept: str = "", target_concept: str = "", caption: str | None = None) -> list:
    """:func:`teacher_pair` for several real images at once: one batched inversion and one batched edit (each
    image's inversion noise comes from its own generator, so a batch gives each image its own pair)."""
    images = [load_image(p) for p in paths]
    captions = [caption or editor.caption(im) for im in images]
    inv = editor.invert(images if len(images) > 1 else images[0], captions if len(images) > 1 else captions[0],
                        inversion)
    res = editor.edit(inv, direction, edit)
    edited = res.edited if isinstance(res.edited, list) else [res.edited]
    return [_finish(im, out, size, scorers, source_concept, target_concept) for im, out in zip(images, edited)]


def _finish(source, edited, size: int, scorers, source_concept: str, target_concept: str):
    src = source.convert("RGB").resize((size, size), Image.BICUBIC)
    tgt = edited.convert("RGB").resize((size, size), Image.BICUBIC)
    scores = {}
    if scorers is not None:
        scores = scorers.score_pair(src, tgt, source_concept, target_concept)
    return src, tgt, scores


def _open_manifest(out: Path, editor, direction, *, size: int, inversion, edit, filtered: bool, pair_filter,
                   caption) -> dict:
    """The dataset's manifest: the one in ``out`` (it must be of the same direction and size) or a new one."""
    label = getattr(direction, "ref", "tensor")
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        if manifest["direction"] != label or manifest["size"] != size:
            raise EditorError(f"{out} holds pairs of {manifest['direction']} at {manifest['size']} px; use another "
                              "--out folder")
        return manifest
    return {"format": FORMAT, "direction": label, "encoder": getattr(direction, "encoder", None),
            "model": editor.model_id if editor else None,
            "model_fingerprint": editor.model_fingerprint if editor else None, "size": size,
            "inversion": {"steps": inversion.steps, **inversion.params()},
            "edit": {"scale": edit.scale, "xa_guidance": edit.xa_guidance, "guidance_scale": edit.guidance_scale},
            "filter": pair_filter.__dict__ if filtered else None, "filtered": filtered, "caption": caption,
            "pairs": []}


def _refilter(manifest: dict, out: Path, filtered: bool, pair_filter: PairFilter, scorers, source_concept: str,
              target_concept: str) -> int:
    """Apply this run's filter (or none) to the pairs a rerun reuses: the pairs are the teacher's, the filter is
    the run's. Pairs never scored are scored here when the filter is on and the scorers are local → how many
    could not be scored (then not kept)."""
    manifest["filtered"], manifest["filter"] = filtered, pair_filter.__dict__ if filtered else None
    unscored = 0
    for entry in manifest["pairs"]:
        if filtered and not entry.get("scores"):
            if scorers is None:
                unscored += 1
                entry["kept"] = False
                continue
            from PIL import Image  # only when reused pairs are scored

            with Image.open(out / entry["source"]) as a, Image.open(out / entry["target"]) as b:
                entry["scores"] = scorers.score_pair(a.convert("RGB"), b.convert("RGB"), source_concept,
                                                     target_concept)
        entry["kept"] = not filtered or pair_filter.keeps(entry["scores"])
    return unscored


def _local_runner(editor, direction, *, batch: int, prompt, size, inversion, edit, scorers, source_concept,
                  target_concept, caption):
    """The teacher in this process: real images ``batch`` at a time (one batched inversion and edit), then
    synthetic sources one by one; yields what a ``runner`` yields."""
    common = dict(size=size, inversion=inversion, edit=edit, scorers=scorers, source_concept=source_concept,
                  target_concept=target_concept, caption=caption)

    def run(todo):
        model = {"model": editor.model_id, "model_fingerprint": editor.model_fingerprint}
        images = [j for j in todo if j[0] == "image"]
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            made = teacher_image_pairs(editor, direction, [j[1] for j in chunk], **common)
            for job, (src, tgt, scores) in zip(chunk, made):
                yield job, src, tgt, scores, model
        for job in (j for j in todo if j[0] != "image"):
            src, tgt, scores = teacher_pair(editor, direction, job[0], job[1], prompt=prompt, **common)
            yield job, src, tgt, scores, model
    return run


def _write_pair(out: Path, manifest: dict, job, src, tgt, scores, kept: bool) -> None:
    """Both images (atomically), then the manifest naming them: an interrupted run leaves no half pair."""
    kind, item, pid = job
    entry = {"id": pid, "kind": kind, "input": str(item), "source": f"pairs/{pid}_source.png",
             "target": f"pairs/{pid}_target.png", "source_sha256": pixels_sha256(src),
             "target_sha256": pixels_sha256(tgt), "scores": scores, "kept": kept}
    atomic_write(out / entry["source"], writer=lambda p, im=src: im.save(p, format="PNG"))
    atomic_write(out / entry["target"], writer=lambda p, im=tgt: im.save(p, format="PNG"))
    manifest["pairs"].append(entry)  # named only once both images are in place
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))


def make_pairs(editor, direction, out: Path, *, images: list[Path] | None = None, synthetic: int = 0,
               prompt: str | None = None, size: int = 256, inversion=None, edit=None, scorers=None,
               pair_filter: PairFilter | None = None, source_concept: str = "", target_concept: str = "",
               seed: int = 0, progress: bool = False, runner=None, filtered: bool | None = None,
               caption: str | None = None, batch: int = 1) -> dict:
    """Write (or complete) a pairs dataset in ``out`` → its manifest.

    ``runner(jobs)`` computes the pending pairs elsewhere (the registry's engines): it gets ``(kind, item,
    pid)`` jobs and yields ``(job, source, target, scores, model)`` as they finish, in any order, ``model`` being
    ``{"model", "model_fingerprint"}`` of the teacher that made it (or ``(job, None, None, None, error)`` for
    a job that failed); then ``editor`` may be None and ``filtered`` says whether its scorers filter. Without
    one, the teacher ``editor`` runs here, real images ``batch`` at a time (a batch's pairs are written once it
    is done)."""
    if not images and synthetic < 1:
        raise EditorError("give source images (--images DIR) or a number of synthetic sources (--synthetic N)")
    if synthetic and not prompt:
        prompt = f"a photo of a {source_concept}" if source_concept else None
        if not prompt:
            raise EditorError("synthetic sources need a prompt (--prompt TEXT)")
    inversion, edit = inversion or InversionConfig(), edit or EditConfig()
    filtered = (scorers is not None) if filtered is None else filtered
    pair_filter, out = pair_filter or PairFilter(), Path(out)
    manifest = _open_manifest(out, editor, direction, size=size, inversion=inversion, edit=edit, filtered=filtered,
                              pair_filter=pair_filter, caption=caption)
    unscored = _refilter(manifest, out, filtered, pair_filter, scorers, source_concept, target_concept)
    if manifest["pairs"]:
        atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    done = {p["id"] for p in manifest["pairs"]}
    jobs = [("image", p, pixels_sha256(load_image(p))[:16]) for p in images or []]
    jobs += [("synthetic", seed + i, sha256_json({"prompt": prompt, "seed": seed + i, "size": size})[:16])
             for i in range(synthetic)]
    pending = [j for j in jobs if j[2] not in done]
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    runner = runner or _local_runner(editor, direction, batch=batch, prompt=prompt, size=size, inversion=inversion,
                                     edit=edit, scorers=scorers, source_concept=source_concept,
                                     target_concept=target_concept, caption=caption)
    failed = []
    with progress_bar(len(jobs), "teacher pairs", enabled=progress, unit="pair") as bar:
        bar.update(len(jobs) - len(pending))
        for job, src, tgt, scores, model in runner(pending):
            bar.update()
            if src is None:
                failed.append(f"{job[1]}: {model}")
                continue
            if manifest["model"] is None:
                manifest.update(model)
            _write_pair(out, manifest, job, src, tgt, scores, not filtered or pair_filter.keeps(scores))
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1))
    if failed:
        manifest["failed"] = failed
    if unscored:
        manifest["unscored"] = unscored
    return manifest


def load_pairs(folder: Path, size: int | None = None):
    """The kept pairs of a dataset as tensors (sources, targets) [N, 3, S, S] in [−1, 1], and their ids."""
    data = read_manifest(folder)
    size = size or data["size"]
    kept = [p for p in data["pairs"] if p["kept"]]
    if not kept:
        raise EditorError(f"{folder} has no kept pairs; make more with p2pz distill pairs, or loosen the filter")

    def tensor(rel: str) -> torch.Tensor:
        with Image.open(Path(folder) / rel) as im:
            im = im.convert("RGB").resize((size, size), Image.BICUBIC)
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

    sources = torch.stack([tensor(p["source"]) for p in kept])
    targets = torch.stack([tensor(p["target"]) for p in kept])
    return sources, targets, [p["id"] for p in kept]
