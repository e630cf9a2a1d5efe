"""``p2pz bank``: create, list and show sentence banks."""

from __future__ import annotations

import json

import click

from . import (
    KIND_HELP, TEMPLATE_KIND, P2PZGroup, bank_options, echo_json, echo_table, json_option, llm_options, main,
    pass_state,
)


@main.group(cls=P2PZGroup)
def bank():
    """Sentence banks: create, list, show.

    \b
    Example:
      p2pz bank create cat -n 1000 --seed 0
    """


@bank.command("create")
@click.argument("concept")
@click.option("--from", "generator", type=click.Choice(["templates", "llm", "file"]), default="templates",
              show_default=True, help="Where the sentences come from.")
@click.option("-n", "n", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Number of sentences.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (template sampler; LLM request seeds).")
@click.option("--kind", type=TEMPLATE_KIND, default=None,
              help=KIND_HELP + " With --from llm: the prompt kind [default: object].")
@click.option("--templates", "template_file", type=click.Path(dir_okay=False), help="Your own template file ({} = concept).")
@click.option("--file", type=click.Path(dir_okay=False), help="Sentence file for --from file, one per line.")
@llm_options("--model")
@click.option("--tokenizer", "tokenizer_model", metavar="SD_MODEL",
              help="With --from llm: the SD model whose tokenizer checks lengths (default: the default model if it "
                   "is on disk, else an estimate).")
@click.option("--note", help="Free-text note stored with the bank.")
@json_option
@pass_state
def bank_create(state, concept, generator, n, seed, kind, template_file, file, llm, tokenizer_model, note, as_json):
    """Create a sentence bank for CONCEPT (content-addressed: the same sentences return the stored version).

    \b
    Examples:
      p2pz bank create cat
      p2pz bank create "oil pastel" --kind style
      p2pz bank create night            # kind auto: the scene templates
      p2pz bank create cat --from file --file cat.txt
      p2pz bank create cat --from llm --model gpt-4.1-mini
      p2pz bank create cat --from llm --base-url http://localhost:11434/v1 --model llama3.2
    """
    if file and generator != "file":
        generator = "file"
    options = bank_options(generator, kind=kind, template_file=template_file, path=file, llm=llm,
                           tokenizer_model=tokenizer_model)
    b = state.registry().make_bank(concept, options, n, seed, note=note)
    if as_json:
        echo_json(b.to_dict())
    else:
        dropped = {k: v for k, v in b.params.items() if k.endswith("_dropped") and v}
        dropped.update({f"{k.replace('_', ' ')} dropped": v for k, v in b.params.get("dropped", {}).items() if v})
        if b.generator == "llm":
            u = b.params.get("usage", {})
            dropped[f"{b.params.get('requests')} requests ({b.params.get('requests_cached')} cached), tokens"] = \
                u.get("total_tokens", 0)
        extra = "".join(f", {k.replace('_', ' ')}: {v}" for k, v in dropped.items())
        click.echo(f"bank {b.ref}: {b.n_sentences} sentences from {b.generator}{extra}; sha256 {b.sha256[:12]}")


@bank.command("list")
@click.argument("concept", required=False)
@json_option
@pass_state
def bank_list(state, concept, as_json):
    """List banks (all, or the versions of one CONCEPT).

    \b
    Example:
      p2pz bank list --json
    """
    banks = state.registry().banks(concept)
    if as_json:
        echo_json([b.to_dict() for b in banks])
    else:
        echo_table([[b.ref, b.generator, b.n_sentences, b.sha256[:12], b.created_at.strftime("%Y-%m-%d %H:%M")]
                for b in banks], ["bank", "generator", "sentences", "sha256", "created"])


@bank.command("show")
@click.argument("ref", metavar="CONCEPT[@V]")
@click.option("--sentences", is_flag=True, help="Also print every sentence.")
@json_option
@pass_state
def bank_show(state, ref, sentences, as_json):
    """Show one bank and its provenance.

    \b
    Example:
      p2pz bank show cat@1 --sentences
    """
    b = state.registry().bank(ref)
    if as_json:
        echo_json(b.to_dict(sentences=sentences))
        return
    from p2pz.registry.library.records import printable  # lazy: start-up

    click.echo(f"bank       {b.ref}\ngenerator  {b.generator}\nsentences  {b.n_sentences}\nsha256     {b.sha256}")
    click.echo(f"created    {b.created_at.isoformat()}\nparams     {json.dumps(b.params, sort_keys=True)}")
    if b.note:
        click.echo(f"note       {printable(b.note)}")
    # sentences may come from a pull or an import: no terminal escapes reach the screen (tabs are text)
    if sentences:
        for s in b.sentences:
            click.echo(printable(s, keep="\t"))
    else:
        for s in b.sentences[:5]:
            s = printable(s, keep="\t")
            click.echo(f"  {s}")
        if b.n_sentences > 5:
            click.echo(f"  … {b.n_sentences - 5} more (--sentences)")
