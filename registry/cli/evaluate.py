"""``p2pz eval``: edit images with a direction and score the edits (``run``), or score existing edits (``score``)."""

from __future__ import annotations

from pathlib import Path

import click

from . import P2PZGroup, echo_json, echo_table, folded, json_option, main, pass_state

METRIC_COLUMNS = ("clip_acc", "clip_score", "clip_directional", "structure_distance", "bg_lpips", "bg_psnr",
                  "bg_ssim", "bg_mse")  # store.repository.METRICS, without importing the store for `p2pz --help`


SCORER_FLAGS = ("clip_model", "dino_model", "lpips_weights", "lpips_net")  # folded into ``scoring``


def _scorer_options(f):
    f = folded("scoring", SCORER_FLAGS)(f)
    for opt in reversed([
        click.option("--clip-model", default=None, help="CLIP model, hub id or folder "
                     "[default: openai/clip-vit-large-patch14]."),
        click.option("--dino-model", default=None, help="DINO ViT for structure distance [default: facebook/dino-vitb8]."),
        click.option("--lpips-weights", type=click.Path(dir_okay=False), default=None,
                     help="LPIPS backbone: a torchvision-layout AlexNet/VGG state dict (.pth or .safetensors); "
                          "without it, torchvision's when it imports, else bg_lpips is skipped."),
        click.option("--lpips-net", type=click.Choice(["alex", "vgg"]), default="alex", show_default=True),
        click.option("--device", help="cpu or cuda (default: cuda when available)."),
    ]):
        f = opt(f)
    return f


def _scorers(scoring: dict, device):
    """The scorers the folded scorer flags name (loaded by the analysis layer); what was skipped is a warning."""
    from p2pz.registry.analysis.evaluations import ScorerOptions, load_scorers  # lazy: sqlalchemy

    scorers = load_scorers(ScorerOptions(**scoring), device)
    for note in scorers.notes:
        click.echo(f"warning: {note}", err=True)
    return scorers


def _print_run(run) -> None:
    rows = [[Path(r["image"]).name] + [f"{r['scores'][k]:.4g}" if k in r["scores"] else "—" for k in METRIC_COLUMNS]
            for r in run.images]
    rows.append(["mean"] + [f"{run.means[k]:.4g}" if k in run.means else "—" for k in METRIC_COLUMNS])
    echo_table(rows, ["image", *METRIC_COLUMNS])
    click.echo(f"{run.direction}: run {run.run_id[:8]} stored ({len(run.images)} images)")


@main.group("eval", cls=P2PZGroup)
def eval_():
    """Score directions on images: CLIP-Acc, CLIP score, structure distance, background LPIPS/PSNR/SSIM/MSE.

    \b
    Example:
      p2pz eval run cat-to-dog --images photos/ --limit 20
    """


@eval_.command("run")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of source images.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many images.")
@click.option("--masks", "masks_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of PNG masks named like the images (edited region non-zero): bg_ metrics outside them.")
@click.option("--caption", help="One caption for every image instead of BLIP's.")
@click.option("--captioner", default=None, help="BLIP model [default: Salesforce/blip-image-captioning-base].")
@click.option("--model", help="SD model (default: the model the direction was built with; $P2PZ_MODEL does not "
              "override it).")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--xa-guidance", type=click.FloatRange(0), default=None, help="Cross-attention guidance [0.1].")
