"""The evaluation harness: edit images with a stored direction, score the edits, keep the scores (``p2pz eval``).

``evaluate`` edits each image (cached inversions are reused), scores the edit against its source with
:mod:`editor.evaluate` and stores one ``evaluations`` row per metric for the run; ``score_files`` scores edits
that already exist, finding their source image and direction from the provenance chunk ``p2pz edit`` writes.
Scores are compared at the edit's resolution (the source is resized as the editor resized it).
"""

from __future__ import annotations

import base64
import html
import io
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from p2pz.editor.devices import resolve_device
from p2pz.editor.errors import ComponentLoadError, EditorError
from p2pz.store import repository as repo
from p2pz.store.repository import METRICS

from p2pz.registry.library.records import Direction, RegistryError
from .diagnostics_report import figure_png


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
    thumbs: list = field(default_factory=list, repr=False)  # (source, reconstruction, edit) small PIL images
    label: str = ""  # what distinguishes this run in a sweep ("xa_guidance=0.1")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "direction": self.direction, "means": self.means, "images": self.images,
                "params": self.params, "skipped": self.skipped, "edit_s": self.edit_s, "score_s": self.score_s}


@dataclass(frozen=True)
class ScorerOptions:
    """Which scoring models to load (``--clip-model``, ``--dino-model``, ``--lpips-weights``, ``--lpips-net``;
    None: the defaults, openai/clip-vit-large-patch14 and facebook/dino-vitb8)."""

    clip_model: str | None = None
    dino_model: str | None = None
    lpips_weights: str | None = None
    lpips_net: str = "alex"


def load_scorers(options: ScorerOptions, device: str | None = None):
    """The scorers (:class:`editor.evaluate.Scorers`: CLIP, DINO, LPIPS when it loads) on ``device`` (checked
    first: a device this machine lacks is one line), loaded through :mod:`editor.loader`; ``.notes`` says what
    was skipped."""
    from p2pz.editor.evaluate import Scorers  # torch and transformers: only when scoring

    return Scorers.load(options.clip_model, options.dino_model, options.lpips_weights, options.lpips_net,
                        resolve_device(device))


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
    from p2pz.editor.batch import output_name, output_stem, save_png, source_fields  # lazy: PIL
    from p2pz.editor.evaluate import score_pair, summarize  # lazy: torch
    from p2pz.editor.image import load_image  # lazy: torch

    d = reg.get(ref, getattr(editor, "model_id", None))
    source, target = concepts(d)
    rows, skipped, thumbs = [], [], []
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
        except ComponentLoadError:
            raise  # not this image's fault: every image would be skipped alike
        except (EditorError, OSError) as exc:
            skipped.append(f"{path}: {' '.join(str(exc).split())}")
            continue
        row = {"image": str(path), "caption": cap, "scores": scores, "output": None}
        thumbs.append(tuple(_thumb(im) for im in (src, res.reconstruction, res.edited)))
        if out_dir is not None:
            target_path = Path(out_dir) / output_name(output_stem(path), d.ref)
            save_png(res.edited, target_path, {"direction": d.ref, **source_fields(path), "caption": cap,
                                               "scores": scores, "evaluation": True})
            row["output"] = str(target_path)
        rows.append(row)
        if report:
            report(row)
    if not rows:  # every image was skipped, each for its own reason: say the first
        if not skipped:
            raise RegistryError("no image could be evaluated: --images holds none")
        more = f" (and {len(skipped) - 1} more skipped)" if len(skipped) > 1 else ""
        raise RegistryError(f"no image could be evaluated: {skipped[0]}{more}; check --images")
    means = summarize([r["scores"] for r in rows])
    params = {**scorers.names, "editor_model": editor.model_id, "model_fingerprint": editor.model_fingerprint,
              "inversion": {"steps": inversion.steps, **inversion.params()},
              "edit": {k: used[k] for k in ("scale", "xa_guidance", "guidance_scale", "steps", "prediction_type")},
              "caption": caption, "images": len(rows), "source": source, "target": target}
    run_id = record(reg.db, d.id, means, len(rows), params)
    return EvalRun(run_id=run_id, direction=d.ref, means=means, images=rows, params=params, skipped=skipped,
                   edit_s=edit_s, score_s=score_s, thumbs=thumbs)


