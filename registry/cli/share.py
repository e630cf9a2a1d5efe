"""``p2pz push`` and ``p2pz pull``: directions to and from the Hugging Face Hub (``hf://OWNER/REPO``) and other
registries (``http(s)://HOST[:PORT]``, a ``p2pz serve``)."""

from __future__ import annotations

import click

from . import echo_json, json_option, main, pass_state

WHERE = "hf://OWNER/REPO or http(s)://HOST[:PORT]"


@main.command("push")
@click.argument("url", metavar="URL")
@click.argument("refs", nargs=-1, metavar="[NAME[@V]]...")
@click.option("--private", is_flag=True, help="Create the Hub repo private (when it does not exist yet).")
@click.option("-m", "--message", help="The Hub commit's message [default: the versions it adds].")
@click.option("--students", is_flag=True, help="Push the directions' trained students too (Hub).")
@click.option("--renumber", is_flag=True, help="Registry: let the other side store a version it already uses "
              "for other content as its next free version, instead of refusing.")
@json_option
@pass_state
def push(state, url, refs, private, message, students, renumber, as_json):
    """Share directions: to the Hugging Face Hub (hf://OWNER/REPO; default: every version), or to another
    registry's p2pz serve (http://HOST:PORT; name the directions). Only what the other side lacks is sent; a
    version it holds with other content is refused. Tokens: HF_TOKEN (or `hf auth login`) for the Hub,
    P2PZ_TOKEN for a registry; neither is ever stored or printed.

    \b
    Examples:
      p2pz push hf://alice/animal-edits cat-to-dog
      p2pz push hf://alice/animal-edits --private -m "first release"
      P2PZ_TOKEN=… p2pz push http://team-host:8000 cat-to-dog@2
    """
    out = state.registry().push(url, refs, private=private, message=message, students=students, renumber=renumber)
    if as_json:
        echo_json(out)
        return
    if "repo" in out:
        if not out["added"] and not out["files"]:
            click.echo(f"hf://{out['repo']} is up to date ({len(out['skipped'])} version(s) already there)")
        else:
            click.echo(f"pushed {', '.join(out['added']) or 'students'} to hf://{out['repo']} "
                       f"(commit {out['commit'][:12]}, {out['files']} files, {out['bytes']} bytes)")
        return
    a = out["added"]
    click.echo(f"pushed {', '.join(out['directions'])} to {out['registry']}: added {a['directions']} directions, "
               f"{a['embeddings']} embeddings, {a['banks']} banks there")
    _say_renumbered(out)


@main.command("pull")
@click.argument("url", metavar="URL[@REVISION]")
@click.argument("refs", nargs=-1, metavar="[NAME[@V]]...")
@click.option("--renumber", is_flag=True, help="Store a direction whose version this registry already uses for "
              "other content as the next free version, instead of refusing the pull.")
@json_option
@pass_state
def pull(state, url, refs, renumber, as_json):
    """Import directions (default: all; a bare NAME: all its versions) from the Hugging Face Hub
    (hf://OWNER/REPO[@REVISION]: a commit, tag or branch) or another registry (http://HOST:PORT). Every file's
    sha256 is checked before anything is stored, in one transaction; version numbers are kept; the origin (and
    the Hub commit) is recorded with each new direction. HF_HUB_OFFLINE=1 pulls from the local Hub cache.

    \b
    Examples:
      p2pz pull hf://alice/animal-edits
      p2pz pull hf://alice/animal-edits@v1.0 cat-to-dog
      p2pz pull http://team-host:8000 cat-to-dog@2
    """
    out = state.registry().pull(url, refs, renumber=renumber)
    if as_json:
        echo_json(out)
        return
    a = out["added"]
    where = f"hf://{out['repo']} @ {out['revision'][:12]}" if "repo" in out else out["registry"]
    click.echo(f"pulled {', '.join(out['directions'])} from {where}: added {a['directions']} directions, "
               f"{a['embeddings']} embeddings, {a['banks']} banks, {a['students']} students")
    _say_renumbered(out)


def _say_renumbered(out: dict) -> None:
    for r in out.get("renumbered", []):
        click.echo(f"  {r['name']}@{r['from']} is {r['name']}@{r['to']} here ({r['reason']}; "
                   f"sha256:{r['content_sha256'][:12]})")
