"""``p2pz db``, ``p2pz index``, ``p2pz dev`` and ``p2pz demo``: maintenance and the offline demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import P2PZError, P2PZGroup, State, echo_json, echo_table, json_option, main, pass_state


@main.group(cls=P2PZGroup)
def db():
    """Database maintenance.

    \b
    Example:
      p2pz db upgrade
    """


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_state
def db_upgrade(state, revision):
    """Upgrade the registry schema (Alembic). New databases are upgraded automatically on first use.

    \b
    Example:
      p2pz --db sqlite:///team.db db upgrade
    """
    from p2pz.migrations import current_revision, upgrade  # lazy: sqlalchemy
    from p2pz.store.db import make_engine  # lazy: sqlalchemy
    from p2pz.store.paths import default_db_url  # lazy: start-up

    engine = make_engine(state.db or default_db_url())
    before = current_revision(engine)
    upgrade(engine, revision)
    click.echo(f"schema {before or 'empty'} → {current_revision(engine)}")


@db.command("check")
@click.option("--repair", is_flag=True, help="Remove what is broken (with its students and evaluations); banks "
              "and every other record stay.")
@json_option
@pass_state
def db_check(state, repair, as_json):
    """Find records whose stored tensors disagree with their encoder: a search key of the wrong width, an
    embedding of the wrong shape (the wrong max_length or D), a direction built on one. An import that re-declared
    a stored encoder (before p2pz refused it) left such records behind; search, export and edits of that encoder
    then fail. The encoder is the reference (it never changes once stored); exit status 1 when something is
    broken and --repair was not given.

    \b
    Examples:
      p2pz db check
      p2pz db check --repair
    """
    out = state.registry().check(repair)
    problems = out["problems"]
    if as_json:
        echo_json(out)
    else:
        verb = "removed" if repair else "broken"
        for p in problems:
            click.echo(f"{verb}: {p['kind']} {p['ref']} (encoder {p['encoder'][:12]}): {p['why']}")
        if not problems:
            click.echo("ok: every embedding and direction matches its encoder")
        elif repair:
            r = out["removed"]
            click.echo(f"repaired: removed {r['directions']} direction(s), {r['embeddings']} embedding(s), "
                       f"{r['students']} student(s), {r['evaluations']} evaluation(s); banks kept")
        else:
            click.echo(f"{len(problems)} broken record(s); `p2pz db check --repair` removes them", err=True)
    if problems and not repair:
        sys.exit(1)


@main.group(cls=P2PZGroup)
def index():
    """Search index maintenance.

    \b
    Example:
      p2pz index rebuild
    """


@index.command("rebuild")
@click.option("--kind", type=click.Choice(["auto", "exact", "ivf-sq8", "hnsw"]), default=None,
              help="Index kind, remembered for later rebuilds [default: the last one asked for, else auto: exact "
              "below 50k keys, ivf-sq8 above]. Approximate kinds re-rank their candidates exactly.")
@json_option
@pass_state
def index_rebuild(state, kind, as_json):
    """Rebuild every FAISS index from the database (never needed for correctness: stale indexes rebuild).

    \b
    Examples:
      p2pz index rebuild
      p2pz index rebuild --kind ivf-sq8
    """
    built = state.registry().rebuild_index(kind)
    if as_json:
        echo_json(built)
        return
    for fp, info in built.items():
        params = ", ".join(f"{k} {v}" for k, v in info["params"].items())
        click.echo(f"encoder {fp[:12]}: {info['size']} directions indexed, {info['kind']}"
                   + (f" ({params})" if params else "") + (f", asked {info['requested']}"
                                                            if info["requested"] != info["kind"] else ""))


@index.command("bench")
@click.option("--queries", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@json_option
@pass_state
def index_bench(state, queries, k, as_json):
    """Recall@k of each search index against exact search on this registry's own keys, and p50/p99 latency.

    \b
    Example:
      p2pz index bench --queries 500
    """
    out = state.registry().index_bench(queries, k)
    if as_json:
        echo_json(out)
        return
    rows = [[fp[:12], info["kind"], info["size"], f"{info['recall_at_k']:.4f}",
             f"{info['p50_ms']:.2f} / {info['p99_ms']:.2f}", f"{info['exact_p50_ms']:.2f} / {info['exact_p99_ms']:.2f}"]
            for fp, info in out.items()]
    echo_table(rows, ["encoder", "kind", "keys", f"recall@{k}", "p50 / p99 ms", "exact p50 / p99 ms"])


@main.group(cls=P2PZGroup)
def cache():
    """The cache folder ($P2PZ_HOME/cache): sizes by kind, clearing. Capped at $P2PZ_CACHE_MAX_GB (default 20).

    \b
    Example:
      p2pz cache info
    """


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@cache.command("info")
@json_option
def cache_info(as_json):
    """Entries and bytes per kind (maps, inversions, encodings, llm, exports), and the cap.

    \b
    Example:
      p2pz cache info --json
    """
    from p2pz.store import cache as store_cache  # lazy: sqlalchemy
    from p2pz.store.paths import cache_dir  # lazy: start-up

    usage = store_cache.usage(cache_dir())
    limit = store_cache.max_bytes()
    if as_json:
        echo_json({"path": str(cache_dir()), "kinds": usage, "total_bytes": sum(u["bytes"] for u in usage.values()),
                   "max_bytes": limit})
        return
    echo_table([[kind, u["entries"], _human(u["bytes"])] for kind, u in usage.items()], ["kind", "entries", "size"])
    total = sum(u["bytes"] for u in usage.values())
    click.echo(f"total {_human(total)} of {_human(limit)} ($P2PZ_CACHE_MAX_GB) in {cache_dir()}")


@cache.command("clear")
@click.option("--kind", type=click.Choice(["maps", "inversions", "encodings", "llm", "exports"]), default=None,
              help="Only this kind (default: all).")
@json_option
def cache_clear(kind, as_json):
    """Delete cached entries (nothing is lost but the time to recompute them; LLM replies cost requests).

    \b
    Example:
      p2pz cache clear --kind maps
    """
    from p2pz.store import cache as store_cache  # lazy: sqlalchemy
    from p2pz.store.paths import cache_dir  # lazy: start-up

    gone = store_cache.clear(cache_dir(), kind)
    if as_json:
        echo_json(gone)
    else:
        click.echo(f"removed {gone['entries']} entries ({_human(gone['bytes'])}) from {kind or 'every kind'}")


@main.group(cls=P2PZGroup)
def dev():
    """Developer tools.

    \b
    Example:
      p2pz dev tiny-model ./tiny-sd
      p2pz dev shapes-model ./shapes-sd
    """


@dev.command("tiny-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--vocab", type=click.Choice(["auto", "clip", "trained"]), default="auto", show_default=True,
              help="Real CLIP BPE (fetched once) or a small trained BPE.")
@click.option("--family", type=click.Choice(["sd", "sdxl"]), default="sd", show_default=True,
              help="sd: SD 1.x layout; sdxl: SDXL's (two text encoders, added conditioning).")
@click.option("--v-prediction", is_flag=True, help="An SD-2.x-like v-prediction snapshot (--family sd).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty folder.")
def dev_tiny_model(folder, vocab, family, v_prediction, seed, force):
    """Write a tiny RANDOM-WEIGHT Stable Diffusion snapshot to FOLDER (tests, demo, offline checks).

    \b
    Examples:
      p2pz dev tiny-model ./tiny-sd && p2pz direction build cat dog --model ./tiny-sd
      p2pz dev tiny-model --family sdxl ./tiny-sdxl && p2pz direction build cat@1 dog@1 --model ./tiny-sdxl
    """
    from p2pz.editor.tiny import RANDOM_WEIGHTS_NOTICE, build_tiny_model  # lazy: start-up

    if v_prediction and family == "sdxl":
        raise click.UsageError("--v-prediction is for --family sd (SDXL base predicts ε)")
    info = build_tiny_model(folder, seed=seed, vocab=vocab, overwrite=force, family=family,
                            prediction_type="v_prediction" if v_prediction else "epsilon")
    pooled = f", pooled {info['pooled_size']}" if family == "sdxl" else ""
    click.echo(f"wrote {info['path']} ({family}; vocabulary: {info['vocab']}, {info['vocab_size']} tokens, "
               f"D={info['hidden_size']}{pooled})")
    click.echo(f"WARNING: {RANDOM_WEIGHTS_NOTICE}", err=True)


@dev.command("shapes-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Write into a non-empty folder.")
def dev_shapes_model(folder, force):
    """Write the trained shapes-world model (a complete SD-layout snapshot, text encoder included) to FOLDER.

    The same model ``--model p2pz/shapes`` loads: a small text-to-image model p2pz trained on its synthetic
    shapes world (64 px), not Stable Diffusion.

    \b
    Example:
      p2pz dev shapes-model ./shapes-sd && python -c "from diffusers import StableDiffusionPipeline; \\
        StableDiffusionPipeline.from_pretrained('./shapes-sd')"
    """
    from p2pz.editor.shapes.model import LABEL, ShapesModelError, write_snapshot  # lazy: start-up

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise P2PZError(f"{folder} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise P2PZError(f"{folder} is not empty; pass --force to write into it")
    try:
        write_snapshot(out)
    except ShapesModelError as exc:
        raise P2PZError(str(exc)) from None
    click.echo(f"wrote {out} — {LABEL}")


@dev.command("train-shapes")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1), default=None, help="UNet training steps [default: 6000].")
@click.option("--vae-steps", type=click.IntRange(1), default=None, help="VAE training steps [default: 1000].")
@click.option("--pool", type=click.IntRange(64), default=None, help="Training images encoded once [default: 8192].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run checkpointed in OUT (same options).")
@click.option("--force", is_flag=True, help="Start again, replacing the run in OUT.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads [default: all cores].")
@click.option("--captions", type=click.Choice(["plain", "varied"]), default="plain", show_default=True,
              help="Training text: the world's own caption of each image, or varied phrasings of it in many "
              "sentence frames (closer to real prompts and sentence banks).")
@click.option("--caption-variants", type=click.IntRange(1), default=1, show_default=True,
              help="Captions encoded per training image with --captions varied (the world's own + N−1 varied).")
@pass_state
def dev_train_shapes(state: State, out, steps, vae_steps, pool, seed, resume, force, threads, captions,
                     caption_variants):
    """Train the shapes model from scratch into OUT (VAE, then UNet; resumable, deterministic for a seed).

    Stop it at any moment (Ctrl-C or SIGTERM): the step under way finishes and is checkpointed; --resume
    continues to the same weights. OUT then holds unet/, vae/, scheduler/, manifest.json and loss.png; copy
    those into editor/shapes/weights/ to ship them. About 1 h on 2 CPU cores with the defaults.

    \b
    Example:
      p2pz dev train-shapes ./shapes-run --steps 6000
      p2pz dev train-shapes ./shapes-run --resume
      p2pz dev train-shapes ./shapes-varied --captions varied --caption-variants 4
    """
    import torch  # lazy: torch

    from p2pz.editor.shapes.model import ShapesModelError  # lazy: start-up
    from p2pz.editor.shapes.train import ShapesTrainingError, Stopped, TrainConfig, train  # lazy: torch

    if resume and force:
        raise P2PZError("--resume and --force contradict each other; pass one")
    if threads:
        torch.set_num_threads(threads)
    if caption_variants > 1 and captions != "varied":
        raise P2PZError(f"--caption-variants {caption_variants} needs --captions varied (plain training has one "
                        "caption per image)")
    given = {"unet_steps": steps, "vae_steps": vae_steps, "pool": pool}
    try:
        cfg = TrainConfig(seed=seed, captions=captions, caption_variants=caption_variants,
                          **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise P2PZError(str(exc)) from None
    command = "p2pz dev train-shapes " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else [out])
    try:
        train(Path(out), cfg, resume=resume, force=force, progress=state.progress, command=command)
    except Stopped as stop:
        click.echo(f"stopped after {stop.stage} step {stop.step}; checkpoint in {out}. Continue with: "
                   f"p2pz dev train-shapes {out} --resume (and the same options)", err=True)
        raise SystemExit(130) from None
    except (ShapesTrainingError, ShapesModelError) as exc:
        raise P2PZError(str(exc)) from None
    click.echo(f"trained the shapes model into {out} (manifest.json, loss.png)")


@main.command("demo")
@click.option("--model", help="Another model (SD hub id or folder, or a `p2pz dev tiny-model` folder); default: "
              "p2pz/shapes, the shapes-world model p2pz trained itself.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="p2pz-demo", show_default=True,
              help="Working folder (its own registry and outputs).")
@click.option("-n", "n", type=click.IntRange(10, 100_000), default=None,
              help="Sentences per bank [default: 100 on the shapes model, else 1000].")
@click.option("--steps", type=click.IntRange(2, 1000), default=None,
              help="DDIM steps of the sample edit [default: 50 on the shapes model, else 10].")
@click.option("--no-edit", is_flag=True, help="Skip the image edit.")
@click.pass_context
def demo(ctx, model, out, n, steps, no_edit):
    """Run p2pz offline: banks, directions, list, search, combine, export, import, and image edits.

    On the shapes model (the default) the edits are real: a held-out image of a red circle in a day sky is
    inverted and edited circle→square, red→blue and day→night, and a before/after grid is written.

    \b
    Example:
      p2pz demo --out demo-out
      p2pz dev tiny-model ./tiny-sd && p2pz demo --model ./tiny-sd   # the random-weight plumbing model
    """
    from ..demo import run_demo  # lazy: numpy

    state = ctx.find_object(State)
    run_demo(Path(out), model=model, n=n, db=state.db, progress=state.progress, echo=click.echo, edit_steps=steps,
             do_edit=not no_edit)