SWEEPABLE = ("xa_guidance", "scale", "guidance_scale")


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    """``xa_guidance=0.05,0.1,0.2`` → ("xa_guidance", [0.05, 0.1, 0.2])."""
    name, sep, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise RegistryError(f"malformed sweep {spec!r}; write PARAMETER=V1,V2,… with PARAMETER one of "
                            f"{', '.join(SWEEPABLE)}, e.g. xa_guidance=0.05,0.1,0.2")
    try:
        parsed = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise RegistryError(f"the sweep values of {name} must be numbers: {values!r}") from None
    if not parsed:
        raise RegistryError(f"the sweep of {name} has no values")
    return name, parsed


def sweep(reg, ref: str, images: list[Path], spec: str, *, edit, **kwargs) -> list[EvalRun]:
    """One evaluation run per value of one edit parameter (each stored, its value in the run's parameters)."""
    name, values = parse_sweep(spec)
    runs = []
    for value in values:
        run = evaluate(reg, ref, images, edit=replace(edit, **{name: value}), **kwargs)
        run.label = f"{name}={value:g}"
        runs.append(run)
    return runs


def _thumb(image, size: int = 160):
    im = image.copy()
    im.thumbnail((size, size))
    return im


def _data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(runs: list[EvalRun]) -> str:
    """One self-contained HTML page: per run, a grid of source | reconstruction | edit with each row's scores;
    for several runs (a sweep), a plot of clip_acc against structure_distance."""

    esc = html.escape
    parts = []
    if len(runs) > 1:
        import matplotlib  # lazy: matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: matplotlib


        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [r.means.get("structure_distance", float("nan")) for r in runs]
        ys = [r.means.get("clip_acc", float("nan")) for r in runs]
        ax.plot(xs, ys, "o-")
        for r, x, y in zip(runs, xs, ys):
            ax.annotate(r.label or r.run_id[:6], (x, y), fontsize=8, textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("structure_distance (lower keeps more structure)")
        ax.set_ylabel("clip_acc (higher edits more)")
        ax.set_title("edit strength vs structure")
        parts.append(f"<h2>Sweep</h2><img alt='clip_acc vs structure_distance' src='{figure_png(fig)}'>")
        plt.close(fig)
    for run in runs:
        head = "".join(f"<th>{m}</th>" for m in METRICS)
        means = "".join(f"<td>{run.means[m]:.4g}</td>" if m in run.means else "<td>—</td>" for m in METRICS)
        rows = []
        for row, (src, rec, edt) in zip(run.images, run.thumbs):
            cells = "".join(f"<td>{row['scores'][m]:.4g}</td>" if m in row["scores"] else "<td>—</td>"
                            for m in METRICS)
            rows.append(f"<tr><td><img src='{_data_url(src)}'></td><td><img src='{_data_url(rec)}'></td>"
                        f"<td><img src='{_data_url(edt)}'></td><td>{esc(row['caption'] or '')}</td>{cells}</tr>")
        parts.append(f"<h2>{esc(run.direction)} {esc(run.label)}</h2><p>run {run.run_id}, {len(run.images)} images</p>"
                     f"<table><tr><th>mean</th><th></th><th></th><th></th>{head}</tr><tr><td></td><td></td><td></td>"
                     f"<td></td>{means}</tr><tr><th>source</th><th>reconstruction</th><th>edit</th><th>caption</th>"
                     f"<th colspan='{len(METRICS)}'></th></tr>{''.join(rows)}</table>")
    title = esc(runs[0].direction if runs else "p2pz eval")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title} — p2pz eval</title><style>"
            "body{font-family:sans-serif;margin:2em}td,th{padding:2px 6px;text-align:left;font-size:90%}"
            "img{display:block}</style></head><body><h1>" + title + "</h1>" + "".join(parts) + "</body></html>\n")


def score_files(reg, edited: list[Path], *, scorers, sources: Path | None = None) -> list[EvalRun]:
    """Score existing outputs of ``p2pz edit``: direction and source image from each file's provenance (the
    source is looked up by name in ``sources`` when its recorded path is gone). One run per direction."""
    from PIL import Image  # lazy: PIL

    from p2pz.editor.batch import read_provenance  # lazy: PIL
    from p2pz.editor.evaluate import score_pair, summarize  # lazy: torch

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
