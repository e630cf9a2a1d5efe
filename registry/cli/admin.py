"""``p2pz db``, ``p2pz index``, ``p2pz dev`` and ``p2pz demo``: maintenance and the offline demo."""

from __future__ import annotations

from pathlib import Path

import click

from . import P2PZGroup, State, echo_json, echo_table, json_option, main, pass_state


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
    from migrations import current_revision, upgrade
    from store.db import make_engine
    from store.paths import default_db_url

    engine = make_engine(state.db or default_db_url())
    before = current_revision(engine)
    upgrade(engine, revision)
    click.echo(f"schema {before or 'empty'} → {current_revision(engine)}")


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
    """Entries and bytes per kind (maps, inversions, encodings, llm), and the cap.

    \b
    Example:
      p2pz cache info --json
    """
    from store import cache as store_cache
    from store.paths import cache_dir

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
@click.option("--kind", type=click.Choice(["maps", "inversions", "encodings", "llm"]), default=None,
              help="Only this kind (default: all).")
@json_option
def cache_clear(kind, as_json):
    """Delete cached entries (nothing is lost but the time to recompute them; LLM replies cost requests).

    \b
    Example:
      p2pz cache clear --kind maps
    """
    from store import cache as store_cache
    from store.paths import cache_dir

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
    """


@dev.command("tiny-model")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--vocab", type=click.Choice(["auto", "clip", "trained"]), default="auto", show_default=True,
              help="Real CLIP BPE (fetched once) or a small trained BPE.")
@click.option("--v-prediction", is_flag=True, help="An SD-2.x-like v-prediction snapshot.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty folder.")
def dev_tiny_model(folder, vocab, v_prediction, seed, force):
    """Write a tiny RANDOM-WEIGHT Stable Diffusion snapshot to FOLDER (tests, demo, offline checks).

    \b
    Example:
      p2pz dev tiny-model ./tiny-sd && p2pz direction build cat dog --model ./tiny-sd
    """
    from editor.tiny import RANDOM_WEIGHTS_NOTICE, build_tiny_model

    info = build_tiny_model(folder, seed=seed, vocab=vocab, overwrite=force,
                            prediction_type="v_prediction" if v_prediction else "epsilon")
    click.echo(f"wrote {info['path']} (vocabulary: {info['vocab']}, {info['vocab_size']} tokens, D={info['hidden_size']})")
    click.echo(f"WARNING: {RANDOM_WEIGHTS_NOTICE}", err=True)


@main.command("demo")
@click.option("--model", help="A real SD model (hub id or folder); default: a tiny random-weight model.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="p2pz-demo", show_default=True,
              help="Working folder (its own registry, model and outputs).")
@click.option("-n", "n", type=click.IntRange(10, 100_000), default=1000, show_default=True, help="Sentences per bank.")
@click.option("--steps", type=click.IntRange(2, 1000), default=10, show_default=True,
              help="DDIM steps of the sample edit.")
@click.option("--no-edit", is_flag=True, help="Skip the image edit.")
@click.pass_context
def demo(ctx, model, out, n, steps, no_edit):
    """Run p2pz offline: banks, directions, list, search, combine, export, import, and an image edit.

    \b
    Example:
      p2pz demo --out demo-out
    """
    from ..demo import run_demo

    state = ctx.find_object(State)
    run_demo(Path(out), model=model, n=n, db=state.db, progress=state.progress, echo=click.echo, edit_steps=steps,
             do_edit=not no_edit)
