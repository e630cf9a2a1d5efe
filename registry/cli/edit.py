"""``p2pz edit`` and ``p2pz generate``: apply stored directions to images (pix2pix-zero)."""

from __future__ import annotations

from pathlib import Path

import click

from . import P2PZError, echo_json, engine_options, json_option, main, make_engine, pass_state


def _editing_options(f):
    for opt in reversed([
        click.option("--direction", "directions", multiple=True, required=True, metavar="NAME[@V]",
                     help="Direction to apply (repeatable: one inversion serves them all)."),
        click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplier of Δ."),
        click.option("--model", help="SD model (default: the model the direction was built with; $P2PZ_MODEL does not "
                     "override it)."),
        click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True, help="DDIM steps."),
        click.option("--guidance-scale", type=float, default=5.0, show_default=True, help="CFG scale (> 1)."),
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


def _open_editor(state, model, directions, device, dtype, no_safety_checker, no_cache, cache_maps, **kwargs):
    from registry.library.editing import choose_model, open_editor

    if no_cache and cache_maps:
        raise click.UsageError("--cache-maps needs the cache; drop --no-cache")
    state.info(f"loading {choose_model(directions, model) or 'the default model'} …")
    return open_editor(directions, model, device=device, dtype=dtype, safety_checker=not no_safety_checker,
                       progress=state.progress, cache=not no_cache, cache_maps=cache_maps, **kwargs)


@main.command("edit")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE|DIR|GLOB...")
@_editing_options
@click.option("--caption", help="Use this caption instead of BLIP's.")
@click.option("--captioner", default=None, help="BLIP model, hub id or folder [default: the model snapshot's own "
              "captioner/ folder when it ships one, else Salesforce/blip-image-captioning-base].")
@click.option("--xa-guidance", type=click.FloatRange(0), default=None,
              help="Cross-attention guidance step size [0.1; 0.01 for v-prediction models such as SD 2.x].")
@click.option("--keep-aspect", is_flag=True, help="Keep the aspect ratio (longer side = model size).")
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
def edit(state, images, directions, scale, model, steps, guidance_scale, seed, out_dir, device, dtype, force,
         no_safety_checker, no_cache, cache_maps, as_json, caption, captioner, xa_guidance, keep_aspect, schedule,
         save_reconstruction, student, maps_fp16, skip_existing, record_source_path, engine, address, workers,
         gpus_per_worker):
    """Apply stored directions to real images with pix2pix-zero.

    Writes OUT/<name>__<direction>@<version>.png with the full provenance in a PNG text chunk; <name> is the
    input's file name, without its extension when that is .png (cat.png → cat__…, cat.jpg → cat.jpg__…).

    \b
    Examples:
      p2pz edit cat.png --direction cat-to-dog
      p2pz edit photos/ --direction cat-to-dog --direction cat-to-lion@2 --out edits
      p2pz edit "shots/*.jpg" --direction day-to-night --caption "a street" --steps 100
      p2pz edit photos/ --direction cat-to-dog --engine ray --workers 4 --gpus-per-worker 1
    """
    from editor.batch import expand_inputs

    from editor.config import EditConfig, InversionConfig

    from registry.library.editing import EditorOptions, EditSetup, edit_many

    inversion = InversionConfig(steps=steps, seed=seed, keep_aspect=keep_aspect, schedule=schedule)
    edit_cfg = EditConfig(scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps)
    dirs = [state.registry().get(ref) for ref in directions]
    paths = expand_inputs(list(images))
    if device:
        from editor.loader import resolve_device

        device = resolve_device(device)  # a device this machine lacks is refused before anything is loaded
    eng = make_engine(engine, address, workers, gpus_per_worker)
    if student is not None:
        if engine != "local":
            raise P2PZError("--student runs locally (milliseconds per image); drop --engine ray")
        from registry.library.students import parse_choice

        _edit_with_students(state, dirs, paths, Path(out_dir), parse_choice(student), device, force, as_json,
                            record_source_path)
        return
    kwargs = {"map_dtype": "float16" if maps_fp16 else "float32"}
    if captioner is not None:
        kwargs["captioner"] = captioner
    if no_cache and cache_maps:
        raise click.UsageError("--cache-maps needs the cache; drop --no-cache")

    def report(o):
        for note in o.warnings:
            click.echo(f"warning: {note}", err=True)
        if o.skipped:
            state.info(f"{o.image}: skipped, its outputs exist")
        elif o.ok:
            state.info(f"{o.image}: {', '.join(o.outputs)}" + (" (inversion cached)" if o.inversion_cached else ""))
        else:
            click.echo(f"error: {o.image}: {o.error}", err=True)
        for flagged in o.nsfw:
            click.echo(f"warning: the safety checker blanked {flagged}; --no-safety-checker turns it off", err=True)

    options = EditorOptions(device=device, dtype=dtype, safety_checker=not no_safety_checker, cache=not no_cache,
                            cache_maps=cache_maps, progress=state.progress, **kwargs)
    setup = EditSetup(directions=dirs, model=model, options=options, out_dir=str(out_dir), inversion=inversion,
                      edit=edit_cfg, caption=caption, save_reconstruction=save_reconstruction, force=force,
                      skip_existing=skip_existing, record_source_path=record_source_path)
    outcomes = edit_many(eng, setup, paths, progress=state.progress, report=None if as_json else report,
                         info=state.info)
    if as_json:
        echo_json([o.__dict__ for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise P2PZError(f"{len(failed)} of {len(outcomes)} images failed")


def _edit_with_students(state, dirs, paths, out_dir, version, device, force, as_json, record_source_path=False):
    from editor.batch import student_files
    from editor.loader import resolve_device
    from editor.student import Student

    reg = state.registry()
    device = resolve_device(device)
    students = []
    for d in dirs:
        record = reg.student(d.ref, version)
        model = Student.from_weights(record.weights, record.config, record.ref, device)
        students.append((d.ref, model, {"student": record.version, "student_weights_sha256": record.weights_sha256}))
    outcomes = student_files(students, paths, out_dir, force=force, record_source_path=record_source_path,
                             report=None if as_json else (lambda o: state.info(f"{o.image}: {', '.join(o.outputs)}")
                                                          if o.ok else click.echo(f"error: {o.image}: {o.error}",
                                                                                  err=True)))
    if as_json:
        echo_json([o.__dict__ for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise P2PZError(f"{len(failed)} of {len(outcomes)} images failed")


@main.command("generate")
@click.argument("prompt")
@_editing_options
@click.option("--xa-guidance", type=click.FloatRange(0), default=None,
              help="Cross-attention guidance step size [0.15 for synthetic images; 0.01 for v-prediction models].")
@click.option("--size", type=click.IntRange(16, 2048), default=None, help="Image size (default: the model's).")
@pass_state
def generate(state, prompt, directions, scale, model, steps, guidance_scale, seed, out_dir, device, dtype, force,
             no_safety_checker, no_cache, cache_maps, as_json, xa_guidance, size):
    """Generate an image from PROMPT (x_T from the seed) and edit it with stored directions.

    \b
    Example:
      p2pz generate "a cat sitting on a sofa" --direction cat-to-dog --seed 3
    """
    from editor.batch import generate_files
    from editor.config import EditConfig

    edit_cfg = EditConfig(scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps)
    dirs = [state.registry().get(ref) for ref in directions]
    ed = _open_editor(state, model, dirs, device, dtype, no_safety_checker, no_cache, cache_maps)
    out = generate_files(ed, prompt, dirs, Path(out_dir), seed=seed, size=size, steps=steps, edit=edit_cfg,
                         force=force)
    for flagged in out.nsfw:
        click.echo(f"warning: the safety checker blanked {flagged}; --no-safety-checker turns it off", err=True)
    if as_json:
        echo_json({"generated": out.generated, "edits": out.edits})
    else:
        click.echo(f"wrote {out.generated} and {', '.join(out.edits)}")
