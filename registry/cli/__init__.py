"""The ``p2pz`` command line: a thin click layer over :class:`registry.Registry` (docs/cli.md).

This module holds the main group, the options and output helpers the command groups share, and the mapping
of every layer's user errors to one line on stderr (``error: …``, exit status 1; usage errors are click's,
status 2). The commands live one group per file: :mod:`.banks`, :mod:`.directions` (with search),
:mod:`.library` (export, import, import-pt), :mod:`.edit` (edit, generate), :mod:`.admin` (db, index, dev,
demo), :mod:`.web` (serve, preview build). Heavy modules (torch, transformers, diffusers, faiss) are imported inside the commands that need them,
so ``p2pz --help``, ``p2pz direction list`` and ``p2pz bank show`` never import torch.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from p2pz.store.version import __version__

EPILOG_DB = "Every command takes the global --db URL (or $P2PZ_DB_URL); data lives in $P2PZ_HOME."


class P2PZError(click.ClickException):
    """One-line user error: ``error: …`` on stderr, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _user_errors() -> tuple:
    from p2pz.editor.errors import EditorError, ImageError  # lazy: start-up
    from p2pz.editor.loader import ModelLoadError  # lazy: start-up
    from p2pz.generators import GeneratorError  # lazy: start-up
    from p2pz.store.db import StoreError  # lazy: sqlalchemy
    from p2pz.store.vectors import VectorError  # lazy: start-up

    from p2pz.registry.library.records import RegistryError  # lazy: start-up

    return (RegistryError, GeneratorError, StoreError, VectorError, ModelLoadError, FileExistsError, EditorError,
            ImageError)


def _reader_gone() -> None:
    """``p2pz … | head``: the reader closed the pipe. Exit quietly as Unix tools do: point stdout at /dev/null
    (so the interpreter's last flush cannot fail again) and exit 141 (128 + SIGPIPE, what a shell reports for a
    tool that SIGPIPE ended)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (click's test runner): nothing to silence
        pass
    raise SystemExit(141)


class P2PZGroup(click.Group):
    def main(self, *args, **kwargs):
        try:
            try:
                return super().main(*args, **kwargs)
            finally:
                sys.stdout.flush()  # inside the try: a closed pipe found by the last flush is handled too
        except BrokenPipeError:
            _reader_gone()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            _reader_gone()
        except Exception as exc:
            if isinstance(exc, _user_errors()):
                from p2pz.registry.library.records import printable  # lazy: start-up

                # one line, and no terminal escapes: messages may quote a Hub, another registry or a file
                msg = " ".join(printable(exc, keep="\t\n").split()) or type(exc).__name__
                raise P2PZError(msg) from None
            from sqlalchemy.exc import SQLAlchemyError  # lazy: sqlalchemy

            if isinstance(exc, SQLAlchemyError):  # never a traceback, whatever the database says
                first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
                raise P2PZError(f"database error: {first}; check --db / $P2PZ_DB_URL and that the database is "
                                "reachable") from None
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
            from p2pz.registry.library.api import Registry  # lazy: sqlalchemy

            self._reg = Registry.open(self.db, progress=self.progress)
        return self._reg

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)


pass_state = click.make_pass_decorator(State)


def echo_json(obj) -> None:
    """Indented on a terminal, compact (one line, fast) when piped."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(obj, indent=indent, ensure_ascii=False, default=str))


def echo_table(rows: list[list], headers: list[str]) -> None:
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


class VersionType(click.ParamType):
    """A version option (``--version N``): ASCII digits from 1 to 2³¹−1, the rule of ``NAME@V`` addresses
    (click's own int would read "٢" as 2)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        from p2pz.registry.library.naming import RefError, parse_version  # lazy: start-up

        try:
            return parse_version(value)
        except RefError as exc:
            self.fail(str(exc), param, ctx)


VERSION = VersionType()


@click.group(cls=P2PZGroup, epilog=EPILOG_DB, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="P2PZ_DB_URL", metavar="URL", help="Registry database URL (default: $P2PZ_HOME/registry.db).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines.")
@click.version_option(version=__version__, prog_name="p2pz")
@click.pass_context
def main(ctx, db, quiet):
    """p2pz — reusable, searchable edit directions for Stable Diffusion (pix2pix-zero).

    \b
    Example:
      p2pz direction build cat dog --model CompVis/stable-diffusion-v1-4
      p2pz search cat-to-dog -k 5
    """
    ctx.obj = State(db, quiet)



def folded(into: str, names: tuple[str, ...]):
    """Gather the click parameters ``names`` into one argument ``into``: a dict of the ones given (None and
    unset flags left out), so a command's signature names the group, not each flag."""
    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            kwargs[into] = {n: v for n in names if (v := kwargs.pop(n)) is not None and v is not False}
            return f(*args, **kwargs)
        return wrapper
    return deco


