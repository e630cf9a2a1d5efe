"""``p2pz export``, ``p2pz import`` and ``p2pz import-pt``: direction libraries and official embeddings."""

from __future__ import annotations

import click

from . import echo_json, json_option, main, pass_state


@main.command("export")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[@V]...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Library file to write (.p2pz).")
@json_option
@pass_state
def export(state, refs, output, as_json):
    """Write directions, their embeddings, banks and encoders to a .p2pz library.

    \b
    Example:
      p2pz export cat-to-dog day-to-night -o animals.p2pz
    """
    out = state.registry().export(refs, output)
    if as_json:
        echo_json(out)
    else:
        click.echo(f"wrote {out['path']}: {out['directions']} directions, {out['embeddings']} embeddings, "
                   f"{out['banks']} banks, {out['bytes']} bytes")


@main.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_state
def import_(state, path, as_json):
    """Import a .p2pz library (idempotent; all or nothing).

    \b
    Example:
      p2pz import animals.p2pz
    """
    out = state.registry().import_(path)
    if as_json:
        echo_json(out)
    else:
        a = out["added"]
        click.echo(f"imported {', '.join(out['directions'])}: added {a['directions']} directions, "
                   f"{a['embeddings']} embeddings, {a['banks']} banks, {a['encoders']} encoders")
        for r in out.get("renumbered", []):
            click.echo(f"  {r['name']}@{r['from']} is {r['name']}@{r['to']} here ({r['reason']}; "
                       f"sha256:{r['content_sha256'][:12]})")


@main.command("import-pt")
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--name", help="Direction name (default: SOURCE-to-TARGET from the file names).")
@click.option("--model", envvar="P2PZ_MODEL", help="The SD model the embeddings were made with "
              "[default: $P2PZ_MODEL, else the model of the registry's directions when they all use one, else "
              "CompVis/stable-diffusion-v1-4].")
@json_option
@pass_state
def import_pt(state, source, target, name, model, as_json):
    """Import official pix2pix-zero concept embeddings (.pt, loaded with weights_only=True).

    \b
    Example:
      p2pz import-pt cat.pt dog.pt --name cat-to-dog
    """
    d = state.registry().import_pt(source, target, name=name, model=model)
    if as_json:
        echo_json(d.to_dict())
    else:
        click.echo(f"direction {d.ref}: {d.source} → {d.target} (encoder {d.encoder[:12]})")
