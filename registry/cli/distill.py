"""``p2pz distill`` (pairs, train) and ``p2pz student`` (list, show): real-time students of directions."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from p2pz.editor.devices import resolve_device

from . import P2PZError, P2PZGroup, VERSION, echo_json, echo_table, engine_options, json_option, main, pass_state


@main.group(cls=P2PZGroup)
def distill():
    """Distil a direction into a fast student network (the paper's conditional GAN).

    \b
    Example:
      p2pz distill pairs cat-to-dog --images cats/ --out cat-to-dog-pairs
      p2pz distill train cat-to-dog-pairs --out cat-to-dog-student --steps 2000
    """


@distill.command("pairs")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), help="Source images.")
@click.option("--synthetic", type=click.IntRange(0), default=0, help="Also this many generated sources (seeds).")
@click.option("--prompt", help="Prompt of the synthetic sources [a photo of a SOURCE].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--size", type=click.IntRange(16, 2048), default=256, show_default=True, help="Pair image size.")
@click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True, help="Teacher DDIM steps.")
@click.option("--batch", type=click.IntRange(1, 256), default=1, show_default=True, help="Real images the teacher "
              "inverts and edits at once (faster on small models and GPUs; memory grows with it).")
@click.option("--model", help="SD model (default: the direction's; $P2PZ_MODEL does not override it).")
@click.option("--captioner", default=None, help="BLIP model for real sources.")
@click.option("--caption", default=None, help="Use this caption for every real source instead of BLIP's (no "
              "captioner is loaded).")
@click.option("--no-filter", is_flag=True, help="Keep every pair (no CLIP/DINO filtering).")
@click.option("--clip-model", default=None, help="CLIP model for filtering [openai/clip-vit-large-patch14].")
@click.option("--dino-model", default=None, help="DINO model for filtering [facebook/dino-vitb8].")
@click.option("--min-directional", type=float, default=0.2, show_default=True, help="Keep pairs with CLIP "
              "directional similarity at least this.")
@click.option("--max-structure", type=float, default=0.1, show_default=True, help="Keep pairs with structure "
              "distance at most this.")
@click.option("--min-iou", type=float, default=0.5, show_default=True, help="Shapes model: keep pairs whose "
              "object masks overlap at least this much (the parser judges the pairs instead of CLIP/DINO).")
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@engine_options
@json_option
@pass_state
def distill_pairs(state, ref, images_dir, synthetic, prompt, out_dir, size, steps, batch, model, captioner, caption,
                  no_filter, clip_model, dino_model, min_directional, max_structure, min_iou, device, engine, as_json):
    """Let the diffusion editor (the teacher) edit sources and write source/edit pairs (resumable).

    \b
    Examples:
      p2pz distill pairs cat-to-dog --images cats/ --out cat-to-dog-pairs
      p2pz distill pairs cat-to-dog --images cats/ --caption "a photo of a cat" --out pairs
      p2pz distill pairs cat-to-dog --synthetic 200 --prompt "a photo of a cat" --out pairs --no-filter
      p2pz distill pairs cat-to-dog --synthetic 15000 --out pairs --engine ray --workers 8 --gpus-per-worker 1
      p2pz distill pairs circle-to-square --images circles/ --model p2pz/shapes --size 64 --out pairs

    On the shapes model (p2pz/shapes) the world's parser filters the pairs: kept when the edit reads the target,
    the other attributes read as before and the object masks overlap (--min-iou); CLIP and DINO are not used.

    A rerun reuses the pairs made and applies its own filter (or --no-filter) to all of them, scoring those
    made unfiltered. With --engine ray the teacher (and the filter's CLIP/DINO models) load once per worker; a
    worker that cannot load the filter's models fails its pairs (reported) instead of keeping them unfiltered.
    """
    from p2pz.editor.batch import expand_inputs  # lazy: PIL
    from p2pz.editor.config import EditConfig, InversionConfig  # lazy: start-up
    from p2pz.editor.student.pairs import PairFilter  # lazy: torch

    from p2pz.registry.analysis.evaluations import concepts  # lazy: sqlalchemy
    from p2pz.registry.library.editing import EditorOptions  # lazy: PIL
    from p2pz.registry.library.pairs import PairsSetup, distill_pairs as make_dataset  # lazy: torch

    d = state.registry().get(ref, model)
    source, target = concepts(d)
    options = EditorOptions(device=device, captioner=captioner, progress=state.progress)
    setup = PairsSetup(direction=d, model=model, options=options, source_concept=source, target_concept=target,
                       filter=not no_filter, clip_model=clip_model, dino_model=dino_model, prompt=prompt or "",
                       size=size, inversion=InversionConfig(steps=steps), edit=EditConfig(steps=steps),
                       caption=caption)
    manifest = make_dataset(engine, setup, Path(out_dir), images=expand_inputs([images_dir]) if images_dir else [],
                            synthetic=synthetic, pair_filter=PairFilter(min_directional, max_structure, min_iou),
                            batch=batch, progress=state.progress,
                            warn=lambda m: click.echo(f"warning: {m}", err=True),
                            info=lambda m: click.echo(m, err=True))
    _pairs_summary(manifest, out_dir, d, as_json)


def _pairs_summary(manifest: dict, out_dir: str, d, as_json: bool) -> None:
    for line in manifest.get("failed", []):
        click.echo(f"error: {line}", err=True)
    if manifest.get("unscored"):
        click.echo(f"warning: {manifest['unscored']} pairs made without the filter are left out unscored (the Ray "
                   "workers score only new pairs); rerun without --engine ray to score them, or pass --no-filter",
                   err=True)
    kept = sum(p["kept"] for p in manifest["pairs"])
    if as_json:
        echo_json({"dataset": out_dir, "pairs": len(manifest["pairs"]), "kept": kept, "filter": manifest["filter"]})
    else:
        click.echo(f"{out_dir}: {len(manifest['pairs'])} pairs of {d.ref}, {kept} kept")
    if manifest.get("failed"):
        raise P2PZError(f"{len(manifest['failed'])} pairs failed; run again to retry them")


@distill.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, "
              "samples.png, losses.png).")
@click.option("--steps", type=click.IntRange(1), default=None, help="Training steps [2000; on --resume: the "
              "checkpoint's].")
@click.option("--batch", type=click.IntRange(1), default=None, help="Pairs per step [8].")
@click.option("--size", type=click.IntRange(16, 2048), default=None, help="Training size [the dataset's].")
@click.option("--width", type=click.IntRange(1), default=None, help="Generator and discriminator width (ngf) "
              "[size/4, between 8 and 64: 64 at 256 px, 16 at 64 px].")
@click.option("--depth", type=click.IntRange(1, 10), default=None, help="U-Net levels [log2(size), at most 8].")
@click.option("--held-out", type=click.FloatRange(0, 0.9), default=None, help="Share of pairs held out [0.1].")
@click.option("--no-augment", is_flag=True, default=None, help="Train without pix2pix's random jitter and "
              "mirroring of the pairs.")
@click.option("--checkpoint-every", type=click.IntRange(0), default=200, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run folder's checkpoint (with the settings it holds).")
@click.option("--force", is_flag=True, help="Start a new run even though the run folder holds a checkpoint "
              "(it is replaced).")
@click.option("--seed", type=int, default=None, help="Seed of the weights and the batches [0].")
@click.option("--lpips-weights", type=click.Path(dir_okay=False), default=None,
              help="Add an LPIPS term to the generator's loss: a torchvision-layout AlexNet state dict.")
@click.option("--lambda-lpips", type=click.FloatRange(0), default=None,
              help="Weight of the LPIPS term (with --lpips-weights) [10].")
@click.option("--dino-model", default=None, help="DINO ViT for the held-out structure distance (hub id or folder).")
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="bf16: mixed precision (bfloat16 autocast; auto picks it on CUDA, float32 on the CPU).")
@json_option
@pass_state
def distill_train(state, dataset, out_dir, steps, batch, size, width, depth, held_out, no_augment, checkpoint_every,
                  resume, force, seed, lpips_weights, lambda_lpips, dino_model, device, precision, as_json):
    """Train a student on a pairs dataset and store it with its direction version.

    Ctrl-C finishes the step under way, checkpoints it and says how to resume; --resume continues exactly (the
    same weights as an uninterrupted run) and refuses options other than the checkpoint holds.

    \b
    Examples:
      p2pz distill train cat-to-dog-pairs --out runs/cat-to-dog --steps 2000
      p2pz distill train cat-to-dog-pairs --out runs/cat-to-dog --resume
    """
    from p2pz.editor.student import parameter_count, weights_bytes  # lazy: torch
    from p2pz.editor.student.train import TrainingInterrupted, train_dataset  # lazy: torch

    if resume and force:
        raise P2PZError("--resume continues the checkpoint and --force replaces it; pass one of them")
    lpips = None
    if lpips_weights:
        from p2pz.editor.metrics import LPIPS  # lazy: torch

        lpips = LPIPS.from_weights(lpips_weights)
    options = _train_options(size, width, depth, batch, seed, resume, no_augment, lpips is not None, lambda_lpips)
    structure = None
    if dino_model:
        from p2pz.editor.metrics import StructureDistance  # lazy: torch

        structure = StructureDistance.from_pretrained(dino_model)
    try:
        result = train_dataset(Path(dataset), Path(out_dir), None, steps, options=options, held_out=held_out,
                               resume=resume, force=force, checkpoint_every=checkpoint_every,
                               progress=state.progress, lpips=lpips, device=resolve_device(device),
                               precision=precision, structure=structure)
    except TrainingInterrupted as stop:
        again = f"p2pz distill train {shlex.quote(dataset)} --out {shlex.quote(out_dir)} --resume"
        if stop.saved_step is None:
            click.echo("interrupted: no checkpoint was saved; run again without --resume", err=True)
        else:
            click.echo(f"interrupted: checkpoint saved at step {stop.saved_step} of {stop.total_steps} in "
                       f"{out_dir}; resume with: {again}", err=True)
        raise SystemExit(130) from None
    trainer = result["trainer"]
    record = state.registry().store_student(
        result["direction"], config=trainer.cfg.to_dict(), weights=weights_bytes(trainer.generator),
        dataset_sha256=result["dataset_sha256"], metrics=result["metrics"],
        params={"steps": trainer.step, "train_pairs": result["train_pairs"], "held_out": result["held_out"],
                "precision": result["precision"], "parameters": parameter_count(trainer.generator),
                "run": str(Path(out_dir).resolve())})
    _trained_summary(record, trainer, result, as_json)


def _train_options(size, width, depth, batch, seed, resume: bool, no_augment: bool, lpips: bool,
                   lambda_lpips) -> dict:
    """The student's configuration the flags set (only those given: a resumed run keeps its own)."""
    options = {k: v for k, v in {"size": size, "base_channels": width, "depth": depth, "batch": batch,
                                 "seed": seed}.items() if v is not None}
    if width is not None and not resume:
        options["disc_channels"] = width
    if no_augment:
        options.update(jitter=0.0, mirror=False)
    if lpips and (lambda_lpips is not None or not resume):
        options["lambda_lpips"] = 10.0 if lambda_lpips is None else lambda_lpips
    elif lambda_lpips is not None:
        raise P2PZError("--lambda-lpips weighs the LPIPS term: pass --lpips-weights FILE too")
    return options


def _trained_summary(record, trainer, result: dict, as_json: bool) -> None:
    if as_json:
        echo_json(record.to_dict())
    else:
        m = result["metrics"]
        click.echo(f"{record.ref}: {trainer.step} steps on {result['train_pairs']} pairs"
                   + (f"; held-out L1 {m['l1']:.4f} (identity {m['identity_l1']:.4f}), PSNR {m['psnr']:.2f} dB"
                      if m else ""))


@main.group(cls=P2PZGroup)
def student():
    """Trained students: list, show, deprecate, undeprecate.

    \b
    Examples:
      p2pz student show cat-to-dog
      p2pz student deprecate cat-to-dog@1 --version 2
    """


@student.command("list")
@json_option
@pass_state
def student_list(state, as_json):
    """Every stored student.

    \b
    Example:
      p2pz student list --json
    """
    records = state.registry().students()
    if as_json:
        echo_json([r.to_dict() for r in records])
    else:
        echo_table([[r.direction, r.version, f"{r.config.get('size', '?')} px", _count(r.parameters),
                     _megabytes(r.weights_bytes), _rounded(r.metrics.get("l1"), 4), _rounded(r.metrics.get("psnr"), 2),
                     "deprecated" if r.deprecated else "", r.weights_sha256[:12]]
                    for r in records], ["direction", "student", "size", "parameters", "weights", "held-out L1",
                                        "PSNR dB", "status", "sha256"])


def _rounded(value, digits: int) -> str | None:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 1e6:.1f} M" if n >= 100_000 else f"{n / 1e3:.1f} k" if n >= 1000 else str(n)


def _megabytes(n: int | None) -> str | None:
    return None if n is None else f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@student.command("show")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--version", type=VERSION, default=None, help="Student version [latest].")
@json_option
@pass_state
def student_show(state, ref, version, as_json):
    """One student: configuration, dataset, training and held-out metrics.

    \b
    Example:
      p2pz student show cat-to-dog@1 --version 2
    """
    record = state.registry().student(ref, version, with_weights=False)
    if as_json:
        echo_json(record.to_dict())
        return
    for k, v in record.to_dict().items():
        click.echo(f"{k:<16}{v}")


def _set_deprecated(state, ref, version, deprecated: bool, as_json: bool) -> None:
    reg = state.registry()
    record = reg.deprecate_student(ref, version) if deprecated else reg.undeprecate_student(ref, version)
    if as_json:
        echo_json(record.to_dict())
    else:
        click.echo(f"{record.ref}: {'deprecated' if deprecated else 'no longer deprecated'}")


@student.command("deprecate")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--version", type=VERSION, default=None, help="The student's version (see p2pz student "
              "list).")
@json_option
@pass_state
def student_deprecate(state, ref, version, as_json):
    """Withdraw a student: edit --student and Student.load without a version then use the latest other one
    (the record stays; undo with p2pz student undeprecate).

    \b
    Example:
      p2pz student deprecate cat-to-dog@1 --version 2
    """
    _set_deprecated(state, ref, version, True, as_json)


@student.command("undeprecate")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--version", type=VERSION, default=None, help="The student's version (see p2pz student "
              "list).")
@json_option
@pass_state
def student_undeprecate(state, ref, version, as_json):
    """Undo p2pz student deprecate.

    \b
    Example:
      p2pz student undeprecate cat-to-dog@1 --version 2
    """
    _set_deprecated(state, ref, version, False, as_json)
