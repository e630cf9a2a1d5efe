"""``p2pz direction`` (build, list, show, versions, combine, tag, untag, deprecate, undeprecate) and
``p2pz search``."""

from __future__ import annotations

import click

from . import (KIND_HELP, TEMPLATE_KIND, P2PZError, P2PZGroup, bank_options, echo_json, echo_table, engine_options,
               json_option, llm_options, main, pass_state)


@main.group(cls=P2PZGroup)
def direction():
    """Edit directions: build, list, show, inspect, versions, combine, tag/untag, deprecate/undeprecate.

    \b
    Example:
      p2pz direction build cat dog
    """


def _dir_row(d):
    what = f"{d.source} → {d.target}" if d.kind == "pair" else " + ".join(
        f"{c['weight']:g}·{c['name']}@{c['version']}" for c in d.components or [])
    return [d.ref, what, f"{d.scale:g}" if d.kind == "pair" else "", d.encoder_model, d.encoder[:12],
            ",".join(d.tags), "deprecated" if d.deprecated else ""]


_DIR_HEADERS = ["direction", "from", "scale", "encoder", "fingerprint", "tags", ""]


@direction.command("build")
@click.argument("source")
@click.argument("target")
@click.option("--name", help="Direction name (default SOURCE-to-TARGET).")
@click.option("--model", envvar="P2PZ_MODEL", help="SD model (hub id or folder) whose text encoder is used "
              "[default: $P2PZ_MODEL, else the model of the registry's directions when they all use one, else "
              "CompVis/stable-diffusion-v1-4].")
@click.option("--from", "generator", type=click.Choice(["templates", "llm", "file"]), default=None,
              help="Make the banks with this generator (default: latest stored bank, else templates).")
