"""The ``p2pz`` command line: a thin click layer over :class:`registry.Registry` (DESIGN §5).

Heavy modules (torch, transformers, diffusers, faiss) are imported inside the commands that need them, so
``p2pz --help``, ``p2pz direction list`` and ``p2pz bank show`` never import torch. Errors are one line on
stderr (``error: …``) with exit status 1; usage errors are click's (status 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EPILOG_DB = "Every command takes the global --db URL (or $P2PZ_DB_URL); data lives in $P2PZ_HOME."


class P2PZError(click.ClickException):
    """One-line user error: ``error: …`` on stderr, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _user_errors() -> tuple:
    from editor.errors import EditorError, ImageError
    from generators import GeneratorError
    from store.db import StoreError
    from store.vectors import VectorError

    from .api import RegistryError
    from .loader import ModelLoadError

    return (RegistryError, GeneratorError, StoreError, VectorError, ModelLoadError, FileExistsError, EditorError,
            ImageError)


class P2PZGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if isinstance(exc, _user_errors()):
                msg = " ".join(str(exc).split()) or type(exc).__name__
                raise P2PZError(msg) from None
            if isinstance(exc, OSError):
                raise P2PZError(f"{exc.strerror or exc} ({exc.filename})" if getattr(exc, "filename", None)
                                else str(exc)) from None
            raise


class State:
    def __init__(self, db: str | None, quiet: bool):
        self.db = db
        self.quiet = quiet
        self._reg = None

    @property
    def progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def registry(self):
        if self._reg is None:
            from .api import Registry

            self._reg = Registry.open(self.db, progress=self.progress)
        return self._reg

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)


pass_state = click.make_pass_decorator(State)


def _json(obj) -> None:
    """Indented on a terminal, compact (one line, fast) when piped."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(obj, indent=indent, ensure_ascii=False, default=str))


def _table(rows: list[list], headers: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cols = [headers] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    for j, r in enumerate(cols):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            click.echo("  ".join("-" * w for w in widths))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(cls=P2PZGroup, epilog=EPILOG_DB, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="P2PZ_DB_URL", metavar="URL", help="Registry database URL (default: $P2PZ_HOME/registry.db).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines.")
@click.version_option(package_name="p2pz")
@click.pass_context
def main(ctx, db, quiet):
    """p2pz — reusable, searchable edit directions for Stable Diffusion (pix2pix-zero).

    \b
    Example:
      p2pz direction build cat dog --model CompVis/stable-diffusion-v1-4
      p2pz search cat-to-dog -k 5
    """
    ctx.obj = State(db, quiet)


# --- banks ------------------------------------------------------------------------------------------

@main.group(cls=P2PZGroup)
def bank():
    """Sentence banks: create, list, show.

    \b
    Example:
      p2pz bank create cat -n 1000 --seed 0
    """


def llm_options(model_flag: str):
    """The LLM generator's flags (``model_flag``: --model for banks, --llm-model for directions)."""
    def deco(f):
        for opt in reversed([
            click.option(model_flag, "llm_model", help="LLM chat model for --from llm "
                         "[default: $P2PZ_LLM_MODEL or gpt-4.1-mini]."),
            click.option("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                         "(default: OpenAI; key from $OPENAI_API_KEY)."),
            click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="LLM sampling temperature [1.0]."),
            click.option("--concurrency", type=click.IntRange(1, 64), default=None, help="LLM requests at a time [4]."),
            click.option("--max-requests", type=click.IntRange(1), default=None,
                         help="Hard cap on LLM requests [3·n/50 + 5]."),
            click.option("--max-tokens", "max_total_tokens", type=click.IntRange(1), default=None,
                         help="Hard cap on LLM tokens used [2,000,000]."),
            click.option("--timeout", type=click.FloatRange(0.1), default=None, help="Seconds per LLM request [60]."),
            click.option("--no-cache", is_flag=True, help="Ask the LLM again instead of reusing cached replies."),
        ]):
            f = opt(f)
        return f
    return deco


