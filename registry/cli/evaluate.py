"""``p2pz eval``: edit images with a direction and score the edits (``run``), or score existing edits (``score``)."""

from __future__ import annotations

from pathlib import Path

import click

from . import P2PZGroup, echo_json, echo_table, json_option, main, pass_state

from store.repository import METRICS as METRIC_COLUMNS


def _scorer_options(f):
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


def _scorers(clip_model, dino_model, lpips_weights, lpips_net, device):
    from editor.evaluate import Scorers
    from editor.loader import default_device

    return Scorers.load(clip_model, dino_model, lpips_weights, lpips_net, device or default_device())


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
@click.option("--model", envvar="P2PZ_MODEL", help="SD model (default: the model the direction was built with).")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True)
@click.option("--xa-guidance", type=click.FloatRange(0), default=None, help="Cross-attention guidance [0.1].")
@click.option("--guidance-scale", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the edits here (with provenance and scores).")
@_scorer_options
@json_option
@pass_state
def eval_run(state, ref, images_dir, limit, masks_dir, caption, captioner, model, steps, xa_guidance, guidance_scale,
             seed, out_dir, clip_model, dino_model, lpips_weights, lpips_net, device, as_json):
    """Edit the images with a direction (cached inversions reused), score every edit, store the run's means.

    \b
    Examples:
      p2pz eval run cat-to-dog --images cats/ --limit 20
      p2pz eval run cat-to-dog@2 --images cats/ --masks cat-masks/ --json
    """
    from editor.batch import expand_inputs
    from editor.config import EditConfig, InversionConfig
    from editor.metrics import load_mask

    from ..editing import open_editor
    from ..evaluations import evaluate

    reg = state.registry()
    d = reg.get(ref)
    paths = expand_inputs([images_dir])
    masks = None
    if masks_dir:
        masks = {p.name: load_mask(p) for p in Path(masks_dir).iterdir() if p.suffix.lower() == ".png"}
    scorers = _scorers(clip_model, dino_model, lpips_weights, lpips_net, device)
    for note in scorers.notes:
        click.echo(f"warning: {note}", err=True)
    kwargs = {"captioner": captioner} if captioner else {}
    ed = open_editor([d], model, device=device, progress=state.progress, **kwargs)
    run = evaluate(reg, d.ref, paths, editor=ed, scorers=scorers, inversion=InversionConfig(steps=steps, seed=seed),
                   edit=EditConfig(xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps),
                   caption=caption, limit=limit, masks=masks, out_dir=Path(out_dir) if out_dir else None,
                   report=None if as_json else (lambda row: state.info(f"{Path(row['image']).name}: scored")))
    for line in run.skipped:
        click.echo(f"warning: skipped {line}", err=True)
    if as_json:
        echo_json(run.to_dict())
    else:
        _print_run(run)
        click.echo(f"edit {run.edit_s:.1f} s, scoring {run.score_s:.1f} s")


@eval_.command("score")
@click.argument("edited", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the source images are, if not at the path their provenance records.")
@_scorer_options
@json_option
@pass_state
def eval_score(state, edited, images_dir, clip_model, dino_model, lpips_weights, lpips_net, device, as_json):
    """Score existing outputs of `p2pz edit` (direction and source image from each file's provenance).

    \b
    Example:
      p2pz eval score p2pz-out/*__cat-to-dog@1.png
    """
    from ..evaluations import score_files

    scorers = _scorers(clip_model, dino_model, lpips_weights, lpips_net, device)
    for note in scorers.notes:
        click.echo(f"warning: {note}", err=True)
    runs = score_files(state.registry(), [Path(p) for p in edited], scorers=scorers,
                       sources=Path(images_dir) if images_dir else None)
    if as_json:
        echo_json([r.to_dict() for r in runs])
    else:
        for run in runs:
            _print_run(run)
