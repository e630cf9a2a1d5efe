"""``p2pz edit`` and ``p2pz generate``: apply stored directions to images (pix2pix-zero)."""

from __future__ import annotations

from pathlib import Path

import click

from p2pz.editor.devices import resolve_device

from . import P2PZError, echo_json, engine_options, folded, json_option, main, pass_state


LOADING = ("device", "dtype", "no_safety_checker", "no_cache", "cache_maps")  # folded into ``loading``


def _editing_options(f):
    f = folded("loading", LOADING)(f)
    for opt in reversed([
        click.option("--direction", "directions", multiple=True, required=True, metavar="NAME[@V]",
                     help="Direction to apply (repeatable: one inversion serves them all)."),
        click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplier of Δ."),
        click.option("--model", help="SD model (default: the model the direction was built with; $P2PZ_MODEL does not "
                     "override it)."),
        click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True, help="DDIM steps."),
        click.option("--guidance-scale", type=float, default=5.0, show_default=True, help="CFG scale (> 1)."),
        click.option("--xa-layers", type=click.Choice(["all", "high", "low"]), default="all", show_default=True,
                     help="Cross-attention layers that guide: all, high (the highest resolution's: SDXL's 10 at "
                     "64² of 1024 px) or low (the rest: SDXL's 60 at 32²). The loss is normalised by the count."),
        click.option("--delta-at", type=click.Choice(["auto", "all", "word", "word+pad"]), default="auto",
                     show_default=True,
                     help="Where the direction is added to the caption's embedding: all (Δ at every position, the "
                     "paper), word (Δ_token only at the caption's source-word tokens: the background moves less), "
                     "word+pad (that and Δ's padding rows) or auto (word for colours and scenes, all for objects "
                     "and styles: what the shapes ablation measured best). A caption without the word is edited "
                     "with all, with a note. E.g. --delta-at all for the paper's method. See docs/algorithm.md §13."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--out", "out_dir", type=click.Path(file_okay=False), default="p2pz-out", show_default=True),
        click.option("--device", help="cpu or cuda (default: cuda when available)."),
        click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
                     show_default=True),
        click.option("--force", is_flag=True, help="Overwrite existing outputs."),
        click.option("--no-safety-checker", is_flag=True, help="Do not run the model's safety checker."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the disk cache (inversions, maps)."),
        click.option("--cache-maps", is_flag=True, help="Keep the reference attention maps on disk (float16, "
                     "≈ 3.3 GB per image at SD defaults) so later directions on the same image skip the reference "
                     "pass; counted in $P2PZ_CACHE_MAX_GB."),
        json_option,
    ]):
        f = opt(f)
    return f


def _editor_options(state, loading: dict, **more):
    """The editor's loading flags (``--device``, ``--dtype``, ``--no-safety-checker``, ``--no-cache``,
    ``--cache-maps``) → :class:`registry.library.editing.EditorOptions`; a device this machine lacks is refused
    before anything loads."""
    from p2pz.registry.library.editing import EditorOptions  # lazy: PIL

    if loading.get("no_cache") and loading.get("cache_maps"):
        raise click.UsageError("--cache-maps needs the cache; drop --no-cache")
    device = loading.get("device")
    return EditorOptions(device=resolve_device(device) if device else None, dtype=loading.get("dtype"),
                         safety_checker=not loading.get("no_safety_checker"), cache=not loading.get("no_cache"),
                         cache_maps=bool(loading.get("cache_maps")), progress=state.progress, **more)


def _notes(image: str | None, notes: list[str]) -> None:
    """An edit's notes (what it did otherwise than asked, e.g. a ``--delta-at word`` fallback): one line each on
    stderr, even with -q and --json."""
    for note in notes:
        click.echo(f"note: {image}: {note}" if image else f"note: {note}", err=True)


def _report(state):
    """How ``p2pz edit`` tells each image's outcome (stderr; stdout stays for --json)."""
    def report(o):
        for note in o.warnings:
            click.echo(f"warning: {note}", err=True)
        _notes(o.image, o.notes)
        if o.skipped:
            state.info(f"{o.image}: skipped, its outputs exist")
        elif o.ok:
            state.info(f"{o.image}: {', '.join(o.outputs)}" + (" (inversion cached)" if o.inversion_cached else ""))
        else:
            click.echo(f"error: {o.image}: {o.error}", err=True)
        for flagged in o.nsfw:
            click.echo(f"warning: the safety checker blanked {flagged}; --no-safety-checker turns it off", err=True)
    return report


@main.command("edit")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE|DIR|GLOB...")
@_editing_options
@click.option("--caption", help="Use this caption instead of BLIP's.")
@click.option("--captioner", default=None, help="BLIP model, hub id or folder [default: the model snapshot's own "
              "captioner/ folder when it ships one, else Salesforce/blip-image-captioning-base].")
@click.option("--xa-guidance", type=click.FloatRange(0), default=None,
              help="Cross-attention guidance step size [0.1; 0.01 for v-prediction models such as SD 2.x].")
@click.option("--size", type=click.IntRange(16, 4096), default=None,
              help="Image side in pixels (default: the model's own: 512 for SD 1.x, 1024 for SDXL).")
@click.option("--keep-aspect", is_flag=True, help="Keep the aspect ratio (longer side = --size or the model's).")
@click.option("--schedule", type=click.Choice(["symmetric", "reference"]), default="symmetric", show_default=True,
              help="Inversion schedule.")