def _llm_opts(llm_model, base_url, temperature, concurrency, max_requests, max_total_tokens, timeout, no_cache):
    opts = {"llm_model": llm_model, "base_url": base_url, "temperature": temperature, "concurrency": concurrency,
            "max_requests": max_requests, "max_total_tokens": max_total_tokens, "timeout": timeout}
    opts = {k: v for k, v in opts.items() if v is not None}
    if no_cache:
        opts["use_cache"] = False
    return opts


def _gen_options(kind, template_file, file):
    opts = {}
    if kind:
        opts["template_kind"] = kind
    if template_file:
        opts["template_file"] = template_file
    if file:
        opts["path"] = file
    return opts


@bank.command("create")
@click.argument("concept")
@click.option("--from", "generator", type=click.Choice(["templates", "llm", "file"]), default="templates",
              show_default=True, help="Where the sentences come from.")
@click.option("-n", "n", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Number of sentences.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (template sampler; LLM request seeds).")
@click.option("--kind", type=click.Choice(["object", "style", "attribute"]), default=None,
              help="Template set, or LLM prompt kind (default: object).")
@click.option("--templates", "template_file", type=click.Path(dir_okay=False), help="Your own template file ({} = concept).")
@click.option("--file", type=click.Path(dir_okay=False), help="Sentence file for --from file, one per line.")
@llm_options("--model")
@click.option("--tokenizer", "tokenizer_model", metavar="SD_MODEL",
              help="With --from llm: the SD model whose tokenizer checks lengths (default: the default model if it "
                   "is on disk, else an estimate).")
@click.option("--note", help="Free-text note stored with the bank.")
@json_option
@pass_state
def bank_create(state, concept, generator, n, seed, kind, template_file, file, llm_model, base_url, temperature,
                concurrency, max_requests, max_total_tokens, timeout, no_cache, tokenizer_model, note, as_json):
    """Create a sentence bank for CONCEPT (content-addressed: the same sentences return the stored version).

    \b
    Examples:
      p2pz bank create cat
      p2pz bank create "oil pastel" --kind style
      p2pz bank create cat --from file --file cat.txt
      p2pz bank create cat --from llm --model gpt-4.1-mini
      p2pz bank create cat --from llm --base-url http://localhost:11434/v1 --model llama3.2
    """
    if file and generator != "file":
        generator = "file"
    options = _gen_options(kind, template_file, file)
    if generator == "llm":
        options.update(_llm_opts(llm_model, base_url, temperature, concurrency, max_requests, max_total_tokens,
                                 timeout, no_cache))
        if tokenizer_model:
            options["tokenizer_model"] = tokenizer_model
    b = state.registry().make_bank(concept, generator, n, seed, note=note, **options)
    if as_json:
        _json(b.to_dict())
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
        _json([b.to_dict() for b in banks])
    else:
        _table([[b.ref, b.generator, b.n_sentences, b.sha256[:12], b.created_at.strftime("%Y-%m-%d %H:%M")]
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
        _json(b.to_dict(sentences=sentences))
        return
    click.echo(f"bank       {b.ref}\ngenerator  {b.generator}\nsentences  {b.n_sentences}\nsha256     {b.sha256}")
    click.echo(f"created    {b.created_at.isoformat()}\nparams     {json.dumps(b.params, sort_keys=True)}")
    if b.note:
        click.echo(f"note       {b.note}")
    if sentences:
        for s in b.sentences:
            click.echo(s)
    else:
        for s in b.sentences[:5]:
            click.echo(f"  {s}")
        if b.n_sentences > 5:
            click.echo(f"  … {b.n_sentences - 5} more (--sentences)")


# --- directions -------------------------------------------------------------------------------------

@main.group(cls=P2PZGroup)
def direction():
    """Edit directions: build, list, show, versions, combine, tag, deprecate.

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
              "[default: CompVis/stable-diffusion-v1-4].")
@click.option("--from", "generator", type=click.Choice(["templates", "llm", "file"]), default=None,
              help="Make the banks with this generator (default: latest stored bank, else templates).")
@click.option("-n", "n", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Sentences per bank.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kind", type=click.Choice(["object", "style", "attribute"]), default=None, help="Template set.")
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
                    tags, note, device, llm_model, base_url, temperature, concurrency, max_requests, max_total_tokens,
                    timeout, no_cache, as_json):
    """Build Δ = mean(TARGET bank) − mean(SOURCE bank) with an SD text encoder.

    SOURCE and TARGET are concepts (cat) or bank versions (cat@2). Missing banks are made.

    \b
    Examples:
      p2pz direction build cat dog --model CompVis/stable-diffusion-v1-4
      p2pz direction build sketch "oil pastel" --kind style --name sketch-to-pastel
      p2pz direction build cat dog --from file --source-file cat.txt --target-file dog.txt
      p2pz direction build cat dog --from llm --llm-model gpt-4.1-mini
    """
    reg = state.registry()
    if generator == "file" or source_file or target_file:
        if not (source_file and target_file):
            raise P2PZError("--from file needs both --source-file and --target-file")
        reg.make_bank(source.split("@")[0], "file", n, seed, path=source_file)
        reg.make_bank(target.split("@")[0], "file", n, seed, path=target_file)
        generator = None
    opts = _gen_options(kind, None, None)
    if opts and generator is None:
        generator = "templates"
    if generator == "llm":
        opts.update(_llm_opts(llm_model, base_url, temperature, concurrency, max_requests, max_total_tokens,
                              timeout, no_cache))
    d = reg.build_direction(source, target, model, name=name, generator=generator, n=n, seed=seed, scale=scale,
                            tags=tags, note=note, device=device, **opts)
    if as_json:
        _json(d.to_dict())
    else:
        click.echo(f"direction {d.ref}: {d.source} → {d.target} (encoder {d.encoder_model}, {d.encoder[:12]})")


@direction.command("list")
@click.option("--all", "include_deprecated", is_flag=True, help="Include deprecated versions.")
@click.option("--tag", help="Only directions with this tag.")
@json_option
@pass_state
def direction_list(state, include_deprecated, tag, as_json):
    """List directions (every version).

    \b
    Example:
      p2pz direction list --tag animals --json
    """
    ds = state.registry().directions(include_deprecated=include_deprecated, tag=tag)
    if as_json:
        _json([d.to_dict() for d in ds])
    else:
        _table([_dir_row(d) for d in ds], _DIR_HEADERS)


@direction.command("show")
@click.argument("ref", metavar="NAME[@V]")
@json_option
@pass_state
def direction_show(state, ref, as_json):
    """Show one direction with its provenance and vector statistics.

    \b
    Example:
      p2pz direction show cat-to-dog@1
    """
    import numpy as np

    d = state.registry().get(ref)
    v = d.vector_numpy()
    stats = {"shape": list(v.shape), "norm": float(np.linalg.norm(v)), "bos_row_norm": float(np.linalg.norm(v[0, 0]))}
    if as_json:
        _json({**d.to_dict(), "vector": stats})
        return
    for k, val in d.to_dict().items():
        if val not in (None, [], ""):
            click.echo(f"{k:<14}{val}")
    click.echo(f"{'vector':<14}shape {stats['shape']}, ‖Δ‖ {stats['norm']:.4g}, BOS row ‖·‖ {stats['bos_row_norm']:.3g}")


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
        _json([d.to_dict() for d in ds])
    else:
        _table([_dir_row(d) for d in ds], _DIR_HEADERS)


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
        _json(d.to_dict())
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


# --- search -----------------------------------------------------------------------------------------

@main.command("search")
@click.argument("ref", required=False, metavar="NAME[@V]")
@click.option("--pair", nargs=2, metavar="SOURCE TARGET", help="Search with the direction two concepts would make.")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--model", envvar="P2PZ_MODEL", help="With --pair: the SD model to encode with, if needed.")
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
        _json([h.to_dict() for h in hits])
    else:
        _table([[f"{h.score:.4f}"] + _dir_row(h.direction)[:2] for h in hits], ["score", "direction", "from"])


# --- editing ----------------------------------------------------------------------------------------

def _editing_options(f):
    for opt in reversed([
        click.option("--direction", "directions", multiple=True, required=True, metavar="NAME[@V]",
                     help="Direction to apply (repeatable: one inversion serves them all)."),
        click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplier of Δ."),
        click.option("--model", envvar="P2PZ_MODEL", help="SD model (default: the model the direction was built with)."),
        click.option("--steps", type=click.IntRange(2, 1000), default=50, show_default=True, help="DDIM steps."),
        click.option("--guidance-scale", type=float, default=5.0, show_default=True, help="CFG scale (> 1)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--out", "out_dir", type=click.Path(file_okay=False), default="p2pz-out", show_default=True),
        click.option("--device", help="cpu or cuda (default: cuda when available)."),
        click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32",
                     show_default=True),
        click.option("--force", is_flag=True, help="Overwrite existing outputs."),
        click.option("--no-safety-checker", is_flag=True, help="Do not run the model's safety checker."),
        json_option,
    ]):
        f = opt(f)
    return f


def _open_editor(state, model, directions, device, dtype, no_safety_checker, captioner=None, map_dtype="float32"):
    from editor import Editor

    if model is None:
        models = {d.encoder_model for d in directions}
        model = models.pop() if len(models) == 1 else None
    state.info(f"loading {model or 'the default model'} …")
    kwargs = {"safety_checker": not no_safety_checker, "progress": state.progress, "map_dtype": map_dtype}
    if captioner is not None:
        kwargs["captioner"] = captioner
    return Editor.from_pretrained(model, device=device, dtype=dtype, **kwargs) if model else \
        Editor.from_pretrained(device=device, dtype=dtype, **kwargs)


@main.command("edit")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE|DIR|GLOB...")
@_editing_options
@click.option("--caption", help="Use this caption instead of BLIP's.")
@click.option("--captioner", default=None, help="BLIP model [default: Salesforce/blip-image-captioning-base].")
@click.option("--xa-guidance", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Cross-attention guidance step size.")
@click.option("--keep-aspect", is_flag=True, help="Keep the aspect ratio (longer side = model size).")
@click.option("--schedule", type=click.Choice(["symmetric", "reference"]), default="symmetric", show_default=True,
              help="Inversion schedule.")
@click.option("--save-reconstruction", is_flag=True, help="Also write the reconstruction.")
@click.option("--maps-fp16", is_flag=True, help="Keep reference attention maps in float16 (half the memory; results "
              "change slightly).")
@pass_state
def edit(state, images, directions, scale, model, steps, guidance_scale, seed, out_dir, device, dtype, force,
         no_safety_checker, as_json, caption, captioner, xa_guidance, keep_aspect, schedule, save_reconstruction,
         maps_fp16):
    """Apply stored directions to real images with pix2pix-zero.

    Writes OUT/<image stem>__<direction>@<version>.png with the full provenance in a PNG text chunk.

    \b
    Examples:
      p2pz edit cat.png --direction cat-to-dog
      p2pz edit photos/ --direction cat-to-dog --direction cat-to-lion@2 --out edits
      p2pz edit "shots/*.jpg" --direction day-to-night --caption "a street" --steps 100
    """
    from editor.batch import edit_files, expand_inputs

    reg = state.registry()
    dirs = [reg.get(ref) for ref in directions]
    paths = expand_inputs(list(images))
    ed = _open_editor(state, model, dirs, device, dtype, no_safety_checker, captioner,
                      map_dtype="float16" if maps_fp16 else "float32")

    def report(o):
        for note in o.warnings:
            click.echo(f"warning: {note}", err=True)
        if o.ok:
            state.info(f"{o.image}: {', '.join(o.outputs)}" + (" (inversion cached)" if o.inversion_cached else ""))
        else:
            click.echo(f"error: {o.image}: {o.error}", err=True)
        for flagged in o.nsfw:
            click.echo(f"warning: the safety checker blanked {flagged}; --no-safety-checker turns it off", err=True)

    outcomes = edit_files(ed, paths, dirs, Path(out_dir), scale=scale, caption=caption, steps=steps,
                          xa_guidance=xa_guidance, guidance_scale=guidance_scale, seed=seed, keep_aspect=keep_aspect,
                          schedule=schedule, save_reconstruction=save_reconstruction, force=force,
                          report=None if as_json else report)
    if as_json:
        _json([o.__dict__ for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise P2PZError(f"{len(failed)} of {len(outcomes)} images failed")


@main.command("generate")
@click.argument("prompt")
@_editing_options
@click.option("--xa-guidance", type=click.FloatRange(0), default=0.15, show_default=True,
              help="Cross-attention guidance step size (0.15 for synthetic images).")
@click.option("--size", type=click.IntRange(16, 2048), default=None, help="Image size (default: the model's).")
@pass_state
def generate(state, prompt, directions, scale, model, steps, guidance_scale, seed, out_dir, device, dtype, force,
             no_safety_checker, as_json, xa_guidance, size):
    """Generate an image from PROMPT (x_T from the seed) and edit it with stored directions.

    \b
    Example:
      p2pz generate "a cat sitting on a sofa" --direction cat-to-dog --seed 3
    """
    from editor.batch import output_name, save_png

    reg = state.registry()
    dirs = [reg.get(ref) for ref in directions]
    ed = _open_editor(state, model, dirs, device, dtype, no_safety_checker)
    stem = f"generated-{seed}"
    out = Path(out_dir)
    targets = [out / output_name(stem, d.ref) for d in dirs] + [out / f"{stem}.png"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise P2PZError(f"{existing[0]} exists; pass --force to overwrite")
    inv = ed.synthetic(prompt, seed=seed, size=size, steps=steps)
    results = ed.edit(inv, dirs, scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, steps=steps)
    base = {"prompt": prompt, "seed": seed, "steps": steps, "model": ed.model_id, "synthetic": True,
            "model_fingerprint": ed.model_fingerprint, "encoder_fingerprint": ed.text_encoder_fingerprint}
    save_png(results[0].reconstruction, targets[-1], {**base, "direction": None})
    for d, res, target in zip(dirs, results, targets):
        save_png(res.edited, target, {**base, "direction": d.ref, "scale": scale, "xa_guidance": xa_guidance,
                                      "guidance_scale": guidance_scale, "negative_prompt": ""})
        if res.nsfw and res.nsfw[0]:
            click.echo(f"warning: the safety checker blanked {target}; --no-safety-checker turns it off", err=True)
    if as_json:
        _json({"generated": str(targets[-1]), "edits": [str(t) for t in targets[:-1]]})
    else:
        click.echo(f"wrote {targets[-1]} and {', '.join(str(t) for t in targets[:-1])}")


# --- exchange ---------------------------------------------------------------------------------------

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
        _json(out)
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
        _json(out)
    else:
        a = out["added"]
        click.echo(f"imported {', '.join(out['directions'])}: added {a['directions']} directions, "
                   f"{a['embeddings']} embeddings, {a['banks']} banks, {a['encoders']} encoders")


@main.command("import-pt")
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--name", help="Direction name (default: SOURCE-to-TARGET from the file names).")
@click.option("--model", envvar="P2PZ_MODEL", help="The SD model the embeddings were made with "
              "[default: CompVis/stable-diffusion-v1-4].")
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
        _json(d.to_dict())
    else:
        click.echo(f"direction {d.ref}: {d.source} → {d.target} (encoder {d.encoder[:12]})")


# --- maintenance ------------------------------------------------------------------------------------

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
    from store.db import current_revision, make_engine, upgrade
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
@pass_state
def index_rebuild(state):
    """Rebuild every FAISS index from the database (never needed for correctness: stale indexes rebuild).

    \b
    Example:
      p2pz index rebuild
    """
    for fp, n in state.registry().rebuild_index().items():
        click.echo(f"encoder {fp[:12]}: {n} directions indexed")


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
    from .tiny import RANDOM_WEIGHTS_NOTICE, build_tiny_model

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
    from .demo import run_demo

    state = ctx.find_object(State)
    run_demo(Path(out), model=model, n=n, db=state.db, progress=state.progress, echo=click.echo, edit_steps=steps,
             do_edit=not no_edit)


if __name__ == "__main__":  # pragma: no cover
    main()