@click.option("-n", "n", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Sentences per bank.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kind", type=TEMPLATE_KIND, default=None, help=KIND_HELP)
@click.option("--source-file", type=click.Path(dir_okay=False), help="With --from file: the source sentences.")
@click.option("--target-file", type=click.Path(dir_okay=False), help="With --from file: the target sentences.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplier of Δ.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@click.option("--note")
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@llm_options("--llm-model")
@json_option
@pass_state
def direction_build(state, source, target, name, model, generator, n, seed, kind, source_file, target_file, scale,
                    tags, note, device, llm, as_json):
    """Build Δ = mean(TARGET bank) − mean(SOURCE bank) with an SD text encoder.

    SOURCE and TARGET are concepts (cat) or bank versions (cat@2). Missing banks are made.

    \b
    Examples:
      p2pz direction build cat dog --model CompVis/stable-diffusion-v1-4
      p2pz direction build sketch "oil pastel" --kind style --name sketch-to-pastel
      p2pz direction build cat dog --from file --source-file cat.txt --target-file dog.txt
      p2pz direction build cat dog --from llm --llm-model gpt-4.1-mini
    """
    sides = {}
    if generator == "file" or source_file or target_file:
        if not (source_file and target_file):
            raise P2PZError("--from file needs both --source-file and --target-file")
        from p2pz.registry.library.banks import read_sentence_file  # lazy: sqlalchemy

        # exactly these files' sentences, stored with the direction in one transaction
        sides = {"source_sentences": read_sentence_file(source_file, n),
                 "target_sentences": read_sentence_file(target_file, n)}
        generator = None
    options = bank_options(generator, kind=kind, llm=llm, model_flag="--llm-model")
    reg = state.registry()
    d = reg.build_direction(source, target, model, name=name, generator=options, n=n, seed=seed,
                            scale=scale, tags=tags, note=note, device=device, **sides)
    advice = reg.bank_advice(d.ref)
    if advice:
        def said(b):
            return f"{b['bank']} ({b['size']} sentences)" if b["size"] else f"{b['bank']} (a mean embedding, no sentences)"

        state.info(f"using banks {said(advice['source'])} and {said(advice['target'])}")
        if advice["warning"]:
            click.echo(f"warning: {advice['warning']}", err=True)
    if as_json:
        echo_json(d.to_dict())
    else:
        click.echo(f"direction {d.ref}: {d.source} → {d.target} (encoder {d.encoder_model}, {d.encoder[:12]})")


@direction.command("build-many")
@click.argument("pairs_file", metavar="PAIRS.csv", type=click.Path(dir_okay=False))
@click.option("--model", envvar="P2PZ_MODEL", help="SD model (hub id or folder) whose text encoder is used "
              "[default: $P2PZ_MODEL, else the model of the registry's directions when they all use one, else "
              "CompVis/stable-diffusion-v1-4].")
@click.option("--from", "generator", type=click.Choice(["templates", "llm"]), default=None,
              help="Make the banks with this generator (default: latest stored bank, else templates).")
@click.option("-n", "n", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Sentences per bank.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kind", type=TEMPLATE_KIND, default=None, help=KIND_HELP)
@click.option("--tag", "tags", multiple=True, help="Tag every direction (repeatable).")
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@llm_options("--llm-model")
@engine_options
@json_option
@pass_state
def direction_build_many(state, pairs_file, model, generator, n, seed, kind, tags, device, llm, engine, as_json):
    """Build one direction per line of PAIRS.csv: source,target[,name].

    With --engine ray the banks are made and encoded in parallel workers (one encoder per worker) and the
    records written here; a failing pair is reported and the rest are built (exit 1 says how many failed).
    Building again what exists returns the stored versions.

    \b
    Examples:
      p2pz direction build-many pairs.csv --model CompVis/stable-diffusion-v1-4
      p2pz direction build-many pairs.csv --engine ray --workers 4 --gpus-per-worker 0.5
    """
    from p2pz.registry.library.build_many import read_pairs  # lazy: sqlalchemy

    options = bank_options(generator, kind=kind, llm=llm, model_flag="--llm-model")
    pairs = read_pairs(pairs_file)

    def report(r):
        if "error" in r:
            click.echo(f"error: {r['source']} → {r['target']}: {r['error']}", err=True)
        else:
            state.info(f"direction {r['ref']}: {r['source']} → {r['target']}")

    results = state.registry().build_many(pairs, model, engine=engine, generator=options, n=n, seed=seed,
                                          tags=tags, device=device, report=None if as_json else report)
    if as_json:
        echo_json(results)
    failed = [r for r in results if "error" in r]
    if failed:
        raise P2PZError(f"{len(failed)} of {len(results)} pairs failed")


@direction.command("list")
@click.option("--all", "include_deprecated", is_flag=True, help="Include deprecated versions.")
@click.option("--tag", help="Only directions with this tag.")
@click.option("--sort", "sort_metric", metavar="METRIC", help="Order by the latest evaluation score (best first: "
              "highest clip_acc, clip_score, clip_directional, bg_psnr, bg_ssim; lowest structure_distance, "
              "bg_lpips, bg_mse); directions never evaluated come last.")
@json_option
@pass_state
def direction_list(state, include_deprecated, tag, sort_metric, as_json):
    """List directions (every version).

    \b
    Examples:
      p2pz direction list --tag animals --json
      p2pz direction list --sort clip_acc
    """
    reg = state.registry()
    if sort_metric is None:
        ds = reg.directions(include_deprecated=include_deprecated, tag=tag)
        if as_json:
            echo_json([d.to_dict() for d in ds])
        else:
            echo_table([_dir_row(d) for d in ds], _DIR_HEADERS)
        return
    from p2pz.store.repository import METRICS  # lazy: sqlalchemy

    if sort_metric not in METRICS:
        raise P2PZError(f"unknown metric {sort_metric!r}; choose one of {', '.join(METRICS)}")
    _, ds = reg.page(tag=tag, include_deprecated=include_deprecated, sort=sort_metric, limit=None)
    latest = reg.scores(ds)
    if as_json:
        echo_json([{**d.to_dict(), "scores": latest.get(d.ref, {}).get("scores", {})} for d in ds])
    else:
        rows = [[f"{latest[d.ref]['scores'][sort_metric]:.4g}" if sort_metric in latest.get(d.ref, {}).get(
            "scores", {}) else "—"] + _dir_row(d) for d in ds]
        echo_table(rows, [sort_metric] + _DIR_HEADERS)


def origin_text(origin: dict) -> str:
    """``hf://o/r @ 1a2b3c4d5e6f, @2 there ← https://host @2`` — each hop of an origin, nearest first."""
    hops = []
    while origin:
        rev = f" @ {origin['revision'][:12]}" if origin.get("revision") else ""
        ver = f", @{origin['version']} there" if origin.get("version") else ""
        hops.append(f"{origin['source']}{rev}{ver}")
        origin = origin.get("upstream")
    return " ← ".join(hops)


@direction.command("show")
@click.argument("ref", metavar="NAME[@V]")
@json_option
@pass_state
def direction_show(state, ref, as_json):
    """Show one direction with its provenance and vector statistics: Δ's norms, and Δ_token's (the token-aligned
    direction ``p2pz edit --delta-at word`` adds at the source word; docs/algorithm.md §13) with its word pair and
    how many bank sentences contain each word, or why it has none.

    \b
    Example:
      p2pz direction show cat-to-dog@1
    """
    reg = state.registry()
    d = reg.get(ref)
    stats = d.vector_stats()
    scores = reg.scores([d]).get(d.ref)
    others = [{"ref": o.ref, "encoder_model": o.encoder_model, "family": o.family} for o in reg.siblings(d)]
    if as_json:
        echo_json({**d.to_dict(), "vector": stats, "scores": scores, "siblings": others})
        return
    from p2pz.registry.library.records import printable, token_line  # lazy: start-up

    fields = d.to_dict()
    w = max(len(k) for k in [*fields, "other models"]) + 2  # every key, however long, then two spaces
    for k, val in fields.items():
        if k == "origin" and val:
            val = origin_text(val)
        if val not in (None, [], ""):
            click.echo(f"{k:<{w}}{printable(val)}")  # notes, tags and origins may come from elsewhere
    click.echo(f"{'vector':<{w}}shape {stats['shape']}, ‖Δ‖ {stats['norm']:.4g}, "
               f"BOS row ‖·‖ {stats['bos_row_norm']:.3g}")
    if "pooled_norm" in stats:
        click.echo(f"{'pooled':<{w}}shape {stats['pooled_shape']}, ‖Δ_pooled‖ {stats['pooled_norm']:.4g}")
    click.echo(f"{'Δ_token':<{w}}{printable(token_line(stats.get('token')))}")  # words may come from elsewhere
    if others:
        click.echo(f"{'other models':<{w}}" + ", ".join(f"{o['ref']} ({printable(o['encoder_model'])}, {o['family']})"
                                                       for o in others))
    if scores:
        values = ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores["scores"].items()))
        click.echo(f"{'scores':<{w}}{values} ({scores['n_images']} images, run {scores['run_id'][:8]}, "
                   f"{scores['created_at']:%Y-%m-%d %H:%M})")


@direction.command("inspect")
@click.argument("ref", metavar="NAME[@V]")
@click.option("--splits", type=click.IntRange(2, 1000), default=20, show_default=True,
              help="Random split-halves for the stability estimates.")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write a self-contained HTML report.")
@json_option
@pass_state
def direction_inspect(state, ref, splits, report, as_json):
    """Judge a direction without images: stability, word-swap baseline, token profile, bank health, neighbours.

    Reuses the banks' stored sentence statistics (no encoder call for the stability part once a bank is encoded).

    \b
    Examples:
      p2pz direction inspect cat-to-dog
      p2pz direction inspect cat-to-dog@2 --json
      p2pz direction inspect cat-to-dog --report cat-to-dog.html
    """
    from p2pz.registry.analysis.diagnostics_report import report_html, summary  # lazy: sqlalchemy

    d = state.registry().inspect(ref, splits=splits)
    if report:
        from p2pz.store.files import atomic_write  # lazy: start-up

        atomic_write(report, report_html(d))
    if as_json:
        echo_json(d.to_dict())
    else:
        click.echo(summary(d))
        if report:
            click.echo(f"report: {report}")


@direction.command("versions")
@click.argument("name")
@json_option
@pass_state
def direction_versions(state, name, as_json):
    """List every version of NAME.

    \b
    Example:
      p2pz direction versions cat-to-dog
    """
    ds = state.registry().versions(name)
    if as_json:
        echo_json([d.to_dict() for d in ds])
    else:
        echo_table([_dir_row(d) for d in ds], _DIR_HEADERS)


@direction.command("combine")
@click.argument("weights", nargs=-1, required=True, metavar="NAME[@V]=WEIGHT...")
@click.option("--name", required=True, help="Name of the combined direction.")
@click.option("--tag", "tags", multiple=True)
@click.option("--note")
@json_option
@pass_state
def direction_combine(state, weights, name, tags, note, as_json):
    """Store a weighted sum of directions (same text encoder only).

    \b
    Example:
      p2pz direction combine cat-to-dog=1.0 day-to-night=0.5 --name dog-at-night
    """
    parsed = {}
    for item in weights:
        ref, sep, w = item.rpartition("=")
        if not sep or not ref:
            raise P2PZError(f"malformed weight {item!r}; write NAME=WEIGHT, e.g. cat-to-dog=1.0")
        try:
            parsed[ref] = float(w)
        except ValueError:
            raise P2PZError(f"weight of {ref!r} is not a number: {w!r}") from None
    d = state.registry().combine(parsed, name, tags=tags, note=note)
    if as_json:
        echo_json(d.to_dict())
    else:
        click.echo(f"direction {d.ref}: " + _dir_row(d)[1])


@direction.command("tag")
@click.argument("ref", metavar="NAME[@V]")
@click.argument("tag")
@pass_state
def direction_tag(state, ref, tag):
    """Add TAG to a direction (tags are annotations; the vector never changes).

    \b
    Example:
      p2pz direction tag cat-to-dog@1 animals
    """
    d = state.registry().tag(ref, tag)
    click.echo(f"{d.ref}: tags {','.join(d.tags)}")


@direction.command("deprecate")
@click.argument("ref", metavar="NAME@V")
@pass_state
def direction_deprecate(state, ref):
    """Mark one version deprecated (hidden from list, search and bare-name lookups; still addressable).

    \b
    Example:
      p2pz direction deprecate cat-to-dog@1
    """
    d = state.registry().deprecate(ref)
    click.echo(f"{d.ref}: deprecated")


@direction.command("undeprecate")
@click.argument("ref", metavar="NAME@V")
@pass_state
def direction_undeprecate(state, ref):
    """Undo deprecate: the version is listed, searchable and a bare-name candidate again.

    \b
    Example:
      p2pz direction undeprecate cat-to-dog@1
    """
    d = state.registry().undeprecate(ref)
    click.echo(f"{d.ref}: not deprecated")


@direction.command("untag")
@click.argument("ref", metavar="NAME[@V]")
@click.argument("tag")
@pass_state
def direction_untag(state, ref, tag):
    """Remove TAG from a direction (an error when it does not carry it).

    \b
    Example:
      p2pz direction untag cat-to-dog@1 animals
    """
    d = state.registry().untag(ref, tag)
    click.echo(f"{d.ref}: tags {','.join(d.tags) if d.tags else '(none)'}")


# --- search -----------------------------------------------------------------------------------------

@main.command("search")
@click.argument("ref", required=False, metavar="NAME[@V]")
@click.option("--pair", nargs=2, metavar="SOURCE TARGET", help="Search with the direction two concepts would make.")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--model", envvar="P2PZ_MODEL", help="With --pair: the SD model to encode with, if needed [default: $P2PZ_MODEL, else the "
              "model of the registry's directions when they all use one].")
@click.option("--save", is_flag=True, help="With --pair: also store the direction.")
@json_option
@pass_state
def search(state, ref, pair, k, model, save, as_json):
    """Find the directions most similar to one (cosine of search keys, same encoder).

    \b
    Examples:
      p2pz search cat-to-dog -k 5
      p2pz search --pair kitten puppy -k 5
    """
    if bool(ref) == bool(pair):
        raise click.UsageError("give either NAME[@V] or --pair SOURCE TARGET")
    reg = state.registry()
    hits = reg.search_pair(pair[0], pair[1], k, model=model, save=save) if pair else reg.search(ref, k)
    if as_json:
        echo_json([h.to_dict() for h in hits])
    else:
        echo_table([[f"{h.score:.4f}"] + _dir_row(h.direction)[:2] for h in hits], ["score", "direction", "from"])