@click.option("--save-reconstruction", is_flag=True, help="Also write the reconstruction.")
@click.option("--student", "student", is_flag=False, flag_value="latest", default=None, metavar="[@V]",
              help="Apply each direction's trained student instead of the diffusion editor (milliseconds; see p2pz "
                   "distill): the latest one, or --student @V for version V.")
@click.option("--maps-fp16", is_flag=True, help="Hold the current timestep's reference maps in float16 in memory "
              "(half the memory; results change slightly).")
@click.option("--skip-existing", is_flag=True, help="Skip images whose outputs all exist (rerun an interrupted "
              "batch) instead of refusing them.")
@click.option("--record-source-path", is_flag=True, help="Record the input's absolute path in each output's "
              "provenance (by default: the path as given when relative, else the file name alone).")
@engine_options
@pass_state
def edit(state, images, directions, scale, model, steps, guidance_scale, xa_layers, delta_at, seed, out_dir, force,
         as_json, loading, caption, captioner, xa_guidance, size, keep_aspect, schedule, save_reconstruction, student,
         maps_fp16, skip_existing, record_source_path, engine):
    """Apply stored directions to real images with pix2pix-zero.

    Writes OUT/<name>__<direction>@<version>.png with the full provenance in a PNG text chunk; <name> is the
    input's file name, without its extension when that is .png (cat.png → cat__…, cat.jpg → cat.jpg__…).

    \b
    Examples:
      p2pz edit cat.png --direction cat-to-dog
      p2pz edit photos/ --direction cat-to-dog --direction cat-to-lion@2 --out edits
      p2pz edit "shots/*.jpg" --direction day-to-night --caption "a street" --steps 100
      p2pz edit photos/ --direction cat-to-dog --engine ray --workers 4 --gpus-per-worker 1
      p2pz edit cat.png --direction cat-to-dog-sdxl --model stabilityai/stable-diffusion-xl-base-1.0 --size 768
      p2pz edit cat.png --direction cat-to-dog --delta-at word
    """
    from p2pz.editor.batch import expand_inputs  # lazy: PIL
    from p2pz.editor.config import EditConfig, InversionConfig  # lazy: start-up

    from p2pz.registry.library.editing import EditRequest, run_edits  # lazy: PIL

    options = _editor_options(state, loading, map_dtype="float16" if maps_fp16 else "float32", captioner=captioner)
    request = EditRequest(
        directions=tuple(directions), model=model, options=options, out_dir=str(out_dir), caption=caption,
        inversion=InversionConfig(steps=steps, seed=seed, size=size, keep_aspect=keep_aspect, schedule=schedule),
        edit=EditConfig(scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps,
                        xa_layers=xa_layers, delta_at=delta_at),
        save_reconstruction=save_reconstruction, force=force, skip_existing=skip_existing,
        record_source_path=record_source_path, student=student)
    outcomes = run_edits(state.registry(), engine, request, expand_inputs(list(images)),
                         report=None if as_json else _report(state), info=state.info)
    if as_json:
        for o in outcomes:
            _notes(o.image, o.notes)  # in the JSON too; on stderr for whoever reads the terminal
        echo_json([o.__dict__ for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise P2PZError(f"{len(failed)} of {len(outcomes)} images failed")


@main.command("generate")
@click.argument("prompt")
@_editing_options
@click.option("--xa-guidance", type=click.FloatRange(0), default=None,
              help="Cross-attention guidance step size [0.15 for synthetic images; 0.01 for v-prediction models].")
@click.option("--size", type=click.IntRange(16, 4096), default=None,
              help="Image size (default: the model's: 512 for SD 1.x, 1024 for SDXL).")
@pass_state
def generate(state, prompt, directions, scale, model, steps, guidance_scale, xa_layers, delta_at, seed, out_dir, force,
             as_json, loading, xa_guidance, size):
    """Generate an image from PROMPT (x_T from the seed) and edit it with stored directions.

    \b
    Example:
      p2pz generate "a cat sitting on a sofa" --direction cat-to-dog --seed 3
    """
    from p2pz.editor.batch import generate_files  # lazy: PIL
    from p2pz.editor.config import EditConfig  # lazy: start-up

    edit_cfg = EditConfig(scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps,
                          xa_layers=xa_layers, delta_at=delta_at)
    from p2pz.registry.library.editing import check_delta_at, choose_model, open_editor  # lazy: PIL

    dirs = [state.registry().get(ref, model) for ref in directions]
    check_delta_at(dirs, edit_cfg)
    options = _editor_options(state, loading)
    state.info(f"loading {choose_model(dirs, model) or 'the default model'} …")
    ed = open_editor(dirs, model, **options.kwargs())
    out = generate_files(ed, prompt, dirs, Path(out_dir), seed=seed, size=size, steps=steps, edit=edit_cfg,
                         force=force)
    for flagged in out.nsfw:
        click.echo(f"warning: the safety checker blanked {flagged}; --no-safety-checker turns it off", err=True)
    _notes(None, out.notes)
    if as_json:
        echo_json({"generated": out.generated, "edits": out.edits, "notes": out.notes})
    else:
        click.echo(f"wrote {out.generated} and {', '.join(out.edits)}")