LLM_FLAGS = {"llm_model": None, "base_url": "--base-url", "temperature": "--temperature",
             "concurrency": "--concurrency", "max_requests": "--max-requests", "max_total_tokens": "--max-tokens",
             "timeout": "--timeout", "max_retries": "--max-retries", "no_cache": "--no-cache"}


def llm_options(model_flag: str):
    """The LLM generator's flags (``model_flag``: --model for banks, --llm-model for directions), folded into
    one ``llm`` argument (see :func:`bank_options`)."""
    def deco(f):
        f = folded("llm", tuple(LLM_FLAGS))(f)
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
            click.option("--max-retries", type=click.IntRange(0, 20), default=None,
                         help="Retries of one LLM request after 429, 5xx or a timeout [4]."),
            click.option("--no-cache", is_flag=True, help="Ask the LLM again instead of reusing cached replies."),
        ]):
            f = opt(f)
        return f
    return deco


def bank_options(generator: str | None, *, kind: str | None = None, template_file: str | None = None,
                 path: str | None = None, llm: dict | None = None, tokenizer_model: str | None = None,
                 model_flag: str = "--model"):
    """The typed generator options (:mod:`generators.options`) the bank flags of a command describe, or None
    (no ``--from`` and no ``--kind``: the stored banks, else templates). A flag of another generator is an
    error naming the ``--from`` it needs."""
    from p2pz.generators import FileOptions, GeneratorError, LLMOptions, TemplateOptions  # lazy: start-up

    llm = dict(llm or {})
    if generator is None and kind:
        generator = "templates"
    if llm and generator != "llm":
        flags = ", ".join(LLM_FLAGS[k] or model_flag for k in llm)
        raise P2PZError(f"{flags} {'needs' if len(llm) == 1 else 'need'} --from llm")
    if tokenizer_model and generator != "llm":
        raise P2PZError("--tokenizer needs --from llm")
    if template_file and generator != "templates":
        raise P2PZError("--templates needs --from templates")
    try:
        if generator == "llm":
            use_cache = not llm.pop("no_cache", False)
            return LLMOptions(model=llm.pop("llm_model", None), template_kind=kind, use_cache=use_cache,
                              tokenizer_model=tokenizer_model, **llm)
        if generator == "file":
            if kind:
                raise P2PZError("--kind needs --from templates or --from llm")
            return FileOptions(path=path or "")
        if generator == "templates":
            return TemplateOptions(template_kind=kind or "auto", template_file=template_file)
    except GeneratorError as exc:
        raise P2PZError(str(exc)) from None
    return None


def engine_options(f):
    """``--engine local|ray``, ``--address``, ``--workers``, ``--gpus-per-worker``, folded into one ``engine``
    argument: the :class:`registry.engine.Engine` they describe (a wrong combination is a one-line error)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        kwargs["engine"] = make_engine(*(kwargs.pop(k) for k in ("engine", "address", "workers", "gpus_per_worker")))
        return f(*args, **kwargs)

    for opt in reversed([
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Run here, or on Ray (one model per worker; pip install 'p2pz[ray]')."),
        click.option("--address", default=None, help="Ray cluster to use, e.g. auto or ray://head:10001 "
                     "[default: start a local Ray]."),
        click.option("--workers", type=click.IntRange(1, 10_000), default=1, show_default=True,
                     help="Ray workers (each loads the model once)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="GPUs per Ray worker (fractions share a GPU)."),
    ]):
        wrapper = opt(wrapper)
    return wrapper


def make_engine(engine, address, workers, gpus_per_worker):
    from p2pz.registry.engine import make_engine as engine_of  # lazy: start-up
    from p2pz.registry.library.records import RegistryError  # lazy: start-up

    try:
        return engine_of(engine, address, workers, gpus_per_worker)
    except RegistryError as exc:
        raise P2PZError(str(exc)) from None


# ``--kind`` of the bank-making commands (auto: chosen from the concept by generators.templates.choose_kind)
TEMPLATE_KIND = click.Choice(["auto", "object", "style", "attribute", "scene"])
KIND_HELP = ("Template set [default: auto, chosen from the concept's words: scene for day/night/seasons/weather, "
             "attribute for colours, style for media and styles, else object].")


# The command groups register themselves on ``main`` when imported.
from . import admin, banks, directions, distill, edit, evaluate, library, share, web  # noqa: E402,F401