@click.option("--guidance-scale", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the edits here (with provenance and scores).")
@click.option("--sweep", metavar="PARAM=V1,V2,…", help="One run per value of xa_guidance, scale or guidance_scale "
              "(e.g. xa_guidance=0.05,0.1,0.2); the report plots clip_acc against structure_distance.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write a self-contained HTML report: source | "
              "reconstruction | edit with each row's scores.")
@_scorer_options
@json_option
@pass_state
def eval_run(state, ref, images_dir, limit, masks_dir, caption, captioner, model, steps, xa_guidance, guidance_scale,
             seed, out_dir, sweep, report, scoring, device, as_json):
    """Edit the images with a direction (cached inversions reused), score every edit, store the run's means.

    \b
    Examples:
      p2pz eval run cat-to-dog --images cats/ --limit 20
      p2pz eval run cat-to-dog@2 --images cats/ --masks cat-masks/ --json
      p2pz eval run cat-to-dog --images cats/ --sweep xa_guidance=0.05,0.1,0.2 --report sweep.html
    """
    from p2pz.editor.batch import expand_inputs  # lazy: PIL
    from p2pz.editor.config import EditConfig, InversionConfig  # lazy: start-up
    from p2pz.editor.metrics import load_mask  # lazy: torch

    from p2pz.registry.library.editing import open_editor  # lazy: PIL
    from p2pz.registry.analysis.evaluations import evaluate, parse_sweep, report_html  # lazy: sqlalchemy
    from p2pz.registry.analysis.evaluations import sweep as run_sweep  # lazy: sqlalchemy

    reg = state.registry()
    d = reg.get(ref, model)
    if sweep:
        parse_sweep(sweep)  # a malformed sweep fails before any model is loaded
    paths = expand_inputs([images_dir])
    masks = None
    if masks_dir:
        masks = {p.name: load_mask(p) for p in Path(masks_dir).iterdir() if p.suffix.lower() == ".png"}
    scorers = _scorers(scoring, device)
    kwargs = {"captioner": captioner} if captioner else {}
    ed = open_editor([d], model, device=device, progress=state.progress, **kwargs)
    common = dict(editor=ed, scorers=scorers, inversion=InversionConfig(steps=steps, seed=seed), caption=caption,
                  limit=limit, masks=masks, out_dir=Path(out_dir) if out_dir else None,
                  report=None if as_json else (lambda row: state.info(f"{Path(row['image']).name}: scored")))
    edit_cfg = EditConfig(xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps)
    runs = (run_sweep(reg, d.ref, paths, sweep, edit=edit_cfg, **common) if sweep
            else [evaluate(reg, d.ref, paths, edit=edit_cfg, **common)])
    if report:
        from p2pz.store.files import atomic_write  # lazy: start-up

        atomic_write(report, report_html(runs))
    for run in runs:
        for line in run.skipped:
            click.echo(f"warning: skipped {line}", err=True)
    if as_json:
        echo_json(runs[0].to_dict() if not sweep else [{"label": r.label, **r.to_dict()} for r in runs])
        return
    for run in runs:
        if run.label:
            click.echo(f"\n{run.label}")
        _print_run(run)
        click.echo(f"edit {run.edit_s:.1f} s, scoring {run.score_s:.1f} s "
                   f"({100 * run.score_s / max(run.edit_s, 1e-9):.1f} % of the edit time)")
    if report:
        click.echo(f"report: {report}")


@eval_.command("score")
@click.argument("edited", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the source images are, if not at the path their provenance records.")
@_scorer_options
@json_option
@pass_state
def eval_score(state, edited, images_dir, scoring, device, as_json):
    """Score existing outputs of `p2pz edit` (direction and source image from each file's provenance).

    \b
    Example:
      p2pz eval score p2pz-out/*__cat-to-dog@1.png
    """
    from p2pz.registry.analysis.evaluations import score_files  # lazy: sqlalchemy

    scorers = _scorers(scoring, device)
    runs = score_files(state.registry(), [Path(p) for p in edited], scorers=scorers,
                       sources=Path(images_dir) if images_dir else None)
    if as_json:
        echo_json([r.to_dict() for r in runs])
    else:
        for run in runs:
            _print_run(run)


@eval_.command("pie-bench")
@click.argument("mapping", type=click.Path(exists=True, dir_okay=False), metavar="MAPPING.json")
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="PIE-Bench's annotation_images/ folder.")
@click.option("--model", envvar="P2PZ_MODEL", help="SD model [default: $P2PZ_MODEL or CompVis/stable-diffusion-v1-4].")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many entries.")
@click.option("--bank-size", type=click.IntRange(10, 100_000), default=1000, show_default=True,
              help="Template sentences per concept for banks that do not exist yet.")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--xa-guidance", type=click.FloatRange(0), default=None, help="Cross-attention guidance [0.1].")
@_scorer_options
@json_option
@pass_state
def eval_pie_bench(state, mapping, images_dir, model, limit, bank_size, steps, xa_guidance, scoring, device,
                   as_json):
    """Run PIE-Bench (Ju et al.): each entry's bracketed words become a direction; print the published columns.

    Add/delete entries (no bracketed word on one side) are skipped and counted.

    \b
    Example:
      p2pz eval pie-bench PIE-Bench/mapping_file.json --images PIE-Bench/annotation_images --limit 100
    """
    from p2pz.editor import Editor  # lazy: torch
    from p2pz.editor.config import EditConfig, InversionConfig  # lazy: start-up

    from p2pz.registry.analysis.pie_bench import pie_bench  # lazy: start-up

    scorers = _scorers(scoring, device)
    ed = Editor.from_pretrained(model, captioner=None, device=device, progress=state.progress)
    out = pie_bench(state.registry(), Path(mapping), Path(images_dir), editor=ed, scorers=scorers, model=model,
                    inversion=InversionConfig(steps=steps), edit=EditConfig(xa_guidance=xa_guidance, steps=steps),
                    limit=limit, bank_size=bank_size,
                    report=None if as_json else (lambda row: state.info(f"{row['id']}: {row['source']} → "
                                                                          f"{row['target']}")))
    if as_json:
        echo_json(out)
        return
    echo_table([[f"{v:.2f}" for v in out["table"].values()]], list(out["table"]))
    skipped = sum(out["skipped_add_delete"].values())
    click.echo(f"{out['images']} images; {skipped} add/delete entries skipped")
